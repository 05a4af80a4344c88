"""`python -m bench [--only NAME[,NAME]] [--quiet LOAD] [--list] [-- ARGS]`: the same as `botops bench`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from botops.bench import available, run_selected  # noqa: E402


def main() -> int:
    argv = sys.argv[1:]
    rest = []
    if "--" in argv:
        argv, rest = argv[: argv.index("--")], argv[argv.index("--") + 1:]
    parser = argparse.ArgumentParser(prog="python -m bench", description="Run benchmarks in bench/.")
    parser.add_argument("--only", help="comma separated benchmark names (default: all)")
    parser.add_argument("--list", action="store_true", help="list the benchmarks")
    parser.add_argument("--quiet", type=float, help="wait until the 1-minute load average is below this")
    args = parser.parse_args(argv)
    if args.list:
        for name, path in available().items():
            print(f"{name:20} {path}")
        return 0
    try:
        return run_selected(args.only, rest, args.quiet)
    except ValueError as exc:
        parser.error(str(exc))


if __name__ == "__main__":
    sys.exit(main())
