"""One way back from any crash: the controller (invoke, ansible-runner, ansible-playbook, the module)
is SIGKILLed in the middle of a deploy's window, a restore, a restart and a maintenance window,
each reached by polling the run's own progress events (the task it has started); then
`botops recover` puts the bot back, and the bot is checked in its own state: its process running
and ready, trading (no pause left), its ledger continuous, its current release good in the ledger,
no scratch database, unfinished set, half-installed release or lock left behind.

A kill switch level an operator engaged before the crash is left as it is: the recovered bot stays
halted.

    bot01 mojorust   bot02 papertrader   bot03 solana-cli   bot04 hyperliquid   bot05 vanta
"""

from __future__ import annotations

import json
import threading
import time

import pytest

from tests.integration.fleet_tasks import (
    assert_continuous, current, invoke, last_summary, output, root, trades, wait_growth,
)

from .faults import alive, databases, kill_tree, poll

pytestmark = pytest.mark.slow

READY_TIMEOUT = 120


def started(ops, since: float, task: str) -> bool:
    """Has a run begun since `since` started `task` on a bot (its progress.jsonl says so)?"""
    for trace in (ops["dir"] / "runs").glob("*/*/progress.jsonl"):
        if trace.stat().st_mtime >= since:
            for line in trace.read_text().splitlines():
                event = json.loads(line) if line.endswith("}") else {}
                if event.get("event") == "start" and event.get("task", "").startswith(task):
                    return True
    return False


def crash(ops, args: list[str], task: str, settle: float = 0.3) -> None:
    """Run `invoke args` and SIGKILL its whole tree once the run's progress.jsonl shows it has been
    inside `task` for `settle` seconds."""
    since = time.time()  # the run started here: a trace written before it (the preparing run) does not count
    proc = invoke(ops, *args, background=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        poll(lambda: started(ops, since, task), 300, f"the run to start '{task}'", proc)
        time.sleep(settle)  # inside the module: no fixed point of its work is needed, any point must be safe
    finally:
        killed = kill_tree(proc.pid)
        proc.wait()
    poll(lambda: not any(alive(pid) for pid in killed), 30, "every killed process to be gone")


def assert_recovered(ops, bot: str, before: int) -> None:
    fleet = ops["fleet"]
    fleet.wait_ready([bot], timeout=READY_TIMEOUT)
    wait_growth(ops, bot, timeout=60)  # trading: no pause left engaged
    assert_continuous(ops, bot)
    assert trades(ops, bot)[0] >= before
    path = root(ops, bot) / "releases" / "ledger.json"
    if path.exists():  # no ledger yet: the release the bot was installed with, never changed since
        status = (json.loads(path.read_text())["releases"].get(current(ops, bot)) or {}).get("status")
        assert status == "good", (bot, current(ops, bot), status)
    name = fleet.bot(bot)["database"]["name"]
    assert not [d for d in databases(ops, bot) if d.startswith((f"{name}_restore_", f"{name}_verify_"))]
    assert not list((root(ops, bot) / "backups").glob(".tmp-*")), "an unfinished set was left"
    assert not list((root(ops, bot) / "releases").glob(".install-*")), "a half-installed release was left"
    assert not (root(ops, bot) / "shared" / "data" / "botops.lock").exists(), "the bot's lock was left"
    assert not list((ops["dir"] / "locks").glob("*.lock")), "a fleet lock was left"
    record = root(ops, bot) / "shared" / "data" / "botops-kill-switch.json"
    assert not record.exists() or not json.loads(record.read_text()).get("operations"), record.read_text()


def recover(ops, bot: str) -> dict:
    proc = invoke(ops, "recover", f"--limit={bot}")
    assert proc.returncode == 0, output(proc)
    return last_summary(ops, "recover")["bots"][bot]


@pytest.mark.parametrize("case", [
    ("bot05", None, ["deploy", "--version=1.1.0"], "Move the bot in one window"),
    ("bot01", None, ["deploy", "--version=1.1.0"], "Install the release"),
    ("bot02", None, ["deploy", "--version=1.1.0"], "Back up the database and config"),
    ("bot04", ["backup", "--label=before the crash"], ["restore", "--backup=latest", "--carry-forward"],
     "Restore the database from"),
    ("bot04", ["deploy", "--version=1.1.0"], ["rollback", "--target=latest"], "Move the bot in one window"),
    ("bot02", None, ["restart", "--mode=graceful"], "Restart the bot and wait"),
    ("bot01", None, ["maintenance", "--window=daily", "--force"], "Back up the bot's database"),
], ids=["deploy-window", "deploy-install", "deploy-backup", "restore", "rollback-window", "restart",
        "maintenance-backup"])
def test_the_controller_killed_mid_operation_then_recover(ops, case):
    bot, prepare, args, task = case
    if prepare:
        done = invoke(ops, *prepare, f"--limit={bot}")
        assert done.returncode == 0, output(done)
    before = trades(ops, bot)[0]
    crash(ops, [*args, f"--limit={bot}"], task)

    # the next run names what the dead run left, and how to put it back
    refused = invoke(ops, "restart", f"--limit={bot}")
    assert refused.returncode == 2, output(refused)
    assert "stale lock" in output(refused) and "botops recover" in output(refused), output(refused)

    row = recover(ops, bot)
    assert row["result"] == "ok", row
    assert_recovered(ops, bot, before)
    again = recover(ops, bot)  # nothing left: a second recovery finds and does nothing
    assert again["done"] == [], again


def test_recover_leaves_an_operators_level_alone(ops):
    """The crashed restart left its pause; an operator halts the bot before anyone recovers it: the
    recovery removes the dead run's debris but leaves the bot as the operator's level holds it;
    once the operator released it, recovering again puts the bot back."""
    bot = "bot03"
    crash(ops, ["restart", f"--limit={bot}"], "Restart the bot and wait")
    engaged = invoke(ops, "kill-switch", "--level=halt", "--reason=operator holds it", f"--limit={bot}")
    assert engaged.returncode == 0, output(engaged)
    try:
        row = recover(ops, bot)
        assert any("kill switch halt engaged by" in line for line in row["found"]), row
        assert not any(line.startswith(("started", "rolled back")) for line in row["done"]), row
        record = json.loads((root(ops, bot) / "shared" / "data" / "botops-kill-switch.json").read_text())
        assert record["operator"]["level"] == "halt", record
        count = trades(ops, bot)[0]
        time.sleep(1.0)  # ten trade intervals: a halted bot writes none
        assert trades(ops, bot)[0] == count, f"{bot} trades although its operator halted it"
    finally:
        released = invoke(ops, "kill-switch", "--release", "--level=halt", f"--limit={bot}")
        assert released.returncode == 0, output(released)
    recover(ops, bot)
    assert_recovered(ops, bot, 0)
