"""botops logs, exec and last-resort-kill on the shared sandbox fleet, whose bots are local
(ansible_connection=local): the same tasks that go over SSH for remote bots, run on this machine.

The last-resort kill stops one bot for real, without its API or Ansible; the bot is started again
with supervisorctl and the fleet left as it was found.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

try:  # tests/integration as a package or as a plain directory on sys.path
    from .trading_state import AUDIT_LOG, assert_not_trading, restore_fleet, wait_trading
except ImportError:
    from trading_state import AUDIT_LOG, assert_not_trading, restore_fleet, wait_trading

REPO = Path(__file__).resolve().parents[2]
BOTOPS = Path(sys.executable).with_name("botops")
BOT = "bot05"  # vanta


@pytest.fixture
def run(fleet, tmp_path):
    env = dict(os.environ, BOTOPS_ARTIFACTS_DIR=str(tmp_path / "runs"))
    env.pop("ANSIBLE_VAULT_PASSWORD_FILE", None)

    def invoke(*args):
        cmd = [str(BOTOPS), *args, f"--inventory={fleet.hosts_file}"]
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)

    return invoke


def test_logs_and_exec_on_local_bots(fleet, run):
    proc = run("logs", f"--bot={BOT}", "--lines=3")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(proc.stdout.splitlines()) == 3 and " refbot" in proc.stdout

    proc = run("exec", "--limit=mojorust", "--command=readlink current")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    mojorust = [b["name"] for b in fleet.bots() if b["family"] == "mojorust"]
    for bot in fleet.bot_names():
        assert (f"== {bot} (local): exit 0" in proc.stdout) == (bot in mojorust), proc.stdout


def test_last_resort_kill_stops_a_local_bot_for_good(fleet, run, tmp_path):
    pid = fleet.pids()[BOT]
    try:
        proc = run("last-resort-kill", f"--bot={BOT}", "--reason=last resort (integration)", "--grace=5")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        row = next(line for line in proc.stdout.splitlines() if line.startswith(BOT + " "))
        assert row.split()[2:5] == ["killed", "-", "stopped"], proc.stdout  # supervisord stopped it: no signal needed
        assert not Path(f"/proc/{pid}/cmdline").exists() or not Path(f"/proc/{pid}/cmdline").read_bytes()
        assert fleet.processes()[BOT]["statename"] in ("STOPPED", "EXITED"), "restarted behind the kill's back"
        assert_not_trading(fleet, [BOT], window=0.5)
        record = json.loads((Path(fleet.bot(BOT)["root"]) / AUDIT_LOG).read_text().splitlines()[-1])
        assert (record["action"], record["outcome"], record["pids"]) == ("last-resort-kill", "killed", [pid])
        assert record["service_stop"] == "stopped"
        controller = (tmp_path / "runs" / "kill-switch-audit.log").read_text().splitlines()
        assert json.loads(controller[-1])["bot"] == BOT

        proc = run("last-resort-kill", f"--bot={BOT}", "--reason=again")
        assert proc.returncode == 0 and "not running" in proc.stdout, proc.stdout + proc.stderr
    finally:
        fleet.supervisorctl("start", BOT)
        restore_fleet(fleet, [BOT])
    wait_trading(fleet, [BOT])
