"""`botops bench`: run the benchmarks in bench/ and record their results in bench/RESULTS.md.

A benchmark is a file `bench/bench_<name>.py` with a `main(argv) -> int` that runs it, prints a
table against its targets and rewrites its own section of bench/RESULTS.md; adding one is adding
the file (`botops bench --only=<name>` selects it, `-` and `_` alike). Performance targets live
here, as benchmarks with recorded results, never as timed tests.

Benchmarks share the machine with other work: one runs at a time (a machine-wide lock,
/tmp/botops-bench.lock, that `python -m bench` takes too), and `--quiet=LOAD` waits until the
1-minute load average is below LOAD before starting (each benchmark records the load it saw).
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import math
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

from invoke import Exit, task

from botops.report import shown
from botops.layout import COLLECTION
from botops.runner import EXIT_USAGE

BENCH_DIR = COLLECTION / "bench"  # a checkout's: the benchmarks are not installed
LOCK = Path(tempfile.gettempdir()) / "botops-bench.lock"


def available() -> dict[str, Path]:
    """Benchmark name -> file, from bench/bench_<name>.py."""
    return {p.stem[len("bench_"):]: p for p in sorted(BENCH_DIR.glob("bench_*.py"))}


def select(only: str | None) -> list[tuple[str, Path]]:
    """The benchmarks named in `only` (comma separated; all when None). Raises ValueError naming the unknown
    or when it names none."""
    found = available()
    if only is None:
        return sorted(found.items())
    names = [n.strip().replace("-", "_") for n in only.split(",") if n.strip()]
    if not names:
        raise ValueError(f"--only is empty: give benchmark names, comma-separated (available: "
                         f"{', '.join(found) or 'none'}), or leave --only out for all")
    chosen = []
    for name in names:
        if name not in found:
            raise ValueError(f"--only: no benchmark {shown(name)} (available: {', '.join(found) or 'none'})")
        chosen.append((name, found[name]))
    return chosen


def quiet_load(value) -> float | None:
    """--quiet: a load average to wait for (a number from 0, 0 meaning do not wait); ValueError otherwise."""
    try:
        load = float(str(value).strip())
    except ValueError:
        load = math.nan
    if not 0 <= load <= 10_000:  # NaN compares false: refused
        raise ValueError(f"--quiet {shown(value)} must be a load average: a number from 0 (do not wait) to 10000")
    return load or None


def bench_args(value: str) -> list[str]:
    """--args split as a shell would; ValueError naming the flag otherwise."""
    try:
        return shlex.split(value or "")
    except ValueError as exc:
        raise ValueError(f"--args {shown(value)} is not a shell-quoted argument list ({exc}), "
                         "e.g. --args='--bots 50'") from None


def run(name: str, path: Path, argv: list[str]) -> int:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    for entry in (str(COLLECTION), str(BENCH_DIR)):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    spec.loader.exec_module(module)
    return int(module.main(argv) or 0)


@contextlib.contextmanager
def machine_lock(path: Path = LOCK):
    """One benchmark at a time on this machine: two would measure each other."""
    with open(path, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            print(f"another benchmark holds {path}: waiting for it", flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def wait_quiet(load: float | None, timeout: float = 3600.0, interval: float = 15.0) -> float:
    """Wait until the 1-minute load average is below `load` (or the timeout); returns the load seen."""
    current = os.getloadavg()[0]
    if not load:
        return current
    deadline = time.monotonic() + timeout
    while current >= load and time.monotonic() < deadline:
        print(f"load average {current:.2f} >= {load}: waiting for a quieter machine", flush=True)
        time.sleep(interval)
        current = os.getloadavg()[0]
    return current


def run_selected(only: str | None, argv: list[str], quiet: float | None = None) -> int:
    code = 0
    chosen = select(only)
    with machine_lock():
        for name, path in chosen:
            wait_quiet(quiet)
            print(f"== bench {name} ({path})", flush=True)
            code = run(name, path, argv) or code
    return code


@task(
    help={
        "only": "run only these benchmarks, comma separated (e.g. deploy); default: all in bench/",
        "args": "arguments for the benchmark, e.g. --args='--bots 50 --modes plain,mitogen'",
        "list": "list the benchmarks and exit",
        "quiet": "wait until the 1-minute load average is below this before each benchmark (e.g. 2)",
    }
)
def bench(c, only=None, args="", list=False, quiet="0"):  # noqa: A002  (the option is --list)
    """Run benchmarks (bench/bench_<name>.py) against their targets; results into bench/RESULTS.md."""
    if list:
        for name, path in available().items():
            print(f"{name:20} {path}")
        return
    try:
        code = run_selected(only, bench_args(args), quiet_load(quiet))
    except ValueError as exc:
        raise Exit(f"bench: {exc}", code=EXIT_USAGE) from None
    if code:
        raise Exit(f"bench: exit code {code}", code=code)
