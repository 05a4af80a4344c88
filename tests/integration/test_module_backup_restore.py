"""bot_backup, bot_backup_info and bot_restore on a sandbox fleet of their own, through real Ansible.

Every bot (every PostgreSQL family) takes a backup in the rhythm check mode -> apply -> apply
again and verifies it with a test restore; the sets are checked on disk (modes, checksums, counts
taken in the dump's snapshot: the ledger's count equals its max id). Two bots of two families then
make the slow round trip: trade on, restore (check mode leaves bot and database alone; the restore
brings back exactly what the backup holds, keeps the replaced database, restarts the bot, which
trades on from there), restore with the bot stopped, then again (unchanged), refuse a corrupted
set before touching anything (bot never stopped, ledger never goes back), and apply retention. The fleet ends as it started: every bot running
and ready, no backup sets, no scratch or previous databases (a fixture cleans up even on failure).
"""

from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

try:  # tests/integration as a package or as a plain directory on sys.path
    from .conftest import FLEET_BOTS, FLEET_TRADE_INTERVAL, make_sandbox_dir, port_block
    from .playbook import run_playbook
except ImportError:
    from conftest import FLEET_BOTS, FLEET_TRADE_INTERVAL, make_sandbox_dir, port_block
    from playbook import run_playbook

from ansible_collections.botops.fleet.plugins.module_utils.botops_backup_store import derived_db_name, sha256_file
from botops.sandbox.fleet import Fleet, wait_until

ALL = ["bot01", "bot02", "bot03", "bot04", "bot05", "bot06"]
SLOW = ["bot01", "bot04"]  # mojorust (SIGTERM closes positions), hyperliquid (token auth)
BACKUP_ID = "20261121T020000Z-it-{{ inventory_hostname }}"
CORRUPT_ID = "20261121T010000Z-it-corrupt"
NEWEST_ID = "20261122T020000Z-it-newest"



@pytest.fixture(scope="module")
def fleet():
    """A fleet of this module's own, shaped like the shared one: the restores here accept the loss of
    the trades made since the backup, and the ids those kept-aside trades hold are never reused, so
    the ledgers are left with a gap that the continuity checks of the shared fleet's tests must not see."""
    workdir = make_sandbox_dir("botops-backup-restore-")
    own = None
    try:
        with port_block(FLEET_BOTS, 30500) as base:
            own = Fleet(workdir / "state", workdir / "inventory", base_port=base)
            own.up(bots=FLEET_BOTS, trade_interval=FLEET_TRADE_INTERVAL)
        yield own
    finally:
        if own is not None:
            own.down(purge=True)
        shutil.rmtree(workdir, ignore_errors=True)


COMMON = """\
profile: "{{ botops_profile }}"
        bot: "{{ botops_bot }}"
        secrets: "{{ botops_secrets }}"\
"""


def play(tasks: str) -> str:
    return f"- hosts: all\n  gather_facts: false\n  tasks:\n{tasks}"


def run(fleet, bots, tasks, **extravars):
    return run_playbook(fleet.hosts_file, play(tasks), extravars=extravars, limit=",".join(bots))


def results(out, task, bots):
    found = {host: res for (host, name), res in out["results"].items() if name == task}
    assert sorted(found) == sorted(bots), f"task {task!r} did not run on every bot:\n{out['stdout'][-3000:]}"
    return found


def failed(res):
    return res.get("_event") == "runner_on_failed"


def ledger(fleet, name):
    """(count, max id) of the bot's trades."""
    return tuple(fleet.db_query(name, "SELECT count(*), coalesce(max(id), 0) FROM trades")[0])


def admin(fleet, name, statement, params=None):
    """Run a statement as the bot's role on the maintenance database (where databases are dropped)."""
    b = fleet.bot(name)
    db = b["database"]
    with psycopg.connect(host=db["host"], port=db["port"], user=db["user"], password=db["password"],
                         dbname="postgres", autocommit=True, connect_timeout=5) as conn:
        cur = conn.execute(statement, params)
        return cur.fetchall() if cur.description else []


def side_databases(fleet, name):
    """Scratch and previous databases the restores of this bot left (or would have left)."""
    db = fleet.bot(name)["database"]["name"]
    rows = admin(fleet, name, "SELECT datname FROM pg_database WHERE datname LIKE %s", (db + r"\_%",))
    return sorted(r[0] for r in rows)


def pid(fleet, name):
    info = fleet.processes()[name]
    return info["pid"] if info["statename"] == "RUNNING" else None


def sets(fleet, name):
    d = Path(fleet.bot(name)["root"]) / "backups"
    return sorted(p.name for p in d.iterdir() if not p.name.startswith(".")) if d.is_dir() else []


@pytest.fixture
def clean(fleet):
    """Assert a clean start; afterwards remove sets and side databases, restart and wait for every bot."""
    for name in ALL:
        assert sets(fleet, name) == [], f"{name} already has backup sets"
    yield
    for name in ALL:
        for entry in (Path(fleet.bot(name)["root"]) / "backups").glob("*"):  # the sets, not the directory
            shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
        for datname in side_databases(fleet, name):
            # not WITH (FORCE): as the bot's role it fails on autovacuum, which a plain DROP stops itself
            admin(fleet, name, sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(datname)))
    stopped = [n for n in ALL if pid(fleet, n) is None]
    if stopped:
        fleet.supervisorctl("start", *stopped)
    fleet.wait_ready(ALL, timeout=60)


def test_backup_and_verify_every_family(fleet, clean):
    out = run(fleet, ALL, f"""\
    - name: Take a backup in check mode
      botops.fleet.bot_backup:
        {COMMON}
        backup_id: "{BACKUP_ID}"
      check_mode: true
    - name: Look for the set after the check
      ansible.builtin.stat: {{path: "{{{{ bot_root }}}}/backups/{BACKUP_ID}"}}
    - name: Take a backup
      botops.fleet.bot_backup:
        {COMMON}
        backup_id: "{BACKUP_ID}"
        label: integration
        reason: backup rhythm
    - name: Take the backup again
      botops.fleet.bot_backup:
        {COMMON}
        backup_id: "{BACKUP_ID}"
    - name: Verify it with a test restore in check mode
      botops.fleet.bot_backup:
        {COMMON}
        state: verified
        backup_id: latest
        test_restore: true
      check_mode: true
    - name: Verify it with a test restore
      botops.fleet.bot_backup:
        {COMMON}
        state: verified
        backup_id: latest
        test_restore: true
    - name: Verify it again
      botops.fleet.bot_backup:
        {COMMON}
        state: verified
        backup_id: latest
        test_restore: true
    - name: List the backups
      botops.fleet.bot_backup_info:
        {COMMON}
""")
    for host, res in results(out, "Take a backup in check mode", ALL).items():
        assert res["changed"] and not failed(res), (host, res.get("msg"))
        assert res["would_back_up"]["row_counts"]["trades"] > 0, host
    for host, res in results(out, "Look for the set after the check", ALL).items():
        assert res["stat"]["exists"] is False, f"{host}: check mode created a backup set"
    taken = results(out, "Take a backup", ALL)
    for host, res in taken.items():
        assert res["changed"] and res["backup_id"] == f"20261121T020000Z-it-{host}", (host, res.get("msg"))
        password = fleet.bot(host)["database"]["password"]
        assert password not in json.dumps(res), f"{host}: the database password is in the result"
    for host, res in results(out, "Take the backup again", ALL).items():
        assert res["changed"] is False and res["actions"] == [], host
    for host, res in results(out, "Verify it with a test restore in check mode", ALL).items():
        assert res["changed"] and any("would test-restore" in a for a in res["actions"]), host
    for host, res in results(out, "Verify it with a test restore", ALL).items():
        assert res["changed"] and res["verification"]["ok"] and res["verification"]["test_restore"], (host, res.get("msg"))
        observed = res["verification"]["observed"]
        assert observed["row_counts"] == res["manifest"]["database"]["row_counts"], host
    for host, res in results(out, "Verify it again", ALL).items():
        assert res["changed"] is False and res["actions"] == [], host
    for host, res in results(out, "List the backups", ALL).items():
        assert [b["backup_id"] for b in res["backups"]] == [f"20261121T020000Z-it-{host}"], host
        assert res["backups"][0]["verified"] and res["backups"][0]["test_restored"], host

    for name in ALL:
        manifest = taken[name]["manifest"]
        set_dir = Path(fleet.bot(name)["root"]) / "backups" / manifest["backup_id"]
        assert stat.S_IMODE(set_dir.stat().st_mode) == 0o700, name
        assert sorted(manifest["files"]) == ["database.dump.zst", "files.tar.gz"], name
        for rel, meta in manifest["files"].items():
            assert stat.S_IMODE((set_dir / rel).stat().st_mode) == 0o600, (name, rel)
            assert sha256_file(set_dir / rel) == (meta["sha256"], meta["size"]), (name, rel)
        assert json.loads((set_dir / "manifest.json").read_text()) == manifest, name
        db = manifest["database"]
        assert db["format"] == "custom_zstd" and db["alembic_revision"] == "0001_initial", name
        assert (manifest["bot"], manifest["release"], manifest["label"]) == (name, "1.0.0", "integration"), name
        # one snapshot: trade ids are continuous, so the count equals the max id the dump holds
        assert db["row_counts"]["trades"] == db["ledger_max_id"] > 0, (name, db)
        assert ledger(fleet, name)[1] >= db["ledger_max_id"], name
        assert side_databases(fleet, name) == [], f"{name}: the test restore left a database"


@pytest.mark.slow  # the default suite keeps under 15 minutes; run with -m slow
def test_restore_round_trip_refusal_and_retention(fleet, clean):
    supervisorctl = '["{{ bot_service.supervisorctl }}", "-c", "{{ bot_service.config }}"'
    pids = {name: pid(fleet, name) for name in SLOW}
    out = run(fleet, SLOW, f"""\
    - name: Take a backup
      botops.fleet.bot_backup:
        {COMMON}
        backup_id: "{BACKUP_ID}"
    - name: Take a backup to corrupt
      botops.fleet.bot_backup:
        {COMMON}
        backup_id: "{CORRUPT_ID}"
    - name: Corrupt its dump
      ansible.builtin.copy:
        dest: "{{{{ bot_root }}}}/backups/{CORRUPT_ID}/database.dump.zst"
        content: not a dump
        mode: '0600'
    - name: Restore in check mode
      botops.fleet.bot_restore:
        {COMMON}
        backup_id: "{BACKUP_ID}"
        accept_ledger_loss: true
      check_mode: true
    - name: Restore
      botops.fleet.bot_restore:
        {COMMON}
        backup_id: "{BACKUP_ID}"
        accept_ledger_loss: true
    - name: Stop the bot
      ansible.builtin.command:
        argv: {supervisorctl}, stop, "{{{{ inventory_hostname }}}}"]
      changed_when: true
    - name: Restore with the bot stopped
      botops.fleet.bot_restore:
        {COMMON}
        backup_id: "{BACKUP_ID}"
        accept_ledger_loss: true
        safety_backup: false
        keep_previous: false
    - name: Restore again
      botops.fleet.bot_restore:
        {COMMON}
        backup_id: "{BACKUP_ID}"
        accept_ledger_loss: true
    - name: Start the bot
      ansible.builtin.command:
        argv: {supervisorctl}, start, "{{{{ inventory_hostname }}}}"]
      changed_when: true
""")
    manifests = {h: r["manifest"] for h, r in results(out, "Take a backup", SLOW).items()}

    for host, res in results(out, "Restore in check mode", SLOW).items():
        assert res["changed"] and any("would swap" in a for a in res["actions"]), (host, res.get("msg"))
        assert res["safety_backup_id"] is None and res["previous_database"] is None, host
        assert res["row_counts"]["before"]["ledger_max_id"] > manifests[host]["database"]["ledger_max_id"], host

    restored = results(out, "Restore", SLOW)
    for host, res in restored.items():
        db = manifests[host]["database"]
        assert res["changed"] and not failed(res), (host, res.get("msg"))
        # what the backup holds is back: row counts and the ledger's max id equal the manifest's
        assert res["row_counts"]["after"]["row_counts"] == db["row_counts"], host
        assert res["row_counts"]["after"]["ledger_max_id"] == db["ledger_max_id"], host
        assert res["row_counts"]["before"]["ledger_max_id"] > db["ledger_max_id"], host
        assert res["bot_was_running"] and res["downtime"] > 0, host
        assert res["actions"][-1].startswith(f"bot {host} is ready"), res["actions"]
        assert fleet.bot(host)["database"]["password"] not in json.dumps(res), host

    for host, res in results(out, "Restore with the bot stopped", SLOW).items():
        assert res["changed"] and res["bot_was_running"] is False and res["downtime"] is None, (host, res.get("msg"))
        assert res["previous_database"] is None and res["safety_backup_id"] is None, host
        assert res["row_counts"]["after"]["ledger_max_id"] == manifests[host]["database"]["ledger_max_id"], host
    for host, res in results(out, "Restore again", SLOW).items():
        assert res["changed"] is False and res["actions"] == [], (host, res.get("msg"))

    fleet.wait_ready(SLOW, timeout=60)
    for name in SLOW:
        assert pid(fleet, name) not in (None, pids[name]), f"{name} was not restarted"
        # the first restore kept the replaced database; the second dropped its own
        assert side_databases(fleet, name) == [restored[name]["previous_database"]], name
        assert restored[name]["safety_backup_id"] in sets(fleet, name), name
        start = manifests[name]["database"]["ledger_max_id"]
        # trading goes on from the restored ledger: continuous up to the backup's last id, and no id
        # of the trades the first restore kept aside is handed out again
        kept_max = restored[name]["ledger_loss"]["last_id"]
        assert kept_max > start, restored[name]["ledger_loss"]
        assert wait_until(lambda: ledger(fleet, name)[1] > kept_max + 3, timeout=20), \
            f"{name} does not trade after the restore"
        below, reused = fleet.db_query(name, "SELECT (SELECT count(*) FROM trades WHERE id <= %s), "
                                             "(SELECT count(*) FROM trades WHERE id > %s AND id <= %s)",
                                       (start, start, kept_max))[0]
        assert (int(below), int(reused)) == (start, 0), (name, below, reused, start, kept_max)

    # ------------------------------------------------------------ refusal, then retention
    before = {name: (pid(fleet, name), ledger(fleet, name)[1], sets(fleet, name)) for name in SLOW}
    for name in SLOW:  # age every set (retention reads created_at; the manifest itself is not checksummed)
        root = Path(fleet.bot(name)["root"]) / "backups"
        for backup_id in sets(fleet, name):
            path = root / backup_id / "manifest.json"
            manifest = json.loads(path.read_text())
            manifest["created_at"] = "2026-01-01T02:00:00Z"  # ties are ordered by backup id
            path.write_text(json.dumps(manifest))
    old_kept, decoys = {}, {}
    for name in SLOW:  # a database an old restore kept, and one an operator named alike by hand
        db = fleet.bot(name)["database"]["name"]
        old_kept[name] = derived_db_name(db, "pre_restore", "20250101T020000Z")
        decoys[name] = f"{db}_pre_restore_by_hand"
        for datname in (old_kept[name], decoys[name]):
            admin(fleet, name, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(datname)))
    prune = f"""
      botops.fleet.bot_backup:
        {COMMON}
        state: pruned
        keep_last: 1
        max_age_days: 1"""
    out = run(fleet, SLOW, f"""\
    - name: Restore the corrupted set
      botops.fleet.bot_restore:
        {COMMON}
        backup_id: "{CORRUPT_ID}"
      ignore_errors: true
    - name: Verify the first backup
      botops.fleet.bot_backup:
        {COMMON}
        state: verified
        backup_id: "{BACKUP_ID}"
    - name: Take the newest backup
      botops.fleet.bot_backup:
        {COMMON}
        backup_id: "{NEWEST_ID}"
    - name: Prune in check mode{prune}
      check_mode: true
    - name: Prune{prune}
    - name: Prune again{prune}
""")
    # a corrupted set is refused before anything is touched: no safety backup, no stop, no database
    for host, res in results(out, "Restore the corrupted set", SLOW).items():
        assert failed(res) and "refusing to restore, nothing was touched" in res["msg"], (host, res.get("msg"))
        assert "database.dump.zst: size" in res["msg"] and f"bot '{host}'" in res["msg"], res["msg"]
        assert res["actions"] == [] and res["safety_backup_id"] is None and res["bot_was_running"] is None, host
    for name in SLOW:
        old_pid, old_max, _ = before[name]
        assert pid(fleet, name) == old_pid, f"{name} was stopped for a refused restore"
        assert ledger(fleet, name)[1] > old_max, f"{name}: the live database went back or stopped trading"
        # no scratch database left (the prune below dropped only the old kept one)
        assert side_databases(fleet, name) == sorted([restored[name]["previous_database"], decoys[name]]), name
    for host, res in results(out, "Verify the first backup", SLOW).items():
        assert res["changed"] and res["verification"]["ok"], (host, res.get("msg"))
    for host, res in results(out, "Prune in check mode", SLOW).items():
        assert res["changed"] and len(res["deleted"]) == 2, (host, res.get("msg"), res.get("deleted"))
        assert [d["name"] for d in res["deleted_databases"]] == [old_kept[host]], (host, res["deleted_databases"])
    for host, res in results(out, "Prune", SLOW).items():
        assert res["changed"], (host, res.get("msg"))
        kept = {k["backup_id"]: k["why"] for k in res["kept"]}
        assert kept == {NEWEST_ID: "one of the newest 1",
                        f"20261121T020000Z-it-{host}": "newest verified backup"}, (host, kept)
        deleted = sorted(d["backup_id"] for d in res["deleted"])
        assert deleted == sorted([CORRUPT_ID, restored[host]["safety_backup_id"]]), (host, deleted)
        assert [d["name"] for d in res["deleted_databases"]] == [old_kept[host]], (host, res["deleted_databases"])
        assert {k["name"]: k["why"] for k in res["kept_databases"]} == {
            restored[host]["previous_database"]: "one of the newest 1"}, (host, res["kept_databases"])
    for host, res in results(out, "Prune again", SLOW).items():
        assert res["changed"] is False and res["actions"] == [], host
    for name in SLOW:
        assert sets(fleet, name) == [f"20261121T020000Z-it-{name}", NEWEST_ID], name
        # the old kept database is gone; the newest one and the one named by hand are not
        assert side_databases(fleet, name) == sorted([restored[name]["previous_database"], decoys[name]]), name
        assert fleet.is_ready(name), name
