"""Injecting faults for real: polls, process trees, database locks, a full file system."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import psycopg
import pytest

from tests.integration.fleet_tasks import output

PROBE = "botops_fault_probe"


def poll(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None, interval: float = 0.02):
    """Poll until `predicate()` is truthy and return its value; fail naming `what` on timeout, or as
    soon as `proc` (the run the fault is aimed at) ended before the condition held."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            pytest.fail(f"waiting for {what}: the run ended first (rc={proc.returncode}):\n{out[-4000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"waiting for {what}: not within {timeout:.0f}s")
        time.sleep(interval)


def finish(proc: subprocess.Popen, timeout: float = 900) -> str:
    """Wait for a background run; its output."""
    out, _ = proc.communicate(timeout=timeout)
    return out or ""


# ----------------------------------------------------------------------------- processes
def _children() -> dict[int, list[int]]:
    found: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            data = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(data[data.rindex(")") + 2:].split()[1])
        found.setdefault(ppid, []).append(int(entry))
    return found


def process_tree(pid: int) -> list[int]:
    """The process and all its descendants (ansible-runner's pexpect child sits in a session of its
    own, so a process group does not reach it; the parent links do)."""
    children, tree, todo = _children(), [pid], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in tree:
                tree.append(child)
                todo.append(child)
    return tree


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def kill_tree(pid: int) -> list[int]:
    """SIGKILL a run and every process under it, as a crashed controller or an OOM kill would.

    The tree is frozen first (SIGSTOP, again until no new process appears), so no step finishes
    and no child is started between looking and killing; returns the pids killed."""
    frozen: list[int] = []
    while True:
        new = [p for p in process_tree(pid) if p not in frozen]
        if not new:
            break
        for p in new:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGSTOP)
        frozen += new
    for p in frozen:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)
    return frozen


# ----------------------------------------------------------------------------- the database
def databases(ops, bot: str) -> set[str]:
    """The databases named after the bot's (the live one, scratch, previous copies)."""
    name = ops["fleet"].bot(bot)["database"]["name"]
    rows = ops["fleet"].db_query(bot, "SELECT datname FROM pg_database WHERE starts_with(datname, %s)", (name,))
    return {r[0] for r in rows}


class HeldDump:
    """Make the bot's next pg_dump wait, as a slow dump of a big database would.

    A probe table in the bot's database is held under ACCESS EXCLUSIVE by a session of the test:
    a backup started meanwhile opens its snapshot, creates its .tmp- directory and then waits for
    the probe's lock inside pg_dump. The bot's own tables are not locked (it goes on trading). The
    lock goes with release(), at the end of the block, or when the server stops; drop_probe()
    removes the probe afterwards."""

    def __init__(self, ops, bot: str):
        self.fleet, self.bot, self.conn = ops["fleet"], bot, None

    def __enter__(self):
        self.fleet.db_query(self.bot, f"CREATE TABLE IF NOT EXISTS {PROBE} (id int)")
        self.conn = psycopg.connect(self.fleet.bot(self.bot)["database_url"], connect_timeout=10)
        self.conn.execute(f"LOCK TABLE {PROBE} IN ACCESS EXCLUSIVE MODE")
        return self

    def release(self) -> None:
        """Let the dump go on (the session ends, its transaction and lock with it)."""
        if self.conn is not None:
            with contextlib.suppress(psycopg.Error):
                self.conn.close()
            self.conn = None

    def __exit__(self, *exc):
        self.release()


def dump_waiting(ops, bot: str) -> bool:
    """A pg_dump is waiting for the probe's lock (the backup is in the middle of its dump)."""
    rows = ops["fleet"].db_query(
        bot, "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
             "WHERE c.relname = %s AND NOT l.granted", (PROBE,))
    return int(rows[0][0]) > 0


def drop_probe(ops, bot: str) -> None:
    ops["fleet"].db_query(bot, f"DROP TABLE IF EXISTS {PROBE}")


# ----------------------------------------------------------------------------- the file system
@contextlib.contextmanager
def full_filesystem(path: Path, free_bytes: int, size: str = "2m"):
    """A tmpfs mounted at `path` with only `free_bytes` left (a file fills the rest); unmounted after.

    Skips the test when this user may not mount one."""
    if os.geteuid() != 0:
        pytest.skip("a full disk is simulated with a tiny tmpfs, and mounting one needs root")
    path.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "botops-fault-full", str(path)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        path.rmdir()
        pytest.skip(f"cannot mount a tmpfs to simulate a full disk: {output(proc).strip()}")
    try:
        st = os.statvfs(path)
        with open(path / ".fill", "wb") as f:
            f.write(b"\0" * (st.f_bavail * st.f_frsize - free_bytes))
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)
        path.rmdir()


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def query_in(ops, bot: str, dbname: str, query: str) -> list[tuple]:
    """A query as the bot's role in another of its databases (a kept previous copy, a scratch one)."""
    with psycopg.connect(ops["fleet"].bot(bot)["database_url"], dbname=dbname, autocommit=True,
                         connect_timeout=5) as conn:
        return conn.execute(query).fetchall()
