"""bot_migrate against a fake database and a fake alembic: pending revisions, check-mode SQL,
idempotency, the contract guard, the release that knows the revision, secrets kept out."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from ansible.module_utils import basic
from ansible_collections.botops.fleet.plugins.module_utils.botops_pg import Database

from ansible_collections.botops.fleet.plugins.modules import bot_migrate

from .utils import run_module

REPO = Path(__file__).resolve().parents[3]
VERSIONS = REPO / "botops" / "sandbox" / "refbot" / "migrations" / "versions"
PASSWORD = "p@ss:w/rd"
PROFILE = {"family": "testfam", "database": {"engine": "postgresql", "name": "trading_bot",
                                             "migrations": {"tool": "alembic", "config": "alembic.ini"}}}
HEADS = {"1.0.0": "0001_initial", "1.1.0": "0002_trade_fee", "2.0.0": "0003_rename_qty"}
ORDER = ["0001_initial", "0002_trade_fee", "0003_rename_qty"]


def make_release(root, version):
    path = root / "releases" / version
    (path / "migrations" / "versions").mkdir(parents=True)
    (path / "alembic.ini").write_text("[alembic]\nscript_location = %(here)s/migrations\n")
    for rev in ORDER[: ORDER.index(HEADS[version]) + 1]:
        shutil.copy(VERSIONS / f"{rev}.py", path / "migrations" / "versions")
    return path


class FakeDb:
    """alembic_version of one database, and every alembic command the module ran."""

    def __init__(self, revision):
        self.revision = revision
        self.calls = []
        self.fail_with = None


@pytest.fixture
def db(monkeypatch):
    fake = FakeDb("0001_initial")

    def scalar(self, sql, dbname=None):
        assert "alembic_version" in sql
        return "t" if fake.revision is not None else "f"

    def query(self, sql, dbname=None):
        return [[fake.revision]] if fake.revision is not None else []

    def run_command(self, cmd, cwd=None, environ_update=None, **kw):
        fake.calls.append({"cmd": cmd, "cwd": cwd, "env": environ_update})
        if fake.fail_with:
            return 1, "", fake.fail_with
        action, rest = cmd[3], cmd[4:]
        if "--sql" in rest:
            return 0, f"-- {action} {rest[-1]}\nALTER TABLE trades ...;\n", "INFO  [alembic] Running\n"
        fake.revision = None if rest[0] == "base" else rest[0]
        return 0, "", f"INFO  [alembic.runtime.migration] Running {action}\n"

    monkeypatch.setattr(Database, "scalar", scalar)
    monkeypatch.setattr(Database, "query", query)
    monkeypatch.setattr(basic.AnsibleModule, "run_command", run_command)
    return fake


@pytest.fixture
def root(tmp_path):
    path = tmp_path / "bot04"
    for version in HEADS:
        make_release(path, version)
    (path / "current").symlink_to("releases/1.1.0")
    return path


def call(root, check_mode=False, **options):
    args = dict(profile=PROFILE, secrets={"database_password": PASSWORD},
                bot={"name": "bot04", "root": str(root),
                     "database": {"host": "127.0.0.1", "port": 5433, "name": "bot04", "user": "bot04"}},
                **options)
    return run_module(bot_migrate.main, args, check_mode=check_mode)


def test_current_reports_pending_without_running_alembic(root, db):
    res = call(root, state="current")
    assert res["changed"] is False and not res.get("failed")
    assert res["current_before"] == res["current"] == "0001_initial"
    assert res["release"] == "1.1.0" and res["head"] == "0002_trade_fee" and res["pending"] == ["0002_trade_fee"]
    assert res["revisions"][0]["kind"] == "expand" and res["contract"] == []
    assert db.calls == []


def test_upgrade_check_mode_returns_sql_and_changes_nothing(root, db):
    res = call(root, check_mode=True, state="upgraded")
    assert res["changed"] and res["pending"] == ["0002_trade_fee"] and res["executed"] == []
    assert "ALTER TABLE" in res["sql"] and res["current"] == "0002_trade_fee"
    assert db.revision == "0001_initial"
    (run,) = db.calls
    assert run["cmd"][-3:] == ["upgrade", "--sql", "0001_initial:0002_trade_fee"]
    assert run["cwd"] == str(root / "current")


def test_upgrade_applies_then_is_unchanged(root, db):
    res = call(root, state="upgraded")
    assert res["changed"] and res["executed"] == ["0002_trade_fee"] and res["current"] == "0002_trade_fee"
    assert res["actions"] == ["upgrade 0001_initial -> 0002_trade_fee"]
    assert res["diff"] == {"before": {"revision": "0001_initial"}, "after": {"revision": "0002_trade_fee"}}
    run = db.calls[-1]
    assert run["cmd"][1:] == ["-c", str(root / "current" / "alembic.ini"), "upgrade", "0002_trade_fee"]
    assert run["env"]["DATABASE_URL"] == "postgresql://bot04:p%40ss%3Aw%2Frd@127.0.0.1:5433/bot04"
    assert "lock_timeout=30000" in run["env"]["PGOPTIONS"]
    again = call(root, state="upgraded")
    assert again["changed"] is False and again["pending"] == [] and again["executed"] == []
    assert len(db.calls) == 1


def test_password_never_in_results_nor_commands(root, db):
    db.fail_with = f"could not connect to postgresql://bot04:{PASSWORD}@127.0.0.1:5433/bot04"
    res = call(root, state="upgraded")
    assert res["failed"] and res["msg"].startswith("Failed to upgrade the database on bot 'bot04': run alembic upgrade")
    text = json.dumps(res)
    assert PASSWORD not in text and "p%40ss" not in text
    assert all(PASSWORD not in " ".join(c["cmd"]) for c in db.calls)


def test_empty_database_upgrades_from_base(root, db):
    db.revision = None
    plan = call(root, check_mode=True, state="upgraded")
    assert plan["pending"] == ["0001_initial", "0002_trade_fee"]
    assert db.calls[-1]["cmd"][-3:] == ["upgrade", "--sql", "0002_trade_fee"]


def test_downgrade_expand_by_id_and_relative(root, db):
    db.revision = "0002_trade_fee"
    res = call(root, state="downgraded", revision="0001_initial")
    assert res["changed"] and res["executed"] == ["0002_trade_fee"] and db.revision == "0001_initial"
    assert call(root, state="downgraded", revision="0001_initial")["changed"] is False
    db.revision = "0002_trade_fee"
    assert call(root, state="downgraded", revision="-1")["current"] == "0001_initial"


def test_downgrade_across_contract_is_refused_naming_the_backup(root, db):
    db.revision = "0003_rename_qty"
    ledger = {"format": 1, "releases": {
        "1.1.0": {"version": "1.1.0", "alembic_head": "0002_trade_fee", "backup_id": "older-backup"},
        "2.0.0": {"version": "2.0.0", "alembic_head": "0003_rename_qty", "backup_id": "20240301T020000Z-bot04",
                  "status": "bad"}}, "history": []}
    (root / "releases" / "ledger.json").write_text(json.dumps(ledger))
    res = call(root, state="downgraded", revision="0001_initial", release="2.0.0")
    assert res["failed"] and "contract migration 0003_rename_qty" in res["msg"]
    assert "restore backup 20240301T020000Z-bot04 (linked to release 2.0.0" in res["msg"]
    assert res["pending"] == ["0003_rename_qty", "0002_trade_fee"] and res["contract"] == ["0003_rename_qty"]
    assert db.calls == [] and db.revision == "0003_rename_qty"


def test_contract_refusal_without_a_linked_backup(root, db):
    db.revision = "0003_rename_qty"
    res = call(root, state="downgraded", revision="base", release="2.0.0")
    assert res["failed"] and "restore the backup taken before 0003_rename_qty was applied" in res["msg"]


def test_forced_contract_downgrade(root, db):
    db.revision = "0003_rename_qty"
    res = call(root, state="downgraded", revision="0001_initial", release="2.0.0", force_contract_downgrade=True)
    assert res["changed"] and res["executed"] == ["0003_rename_qty", "0002_trade_fee"]
    assert db.revision == "0001_initial"


def test_downgrade_uses_the_release_that_knows_the_revision(root, db):
    db.revision = "0003_rename_qty"  # current (1.1.0) does not know 0003
    res = call(root, state="downgraded", revision="0002_trade_fee", force_contract_downgrade=True)
    assert res["release"] == "2.0.0" and res["config"] == str(root / "releases" / "2.0.0" / "alembic.ini")
    assert db.revision == "0002_trade_fee"


def test_upgrade_from_an_unknown_revision_is_refused(root, db):
    db.revision = "0003_rename_qty"
    res = call(root, state="upgraded")
    assert res["failed"] and "does not know" in res["msg"] and db.calls == []


def test_upgrade_with_release_option_and_explicit_target(root, db):
    plan = call(root, check_mode=True, state="upgraded", release="2.0.0")
    assert plan["pending"] == ["0002_trade_fee", "0003_rename_qty"] and plan["contract"] == ["0003_rename_qty"]
    res = call(root, state="upgraded", release="2.0.0", revision="0002")
    assert res["target"] == "0002_trade_fee" and db.revision == "0002_trade_fee"


def test_unknown_target_and_uninstalled_release_fail(root, db):
    assert "unknown revision" in call(root, state="upgraded", revision="0099")["msg"]
    assert "not installed" in call(root, state="upgraded", release="3.0.0")["msg"]
    assert "invalid version" in call(root, state="upgraded", release="../x")["msg"]
    assert call(root, state="downgraded")["failed"]  # revision required


def test_profile_without_alembic_fails(root, db):
    profile = dict(PROFILE, database={"engine": "postgresql", "name": "x", "migrations": {"tool": "none"}})
    args = dict(profile=profile, bot={"name": "bot04", "root": str(root)})
    res = run_module(bot_migrate.main, args)
    assert res["failed"] and "no Alembic migrations" in res["msg"]
