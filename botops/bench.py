"""`invoke bench`: run the benchmarks in bench/ and record their results in bench/RESULTS.md.

A benchmark is a file `bench/bench_<name>.py` with a `main(argv) -> int` that runs it, prints a
table against its targets and rewrites its own section of bench/RESULTS.md; adding one is adding
the file (`invoke bench --only=<name>` selects it, `-` and `_` alike). Performance targets live
here, as benchmarks with recorded results, never as timed tests.
"""

from __future__ import annotations

import importlib.util
import shlex
import sys
from pathlib import Path

from invoke import Exit, task

from botops.runner import EXIT_USAGE, REPO

BENCH_DIR = REPO / "bench"


def available() -> dict[str, Path]:
    """Benchmark name -> file, from bench/bench_<name>.py."""
    return {p.stem[len("bench_"):]: p for p in sorted(BENCH_DIR.glob("bench_*.py"))}


def select(only: str | None) -> list[tuple[str, Path]]:
    """The benchmarks named in `only` (comma separated; all when empty). Raises ValueError naming the unknown."""
    found = available()
    if not only:
        return sorted(found.items())
    chosen = []
    for name in (n.strip().replace("-", "_") for n in only.split(",") if n.strip()):
        if name not in found:
            raise ValueError(f"no benchmark {name!r} (available: {', '.join(found) or 'none'})")
        chosen.append((name, found[name]))
    return chosen


def run(name: str, path: Path, argv: list[str]) -> int:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    for entry in (str(REPO), str(BENCH_DIR)):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    spec.loader.exec_module(module)
    return int(module.main(argv) or 0)


def run_selected(only: str | None, argv: list[str]) -> int:
    code = 0
    for name, path in select(only):
        print(f"== bench {name} ({path})", flush=True)
        code = run(name, path, argv) or code
    return code


@task(
    help={
        "only": "run only these benchmarks, comma separated (e.g. rollout); default: all in bench/",
        "args": "arguments for the benchmark, e.g. --args='--bots 50 --modes plain,mitogen'",
        "list": "list the benchmarks and exit",
    }
)
def bench(c, only=None, args="", list=False):  # noqa: A002  (the option is --list)
    """Run benchmarks (bench/bench_<name>.py) against their targets; results into bench/RESULTS.md."""
    if list:
        for name, path in available().items():
            print(f"{name:20} {path}")
        return
    try:
        code = run_selected(only, shlex.split(args or ""))
    except ValueError as exc:
        raise Exit(f"bench: {exc}", code=EXIT_USAGE) from None
    if code:
        raise Exit(f"bench: exit code {code}", code=code)
