"""bot_restore: verify first, safety backup, scratch copy checked, stop, atomic swap, start; idempotent."""

from __future__ import annotations

import json
import os
import sqlite3

from ansible_collections.botops.fleet.plugins.modules import bot_backup
from ansible_collections.botops.fleet.plugins.modules import bot_restore
import pytest

from ansible_collections.botops.fleet.plugins.module_utils import botops_backup_sqlite, botops_service

from .backup_helpers import DB_PATH, FakeService, add_trades, db_state, make_bot, module_args
from .utils import run_module


@pytest.fixture
def root(tmp_path):
    return make_bot(tmp_path / "b07", trades=30)


@pytest.fixture
def service(monkeypatch):
    return FakeService(running=True).install(monkeypatch)


@pytest.fixture
def backup_id(root):
    result = run_module(bot_backup.main, module_args(root, backup_id="20261121T020000Z-base"))
    assert result["changed"], result
    return result["backup_id"]


def restore(root, check_mode=False, **kw):
    kw.setdefault("backup_id", "20261121T020000Z-base")
    kw.setdefault("accept_ledger_loss", True)  # these tests go back to the backup on purpose
    return run_module(bot_restore.main, module_args(root, **kw), check_mode=check_mode)


def safety_sets(root):
    return [p.name for p in (root / "backups").iterdir()
            if (p / "manifest.json").exists() and json.loads((p / "manifest.json").read_text()).get("safety_for")]


def test_round_trip_check_mode_apply_then_unchanged(root, service, backup_id):
    add_trades(root, 12)  # the bot traded on after the backup
    assert db_state(root) == (42, 42)

    check = restore(root, check_mode=True)
    assert check["changed"] and not check.get("failed"), check
    assert check["row_counts"]["before"]["row_counts"]["trades"] == 42
    assert any("would swap" in a for a in check["actions"])
    assert db_state(root) == (42, 42) and service.calls == [] and safety_sets(root) == []

    result = restore(root)
    assert result["changed"] and not result.get("failed"), result
    assert db_state(root) == (30, 30)
    assert result["row_counts"]["after"] == {"row_counts": {"trades": 30, "positions": 1, "orders": 0},
                                             "ledger_max_id": 30, "alembic_revision": "0001_initial"}
    assert result["row_counts"]["before"]["ledger_max_id"] == 42
    assert service.calls == ["stop", "start"] and service.running
    assert result["bot_was_running"] is True and result["downtime"] >= 0
    assert safety_sets(root) == [result["safety_backup_id"]]
    safety = json.loads((root / "backups" / result["safety_backup_id"] / "manifest.json").read_text())
    assert safety["database"]["ledger_max_id"] == 42 and safety["label"] == "pre-restore"
    previous = result["previous_database"]
    assert previous.startswith(str(root / DB_PATH) + ".pre-restore-")
    assert botops_backup_sqlite.SqliteEngine(previous, ["trades"]).counts()[0] == {"trades": 42}  # nothing lost
    assert not list((root / "shared" / "data").glob("*.restore-*"))

    service.calls.clear()
    again = restore(root)
    assert again["changed"] is False and again["actions"] == [] and service.calls == []
    assert restore(root, check_mode=True)["changed"] is False


def test_corrupt_backup_is_refused_before_anything_is_touched(root, service, backup_id):
    add_trades(root, 3)
    (root / "backups" / backup_id / "files.tar.gz").write_bytes(b"garbage")
    result = restore(root)
    assert result["failed"] and "verify the backup's checksums" in result["msg"] and "refusing" in result["msg"]
    assert "files.tar.gz" in result["msg"] and "bot 'b07'" in result["msg"]
    assert db_state(root) == (33, 33) and service.calls == [] and safety_sets(root) == []


def test_copy_not_matching_the_manifest_leaves_live_untouched(root, service, backup_id):
    path = root / "backups" / backup_id / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["database"]["row_counts"]["trades"] = 31  # the copy will hold 30
    path.write_text(json.dumps(manifest))
    add_trades(root, 2)
    result = restore(root)
    assert result["failed"] and "check the scratch database's row counts" in result["msg"], result
    assert "trades: 30 rows, manifest says 31" in result["msg"] and "live database was not touched" in result["msg"]
    assert db_state(root) == (32, 32) and service.calls == []  # never stopped
    assert not list((root / "shared" / "data").glob("*.restore-*"))


def test_failure_at_the_swap_starts_the_bot_again(root, service, backup_id, monkeypatch):
    add_trades(root, 4)

    def broken_swap(self, scratch, previous, live_exists=True):
        raise OSError("disk on fire")

    monkeypatch.setattr(botops_backup_sqlite.SqliteEngine, "swap", broken_swap)
    result = restore(root)
    assert result["failed"] and "swap the restored database in" in result["msg"] and "disk on fire" in result["msg"]
    assert db_state(root) == (34, 34)
    assert service.calls == ["stop", "start"] and service.running
    assert not list((root / "shared" / "data").glob("*.restore-*"))


def test_a_restore_waits_for_a_window_slot_and_one_that_gets_none_stops_nothing(root, service, backup_id,
                                                                                monkeypatch, slot_dir):
    add_trades(root, 2)
    monkeypatch.setattr(botops_service, "SLOT_WAIT", 0.2)
    other = botops_service.WindowSlots(1)
    other.take(wait=1)  # another bot of this host is between its stop and its readiness
    try:
        refused = restore(root, window_slots=1)
    finally:
        other.give()
    assert refused["failed"] and "at step 'wait for a window slot': no window slot free on this host" in refused["msg"]
    assert "live database was not touched" in refused["msg"]
    assert db_state(root) == (32, 32) and service.calls == [] and service.running
    assert not list((root / "shared" / "data").glob("*.restore-*"))

    result = restore(root, window_slots=1)
    assert result["changed"] and not result.get("failed"), result
    assert isinstance(result["slot_wait"], float) and "wait for a window slot" in result["timings"]
    assert service.calls == ["stop", "start"] and db_state(root) == (30, 30)
    after = botops_service.WindowSlots(1)
    assert after.take(wait=0) == 0.0, "the restore kept its slot"
    after.give()


def test_bot_not_ready_after_the_restore_fails_naming_the_previous_database(root, service, backup_id):
    add_trades(root, 1)
    service.ready = False
    result = restore(root, ready_timeout=0.1)
    assert result["failed"] and "start the bot and wait for readiness" in result["msg"]
    assert "the restored database is live" in result["msg"] and result["previous_database"] in result["msg"]
    assert db_state(root) == (30, 30)


def test_stopped_bot_is_left_stopped(root, monkeypatch, backup_id):
    service = FakeService(running=False).install(monkeypatch)
    add_trades(root, 5)
    result = restore(root, backup_id="latest")
    assert result["changed"] and result["backup_id"] == backup_id and result["bot_was_running"] is False
    assert service.calls == [] and result["downtime"] is None and db_state(root) == (30, 30)
    # 'latest' still means the backup, not the safety backup the restore took
    assert restore(root, backup_id="latest")["changed"] is False


def test_restore_files_puts_back_only_what_differs(root, service, backup_id):
    config = root / "shared" / "config" / "bot.json"
    original = config.read_bytes()
    config.write_text('{"name": "b07", "trade_interval": 9}\n')
    plain = restore(root)
    assert plain["changed"] and plain["files"] == []  # files only on request
    service.calls.clear()
    result = restore(root, restore_files=True)
    assert result["changed"] and result["files"] == ["shared/config/bot.json"], result
    assert config.read_bytes() == original and (config.stat().st_mode & 0o777) == 0o600
    assert service.calls == ["stop", "start"]
    assert restore(root, restore_files=True)["changed"] is False


def test_unknown_backup_and_bad_ids_fail_cleanly(root, service, backup_id):
    missing = restore(root, backup_id="20300101T000000Z-none")
    assert missing["failed"] and "not found" in missing["msg"] and service.calls == []
    bad = restore(root, backup_id="../../../etc/passwd")
    assert bad["failed"] and "invalid backup_id" in bad["msg"]


def test_a_wal_database_is_backed_up_verified_and_restored_leaving_nothing_beside_any_file(tmp_path, service):
    root = make_bot(tmp_path / "b07", trades=30)
    conn = sqlite3.connect(root / DB_PATH)
    assert conn.execute("PRAGMA journal_mode = WAL").fetchone() == ("wal",)
    conn.close()
    taken = run_module(bot_backup.main, module_args(root, backup_id="20261121T020000Z-base"))
    assert taken["changed"] and taken["manifest"]["database"]["journal_mode"] == "wal", taken
    verified = run_module(bot_backup.main, module_args(root, state="verified", backup_id="20261121T020000Z-base",
                                                       test_restore=True))
    assert verified["verification"]["ok"] and verified["verification"]["test_restore"], verified
    add_trades(root, 12)

    result = restore(root)
    assert result["changed"] and not result.get("failed"), result
    data = root / "shared" / "data"
    assert sorted(p.name for p in data.iterdir()) == ["bot.sqlite3", os.path.basename(result["previous_database"])]
    assert (root / DB_PATH).read_bytes()[18:20] == b"\x02\x02"  # still a WAL database
    assert db_state(root) == (30, 30)
    assert botops_backup_sqlite.SqliteEngine(result["previous_database"], ["trades"]).counts()[0] == {"trades": 42}
    for backup_id in ("20261121T020000Z-base", result["safety_backup_id"]):
        manifest = json.loads((root / "backups" / backup_id / "manifest.json").read_text())
        assert set(manifest["files"]) == {"database.sqlite3", "files.tar.gz"}
        assert manifest["database"]["journal_mode"] == "wal"
    assert [p for p in root.rglob("*") if p.name.endswith(("-wal", "-shm", "-journal", ".part"))] == []
    assert sorted(p.name for p in data.iterdir()) == ["bot.sqlite3", os.path.basename(result["previous_database"])]


def test_lost_database_is_restored(root, monkeypatch, backup_id):
    service = FakeService(running=False).install(monkeypatch)
    (root / DB_PATH).unlink()
    result = restore(root)
    assert result["changed"] and not result.get("failed"), result
    assert result["row_counts"]["before"] is None and result["previous_database"] is None
    assert db_state(root) == (30, 30) and service.calls == []
    safety = json.loads((root / "backups" / result["safety_backup_id"] / "manifest.json").read_text())
    assert safety["database"] is None and safety["paths"] == ["shared/config"]  # the files were still saved
    assert restore(root)["changed"] is False


def test_a_restore_that_would_take_trades_out_of_the_ledger_is_refused_unless_accepted(root, service, backup_id):
    add_trades(root, 12)  # the bot traded on after the backup: ids 31-42
    for check_mode in (True, False):
        refused = restore(root, check_mode=check_mode, accept_ledger_loss=False)
        assert refused["failed"] and refused["ledger_refused"], refused
        assert "refused, nothing was touched: the live ledger would lose 12 trades row(s) (ids 31-42" in refused["msg"]
        assert "accept_ledger_loss" in refused["msg"]
        assert refused["ledger_loss"]["rows"] == 12
    assert db_state(root) == (42, 42) and service.calls == [] and safety_sets(root) == []

    accepted = restore(root, accept_ledger_loss=True)
    assert not accepted.get("failed"), accepted["msg"]
    assert db_state(root) == (30, 30)
    kept = accepted["ledger_loss"]
    assert (kept["rows"], kept["first_id"], kept["last_id"]) == (12, 31, 42), kept
    assert any(a.startswith(f"kept aside in {accepted['previous_database']}: 12 trades") for a in accepted["actions"])


def test_latest_refuses_a_damaged_newer_set_and_an_explicit_older_id_restores(root, service, backup_id):
    """A truncated manifest in the newest set: 'latest' fails naming it instead of restoring the set
    six minutes older; the older set restores when asked for by id."""
    def set_created_at(set_id, created_at):
        path = root / "backups" / set_id / "manifest.json"
        path.write_text(json.dumps(dict(json.loads(path.read_text()), created_at=created_at)))

    set_created_at(backup_id, "2026-11-21T02:00:00Z")
    add_trades(root, 4)
    newest = "20261121T020600Z-7be2d0"
    assert run_module(bot_backup.main, module_args(root, backup_id=newest))["changed"]
    set_created_at(newest, "2026-11-21T02:06:00Z")
    manifest = root / "backups" / newest / "manifest.json"
    manifest.write_bytes(manifest.read_bytes()[:100])
    sets_before = sorted(p.name for p in (root / "backups").iterdir())

    for check_mode in (True, False):
        result = restore(root, check_mode=check_mode, backup_id="latest")
        assert result["failed"] and not result["changed"], result
        assert f"backup {newest} in {root / 'backups'} is damaged (manifest.json unreadable: " in result["msg"]
        assert "and newer than every readable backup 'latest' could pick" in result["msg"]
        assert f"pass an explicit id to use an older set, e.g. --backup={backup_id}" in result["msg"]
        assert result.get("backup_id") is None  # nothing was resolved
    explicit = restore(root, backup_id=newest)
    assert explicit["failed"], explicit
    assert f"backup {newest} in {root / 'backups'} is damaged (manifest.json unreadable: " in explicit["msg"]
    assert db_state(root) == (34, 34) and service.calls == []
    assert sorted(p.name for p in (root / "backups").iterdir()) == sets_before  # no safety backup either

    older = restore(root, check_mode=True, backup_id=backup_id)
    assert older["changed"] and not older.get("failed") and older["backup_id"] == backup_id, older
    done = restore(root, backup_id=backup_id)
    assert done["changed"] and not done.get("failed"), done
    assert db_state(root) == (30, 30) and service.calls == ["stop", "start"]
