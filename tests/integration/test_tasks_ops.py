"""The day-to-day fleet tasks through the real `invoke` CLI on the shared fleet: restart, backup,
backups --verify, restore, releases and promote (the go/no-go checklist), check mode and bad input.

Every test leaves the fleet as it found it: bots running, DRY and paper, no kill switch engaged,
release 1.0.0; the backup sets and databases a test created are removed again.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from botops.sandbox.fleet import wait_until

from .trading_state import restore_fleet, wait_trading


REPO = Path(__file__).resolve().parents[2]
BOTOPS = Path(sys.executable).with_name("botops")
FAMILY_BOTS = ["bot01", "bot02", "bot03", "bot04", "bot05"]  # mojorust, papertrader, solana-cli, hyperliquid, vanta


@pytest.fixture(scope="module")
def ops(fleet, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("tasks-ops")
    env = dict(
        os.environ,
        BOTOPS_SANDBOX_DIR=str(fleet.state_dir),
        BOTOPS_ARTIFACTS_DIR=str(workdir / "runs"),
        BOTOPS_LOCK_DIR=str(workdir / "locks"),
        BOTOPS_OPERATOR="tasks-ops-test",
    )
    env["PATH"] = os.pathsep.join((str(BOTOPS.parent), env.get("PATH", "")))
    state = {"fleet": fleet, "env": env, "dir": workdir, "inventory": str(fleet.hosts_file), "backups": {}}
    backups_before = {b: set(backup_ids(fleet, b)) for b in fleet.bot_names()}
    yield state
    restore_fleet(fleet)
    for bot in fleet.bot_names():  # the sets this module took (and the restore's safety sets)
        for backup_id in set(backup_ids(fleet, bot)) - backups_before[bot]:
            shutil.rmtree(Path(fleet.bot(bot)["root"]) / "backups" / backup_id, ignore_errors=True)


def invoke(ops, *args):
    cmd = [str(BOTOPS), *args, f"--inventory={ops['inventory']}"]
    return subprocess.run(cmd, env=ops["env"], capture_output=True, text=True, timeout=600)


def output(proc) -> str:
    return f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr[-3000:]}"


def summary(ops, playbook: str) -> dict:
    runs = sorted((ops["dir"] / "runs" / playbook).glob("*/botops-summary.json"))
    assert runs, f"no summary of {playbook} under {ops['dir'] / 'runs'}"
    return json.loads(runs[-1].read_text())


def backup_ids(fleet, bot: str) -> list[str]:
    path = Path(fleet.bot(bot)["root"]) / "backups"
    return sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")) if path.exists() else []


def current(fleet, bot: str) -> str:
    return Path(os.path.realpath(Path(fleet.bot(bot)["root"]) / "current")).name


def ledger(fleet, bot: str) -> tuple[int, int]:
    count, top = fleet.db_query(bot, "SELECT count(*), coalesce(max(id), 0) FROM trades")[0]
    return int(count), int(top)


def mode(fleet, bot: str) -> str:
    """The execution mode the bot persisted (a mode set through Redis is persisted by its next tick)."""
    return fleet.db_query(bot, "SELECT value #>> '{}' FROM bot_state WHERE key = 'execution_mode'")[0][0]


def assert_mode(fleet, bot: str, want: str) -> None:
    assert wait_until(lambda: mode(fleet, bot) == want, 10), f"{bot} is {mode(fleet, bot)}, expected {want}"


def drop_database(fleet, bot: str, name: str) -> None:
    url = fleet.bot(bot)["database_url"].rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


def test_bad_input_exits_2_before_anything_changes(ops):
    fleet = ops["fleet"]
    pids = fleet.service_pids()
    for args, expected in [
        (["restart", "--mode=hard"], "is not a restart mode (expected one of: graceful, quick, recover)"),
        (["restart", "--limit=nosuchbot"], "is no bot or group"),
        # a typo inside a list: the run used to go ahead on bot01 alone, exit 0
        (["restart", "--limit=bot01,bot99", "--check"], "--limit 'bot01,bot99' names what is no bot or group "
                                                        "of the inventory: bot99; did you mean"),
        (["restore", "--backup=../../etc/passwd"], "is not 'latest' or a backup id"),
        (["backups", "--verify", "--backup=20261121T020000Z-../x"], "is not 'latest' or a backup id"),
        (["promote", "--to=paper"], "--to=live (through the go/no-go checklist) or --to=dry"),
    ]:
        proc = invoke(ops, *args)
        assert proc.returncode == 2, f"{args}: {output(proc)}"
        assert expected in proc.stdout + proc.stderr, f"{args}: {output(proc)}"
    assert fleet.service_pids() == pids


def test_check_mode_changes_nothing(ops):
    fleet = ops["fleet"]
    bots = ["bot01", "bot02"]
    pids = fleet.service_pids()
    backups = {b: backup_ids(fleet, b) for b in bots}
    releases = {b: current(fleet, b) for b in bots}
    for args in (["restart", "--limit=bot01,bot02", "--check"], ["backup", "--limit=bot01,bot02", "--check"]):
        proc = invoke(ops, *args)
        assert proc.returncode == 0, output(proc)
        assert "check mode: nothing will change" in proc.stdout
    report = summary(ops, "backup")["bots"]
    assert {b: report[b]["backup_id"] for b in bots} == {b: "(would take one)" for b in bots}
    assert fleet.service_pids() == pids
    assert {b: backup_ids(fleet, b) for b in bots} == backups
    assert {b: current(fleet, b) for b in bots} == releases
    wait_trading(fleet, bots)


def test_graceful_restart_per_family_keeps_the_ledger_continuous(ops):
    fleet = ops["fleet"]
    pids = fleet.pids()
    before = {b: ledger(fleet, b) for b in FAMILY_BOTS}
    proc = invoke(ops, "restart", "--mode=graceful", f"--limit={','.join(FAMILY_BOTS)}")
    assert proc.returncode == 0, output(proc)
    report = summary(ops, "restart")["bots"]
    for bot in FAMILY_BOTS:
        row = report[bot]
        assert row["result"] == "ok" and row["mode"] == "graceful" and row["ready"] is True, (bot, row)
        assert row["release_after"] == "1.0.0", (bot, row)
        assert isinstance(row["downtime"], (int, float)) and 0 < row["downtime"] < 60, (bot, row)
        assert fleet.pids()[bot] != pids[bot], f"{bot} was not restarted"
        assert_mode(fleet, bot, "DRY")
    assert "downtime s" in proc.stdout
    wait_trading(fleet, FAMILY_BOTS)
    for bot in FAMILY_BOTS:
        count, top = ledger(fleet, bot)
        assert count == top, f"{bot}: {count} trades but max id {top}: a trade was lost or duplicated"
        assert top > before[bot][1], f"{bot}: the ledger went backwards or did not move: {before[bot]} -> {top}"


def test_recover_restart_verifies_the_recovered_state(ops):
    fleet = ops["fleet"]
    proc = invoke(ops, "restart", "--mode=recover", "--limit=bot06")
    assert proc.returncode == 0, output(proc)
    row = summary(ops, "restart")["bots"]["bot06"]
    assert row["result"] == "ok" and row["recovered"] == "5/5 checks", row
    assert {c["name"] for c in row["recovery"]} == {
        "execution mode", "paper flag", "kill switch level", "ledger continuous", "open positions"}
    count, top = ledger(fleet, "bot06")
    assert count == top


def waiting_connections(ports) -> int:
    """Connections waiting in the accept queues of these listening ports (/proc/net/tcp: a frozen
    process accepts none, so every request made to it since it froze is counted there)."""
    waiting = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) in ports:  # LISTEN
            waiting += int(fields[4].split(":")[1], 16)
    return waiting


@pytest.mark.slow  # the default suite keeps under 15 minutes; run with -m slow
def test_a_bot_late_to_answer_at_the_preflight_is_asked_again_not_refused(ops):
    """A bot that does not answer for a moment (its host loaded) when the preflight reads it is
    asked again: once it answers, it is restarted; it is never refused for that moment."""
    fleet = ops["fleet"]
    bot = "bot02"
    pid = fleet.pids()[bot]
    ports = set(fleet.bot(bot)["ports"].values())
    os.kill(pid, signal.SIGSTOP)  # it accepts no connection and answers nothing
    try:
        proc = subprocess.Popen([str(BOTOPS), "restart", f"--limit={bot}",
                                 f"--inventory={ops['inventory']}"], env=ops["env"], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
        # its readiness asked a third time: the preflight keeps asking rather than refuse it (asked once,
        # then its liveness once, a bot is refused)
        asked_again = wait_until(lambda: waiting_connections(ports) >= 3, timeout=60)
    finally:
        os.kill(pid, signal.SIGCONT)
    out, _ = proc.communicate(timeout=300)
    assert asked_again, f"the preflight did not ask the bot again:\n{out}"
    assert proc.returncode == 0, out
    row = summary(ops, "restart")["bots"][bot]
    assert row["result"] == "ok" and row["ready"] is True, row
    assert fleet.pids()[bot] != pid, f"{bot} was not restarted"
    wait_trading(fleet, [bot])


def test_backup_then_backups_verify_lists_it_verified(ops):
    fleet = ops["fleet"]
    bots = ["bot04", "bot05"]
    proc = invoke(ops, "backup", "--limit=bot04,bot05", "--label=ops test")
    assert proc.returncode == 0, output(proc)
    report = summary(ops, "backup")["bots"]
    for bot in bots:
        backup_id = report[bot]["backup_id"]
        assert backup_id in backup_ids(fleet, bot), (bot, report[bot])
        assert report[bot]["size_mb"] > 0 and report[bot]["duration"] > 0, report[bot]
        assert backup_id in proc.stdout
        ops["backups"][bot] = backup_id
    proc = invoke(ops, "backups", "--verify", "--limit=bot04,bot05")
    assert proc.returncode == 0, output(proc)
    for bot in bots:
        listed = {b["backup_id"]: b for b in summary(ops, "backups")["bots"][bot]["backups"]}
        assert listed[ops["backups"][bot]]["verified"] is True, listed
        assert listed[ops["backups"][bot]]["label"] == "ops test"
    line = next(line for line in proc.stdout.splitlines() if ops["backups"]["bot04"] in line)
    assert line.split()[0] == "bot04" and " yes " in line, line


@pytest.mark.slow  # the default suite keeps under 15 minutes; run with -m slow
def test_restore_latest_brings_back_the_rows_of_the_backup(ops):
    fleet = ops["fleet"]
    backup_id = ops["backups"].get("bot04")
    if backup_id is None:
        pytest.skip("needs the backup of test_backup_then_backups_verify_lists_it_verified")
    manifest = json.loads((Path(fleet.bot("bot04")["root"]) / "backups" / backup_id / "manifest.json").read_text())
    taken = manifest["database"]["ledger_max_id"]
    assert ledger(fleet, "bot04")[1] > taken  # the bot traded on since the backup
    # without a yes, nothing leaves the ledger: refused (exit 2), the rows it would take named, nothing changed
    pid, before = fleet.pids()["bot04"], ledger(fleet, "bot04")
    for check in ([], ["--check"]):
        refused = invoke(ops, "restore", "--backup=latest", "--limit=bot04", *check)
        assert refused.returncode == 2, output(refused)
        row = summary(ops, "restore")["bots"]["bot04"]
        assert row["result"] == "refused", row
        assert f"the live ledger would lose" in row["message"] and f"(ids {taken + 1}-" in row["message"], row
        assert "--accept-ledger-loss" in row["message"], row
    assert fleet.pids()["bot04"] == pid and ledger(fleet, "bot04")[1] >= before[1], "a refused restore changed the bot"
    started = time.time()
    proc = invoke(ops, "restore", "--backup=latest", "--limit=bot04", "--accept-ledger-loss")
    assert proc.returncode == 0, output(proc)
    row = summary(ops, "restore")["bots"]["bot04"]
    try:
        # what left the ledger is named, and is in the kept database
        assert f"trades row(s) (ids {taken + 1}-" in row["kept_aside"], row
        assert row["previous_database"] in row["kept_aside"], row
        assert row["result"] == "ok" and row["backup_id"] == backup_id and row["ready"] is True, row
        restored = row["rows"]
        assert (restored["row_counts"], restored["ledger_max_id"]) == (manifest["database"]["row_counts"], taken), row
        assert isinstance(row["downtime"], (int, float)) and row["downtime"] > 0, row
        # ids are never reused: the next trade's id is above the kept database's highest, written after
        # the restore began
        with psycopg.connect(fleet.bot("bot04")["database_url"], dbname=row["previous_database"],
                             autocommit=True, connect_timeout=5) as conn:
            kept_max = int(conn.execute("SELECT coalesce(max(id), 0) FROM trades").fetchone()[0])
        assert kept_max > taken, kept_max
        wait_trading(fleet, ["bot04"])
        below, reused = fleet.db_query("bot04", "SELECT (SELECT count(*) FROM trades WHERE id <= %s), "
                                                "(SELECT count(*) FROM trades WHERE id > %s AND id <= %s)",
                                       (taken, taken, kept_max))[0]
        assert (int(below), int(reused)) == (taken, 0), (below, reused, taken, kept_max)
        (ts,) = fleet.db_query("bot04", "SELECT extract(epoch FROM ts) FROM trades WHERE id = %s", (kept_max + 1,))[0]
        assert float(ts) >= started - 1, "trade after the kept database's last one predates the restore"
        assert_mode(fleet, "bot04", "DRY")
    finally:
        if row.get("previous_database"):
            drop_database(fleet, "bot04", row["previous_database"])


def test_restore_with_carry_forward_keeps_every_trade_and_its_id(ops):
    """An older backup on the same schema: the trades made since come along, with their ids and
    content; the positions are the ones the bot held at the stop; nothing is kept aside."""
    fleet = ops["fleet"]
    backup_id = ops["backups"].get("bot05")
    if backup_id is None:
        pytest.skip("needs the backup of test_backup_then_backups_verify_lists_it_verified")
    taken = json.loads((Path(fleet.bot("bot05")["root"]) / "backups" / backup_id / "manifest.json").read_text())[
        "database"]["ledger_max_id"]
    check = invoke(ops, "restore", f"--backup={backup_id}", "--limit=bot05", "--carry-forward", "--check")
    assert check.returncode == 0, output(check)
    planned = summary(ops, "restore")["bots"]["bot05"]["ledger"]["carried"]
    assert planned["trades"] > 0 and "positions" in planned, planned
    proc = invoke(ops, "restore", f"--backup={backup_id}", "--limit=bot05", "--carry-forward")
    assert proc.returncode == 0, output(proc)
    row = summary(ops, "restore")["bots"]["bot05"]
    try:
        assert row["result"] == "ok" and row["kept_aside"] == "none", row
        assert row["ledger"]["carried"]["trades"] > 0 and row["carried_forward"].startswith(
            f"{row['ledger']['carried']['trades']} trades"), row
        with psycopg.connect(fleet.bot("bot05")["database_url"], dbname=row["previous_database"],
                             autocommit=True, connect_timeout=5) as conn:
            kept = conn.execute("SELECT id, ts, symbol, side, qty, price FROM trades ORDER BY id").fetchall()
            kept_open = conn.execute("SELECT id FROM positions WHERE status = 'open' ORDER BY id").fetchall()
        assert kept[-1][0] == len(kept) and row["ledger"]["carried"]["trades"] == len(kept) - taken
        live = fleet.db_query("bot05", "SELECT id, ts, symbol, side, qty, price FROM trades WHERE id <= %s "
                                       "ORDER BY id", (len(kept),))
        assert live == kept, "the live ledger differs from the replaced database's"
        ids = [r[0] for r in kept_open]
        still = fleet.db_query("bot05", "SELECT count(*) FROM positions WHERE id = ANY(%s)", (ids,))[0][0]
        assert still == len(ids), "a position the bot held at the stop is gone"
        wait_trading(fleet, ["bot05"])
        count, top = ledger(fleet, "bot05")
        assert count == top and top > len(kept), (count, top, len(kept))
    finally:
        if row.get("previous_database"):
            drop_database(fleet, "bot05", row["previous_database"])


def test_releases_lists_current_and_status(ops):
    proc = invoke(ops, "releases", "--limit=bot01,bot02")
    assert proc.returncode == 0, output(proc)
    report = summary(ops, "releases")["bots"]
    for bot in ("bot01", "bot02"):
        assert report[bot]["current"] == "1.0.0"
        assert [r["version"] for r in report[bot]["releases"] if r["current"]] == ["1.0.0"]
    assert "1.0.0 good*" in proc.stdout


def test_promote_refuses_failed_checks_and_goes_live_only_when_all_pass(ops):
    """bot02 is paper-only: refused, stays DRY. bot03's kill switch is engaged by an operator: a
    restart and a promote skip it (exit 5 for the restart), it stays halted and DRY. bot05 (vanta)
    passes every check (verified backup above, kill switch engaged and released just now): LIVE, then
    back to DRY."""
    fleet = ops["fleet"]
    if "bot05" not in ops["backups"]:
        pytest.skip("needs the verified backup of test_backup_then_backups_verify_lists_it_verified")
    try:
        proc = invoke(ops, "kill-switch", "--level=halt", "--reason=go/no-go test", "--limit=bot03,bot05")
        assert proc.returncode == 0, output(proc)
        proc = invoke(ops, "kill-switch", "--release", "--level=halt", "--limit=bot05")
        assert proc.returncode == 0, output(proc)

        pid = fleet.pids()["bot03"]
        proc = invoke(ops, "restart", "--limit=bot03")
        assert proc.returncode == 5, output(proc)
        row = summary(ops, "restart")["bots"]["bot03"]
        assert row["result"] == "skipped" and row["message"].startswith("skipped: kill switch halt engaged by"), row
        assert fleet.pids()["bot03"] == pid, "a skipped restart restarted the bot"

        proc = invoke(ops, "promote", "--to=live", "--limit=bot02,bot03,bot05")
        assert proc.returncode == 1, output(proc)
        report = summary(ops, "promote")["bots"]
        failed = {b: {c["name"] for c in report[b]["checks"] if not c["passed"]} for b in ("bot02", "bot05")}
        assert "not paper-only" in failed["bot02"], report["bot02"]
        assert failed["bot05"] == set(), report["bot05"]
        assert report["bot02"]["result"] == "refused"
        assert report["bot03"]["result"] == "skipped", report["bot03"]
        assert report["bot03"]["message"].startswith("skipped: kill switch halt engaged by"), report["bot03"]
        assert report["bot05"]["result"] == "changed" and report["bot05"]["mode_after"] == "LIVE"
        assert_mode(fleet, "bot02", "DRY")
        assert_mode(fleet, "bot03", "DRY")
        assert_mode(fleet, "bot05", "LIVE")
        assert "stays DRY" in proc.stdout and "DRY -> LIVE" in proc.stdout

        proc = invoke(ops, "promote", "--to=dry", "--limit=bot05")
        assert proc.returncode == 0, output(proc)
        assert_mode(fleet, "bot05", "DRY")
    finally:
        restore_fleet(fleet, ["bot02", "bot03", "bot05"])
