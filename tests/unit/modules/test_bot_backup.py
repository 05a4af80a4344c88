"""bot_backup: complete sets or none, honest check mode, idempotent ids, verification, retention."""

from __future__ import annotations

import json
import os
import socket
import stat
from pathlib import Path

from ansible_collections.botops.fleet.plugins.modules import bot_backup
from ansible_collections.botops.fleet.plugins.modules import bot_backup_info
from ansible_collections.botops.fleet.plugins.modules import bot_restore
import pytest

from ansible.module_utils import basic
from ansible_collections.botops.fleet.plugins.module_utils import botops_backup_sqlite, botops_backup_store
from ansible_collections.botops.fleet.plugins.module_utils.botops_backup_store import sha256_file

from .backup_helpers import FakeService, add_trades, make_bot, module_args, sqlite_profile
from .utils import run_module


@pytest.fixture
def root(tmp_path):
    return make_bot(tmp_path / "b07", trades=25)


def backups(root):
    d = root / "backups"
    return sorted(p.name for p in d.iterdir() if p.name != ".lock") if d.exists() else []


def take(root, check_mode=False, **kw):
    return run_module(bot_backup.main, module_args(root, **kw), check_mode=check_mode)


def set_created_at(root, backup_id, created_at):
    path = root / "backups" / backup_id / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["created_at"] = created_at
    path.write_text(json.dumps(manifest))


def test_check_mode_creates_nothing(root):
    result = take(root, check_mode=True)
    assert result["changed"] and not result.get("failed"), result
    assert result["would_back_up"] == {"row_counts": {"trades": 25, "positions": 1, "orders": 0}, "ledger_max_id": 25}
    assert any(a.startswith("would take backup") for a in result["actions"])
    assert backups(root) == []


def test_backup_set_is_complete_private_and_checksummed(root):
    result = take(root, label="daily", reason="nightly backup", linked_release="0.9.0")
    assert result["changed"] and not result.get("failed"), result
    set_dir = root / "backups" / result["backup_id"]
    assert backups(root) == [result["backup_id"]]  # no .tmp-* left behind
    assert stat.S_IMODE(set_dir.stat().st_mode) == 0o700
    manifest = json.loads((set_dir / "manifest.json").read_text())
    assert manifest == result["manifest"]
    assert set(manifest["files"]) == {"database.sqlite3", "files.tar.gz"}
    for name, meta in manifest["files"].items():
        assert stat.S_IMODE((set_dir / name).stat().st_mode) == 0o600, name
        assert sha256_file(set_dir / name) == (meta["sha256"], meta["size"])
    assert stat.S_IMODE((set_dir / "manifest.json").stat().st_mode) == 0o600
    assert manifest["size"] == result["size"] == sum(m["size"] for m in manifest["files"].values())
    assert (manifest["bot"], manifest["family"], manifest["release"]) == ("b07", "mojorust", "1.0.0")
    assert (manifest["label"], manifest["reason"], manifest["linked_release"]) == ("daily", "nightly backup", "0.9.0")
    db = manifest["database"]
    assert db["row_counts"] == {"trades": 25, "positions": 1, "orders": 0}
    assert db["ledger_max_id"] == 25 and db["alembic_revision"] == "0001_initial" and db["format"] == "sqlite"
    assert manifest["paths"] == ["shared/config"]
    assert result["duration"] >= 0


def test_explicit_backup_id_is_idempotent(root):
    first = take(root, backup_id="20261121T020000Z-daily")
    assert first["changed"] and first["backup_id"] == "20261121T020000Z-daily"
    add_trades(root, 5)
    again = take(root, backup_id="20261121T020000Z-daily")
    assert again["changed"] is False and again["actions"] == []
    assert again["manifest"]["database"]["ledger_max_id"] == 25  # the set was not retaken
    assert take(root, backup_id="20261121T020000Z-daily", check_mode=True)["changed"] is False


@pytest.mark.parametrize("bad", ["../../etc", "20261121T020000Z-../../x", "20261121T020000Z-a/b", "latest", "x" * 80,
                                 "20261121T020000Z-a..b"])
def test_backup_id_is_validated(root, bad):
    result = take(root, backup_id=bad)
    assert result["failed"] and "invalid backup_id" in result["msg"] and "bot 'b07'" in result["msg"]
    assert backups(root) == []


def test_failed_backup_leaves_no_set(root):
    (root / "shared" / "data" / "bot.sqlite3").unlink()
    result = take(root)
    assert result["failed"] and result["msg"].startswith("Failed to back up bot 'b07': ")
    assert backups(root) == []


def test_postgres_down_leaves_no_set(root):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    profile = sqlite_profile()
    profile["database"] = {"engine": "postgresql", "name": "b07", "tables": ["trades"], "ledger": {"table": "trades", "id": "id"}}
    args = module_args(root, profile=profile, secrets={"database_password": "s3cret-pw"})
    args["bot"]["database"] = {"host": "127.0.0.1", "port": port, "name": "b07", "user": "b07"}
    result = run_module(bot_backup.main, args)
    assert result["failed"] and "Failed to back up bot 'b07'" in result["msg"]
    assert "s3cret-pw" not in json.dumps(result)
    assert backups(root) == []


def test_verify_records_and_is_idempotent(root):
    backup_id = take(root)["backup_id"]
    check = run_module(bot_backup.main, module_args(root, state="verified", backup_id="latest"), check_mode=True)
    assert check["changed"] and not (root / "backups" / backup_id / "verified.json").exists()
    first = run_module(bot_backup.main, module_args(root, state="verified", backup_id="latest", test_restore=True))
    assert first["changed"] and first["backup_id"] == backup_id, first
    record = json.loads((root / "backups" / backup_id / "verified.json").read_text())
    assert record["ok"] and record["test_restore"]
    assert record["observed"]["row_counts"] == {"trades": 25, "positions": 1, "orders": 0}
    assert not list((root / "shared" / "data").glob("*.verify-*"))  # scratch copy dropped
    again = run_module(bot_backup.main, module_args(root, state="verified", backup_id=backup_id, test_restore=True))
    assert again["changed"] is False and again["actions"] == []


def test_verify_detects_corruption(root):
    backup_id = take(root)["backup_id"]
    dump = root / "backups" / backup_id / "database.sqlite3"
    data = bytearray(dump.read_bytes())
    data[-1] ^= 0xFF
    dump.write_bytes(bytes(data))
    result = run_module(bot_backup.main, module_args(root, state="verified", backup_id=backup_id))
    assert result["failed"] and "database.sqlite3: sha256 mismatch" in result["msg"]
    record = json.loads((root / "backups" / backup_id / "verified.json").read_text())
    assert record["ok"] is False
    listing = run_module(bot_backup_info.main, module_args(root))
    assert listing["backups"][0]["verified"] is False


def test_retention_keeps_newest_verified_and_linked_releases(root):
    ids = [f"202611{day:02d}T020000Z-daily" for day in range(1, 8)]
    for i, backup_id in enumerate(ids):
        take(root, backup_id=backup_id, linked_release="0.9.0" if i == 1 else None)
        set_created_at(root, backup_id, f"2025-11-{i + 1:02d}T02:00:00Z")  # all far older than 30 days
    # the oldest is the only verified one; day 2 is linked to a release the ledger calls good
    run_module(bot_backup.main, module_args(root, state="verified", backup_id=ids[0]))
    (root / "releases" / "ledger.json").write_text(json.dumps(
        {"format": 1, "releases": {"0.9.0": {"version": "0.9.0", "status": "good"},
                                   "1.0.0": {"version": "1.0.0", "status": "good"}}, "history": []}))
    stale = root / "backups" / ".tmp-20250101T000000Z-killed"
    stale.mkdir()
    os.utime(stale, (0, 0))

    check = run_module(bot_backup.main, module_args(root, state="pruned"), check_mode=True)
    assert check["changed"] and len(backups(root)) == 8 and stale.exists()
    assert sorted(d["backup_id"] for d in check["deleted"]) == [ids[2], ids[3]]

    result = run_module(bot_backup.main, module_args(root, state="pruned"))  # profile: keep_last 3, 30 days
    assert result["changed"]
    assert sorted(d["backup_id"] for d in result["deleted"]) == [ids[2], ids[3]]
    kept = {k["backup_id"]: k["why"] for k in result["kept"]}
    assert kept[ids[0]] == "newest verified backup"
    assert "linked to release 0.9.0" in kept[ids[1]]
    assert backups(root) == [ids[0], ids[1], ids[4], ids[5], ids[6]]  # the stale .tmp-* is gone too
    again = run_module(bot_backup.main, module_args(root, state="pruned"))
    assert again["changed"] is False and again["actions"] == []


def test_retention_options_override_the_profile(root):
    for day in range(1, 4):
        take(root, backup_id=f"202611{day:02d}T020000Z-daily")
    result = run_module(bot_backup.main, module_args(root, state="pruned", keep_last=1, max_age_days=3650))
    assert result["changed"] is False and result["deleted"] == []  # all younger than ten years
    result = run_module(bot_backup.main, module_args(root, state="pruned", keep_last=1))
    assert result["max_age_days"] == 30 and result["deleted"] == []


def test_retention_drops_the_databases_old_restores_kept_and_nothing_else(root, monkeypatch):
    take(root, backup_id="20261121T020000Z-base")
    FakeService(running=False).install(monkeypatch)
    add_trades(root, 2)
    restored = run_module(bot_restore.main, module_args(root, backup_id="20261121T020000Z-base",
                                                        accept_ledger_loss=True))
    assert restored["changed"] and not restored.get("failed"), restored
    data = root / "shared" / "data"
    newest = Path(restored["previous_database"])  # the live file that restore replaced, kept
    assert newest.parent == data and newest.exists()
    old = [data / f"bot.sqlite3.pre-restore-2025{month:02d}01T020000Z" for month in (1, 2, 3)]
    decoys = [data / "bot.sqlite3.pre-restore-latest", data / "other.sqlite3.pre-restore-20250101T020000Z",
              data / "bot.sqlite3.bak-20250101T020000Z"]
    for path in old + decoys:
        path.write_bytes(b"a copy")

    check = run_module(bot_backup.main, module_args(root, state="pruned", keep_last=2), check_mode=True)
    assert check["changed"] and all(path.exists() for path in old)
    assert [d["name"] for d in check["deleted_databases"]] == [str(old[1]), str(old[0])]
    assert "would drop kept database " + str(old[0]) in " ".join(check["actions"])

    result = run_module(bot_backup.main, module_args(root, state="pruned", keep_last=2))
    assert result["changed"] and not result.get("failed"), result
    assert {k["name"]: k["why"] for k in result["kept_databases"]} == {
        str(newest): "one of the newest 2", str(old[2]): "one of the newest 2"}
    assert not old[0].exists() and not old[1].exists()
    assert newest.exists() and old[2].exists() and all(path.exists() for path in decoys)
    assert result["deleted"] == []  # the one backup set is kept
    again = run_module(bot_backup.main, module_args(root, state="pruned", keep_last=2))
    assert again["changed"] is False and again["actions"] == []


def test_kept_databases_that_cannot_be_listed_do_not_stop_the_sets_retention(root, monkeypatch):
    for day in range(1, 4):
        take(root, backup_id=f"202611{day:02d}T020000Z-daily")
        set_created_at(root, f"202611{day:02d}T020000Z-daily", f"2025-11-{day:02d}T02:00:00Z")

    def refused(self):
        raise botops_backup_store.BackupError("permission denied for database postgres")

    warned = []
    monkeypatch.setattr(botops_backup_sqlite.SqliteEngine, "kept", refused)
    monkeypatch.setattr(basic.AnsibleModule, "warn", lambda self, msg: warned.append(msg))
    result = run_module(bot_backup.main, module_args(root, state="pruned", keep_last=1, max_age_days=1))
    assert result["changed"] and not result.get("failed"), result
    assert sorted(d["backup_id"] for d in result["deleted"]) == ["20261101T020000Z-daily", "20261102T020000Z-daily"]
    assert warned == ["bot 'b07': the databases restores kept were not looked at: permission denied for database "
                      "postgres"]


def test_info_lists_newest_first_and_latest_skips_safety_backups(root):
    take(root, backup_id="20261101T020000Z-a")
    take(root, backup_id="20261102T020000Z-b")
    set_created_at(root, "20261101T020000Z-a", "2026-11-01T02:00:00Z")
    set_created_at(root, "20261102T020000Z-b", "2026-11-02T02:00:00Z")
    path = root / "backups" / "20261102T020000Z-b" / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["safety_for"] = "20261101T020000Z-a"
    path.write_text(json.dumps(manifest))
    info = run_module(bot_backup_info.main, module_args(root))
    assert [b["backup_id"] for b in info["backups"]] == ["20261102T020000Z-b", "20261101T020000Z-a"]
    assert info["latest"] == "20261101T020000Z-a"
    one = run_module(bot_backup_info.main, module_args(root, backup_id="latest"))
    assert one["manifest"]["backup_id"] == "20261101T020000Z-a"


def test_files_only_profile_and_nothing_to_back_up(root):
    profile = sqlite_profile()
    profile["database"] = {"engine": "none"}
    files_only = take(root, profile=profile)
    assert files_only["changed"] and files_only["manifest"]["database"] is None, files_only
    assert set(files_only["manifest"]["files"]) == {"files.tar.gz"}
    profile["backup"]["paths"] = []
    nothing = take(root, profile=profile)
    assert nothing["failed"] and "nothing to back up" in nothing["msg"]
    assert backups(root) == [files_only["backup_id"]]


def test_the_next_backup_removes_what_a_killed_one_left(root):
    first = take(root)["backup_id"]
    killed = root / "backups" / ".tmp-20261121T030000Z-killed"
    (killed / "database.d").mkdir(parents=True)
    (killed / "database.d" / "toc.dat").write_bytes(b"half a dump")
    info = run_module(bot_backup_info.main, module_args(root))
    assert [b["backup_id"] for b in info["backups"]] == [first]  # never listed as a set
    second = take(root)
    assert second["changed"] and not killed.exists()
    assert backups(root) == sorted([first, second["backup_id"]])


def truncate_manifest(root, backup_id, keep=0.5):
    """Cut the set's manifest.json short, as a full disk or a broken copy leaves it; returns the reason
    json itself gives for refusing what is left."""
    path = root / "backups" / backup_id / "manifest.json"
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    try:
        json.loads(path.read_text())
    except ValueError as exc:
        return str(exc)
    raise AssertionError("the truncated manifest still parses")


@pytest.fixture
def damaged_newest(root):
    """A good set and, six minutes later, a set whose manifest was cut short: (good id, damaged id, reason)."""
    good, newest = "20261121T020000Z-3fa9c1", "20261121T020600Z-7be2d0"
    for backup_id, at in ((good, "2026-11-21T02:00:00Z"), (newest, "2026-11-21T02:06:00Z")):
        assert take(root, backup_id=backup_id)["changed"]
        set_created_at(root, backup_id, at)
    assert run_module(bot_backup.main, module_args(root, state="verified", backup_id=newest))["verification"]["ok"]
    return good, newest, truncate_manifest(root, newest)


def test_a_set_with_a_truncated_manifest_is_listed_as_damaged_with_the_reason(root, damaged_newest):
    good, newest, reason = damaged_newest
    killed = root / "backups" / ".tmp-20261121T030000Z-killed"  # unfinished, not damaged: never listed
    killed.mkdir()
    (killed / "manifest.json").write_text('{"backup_id": "20261121T0')
    info = run_module(bot_backup_info.main, module_args(root))
    assert not info.get("failed"), info
    assert [b["backup_id"] for b in info["backups"]] == [newest, good]
    damaged, intact = info["backups"]
    assert damaged["damaged"] == f"manifest.json unreadable: {reason}"
    assert damaged["verified"] is False  # the verification recorded before the damage no longer counts
    assert damaged["created_at"] == "2026-11-21T02:06:00Z"  # from its id
    assert damaged["size"] is None and damaged["path"] == str(root / "backups" / newest)
    assert intact["damaged"] is None and intact["created_at"] == "2026-11-21T02:00:00Z"
    assert info["latest"] is None and info["latest_blocked_by"] == newest

    (root / "backups" / newest / "manifest.json").unlink()
    info = run_module(bot_backup_info.main, module_args(root))
    assert info["backups"][0]["damaged"] == "manifest.json missing"


def test_latest_refuses_to_resolve_past_a_damaged_newer_set(root, damaged_newest):
    good, newest, reason = damaged_newest
    for check_mode in (True, False):
        result = run_module(bot_backup.main, module_args(root, state="verified", backup_id="latest"),
                            check_mode=check_mode)
        assert result["failed"], result
        assert (f"backup {newest} in {root / 'backups'} is damaged (manifest.json unreadable: {reason}) and newer "
                "than every readable backup 'latest' could pick") in result["msg"]
        assert "'latest' does not resolve past a damaged set" in result["msg"]
        assert f"--backup={good}" in result["msg"]
        assert not (root / "backups" / good / "verified.json").exists()  # the older set was not taken instead
    one = run_module(bot_backup_info.main, module_args(root, backup_id="latest"))
    assert one["failed"] and newest in one["msg"] and reason in one["msg"]

    explicit = run_module(bot_backup.main, module_args(root, state="verified", backup_id=newest))
    assert explicit["failed"] and f"backup {newest}" in explicit["msg"]
    assert f"is damaged (manifest.json unreadable: {reason})" in explicit["msg"]
    older = run_module(bot_backup.main, module_args(root, state="verified", backup_id=good))
    assert not older.get("failed") and older["backup_id"] == good and older["verification"]["ok"], older
    left = (root / "backups" / newest / "manifest.json").read_bytes()
    again = take(root, backup_id=newest)  # the id is taken: the damaged set is neither reused nor overwritten
    assert again["failed"] and "is damaged" in again["msg"]
    assert (root / "backups" / newest / "manifest.json").read_bytes() == left


def test_a_damaged_set_older_than_the_latest_good_one_does_not_stop_latest(root, damaged_newest):
    good, newest, _ = damaged_newest
    take(root, backup_id="20261121T021000Z-after")
    set_created_at(root, "20261121T021000Z-after", "2026-11-21T02:10:00Z")
    info = run_module(bot_backup_info.main, module_args(root))
    assert [b["backup_id"] for b in info["backups"]] == ["20261121T021000Z-after", newest, good]
    assert info["latest"] == "20261121T021000Z-after" and info["latest_blocked_by"] is None


def test_retention_keeps_a_damaged_set_and_says_so(root, monkeypatch):
    ids = [f"202611{day:02d}T020000Z-daily" for day in range(1, 6)]
    for i, backup_id in enumerate(ids):
        take(root, backup_id=backup_id)
        set_created_at(root, backup_id, f"2025-11-{i + 1:02d}T02:00:00Z")  # all far older than a day
    reasons = {ids[1]: truncate_manifest(root, ids[1]), ids[4]: truncate_manifest(root, ids[4], keep=0)}
    warned = []
    monkeypatch.setattr(basic.AnsibleModule, "warn", lambda self, msg: warned.append(msg))

    check = run_module(bot_backup.main, module_args(root, state="pruned", keep_last=1, max_age_days=1),
                       check_mode=True)
    assert sorted(d["backup_id"] for d in check["deleted"]) == [ids[0], ids[2]]
    result = run_module(bot_backup.main, module_args(root, state="pruned", keep_last=1, max_age_days=1))
    assert result["changed"] and not result.get("failed"), result
    assert sorted(d["backup_id"] for d in result["deleted"]) == [ids[0], ids[2]]
    kept = {k["backup_id"]: k["why"] for k in result["kept"]}
    # the damaged newest set does not take the place of the newest readable one
    assert kept[ids[3]] == "one of the newest 1"
    assert reasons[ids[4]] == "Expecting value: line 1 column 1 (char 0)"
    for backup_id in (ids[1], ids[4]):
        assert kept[backup_id].startswith(f"damaged (manifest.json unreadable: {reasons[backup_id]}): retention "
                                          "never deletes a damaged set")
    assert result["damaged"] == [{"backup_id": ids[4], "reason": f"manifest.json unreadable: {reasons[ids[4]]}"},
                                 {"backup_id": ids[1], "reason": f"manifest.json unreadable: {reasons[ids[1]]}"}]
    assert backups(root) == [ids[1], ids[3], ids[4]]
    assert len(warned) == 4 and all("is damaged" in w and "retention keeps it" in w for w in warned)
    assert f"backup {ids[1]} is damaged (manifest.json unreadable: {reasons[ids[1]]})" in warned[-1]
    again = run_module(bot_backup.main, module_args(root, state="pruned", keep_last=1, max_age_days=1))
    assert again["changed"] is False and again["actions"] == [] and backups(root) == [ids[1], ids[3], ids[4]]
