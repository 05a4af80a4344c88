"""What every benchmark shares: the machine it ran on, and its own section of bench/RESULTS.md."""

from __future__ import annotations

import contextlib
import fcntl
import os
import platform
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
HEADER = "# Benchmark results\n\nOne section per benchmark, rewritten by its own run (`botops bench`).\n\n"


def machine(load_at_start) -> dict:
    """CPU count and model, memory, load at the start, Python, ansible-core and kernel versions."""
    mem = cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) // 1024} MiB"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    import ansible

    return {"nproc": os.cpu_count(), "load_at_start": load_at_start, "cpu": cpu, "memory": mem,
            "python": platform.python_version(), "ansible_core": ansible.__version__, "kernel": platform.release()}


def publish(section: str, text: str, write: bool = True) -> None:
    """Print a benchmark's section and, unless told not to, write it into bench/RESULTS.md."""
    print()
    print(text)
    if write:
        write_section(section, text)
        print(f"written to {RESULTS}")


def write_section(section: str, text: str) -> None:
    """Replace the text between `<!-- bench:SECTION:start -->` and its end marker (or append it)."""
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with open(RESULTS.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another benchmark may be writing its own section
        old = RESULTS.read_text() if RESULTS.exists() else HEADER
        start, end = f"<!-- bench:{section}:start -->", f"<!-- bench:{section}:end -->"
        if start in old and end in old:
            new = old[: old.index(start)] + text.rstrip("\n") + old[old.index(end) + len(end):]
        else:
            new = old.rstrip("\n") + "\n\n" + text
        tmp = RESULTS.with_suffix(".md.tmp")
        tmp.write_text(new if new.endswith("\n") else new + "\n")
        os.replace(tmp, RESULTS)


def cpu_times():
    """(busy, total) jiffies of all CPUs from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields) - idle, sum(fields)


def cpu_busy(before, after):
    """Share of the machine's CPU time that was busy between two cpu_times() (0..1)."""
    total = after[1] - before[1]
    return round((after[0] - before[0]) / total, 2) if total else None
