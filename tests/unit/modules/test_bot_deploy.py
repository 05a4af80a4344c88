"""bot_deploy against the fake bot (HTTP and process) and a fake database with a fake alembic:
the order of the window, online expand migrations, contract migrations inside the window, the
revert, the refusal before anything is touched, check mode, idempotency, the mode kept DRY."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from ansible.module_utils import basic
from ansible_collections.botops.fleet.plugins.module_utils.botops_pg import Database

from ansible_collections.botops.fleet.plugins.modules import bot_deploy

from .fake_bot import api_profile, fake, fakes, stop_profile  # noqa: F401  (fixtures)
from .utils import run_module

REPO = Path(__file__).resolve().parents[3]
VERSIONS = REPO / "botops" / "sandbox" / "refbot" / "migrations" / "versions"
HEADS = {"1.0.0": "0001_initial", "1.1.0": "0002_trade_fee", "2.0.0": "0003_rename_qty"}
ORDER = ["0001_initial", "0002_trade_fee", "0003_rename_qty"]
DB = {"host": "127.0.0.1", "port": 5433, "name": "b07", "user": "b07"}
PASSWORD = "s3cr:t/pw"


def release(root, version, migrations=True):
    path = Path(root) / "releases" / version
    path.mkdir(parents=True)
    (path / "release.json").write_text(json.dumps({"version": version, "alembic_head": HEADS.get(version)}))
    if migrations:
        (path / "migrations" / "versions").mkdir(parents=True)
        (path / "alembic.ini").write_text("[alembic]\nscript_location = %(here)s/migrations\n")
        for rev in ORDER[: ORDER.index(HEADS[version]) + 1]:
            shutil.copy(VERSIONS / f"{rev}.py", path / "migrations" / "versions")
    return path


def setup_releases(fake, current="1.0.0", versions=("1.0.0", "1.1.0"), migrations=False):
    for version in versions:
        release(fake.root, version, migrations)
    (Path(fake.root) / "current").symlink_to(f"releases/{current}")


def ledger(fake):
    return json.loads((Path(fake.root) / "releases" / "ledger.json").read_text())["releases"]


def current(fake):
    return Path(fake.root, "current").resolve().name


def deploy(fake, check_mode=False, profile=None, **kw):
    args = fake.args(profile=profile, **kw)
    args["secrets"] = dict(args["secrets"], database_password=PASSWORD)
    args["bot"]["database"] = DB
    args.setdefault("ready_stable_for", 0.1)
    args.setdefault("ready_timeout", 2)
    return run_module(bot_deploy.main, args, check_mode=check_mode)


def events(fake):
    """Service and POST calls of the fake bot, as short words, in order."""
    words = []
    for call in fake.calls:
        if call[0] == "service":
            words.append(call[1])
        elif call[0] == "POST":
            words.append(call[1])
    return words


# ---------------------------------------------------------------------------- a bot without a database
def test_deploy_window_in_order_then_unchanged(fake):
    setup_releases(fake)
    res = deploy(fake, version="1.1.0", backup_id="20261121T020000Z-abc123", reason="deploy 1.1.0")
    assert not res.get("failed"), res["msg"]
    assert res["changed"] and not res["reverted"] and res["ready"] is True
    assert (res["release_before"], res["release_after"], current(fake)) == ("1.0.0", "1.1.0", "1.1.0")
    # the fake's maintenance is in memory: the restart cleared it, so there was nothing left to release
    assert events(fake) == ["/maintenance/on", "stop", "start"]
    assert res["paused"] is True and fake.maintenance is False and fake.running
    assert res["actions"][:2] == ["pause entries (maintenance)", "service stop"]
    assert "switch current 1.0.0 -> 1.1.0" in res["actions"] and res["actions"][-1] == "mark 1.1.0 good"
    assert 0 < res["downtime"] < 2 and {"pause entries", "stop", "switch current", "start",
                                        "release the pause", "readiness gate"} <= set(res["timings"])
    entry = ledger(fake)["1.1.0"]
    assert entry["status"] == "good" and entry["backup_id"] == "20261121T020000Z-abc123"
    assert res["diff"]["before"]["release"] == "1.0.0" and res["diff"]["after"]["release"] == "1.1.0"
    fake.calls.clear()
    again = deploy(fake, version="1.1.0", backup_id="20261121T020000Z-abc123")
    assert not again.get("failed"), again["msg"]
    assert again["changed"] is False and again["actions"] == [] and fake.calls == []


def test_check_mode_plans_and_changes_nothing(fake):
    setup_releases(fake)
    res = deploy(fake, check_mode=True, version="1.1.0")
    assert res["changed"] and res["actions"] == []
    assert res["would"][:3] == ["pause entries (kill switch level pause)", "stop the bot gracefully",
                                "switch current 1.0.0 -> 1.1.0"]
    assert current(fake) == "1.0.0" and fake.calls == [] and not (Path(fake.root) / "releases" / "ledger.json").exists()


def test_check_mode_accepts_a_release_not_installed_yet(fake):
    setup_releases(fake, versions=("1.0.0",))
    res = deploy(fake, check_mode=True, version="1.1.0")
    assert res["changed"] and "not installed yet" in res["would"][0]
    real = deploy(fake, version="1.1.0")
    assert real["failed"] and "release 1.1.0 is not installed (installed: 1.0.0)" in real["msg"]
    assert real["msg"].endswith("(nothing was changed)") and real["changed"] is False
    assert fake.calls == [] and current(fake) == "1.0.0"


def test_not_ready_release_is_reverted_and_marked_bad(fake, monkeypatch):
    setup_releases(fake)
    real_boot = fake._boot

    def boot():
        # decided before the bot runs, so no poll can see the new release ready for a moment
        fake.ready = current(fake) != "1.1.0"  # the new release never becomes ready
        real_boot()

    monkeypatch.setattr(fake, "_boot", boot)
    res = deploy(fake, version="1.1.0", ready_timeout=0.5)
    assert res["failed"] and res["reverted"] is True
    assert res["msg"].startswith("Failed to deploy release 1.1.0 on bot 'b07': start: not ready within 0.5s")
    assert "reverted: stopped release 1.1.0, switched back to 1.0.0, started 1.0.0, ready" in res["msg"]
    assert current(fake) == "1.0.0" and res["release_after"] == "1.0.0" and fake.running and fake.ready
    assert ledger(fake)["1.1.0"]["status"] == "bad" and "not ready" in ledger(fake)["1.1.0"]["note"]
    assert events(fake) == ["/maintenance/on", "stop", "start", "stop", "start"]
    assert "revert:" in res["actions"]


def test_rollback_to_latest_marks_the_replaced_release_bad(fake):
    setup_releases(fake, current="1.1.0", versions=("1.0.0", "1.1.0", "1.2.0"))
    (Path(fake.root) / "releases" / "ledger.json").write_text(json.dumps({"format": 1, "releases": {
        "1.0.0": {"version": "1.0.0", "status": "good", "activated_at": "2026-01-01T00:00:00Z"},
        "1.2.0": {"version": "1.2.0", "status": "bad", "activated_at": "2026-01-03T00:00:00Z"},
        "1.1.0": {"version": "1.1.0", "status": "good", "activated_at": "2026-01-02T00:00:00Z"}}, "history": []}))
    res = deploy(fake, version="latest", replaced_status="bad")
    assert not res.get("failed"), res["msg"]
    assert res["version"] == "1.0.0" and current(fake) == "1.0.0"
    assert ledger(fake)["1.1.0"]["status"] == "bad" and ledger(fake)["1.0.0"]["status"] == "good"
    nothing = deploy(fake, version="latest")
    assert nothing["failed"] and "no good release other than 1.0.0" in nothing["msg"]


def test_dry_bot_that_comes_back_live_is_put_back_to_dry(fake):
    setup_releases(fake)
    (Path(fake.root) / "config.json").write_text(json.dumps({"execution_mode": "LIVE"}))  # the next start goes LIVE
    res = deploy(fake, version="1.1.0")
    assert not res.get("failed"), res["msg"]
    assert fake.mode == "DRY" and res["mode"] == {"execution_mode": "DRY", "paper_trading": True}
    assert "set execution_mode in config.json" in res["actions"]
    assert json.loads((Path(fake.root) / "config.json").read_text())["execution_mode"] == "DRY"


def test_family_whose_pause_is_a_stop(fake):
    """The graceful stop is the pause: no kill-switch ladder before it, nothing to release after."""
    setup_releases(fake)
    res = deploy(fake, profile=stop_profile(), version="1.1.0")
    assert not res.get("failed"), res["msg"]
    assert events(fake) == ["stop", "start"] and fake.running and res["paused"] is False
    assert res["actions"][0] == "service stop" and "pause entries" not in res["timings"]
    assert res["downtime"] is not None and current(fake) == "1.1.0"


def test_stopped_bot_is_started(fake):
    setup_releases(fake)
    fake.running = False
    res = deploy(fake, version="1.1.0")
    assert not res.get("failed"), res["msg"]
    assert events(fake) == ["start"] and res["paused"] is False and fake.running


# ---------------------------------------------------------------------------- with migrations
class FakeDb:
    def __init__(self, revision):
        self.revision = revision
        self.calls = []
        self.fail = set()  # "upgrade" / "downgrade" fail


@pytest.fixture
def db(monkeypatch):
    fake_db = FakeDb("0001_initial")

    def scalar(self, sql, dbname=None):
        return "t" if fake_db.revision is not None else "f"

    def query(self, sql, dbname=None):
        return [[fake_db.revision]] if fake_db.revision is not None else []

    def run_command(self, cmd, cwd=None, environ_update=None, **kw):
        action, target = cmd[3], cmd[4]
        fake_db.calls.append((action, target, Path(cwd).name))
        assert PASSWORD not in " ".join(cmd)
        if action in fake_db.fail:
            return 1, "", f"boom postgresql://b07:{PASSWORD}@127.0.0.1/b07"
        fake_db.revision = None if target == "base" else target
        return 0, "", ""

    monkeypatch.setattr(Database, "scalar", scalar)
    monkeypatch.setattr(Database, "query", query)
    monkeypatch.setattr(basic.AnsibleModule, "run_command", run_command)
    return fake_db


def pg_profile():
    profile = api_profile()
    profile["database"] = {"engine": "postgresql", "name": "trading_bot",
                           "migrations": {"tool": "alembic", "config": "alembic.ini"}}
    return profile


def test_expand_upgrade_runs_before_the_stop(fake, db):
    setup_releases(fake, migrations=True)
    res = deploy(fake, profile=pg_profile(), version="1.1.0")
    assert not res.get("failed"), res["msg"]
    assert db.calls == [("upgrade", "0002_trade_fee", "1.1.0")] and db.revision == "0002_trade_fee"
    assert res["actions"][0] == "upgrade 0001_initial -> 0002_trade_fee (release 1.1.0's scripts)"
    assert (res["revision_before"], res["revision_after"]) == ("0001_initial", "0002_trade_fee")
    assert "migrate before the stop" in res["timings"]


def test_offline_upgrade_runs_after_the_switch(fake, db):
    setup_releases(fake, migrations=True)
    res = deploy(fake, profile=pg_profile(), version="1.1.0", online_migrations=False)
    assert not res.get("failed"), res["msg"]
    actions = res["actions"]
    assert actions.index("switch current 1.0.0 -> 1.1.0") < \
        actions.index("upgrade 0001_initial -> 0002_trade_fee (release 1.1.0's scripts)") < actions.index("service start")
    assert res["actions"].index("service stop") < res["actions"].index("switch current 1.0.0 -> 1.1.0")


def test_expand_rollback_downgrades_with_the_newer_scripts_once_the_older_release_runs(fake, db):
    setup_releases(fake, current="1.1.0", migrations=True)
    db.revision = "0002_trade_fee"
    res = deploy(fake, profile=pg_profile(), version="1.0.0")
    assert not res.get("failed"), res["msg"]
    assert db.calls == [("downgrade", "0001_initial", "1.1.0")] and current(fake) == "1.0.0"
    actions = res["actions"]
    assert actions.index("ready") < actions.index("downgrade 0002_trade_fee -> 0001_initial (release 1.1.0's scripts)")
    assert res["migration"]["direction"] == "downgrade" and res["migration"]["release"] == "1.1.0"


def test_contract_upgrade_runs_inside_the_window(fake, db):
    setup_releases(fake, current="1.1.0", versions=("1.1.0", "2.0.0"), migrations=True)
    db.revision = "0002_trade_fee"
    res = deploy(fake, profile=pg_profile(), version="2.0.0")
    assert not res.get("failed"), res["msg"]
    actions = res["actions"]
    assert actions.index("service stop") < actions.index("switch current 1.1.0 -> 2.0.0") < \
        actions.index("upgrade 0002_trade_fee -> 0003_rename_qty (release 2.0.0's scripts)") < actions.index("service start")
    assert res["migration"]["contract"] == ["0003_rename_qty"]


def test_contract_rollback_without_a_backup_is_refused_before_anything(fake, db):
    setup_releases(fake, current="2.0.0", versions=("1.1.0", "2.0.0"), migrations=True)
    db.revision = "0003_rename_qty"
    res = deploy(fake, profile=pg_profile(), version="1.1.0")
    assert res["failed"] and res["reverted"] is False and "(nothing was changed)" in res["msg"]
    assert "contract migration 0003_rename_qty" in res["msg"] and "pass backup_id" in res["msg"]
    assert fake.calls == [] and db.calls == [] and current(fake) == "2.0.0"


def test_failed_upgrade_after_the_switch_is_reverted(fake, db):
    setup_releases(fake, migrations=True)
    db.fail.add("upgrade")
    res = deploy(fake, profile=pg_profile(), version="1.1.0", online_migrations=False)
    assert res["failed"] and res["reverted"] and current(fake) == "1.0.0" and fake.running
    assert "upgrade the database: alembic upgrade 0002_trade_fee failed" in res["msg"]
    assert PASSWORD not in json.dumps(res)
    assert db.revision == "0001_initial"


def test_gate_failure_undoes_the_upgrade_with_the_new_scripts(fake, db, monkeypatch):
    setup_releases(fake, migrations=True)
    real_boot = fake._boot

    def boot():
        fake.ready = current(fake) != "1.1.0"
        real_boot()

    monkeypatch.setattr(fake, "_boot", boot)
    res = deploy(fake, profile=pg_profile(), version="1.1.0", ready_timeout=0.5)
    assert res["failed"] and res["reverted"]
    assert db.calls == [("upgrade", "0002_trade_fee", "1.1.0"), ("downgrade", "0001_initial", "1.1.0")]
    assert "downgraded the database back to 0001_initial" in res["msg"]
    assert db.revision == "0001_initial" and current(fake) == "1.0.0" and res["revision_after"] == "0001_initial"


# ---------------------------------------------------------------------------- restoring a backup
class FakeEngine:
    """The bot's database seen by botops_backup: names of the databases and what each holds."""

    engine = "postgresql"

    def __init__(self, db):
        self.name = "b07"
        self.db = db
        self.databases = {"b07": "live"}
        self.calls = []

    def exists(self, name):
        return name in self.databases

    def drop(self, name):
        self.calls.append(("drop", name))
        self.databases.pop(name, None)

    def create_like(self, scratch, like=None):
        self.calls.append(("create", scratch))
        self.databases[scratch] = "empty"

    def restore_into(self, set_dir, dbinfo, scratch, jobs=2):
        self.calls.append(("restore", scratch))
        self.databases[scratch] = "backup"

    def counts(self, name=None):
        return {"trades": 10}, 10, "0002_trade_fee"

    def set_marker(self, name, value):
        self.calls.append(("marker", name))

    def marker(self, name):
        return None

    def swap(self, scratch, previous, live_exists=True):
        self.calls.append(("swap", scratch, previous))
        if live_exists:
            self.databases[previous] = self.databases.pop(self.name)
        self.databases[self.name] = self.databases.pop(scratch)
        if self.databases[self.name] == "backup":
            self.db.revision = "0002_trade_fee"

    def close(self):
        pass


def make_backup(fake, backup_id, release_version, revision):
    import hashlib
    set_dir = Path(fake.root) / "backups" / backup_id
    set_dir.mkdir(parents=True)
    data = b"dump"
    (set_dir / "database.dump.zst").write_bytes(data)
    manifest = {"backup_id": backup_id, "release": release_version, "created_at": "2026-11-21T02:00:00Z",
                "files": {"database.dump.zst": {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}},
                "database": {"engine": "postgresql", "format": "custom_zstd", "alembic_revision": revision,
                             "row_counts": {"trades": 10}, "ledger_max_id": 10}}
    (set_dir / "manifest.json").write_text(json.dumps(manifest))


def contract_rollback_setup(fake, db, monkeypatch):
    """Bot at 2.0.0 (contract migration 0003) with 1.1.0 installed and a backup linked to 2.0.0 in
    the ledger; databases are a FakeEngine's. Returns (engine, backup_id)."""
    from ansible_collections.botops.fleet.plugins.module_utils import botops_backup_store, botops_deploy_data
    engine = FakeEngine(db)
    monkeypatch.setattr(botops_deploy_data, "engine_for", lambda *a, **kw: engine)
    monkeypatch.setattr(botops_deploy_data, "PostgresEngine", FakeEngine)
    monkeypatch.setattr(botops_backup_store.BackupStore, "lock", lambda self, timeout=600: __import__("contextlib").nullcontext())
    setup_releases(fake, current="2.0.0", versions=("1.1.0", "2.0.0"), migrations=True)
    db.revision = "0003_rename_qty"
    backup_id = "20261121T020000Z-abc123"
    make_backup(fake, backup_id, "1.1.0", "0002_trade_fee")
    (Path(fake.root) / "releases" / "ledger.json").write_text(json.dumps({"format": 1, "history": [], "releases": {
        "1.1.0": {"version": "1.1.0", "status": "good", "activated_at": "2026-01-01T00:00:00Z"},
        "2.0.0": {"version": "2.0.0", "status": "good", "backup_id": backup_id, "activated_at": "2026-01-02T00:00:00Z"}}}))
    return engine, backup_id


def test_contract_rollback_restores_the_linked_backup_before_the_stop_and_swaps_it_in(fake, db, monkeypatch):
    engine, backup_id = contract_rollback_setup(fake, db, monkeypatch)

    plan = deploy(fake, check_mode=True, profile=pg_profile(), version="latest", replaced_status="bad")
    assert plan["would"][0] == f"restore backup {backup_id} into a scratch database before the stop"
    assert engine.calls == [] and fake.calls == []

    res = deploy(fake, profile=pg_profile(), version="latest", replaced_status="bad")
    assert not res.get("failed"), res["msg"]
    assert res["version"] == "1.1.0" and current(fake) == "1.1.0" and db.calls == []  # no alembic: the backup
    actions = res["actions"]
    restored = actions.index(f"restore {backup_id} into b07_restore_{backup_id.lower().replace('-', '_')}, "
                             "row counts checked")
    swapped = next(i for i, a in enumerate(actions) if a.startswith(f"swap backup {backup_id} in"))
    assert restored < actions.index("pause entries (maintenance)") < actions.index("service stop") < swapped \
        < actions.index("switch current 2.0.0 -> 1.1.0") < actions.index("service start")
    assert res["restored"] and res["previous_database"].startswith("b07_pre_restore_")
    assert engine.databases["b07"] == "backup" and engine.databases[res["previous_database"]] == "live"
    assert (res["revision_before"], res["revision_after"]) == ("0003_rename_qty", "0002_trade_fee")
    assert ledger(fake)["2.0.0"]["status"] == "bad" and ledger(fake)["1.1.0"]["status"] == "good"


def test_a_failure_after_the_swap_puts_the_live_database_back(fake, db, monkeypatch):
    from ansible_collections.botops.fleet.plugins.module_utils import botops_deploy
    engine, _ = contract_rollback_setup(fake, db, monkeypatch)
    switch = botops_deploy.Deploy.switch

    def failing_switch(self, from_version, to_version, forward):
        if forward:
            raise OSError("disk full")
        return switch(self, from_version, to_version, forward)

    monkeypatch.setattr(botops_deploy.Deploy, "switch", failing_switch)
    res = deploy(fake, profile=pg_profile(), version="latest", replaced_status="bad")
    assert res["failed"] and "switch current: disk full" in res["msg"], res["msg"]
    assert "put the previous database back (the restored one kept as b07_failed_deploy_" in res["msg"]
    assert engine.databases["b07"] == "live", "the database the rollback replaced is live again"
    assert current(fake) == "2.0.0" and fake.running
