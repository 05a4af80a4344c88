"""Driving the fleet tasks through the real `invoke` CLI on a fleet of their own.

Shared by the fleet-operation tests (tests/integration/test_fleet_operations.py) and the fault
suite (tests/faults/): a fleet brought up in its own /tmp directory and port block, with its own
artifacts, locks and audit directories (BOTOPS_SANDBOX_DIR / BOTOPS_ARTIFACTS_DIR /
BOTOPS_LOCK_DIR), and the few questions every such test asks about a bot (its release, its
ledger, its backup sets).

An ``ops`` is a dict: ``fleet`` (botops.sandbox.fleet.Fleet), ``env`` (the environment the `invoke`
subprocesses get), ``dir`` (the work directory) and ``inventory`` (the fleet's hosts.yml).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from botops.sandbox.fleet import Fleet

from .conftest import make_sandbox_dir, port_block

REPO = Path(__file__).resolve().parents[2]
BOTOPS = Path(sys.executable).with_name("botops")


@contextlib.contextmanager
def ops_fleet(prefix: str, bots: int, start_port: int, trade_interval: float = 0.1):
    """Bring up a fleet of `bots` bots (families round-robin) with its own state; purge it afterwards."""
    workdir = make_sandbox_dir(prefix)
    fleet = None
    try:
        with port_block(bots, start_port) as base:
            fleet = Fleet(workdir / "state", workdir / "inventory", base_port=base)
            fleet.up(bots=bots, trade_interval=trade_interval)
        env = dict(
            os.environ,
            BOTOPS_SANDBOX_DIR=str(workdir / "state"),
            BOTOPS_ARTIFACTS_DIR=str(workdir / "runs"),
            BOTOPS_LOCK_DIR=str(workdir / "locks"),
        )
        yield {"fleet": fleet, "env": env, "dir": workdir, "inventory": str(workdir / "inventory" / "hosts.yml")}
    finally:
        if fleet is not None:
            fleet.down(purge=True)
        shutil.rmtree(workdir, ignore_errors=True)


def invoke_cmd(ops, *args, inventory: str | None = None) -> list[str]:
    return [str(BOTOPS), *args, f"--inventory={inventory or ops['inventory']}"]


def invoke(ops, *args, background=False, inventory: str | None = None, timeout: float = 600):
    """Run `invoke ARGS --inventory=...`; with background, the Popen (its own session, output piped)."""
    cmd = invoke_cmd(ops, *args, inventory=inventory)
    if background:
        return subprocess.Popen(cmd, env=ops["env"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
    return subprocess.run(cmd, env=ops["env"], capture_output=True, text=True, timeout=timeout)


def output(proc) -> str:
    return (proc.stdout or "") + (proc.stderr or "")


def last_summary(ops, playbook: str) -> dict:
    runs = sorted((ops["dir"] / "runs" / playbook).glob("*/botops-summary.json"))
    return json.loads(runs[-1].read_text())


def root(ops, bot: str) -> Path:
    return Path(ops["fleet"].bot(bot)["root"])


def current(ops, bot: str) -> str:
    return Path(os.path.realpath(root(ops, bot) / "current")).name


def trades(ops, bot: str) -> tuple[int, int]:
    """(count, max id) of the bot's trades."""
    count, top = ops["fleet"].db_query(bot, "SELECT count(*), coalesce(max(id), 0) FROM trades")[0]
    return int(count), int(top)


def row_counts(ops, bot: str) -> dict[str, int]:
    """Rows of the tables a backup manifest counts."""
    row = ops["fleet"].db_query(
        bot, "SELECT (SELECT count(*) FROM trades), (SELECT count(*) FROM positions), (SELECT count(*) FROM orders)")[0]
    return dict(zip(("trades", "positions", "orders"), map(int, row)))


def revision(ops, bot: str) -> str:
    return ops["fleet"].db_query(bot, "SELECT version_num FROM alembic_version")[0][0]


def wait_growth(ops, bot: str, timeout: float = 20.0) -> None:
    """The bot is trading: its trade count grows (polled)."""
    start = trades(ops, bot)[0]
    deadline = time.monotonic() + timeout
    while trades(ops, bot)[0] <= start:
        assert time.monotonic() < deadline, f"{bot} made no trade in {timeout}s"
        time.sleep(0.1)


def assert_no_id_reused(ops, bot: str, backup_max: int, kept_max: int) -> None:
    """After a restore that kept rows aside: the restored ledger runs continuously up to the backup's
    last id, and every trade written since has an id above the replaced database's highest
    (`kept_max`): no id the kept rows hold is handed out again."""
    below, reused = ops["fleet"].db_query(
        bot, "SELECT (SELECT count(*) FROM trades WHERE id <= %s), (SELECT count(*) FROM trades WHERE id > %s "
             "AND id <= %s)", (backup_max, backup_max, kept_max))[0]
    assert int(below) == backup_max, f"{bot}: {below} trades up to the backup's id {backup_max}: not continuous"
    assert int(reused) == 0, f"{bot}: {reused} new trade(s) reuse ids {backup_max + 1}-{kept_max} of the kept rows"


def assert_continuous(ops, bot: str) -> None:
    count, top = trades(ops, bot)
    assert count == top, f"{bot}: {count} trades but max id {top}: a trade was lost or duplicated"


def backups(ops, bot: str) -> list[str]:
    """The complete-looking entries of the bot's backups directory (dot entries excluded)."""
    path = root(ops, bot) / "backups"
    return sorted(p.name for p in path.iterdir() if not p.name.startswith(".")) if path.exists() else []
