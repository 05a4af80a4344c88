"""Faults, injected for real into the fleet tasks on a fleet of their own (one bot per family).

Each case runs the task the way an operator does (`invoke ...` in a subprocess), injects one fault
at a precise point found by polling (PostgreSQL stopped inside pg_dump, a bot SIGKILLed right after
the deploy started it, the controller's whole process tree SIGKILLed while the scratch database
exists, a full file system, stopped or unreachable bots, two runs at once), then checks what the
task reported and the real state, and ends on the invariant every fault must keep: no trade was
lost (the ledger's ids are continuous, count(*) == max(id), and no row count went back, or they
equal the backup's manifest where a backup was restored). Every case leaves the fleet running,
ready and released for the next.

    bot01 mojorust   bot02 papertrader   bot03 solana-cli   bot04 hyperliquid   bot05 vanta

The suite waits out real timeouts (a broken release's readiness gate, supervisord's stop timeout
for a frozen bot): about four minutes on a quiet two-core machine, so it is in the slow tier
(`pytest -m slow tests/faults`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest
import yaml

from botops import profiles
from botops.sandbox.fleet import STOPPED_STATES, free_port
from botops.sandbox.refbot.trading import WRITER_LOCK_KEY
from tests.integration.fleet_tasks import (
    assert_continuous, backups, current, invoke, last_summary, output, revision, root, row_counts,
    trades, wait_growth,
)

from .conftest import BOTS
from .faults import (
    HeldDump, alive, databases, drop_probe, dump_waiting, finish, full_filesystem, kill_tree, poll, query_in,
)

pytestmark = pytest.mark.slow

READY_TIMEOUT = 120


def assert_nothing_lost(ops, bot: str, at_least: int) -> None:
    """The bot is ready and trading, its ledger continuous and at least `at_least` trades long."""
    ops["fleet"].wait_ready([bot], timeout=READY_TIMEOUT)
    wait_growth(ops, bot, timeout=60)
    assert_continuous(ops, bot)
    count = trades(ops, bot)[0]
    assert count >= at_least, f"{bot}: {count} trades, {at_least} before the fault: trades were lost"


def manifest(ops, bot: str, backup_id: str) -> dict:
    return json.loads((root(ops, bot) / "backups" / backup_id / "manifest.json").read_text())


def temp_sets(ops, bot: str) -> list[str]:
    path = root(ops, bot) / "backups"
    return sorted(p.name for p in path.glob(".tmp-*")) if path.exists() else []


def audit_lines(ops, bot: str) -> int:
    """Records in the bot's own kill-switch audit log (every engage and release appends one)."""
    path = root(ops, bot) / "shared" / "data" / "botops-kill-switch.log"
    return len(path.read_text().splitlines()) if path.exists() else 0


def table_row(text: str, bot: str) -> str:
    """The line of the task's table for this bot."""
    rows = [line for line in text.splitlines() if line.startswith(f"{bot} ")]
    assert rows, f"no table row for {bot} in:\n{text[-3000:]}"
    return rows[-1]


@contextlib.contextmanager
def background(proc):
    """A background run that is killed (with its whole tree) if the test fails while it runs."""
    try:
        yield proc
    finally:
        if proc.poll() is None:
            kill_tree(proc.pid)
            proc.wait()


# ----------------------------------------------------------------------------- the faults
def test_database_down_during_a_backup(ops):
    """PostgreSQL stops while every bot's pg_dump runs: each backup fails naming pg_dump, no set is
    left behind (complete-looking or .tmp-) or listed, and the bots trade on once it is back."""
    fleet = ops["fleet"]
    before = {bot: trades(ops, bot)[0] for bot in BOTS}
    sets = {bot: backups(ops, bot) for bot in BOTS}
    try:
        with contextlib.ExitStack() as held:
            for bot in BOTS:
                held.enter_context(HeldDump(ops, bot))
            with background(invoke(ops, "backup", "--label=fault drill", background=True)) as proc:
                poll(lambda: all(dump_waiting(ops, bot) for bot in BOTS), 300,
                     "every bot's backup to be inside pg_dump", proc)
                started = {bot: temp_sets(ops, bot) for bot in BOTS}
                fleet.pg_stop()
                out = finish(proc)
    finally:
        fleet.pg_start()
        for bot in BOTS:
            drop_probe(ops, bot)

    assert proc.returncode == 1, out
    summary = last_summary(ops, "backup")
    listing = invoke(ops, "backups")
    assert listing.returncode == 0, output(listing)
    for bot in BOTS:
        assert len(started[bot]) == 1, f"{bot}: expected one set being written, saw {started[bot]}"
        failed_id = started[bot][0].removeprefix(".tmp-")
        row = summary["bots"][bot]
        assert row["result"] == "failed", row
        assert f"Failed to back up bot '{bot}'" in row["message"] and "pg_dump" in row["message"], row
        assert backups(ops, bot) == sets[bot], f"{bot}: a failed backup left a set"
        assert temp_sets(ops, bot) == [], f"{bot}: the failed backup left its temporary directory"
        assert failed_id not in listing.stdout, f"{bot}: the failed backup {failed_id} is listed"
    for bot in BOTS:
        assert_nothing_lost(ops, bot, before[bot])


def test_bot_crash_in_the_middle_of_a_deploy(ops):
    """The bot is SIGKILLed the moment the deploy switched it to the new release and started it:
    the process manager restarts it, the readiness gate waits it out, the deploy ends ok on the new
    release and schema, and the ledger is whole (the deploy's backup holds a consistent snapshot)."""
    fleet, bot = ops["fleet"], "bot02"
    old_pid, release, before = fleet.pids()[bot], current(ops, bot), trades(ops, bot)[0]
    assert release == "1.0.0"

    def started_on_new_release():
        pid = fleet.pids().get(bot)
        return pid if pid and pid != old_pid and current(ops, bot) == "1.1.0" else None

    with background(invoke(ops, "deploy", "--version=1.1.0", f"--limit={bot}", background=True)) as proc:
        crashed = poll(started_on_new_release, 300, f"the deploy to switch {bot} to 1.1.0 and start it", proc)
        os.kill(crashed, signal.SIGKILL)
        out = finish(proc)

    assert proc.returncode == 0, out
    row = last_summary(ops, "deploy")["bots"][bot]
    assert (row["result"], row["release_before"], row["release_after"]) == ("ok", release, "1.1.0"), row
    assert row["ready"] is True, row
    assert not alive(crashed)
    assert fleet.pids()[bot] not in (old_pid, crashed), "the crashed process was not replaced"
    assert (current(ops, bot), revision(ops, bot)) == ("1.1.0", "0002_trade_fee")
    db = manifest(ops, bot, row["backup_id"])["database"]
    assert db["ledger_max_id"] == db["row_counts"]["trades"] <= trades(ops, bot)[0], db
    assert_nothing_lost(ops, bot, before)


def test_broken_release_in_the_canary(ops):
    """A release that never gets ready stops at the canary: it rolls itself back (release and
    schema), the release is marked bad, the task exits non-zero, and no other bot is touched (same
    process, release, no copy of the broken release installed)."""
    fleet = ops["fleet"]
    pids = fleet.pids()
    state = {bot: (current(ops, bot), revision(ops, bot), trades(ops, bot)[0]) for bot in BOTS}

    proc = invoke(ops, "deploy", "--version=1.2.0-broken", "--canary=1")

    assert proc.returncode == 1, output(proc)
    summary = last_summary(ops, "deploy")
    touched = [bot for bot, row in summary["bots"].items() if row["result"] != "ok" or row.get("backup_id")]
    assert len(touched) == 1, summary["bots"]
    canary = touched[0]
    assert summary["bots"][canary]["result"] == "rolled back", summary["bots"][canary]
    assert "rolled back" in table_row(proc.stdout, canary)
    ledger = (root(ops, canary) / "releases" / "ledger.json").read_text()
    assert '"bad"' in ledger
    for bot in BOTS:
        release, schema, before = state[bot]
        assert (current(ops, bot), revision(ops, bot)) == (release, schema), bot
        if bot != canary:
            assert fleet.pids()[bot] == pids[bot], f"{bot} was restarted although only the canary deployed"
            assert not (root(ops, bot) / "releases" / "1.2.0-broken").exists(), bot
        assert_nothing_lost(ops, bot, before)


def test_controller_killed_during_a_restore(ops):
    """The controller (invoke, ansible-runner, ansible-playbook, the module, pg_restore) is SIGKILLed
    while the scratch database is being restored: the live database is untouched and keeps its
    trades, the next restore is refused because of the stale lock the dead run left, and
    `--takeover` completes the restore (the trades made since the backup carried forward), nothing
    of the replaced database lost (it is kept, and every trade it holds is in the live one).

    The killed run had paused the bot and could not release the pause: the takeover releases it at
    the end, because its audit record names the crashed run whose lock it took over (a pause an
    operator engaged would be left as it is)."""
    fleet, bot = ops["fleet"], "bot03"
    name = fleet.bot(bot)["database"]["name"]
    # a bigger database, so that the scratch restore takes long enough to be caught in the middle
    fleet.db_query(bot, "CREATE TABLE botops_fault_filler AS "
                        "SELECT g AS id, md5(g::text) || md5((g + 1)::text) AS pad FROM generate_series(1, 200000) g")
    taken = invoke(ops, "backup", f"--limit={bot}", "--label=before the crash")
    assert taken.returncode == 0, output(taken)
    backup_id = last_summary(ops, "backup")["bots"][bot]["backup_id"]
    expected = manifest(ops, bot, backup_id)["database"]
    dbs = databases(ops, bot)

    restore = ["restore", f"--backup={backup_id}", f"--limit={bot}", "--carry-forward"]
    with background(invoke(ops, *restore, background=True)) as proc:
        scratch = poll(lambda: [d for d in databases(ops, bot) - dbs if d.startswith(f"{name}_restore_")], 300,
                       f"the restore of {bot} to create its scratch database", proc)
        killed = kill_tree(proc.pid)
        proc.wait()
    poll(lambda: not any(alive(pid) for pid in killed), 30, "every killed process to be gone")

    # the live database is intact and still the live one; the scratch copy is what is left over
    assert databases(ops, bot) == dbs | set(scratch)
    count, top = trades(ops, bot)
    assert count == top >= expected["ledger_max_id"], (count, top, expected)
    assert all(n >= expected["row_counts"][t] for t, n in row_counts(ops, bot).items()), row_counts(ops, bot)
    live_before = trades(ops, bot)[0]

    refused = invoke(ops, *restore)
    assert refused.returncode == 2, output(refused)
    assert "stale lock" in output(refused) and f"process {proc.pid}" in output(refused), output(refused)
    assert "--takeover" in output(refused)

    audit = root(ops, bot) / "shared" / "data" / "botops-kill-switch.log"
    paused = [json.loads(line) for line in audit.read_text().splitlines()][-1]
    assert paused["action"] == "engage" and paused["level"] == "pause", paused  # the dead run's pause, still on

    recovered = invoke(ops, *restore, "--takeover")
    assert recovered.returncode == 0, output(recovered)
    # the crashed run's pause is lifted (this family keeps it in memory: the restart lifts it, and
    # the takeover does not put it back as it would an operator's) and nothing new was engaged
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    assert not [r for r in records if r["action"] == "engage" and r["time"] > paused["time"]], records[-1]
    probe = invoke(ops, "kill-switch", "--level=pause", "--check", "--reason=is it paused", f"--limit={bot}")
    assert probe.returncode == 0, output(probe)
    assert last_summary(ops, "kill_switch")["bots"][bot]["result"] == "changed", "still paused: " + output(probe)
    wait_growth(ops, bot, timeout=60)  # trading again
    row = last_summary(ops, "restore")["bots"][bot]
    assert row["kept_aside"] == "none" and row["ledger"]["carried"]["trades"] > 0, row
    assert row["rows"]["ledger_max_id"] >= live_before, row
    assert not any(Path(ops["dir"], "locks").glob("*.lock")), "the fleet lock was not given back"
    assert not (root(ops, bot) / "shared" / "data" / "botops.lock").exists(), "the bot's lock was not given back"
    after = databases(ops, bot)
    assert not [d for d in after if d.startswith(f"{name}_restore_")], f"scratch database left: {sorted(after)}"
    previous = row["previous_database"]
    assert previous in after, row
    kept = query_in(ops, bot, previous, "SELECT count(*), max(id) FROM trades")[0]
    assert kept[0] == kept[1] >= live_before, f"the replaced database {previous} lost trades: {kept}"
    assert_nothing_lost(ops, bot, kept[0])  # every trade it holds is in the live ledger, which goes on
    fleet.db_query(bot, "DROP TABLE IF EXISTS botops_fault_filler")


def test_corrupted_or_truncated_backup_is_refused_before_anything_is_touched(ops):
    """A set with a truncated dump and a corrupted file is refused, naming both, before the bot is
    touched: same process, no pause engaged, no safety backup, no new database, trades growing."""
    fleet, bot = ops["fleet"], "bot04"
    taken = invoke(ops, "backup", f"--limit={bot}", "--label=to be damaged")
    assert taken.returncode == 0, output(taken)
    backup_id = last_summary(ops, "backup")["bots"][bot]["backup_id"]
    files = manifest(ops, bot, backup_id)["files"]
    dump = next(name for name in files if name.startswith("database."))
    set_dir = root(ops, bot) / "backups" / backup_id
    with open(set_dir / dump, "r+b") as f:  # truncated: half of the dump is gone
        f.truncate(files[dump]["size"] // 2)
    data = bytearray((set_dir / "files.tar.gz").read_bytes())  # corrupted: one byte flipped, same size
    data[len(data) // 2] ^= 0xFF
    (set_dir / "files.tar.gz").write_bytes(data)
    pid, sets, dbs, audit = fleet.pids()[bot], backups(ops, bot), databases(ops, bot), audit_lines(ops, bot)
    before = trades(ops, bot)[0]

    proc = invoke(ops, "restore", f"--backup={backup_id}", f"--limit={bot}")

    assert proc.returncode == 1, output(proc)
    text = output(proc)
    assert "refusing to restore, nothing was touched" in text, text
    assert f"{dump}: size {files[dump]['size'] // 2} != {files[dump]['size']}" in text, text
    assert "files.tar.gz: sha256 mismatch" in text, text
    assert "failed" in table_row(proc.stdout, bot)
    assert fleet.pids()[bot] == pid, "the bot was restarted"
    assert audit_lines(ops, bot) == audit, "the kill switch was engaged (a pause) for a restore that was refused"
    assert backups(ops, bot) == sets, "a safety backup was taken for a restore that was refused"
    assert databases(ops, bot) == dbs, "a database was created for a restore that was refused"
    assert_nothing_lost(ops, bot, before)
    assert fleet.pids()[bot] == pid
    shutil.rmtree(set_dir)


def test_kill_switch_with_bots_that_time_out_or_refuse_connections(ops):
    """`kill-switch --level=halt` while two bots are frozen (SIGSTOP: their API times out) and one
    refuses connections (its API port is closed): the healthy bots are halted by their first rung
    within its timeout, not held up by the others; each stuck bot goes down its escalation ladder
    (service stop, signals) until its process is gone, with a row naming the rung that worked. The
    release brings every bot back to trading with a continuous ledger."""
    fleet = ops["fleet"]
    frozen, refusing = ["bot02", "bot05"], "bot04"
    healthy = [bot for bot in BOTS if bot not in frozen and bot != refusing]
    hosts = yaml.safe_load(Path(ops["inventory"]).read_text())
    for group in hosts["sandbox"]["children"].values():
        if refusing in (group.get("hosts") or {}):
            group["hosts"][refusing]["bot_ports"]["api"] = free_port()  # nothing listens there
    inventory = ops["dir"] / "inventory-refusing"
    inventory.mkdir(exist_ok=True)
    (inventory / "hosts.yml").write_text(yaml.safe_dump(hosts))
    if not (inventory / "host_vars").exists():
        (inventory / "host_vars").symlink_to(Path(ops["inventory"]).parent / "host_vars")
    before = {bot: trades(ops, bot)[0] for bot in BOTS}
    pids = fleet.pids()
    for bot in frozen:
        os.kill(pids[bot], signal.SIGSTOP)
    try:
        proc = invoke(ops, "kill-switch", "--level=halt", "--reason=fault drill: stuck bots",
                      inventory=str(inventory / "hosts.yml"))
    finally:
        for bot in frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pids[bot], signal.SIGCONT)

    text = output(proc)
    # the bot whose port is wrong is halted all the same, and fails, naming what to fix
    assert proc.returncode == 1, text
    assert f"kill-switch: failed for {refusing}" in text, text
    rows = last_summary(ops, "kill_switch")["bots"]
    for bot in BOTS:
        expected = "failed" if bot == refusing else "changed"
        assert rows[bot]["result"] == expected and rows[bot]["level"] == "halt", (bot, rows[bot])
    assert rows[refusing]["message"].startswith("nothing listens at its API's address"), rows[refusing]
    for bot in healthy:
        profile = profiles.load(fleet.bot(bot)["family"])
        rungs = profile["kill_switch"]["levels"]["halt"]["engage"] or profile["kill_switch"]["escalation"]
        first = next(rung for rung in rungs if rung.get("ends_walk", True))  # past the SIGCONT that thaws
        limit = float(first.get("timeout", 5.0)) + 2 * float(profile["http"]["timeout"])
        assert rows[bot]["rung"] == first["name"], (bot, rows[bot])
        assert rows[bot]["duration"] <= limit, f"{bot} took {rows[bot]['duration']}s (its rung allows {limit}s)"
    for bot in frozen + [refusing]:
        profile = profiles.load(fleet.bot(bot)["family"])
        escalation = [rung["name"] for rung in profile["kill_switch"]["escalation"]]
        assert rows[bot]["rung"] in escalation, (bot, rows[bot])
        assert rows[bot]["rung"] in table_row(proc.stdout, bot), table_row(proc.stdout, bot)
        assert fleet.processes()[bot]["statename"] in STOPPED_STATES, (bot, fleet.processes()[bot])
        assert not alive(pids[bot]), f"{bot}: the stuck process is still there"
    slowest_healthy = max(rows[bot]["duration"] for bot in healthy)
    fastest_stuck = min(rows[bot]["duration"] for bot in frozen)
    assert slowest_healthy < fastest_stuck, "the healthy bots waited for the stuck ones"
    halted = {bot: trades(ops, bot)[0] for bot in BOTS}
    time.sleep(1.0)  # ten trade intervals: a halted bot writes no trade
    assert {bot: trades(ops, bot)[0] for bot in BOTS} == halted, "a bot still trades after the halt"

    released = invoke(ops, "kill-switch", "--release", "--level=halt")
    assert released.returncode == 0, output(released)
    for bot in BOTS:
        assert_nothing_lost(ops, bot, before[bot])


def test_deploy_and_maintenance_started_at_once(ops):
    """A deploy (bot03, bot04) and a maintenance run (bot04) started in the same instant: they share a
    bot, so one takes the fleet lock (every targeted bot's) and completes, the other exits 2 naming
    the lock and the run holding it, having changed nothing on any of its bots."""
    deployed, maintained = ["bot03", "bot04"], "bot04"
    release = {bot: current(ops, bot) for bot in deployed}
    record = root(ops, maintained) / "shared" / "data" / "botops-maintenance-daily.json"
    sets = backups(ops, maintained)
    before = {bot: trades(ops, bot)[0] for bot in deployed}

    runs = {
        "deploy": invoke(ops, "deploy", "--version=1.1.0", f"--limit={','.join(deployed)}", background=True),
        "maintenance": invoke(ops, "maintenance", "--window=daily", "--force", f"--limit={maintained}",
                              background=True),
    }
    with background(runs["deploy"]), background(runs["maintenance"]):
        outs = {task: finish(proc) for task, proc in runs.items()}

    codes = {task: proc.returncode for task, proc in runs.items()}
    assert sorted(codes.values()) == [0, 2], (codes, outs)
    winner = next(task for task, code in codes.items() if code == 0)
    loser = next(task for task, code in codes.items() if code == 2)
    assert f"{loser}: refused, the fleet lock" in outs[loser], outs[loser]
    assert f"({winner})" in outs[loser] and "Wait for that run to finish" in outs[loser], outs[loser]
    assert not any(Path(ops["dir"], "locks").glob("*.lock")), "the fleet lock was not given back"
    if winner == "deploy":
        assert all(current(ops, bot) == "1.1.0" for bot in deployed)
        taken = last_summary(ops, "deploy")["bots"][maintained]["backup_id"]  # the deploy's own backup
        assert not record.exists() and set(backups(ops, maintained)) - set(sets) == {taken}, \
            "the refused maintenance did something"
    else:
        assert json.loads(record.read_text())["backup_id"] in backups(ops, maintained)
        assert {bot: current(ops, bot) for bot in deployed} == release, "the refused deploy did something"
    for bot in deployed:
        assert_nothing_lost(ops, bot, before[bot])


def test_backup_disk_full(ops):
    """The backups file system fills up during the dump: the backup fails naming the full disk,
    no partial set is left or listed, the bot trades on untouched; with space again the next
    backup is complete."""
    fleet, bot = ops["fleet"], "bot01"
    store = root(ops, bot) / "backups"
    aside = root(ops, bot) / "backups.aside"
    pid, before = fleet.pids()[bot], trades(ops, bot)[0]
    with full_filesystem(ops["dir"] / "full-disk", free_bytes=16384) as disk:
        if store.exists():
            store.rename(aside)
        store.symlink_to(disk)
        try:
            proc = invoke(ops, "backup", f"--limit={bot}", "--label=disk full")
            assert proc.returncode == 1, output(proc)
            assert "No space left on device" in output(proc), output(proc)
            assert sorted(p.name for p in disk.iterdir()) == [".fill", ".lock"], "a partial set was left"
            listing = invoke(ops, "backups", f"--limit={bot}")
            assert listing.returncode == 0, output(listing)
            assert "no backups" in table_row(listing.stdout, bot), listing.stdout
            assert fleet.pids()[bot] == pid, "the bot was restarted"
            assert_nothing_lost(ops, bot, before)

            (disk / ".fill").unlink()
            proc = invoke(ops, "backup", f"--limit={bot}", "--label=space again")
            assert proc.returncode == 0, output(proc)
            backup_id = last_summary(ops, "backup")["bots"][bot]["backup_id"]
            assert backups(ops, bot) == [backup_id]
            db = manifest(ops, bot, backup_id)["database"]
            assert db["ledger_max_id"] == db["row_counts"]["trades"] >= before, db
        finally:
            store.unlink()
            if aside.exists():
                aside.rename(store)
    assert fleet.pids()[bot] == pid
    assert_nothing_lost(ops, bot, before)


def test_bot_killed_during_maintenance_is_recovered_and_verified(ops):
    """The bot is SIGKILLed while the maintenance window's backup dumps its database: the process
    manager restarts it, the backup completes from its snapshot, and the window ends with the bot
    verified ready; the ledger is continuous and the set consistent."""
    fleet, bot = ops["fleet"], "bot05"
    old_pid, before = fleet.pids()[bot], trades(ops, bot)[0]
    try:
        with HeldDump(ops, bot) as dump, background(
                invoke(ops, "maintenance", "--window=daily", "--force", f"--limit={bot}", background=True)) as proc:
            poll(lambda: dump_waiting(ops, bot), 300, f"the maintenance of {bot} to be inside its backup", proc)
            os.kill(old_pid, signal.SIGKILL)
            poll(lambda: fleet.pids().get(bot) not in (None, old_pid), 60, f"the process manager to restart {bot}",
                 proc)
            dump.release()  # the dump goes on
            out = finish(proc)
    finally:
        drop_probe(ops, bot)

    assert proc.returncode == 0, out
    row = last_summary(ops, "maintenance")["bots"][bot]
    assert (row["result"], row["ready"]) == ("maintained", True), row
    assert not alive(old_pid)
    db = manifest(ops, bot, row["backup_id"])["database"]
    assert db["ledger_max_id"] == db["row_counts"]["trades"], db
    assert_nothing_lost(ops, bot, before)


def test_controller_killed_in_the_middle_of_the_carry_forward(ops):
    """A restore with --carry-forward is SIGKILLed (the controller's whole tree) while it writes the
    trades made since the backup into the restored copy: the live database is the old one, whole
    (the copy is written in one transaction and swapped in only after it), and `--takeover` carries
    every trade, with its id, into the database it then swaps in; the carry's files are gone."""
    fleet, bot = ops["fleet"], "bot01"
    taken = invoke(ops, "backup", f"--limit={bot}", "--label=before the carry")
    assert taken.returncode == 0, output(taken)
    backup_id = last_summary(ops, "backup")["bots"][bot]["backup_id"]
    backup_max = manifest(ops, bot, backup_id)["database"]["ledger_max_id"]
    # many trades since the backup (written as the bot writes them: max(id)+1 under its writer lock),
    # so that the carry takes long enough to be caught in the middle
    fleet.db_query(bot, "DO $$ BEGIN PERFORM pg_advisory_xact_lock(%d); "
                        "INSERT INTO trades (id, ts, symbol, side, qty, price, mode, paper) "
                        "SELECT m + g, now(), 'BTC-USD', 'buy', 0.001, 100, 'DRY', true "
                        "FROM (SELECT max(id) AS m FROM trades) x, generate_series(1, 400000) g; END $$"
                   % WRITER_LOCK_KEY)
    dbs = databases(ops, bot)
    store = root(ops, bot) / "backups"

    restore = ["restore", f"--backup={backup_id}", f"--limit={bot}", "--carry-forward"]
    with background(invoke(ops, *restore, background=True)) as proc:
        poll(lambda: list(store.glob(".tmp-carry-*/carry.sql")), 300, f"the restore of {bot} to carry its trades", proc)
        killed = kill_tree(proc.pid)
        proc.wait()
    poll(lambda: not any(alive(pid) for pid in killed), 30, "every killed process to be gone")

    # the live database is the old one, whole: continuous, every trade there
    name = fleet.bot(bot)["database"]["name"]
    assert {d for d in databases(ops, bot) - dbs if not d.startswith(f"{name}_restore_")} == set()
    count, top = trades(ops, bot)
    assert count == top > backup_max + 400000, (count, top)

    recovered = invoke(ops, *restore, "--takeover")
    assert recovered.returncode == 0, output(recovered)
    row = last_summary(ops, "restore")["bots"][bot]
    assert row["kept_aside"] == "none" and row["ledger"]["carried"]["trades"] >= top - backup_max, row
    assert not list(store.glob(".tmp-carry-*")), "the killed run's carry files were left"
    kept = query_in(ops, bot, row["previous_database"], "SELECT count(*), max(id) FROM trades")[0]
    assert kept[0] == kept[1] >= top, kept
    assert_nothing_lost(ops, bot, kept[0])
    name = fleet.bot(bot)["database"]["name"]
    assert not [d for d in databases(ops, bot) if d.startswith(f"{name}_restore_")], "a scratch database was left"


def test_a_restore_failing_on_a_full_disk_releases_its_pause(ops):
    """The backup file system fills up during the restore's safety backup: the restore fails, the
    live database untouched, and the pause it engaged (hyperliquid's circuit breaker) is released:
    the bot trades again and the failure says so."""
    fleet, bot = ops["fleet"], "bot04"
    taken = invoke(ops, "backup", f"--limit={bot}", "--label=before the full disk")
    assert taken.returncode == 0, output(taken)
    backup_id = last_summary(ops, "backup")["bots"][bot]["backup_id"]
    store = root(ops, bot) / "backups"
    aside = root(ops, bot) / "backups.aside"
    before = trades(ops, bot)[0]
    with full_filesystem(ops["dir"] / "full-restore", free_bytes=16384, size="16m") as disk:
        (disk / ".fill").unlink()
        shutil.copytree(store / backup_id, disk / backup_id)
        with open(disk / ".fill", "wb") as f:
            st = os.statvfs(disk)
            f.write(b"\0" * max(0, st.f_bavail * st.f_frsize - 16384))
        store.rename(aside)
        store.symlink_to(disk)
        try:
            proc = invoke(ops, "restore", f"--backup={backup_id}", f"--limit={bot}", "--accept-ledger-loss")
            assert proc.returncode == 1, output(proc)
            row = last_summary(ops, "restore")["bots"][bot]
            assert "No space left on device" in row["message"], row
            assert "the live database was not touched" in row["message"], row
            assert "its pause was released" in row["message"], row
        finally:
            store.unlink()
            aside.rename(store)
    assert_nothing_lost(ops, bot, before)  # trading again: the circuit breaker is closed
