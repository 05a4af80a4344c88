"""The kill switch always wins: operations run against an operator's kill switch, through the real
`invoke` CLI on a fleet of their own (one bot per family).

An operator's level engaged before an operation makes it skip the bot; engaged while it runs, the
operation yields: it starts nothing and releases nothing on that bot, stops the run and exits
with the kill-switch code (5). Every case reads the outcome from the bots themselves: trades
counted twice in their own databases, their processes under supervisord, their release.
Points in time are reached by polling what the operation does to the bots, never by sleeping.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from botops.sandbox.fleet import wait_until

from .fleet_tasks import backups, current, invoke, last_summary, ops_fleet, output, root, trades, wait_growth

BOTS = ["bot01", "bot02", "bot03", "bot04", "bot05"]  # mojorust, papertrader, solana-cli, hyperliquid, vanta
EXIT_KILL_SWITCH = 5
RECORD = Path("shared") / "data" / "botops-kill-switch.json"


@pytest.fixture(scope="module")
def ops():
    with ops_fleet("botops-ksw-", len(BOTS), 29000) as fleet_ops:
        fleet_ops["env"]["BOTOPS_OPERATOR"] = "oncall-alice"
        yield fleet_ops


@pytest.fixture(autouse=True)
def released(ops):
    """Every test starts and ends with no level engaged and every bot trading."""
    yield
    proc = invoke(ops, "kill-switch", "--release", "--level=pause", "--force")
    assert proc.returncode == 0, output(proc)
    for bot in BOTS:
        assert engaged_record(ops, bot) is None, f"{bot}: the release left the operator's engagement recorded"
    for bot in BOTS:
        wait_growth(ops, bot, timeout=60)


def assert_halted(ops, bots, window=1.5):
    """The bots write no trade: counted in their own databases, twice, `window` seconds apart
    (polled meanwhile, so a single new trade fails at once)."""
    before = {b: trades(ops, b)[0] for b in bots}
    deadline = time.monotonic() + window
    while time.monotonic() < deadline:
        moved = {b: trades(ops, b)[0] - before[b] for b in bots if trades(ops, b)[0] != before[b]}
        assert not moved, f"trading again under the kill switch: {moved}"
        time.sleep(0.1)


def engaged_record(ops, bot):
    path = root(ops, bot) / RECORD
    return json.loads(path.read_text()).get("operator") if path.exists() else None


def halt(ops, *bots, level="halt", reason="drill: desk halt"):
    args = ["kill-switch", f"--level={level}", f"--reason={reason}"]
    if bots:
        args.append(f"--limit={','.join(bots)}")
    proc = invoke(ops, *args)
    assert proc.returncode == 0, output(proc)
    for bot in bots or BOTS:
        record = engaged_record(ops, bot)
        assert record and record["level"] == level and record["who"] == "oncall-alice", (bot, record)
        assert record["run_id"] and record["reason"] == reason, (bot, record)


def test_a_halt_engaged_before_a_restart_makes_it_skip_every_bot(ops):
    halt(ops)
    pids = ops["fleet"].service_pids()
    proc = invoke(ops, "restart")
    assert proc.returncode == EXIT_KILL_SWITCH, output(proc)
    assert "stopped by the kill switch" in output(proc)
    summary = last_summary(ops, "restart")
    for bot in BOTS:
        row = summary["bots"][bot]
        assert row["result"] == "skipped", row
        assert row["message"].startswith("skipped: kill switch halt engaged by oncall-alice"), row
    assert ops["fleet"].service_pids() == pids, "a halted bot was restarted"
    assert_halted(ops, BOTS)


def test_a_halt_engaged_while_a_restart_runs_holds_on_every_bot(ops):
    pids = ops["fleet"].service_pids()
    proc = invoke(ops, "restart", background=True)
    # the restart is under way: at least one bot has been stopped or started again
    assert wait_until(lambda: ops["fleet"].service_pids() != pids, 120), "the restart never touched a bot"
    halt(ops, reason="drill: halt during a restart")
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode in (0, EXIT_KILL_SWITCH), out
    if proc.returncode == EXIT_KILL_SWITCH:
        assert "stopped: kill switch halt engaged by oncall-alice" in out, out
    assert_halted(ops, BOTS)
    for bot in BOTS:
        assert engaged_record(ops, bot)["level"] == "halt"


def test_a_halt_engaged_during_a_deploy_stops_the_rollout(ops):
    # the canary bot01, then bot02 and bot05: a batch the halt must keep from starting
    proc = invoke(ops, "deploy", "--version=1.1.0", "--canary=1", "--limit=bot01,bot02,bot05", background=True)
    # the canary's window switched its release: it is between its stop and its start or just after
    assert wait_until(lambda: current(ops, "bot01") == "1.1.0", 300), "the canary's window never began"
    halt(ops, reason="drill: halt during a deploy")
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == EXIT_KILL_SWITCH, out
    assert "kill switch halt engaged by oncall-alice" in out, out
    assert_halted(ops, BOTS)
    for bot in BOTS[1:]:  # the bots the deploy had not reached are untouched
        assert current(ops, bot) == "1.0.0", bot
    ledger = json.loads((root(ops, "bot01") / "releases" / "ledger.json").read_text())
    assert "bad" not in json.dumps(ledger), "the kill switch marked a good release bad"


@pytest.mark.slow  # the default suite keeps under 15 minutes; run with -m slow
def test_a_halt_engaged_before_a_cron_maintenance_window_is_kept(ops):
    halt(ops, "bot01", "bot05")
    pids = ops["fleet"].service_pids()
    # Sunday 03:10 UTC: the weekly window is open for mojorust, solana-cli and vanta (no --force: cron's way)
    proc = invoke(ops, "maintenance", "--window=weekly", "--now=2026-12-06T03:10:00Z")
    assert proc.returncode == EXIT_KILL_SWITCH, output(proc)
    summary = last_summary(ops, "maintenance")
    for bot in ("bot01", "bot05"):
        assert summary["bots"][bot]["message"].startswith("skipped: kill switch halt"), summary["bots"][bot]
        assert ops["fleet"].service_pids().get(bot) == pids.get(bot), f"{bot} was stopped or started under a halt"
    assert summary["bots"]["bot03"]["result"] == "maintained", summary["bots"]["bot03"]
    assert_halted(ops, ["bot01", "bot05"])
    wait_growth(ops, "bot03")


def test_promote_to_live_is_refused_under_a_halt(ops):
    halt(ops, "bot05")
    proc = invoke(ops, "promote", "--to=live", "--limit=bot05")
    assert proc.returncode != 0, output(proc)
    bot = ops["fleet"].bot("bot05")
    raw = subprocess.run(["redis-cli", "-u", bot["redis_url"], "--no-auth-warning", "GET", "exec_mode"],
                         capture_output=True, text=True, timeout=10).stdout
    mode = json.loads(raw)
    assert mode["mode"] == "DRY" and mode["emergency_stop"] is True, mode
    assert_halted(ops, ["bot05"])


@pytest.mark.slow  # the default suite keeps under 15 minutes; run with -m slow
def test_an_override_restarts_the_bot_and_puts_the_level_back(ops):
    halt(ops, "bot02", "bot03")  # papertrader and solana-cli keep their halt in memory only
    pids = ops["fleet"].service_pids()
    proc = invoke(ops, "restart", "--limit=bot02,bot03", "--override-kill-switch")
    assert proc.returncode == 0, output(proc)
    after = ops["fleet"].service_pids()
    for bot in ("bot02", "bot03"):
        assert after[bot] != pids[bot], f"{bot} was not restarted"
        assert engaged_record(ops, bot)["level"] == "halt"
    assert_halted(ops, ["bot02", "bot03"])


def test_an_emergency_stop_during_a_restore_leaves_the_bot_stopped(ops):
    proc = invoke(ops, "backup", "--limit=bot04", "--label=before the drill")
    assert proc.returncode == 0, output(proc)
    sets = set(backups(ops, "bot04"))
    restore = invoke(ops, "restore", "--backup=latest", "--limit=bot04", "--accept-ledger-loss", background=True)
    # the restore took its safety backup: it restores into a scratch database next, then stops the bot
    assert wait_until(lambda: set(backups(ops, "bot04")) - sets, 300), "the restore never took its safety backup"
    stop = invoke(ops, "emergency-stop", "--reason=drill: stop during a restore")
    assert stop.returncode == 0, output(stop)
    assert "emergency-stop: incident bundle: " in stop.stdout and "NOT written" not in stop.stdout, stop.stdout
    assert "emergency-stop: notification: not sent: no webhook configured" in stop.stdout, stop.stdout
    out, _ = restore.communicate(timeout=600)
    # the halt came while the restore was stopped, starting or releasing its pause: it yields
    # (exit 5); a restore of a small database may also have ended before the halt came (exit 0)
    assert restore.returncode in (0, EXIT_KILL_SWITCH), out
    if restore.returncode == EXIT_KILL_SWITCH:
        assert "stopped: kill switch halt engaged by oncall-alice" in out, out
    assert_halted(ops, BOTS)


def test_a_halt_the_bot_keeps_survives_a_restart_outside_botops(ops):
    # hyperliquid's circuit breaker is in its database, vanta's flag in Redis (README: per family)
    halt(ops, "bot04", "bot05")
    pids = ops["fleet"].service_pids()
    ops["fleet"].supervisorctl("restart", "bot04", "bot05", check=True)
    assert wait_until(lambda: all(ops["fleet"].service_pids().get(b) not in (None, pids[b])
                                  for b in ("bot04", "bot05")), 60)
    ops["fleet"].wait_ready(["bot04", "bot05"], timeout=60)
    assert_halted(ops, ["bot04", "bot05"])


@pytest.mark.slow  # the deploy case above runs the same bot_deploy yields; this keeps the default suite short
def test_a_halt_engaged_during_a_rollback_window_is_kept_and_no_release_is_marked_bad(ops):
    proc = invoke(ops, "deploy", "--version=1.1.0", "--limit=bot04")
    assert proc.returncode == 0, output(proc)
    rollback = invoke(ops, "rollback", "--target=1.0.0", "--limit=bot04", background=True)
    # bot04's window switched back: it is between its stop and its start, or just after
    assert wait_until(lambda: current(ops, "bot04") == "1.0.0", 300), "the rollback's window never began"
    halt(ops, "bot04", reason="drill: halt during a rollback")
    out, _ = rollback.communicate(timeout=600)
    assert rollback.returncode in (0, EXIT_KILL_SWITCH), out
    if rollback.returncode == EXIT_KILL_SWITCH:
        assert "kill switch halt engaged by oncall-alice" in out, out
    assert_halted(ops, ["bot04"])
    ledger = json.loads((root(ops, "bot04") / "releases" / "ledger.json").read_text())
    assert '"1.0.0"' in json.dumps(ledger)
    statuses = {v: e.get("status") for v, e in (ledger.get("releases") or ledger).items() if isinstance(e, dict)}
    assert statuses.get("1.0.0") != "bad", f"the kill switch made a good release bad: {statuses}"


def test_a_flatten_of_a_frozen_bot_is_judged_by_its_own_database(ops):
    fleet = ops["fleet"]
    pid = fleet.service_pids()["bot02"]  # papertrader: no API to close positions, its flatten stops it
    os.kill(pid, signal.SIGSTOP)
    try:
        # a position the frozen bot holds, in its own database
        fleet.db_query("bot02", "INSERT INTO positions (id, symbol, side, qty, entry_price, status) "
                                "SELECT coalesce(max(id), 0) + 1, 'BOTOPS-DRILL', 'buy', 0.01, 100, 'open' FROM positions")
        proc = invoke(ops, "kill-switch", "--level=flatten", "--reason=drill: flatten a frozen bot", "--limit=bot02")
        assert "bot02" not in fleet.service_pids(), "the frozen bot is still there"
        # The ladder thaws the bot first (SIGCONT), and a thawed reference bot that sees the flatten level
        # closes its positions itself before the stop may land: then it is flat, and the flatten succeeds.
        # Either way the result is the bot's own database's: flat and ok, or open and failed, naming them.
        held = int(fleet.db_query("bot02", "SELECT count(*) FROM positions WHERE status = 'open'")[0][0])
        if held == 0:
            assert proc.returncode == 0, output(proc)
        else:
            assert proc.returncode == 1, output(proc)
            assert f"halted, {held} position(s) open (read from its database)" in output(proc), output(proc)
        assert engaged_record(ops, "bot02")["level"] == "flatten", "the operator's flatten stays recorded"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
        fleet.db_query("bot02", "DELETE FROM positions WHERE symbol = 'BOTOPS-DRILL'")
