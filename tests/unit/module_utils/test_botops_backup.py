"""plugins/module_utils/botops_backup: ids, names, retention, ledger protection, file safety, and the
PostgreSQL engine (snapshot-consistent dump in every format, scratch restore, swap) on a
throwaway cluster."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import tarfile
import threading
import time

import pytest

from ansible_collections.botops.fleet.plugins.module_utils import botops_backup as bb
from ansible_collections.botops.fleet.plugins.module_utils import botops_backup_paths as backup_paths
from ansible_collections.botops.fleet.plugins.module_utils import botops_backup_postgres as pg_engine
from ansible_collections.botops.fleet.plugins.module_utils import botops_backup_store as backup_store
from ansible_collections.botops.fleet.plugins.module_utils import botops_retention as retention
from ansible_collections.botops.fleet.plugins.module_utils.botops_pg import Database, pg_bin

# --------------------------------------------------------------------------- pure helpers


@pytest.mark.parametrize("good", ["20261121T020000Z-3fa9c1", "20261121T020000Z-pre-deploy-1.1.0", "20261121T020000Z-a_b"])
def test_valid_backup_ids(good):
    assert backup_store.validate_backup_id(good) == good


@pytest.mark.parametrize("bad", ["", "latest", "..", "20261121T020000Z-", "20261121T020000Z-../x", "20261121T020000Z-a/b",
                                 "2026-11-21-x", "20261121T020000Z-.hidden", "/abs", "20261121T020000Z-x\n"])
def test_invalid_backup_ids(bad):
    with pytest.raises(backup_store.BackupError):
        backup_store.validate_backup_id(bad)


def test_latest_only_where_allowed():
    assert backup_store.validate_backup_id("latest", allow_latest=True) == "latest"
    assert backup_store.BACKUP_ID_RE.fullmatch(backup_store.new_backup_id())


def test_derived_names_are_short_safe_identifiers():
    name = backup_store.derived_db_name("x" * 80, "restore", "20261121T020000Z-Pre-Deploy.1")
    assert len(name) <= 63 and name.endswith("_restore_20261121t020000z_pre_deploy_1")
    assert backup_store.derived_db_name("trading_db", "verify", "20261121T020000Z-ab12") == "trading_db_verify_20261121t020000z_ab12"


def sets_of(*specs):
    return [{"backup_id": b, "manifest": {"created_at": at, "linked_release": rel}, "verification": {"ok": ok} if ok else None}
            for b, at, rel, ok in specs]


NOW = backup_store.parse_iso("2026-11-21T00:00:00Z")


def test_retention_keeps_what_any_rule_keeps():
    sets = sets_of(("e", "2026-11-20T00:00:00Z", None, False), ("d", "2026-11-01T00:00:00Z", None, False),
                   ("c", "2026-10-01T00:00:00Z", None, True), ("b", "2026-09-01T00:00:00Z", "1.0.0", False),
                   ("a", "2026-08-01T00:00:00Z", None, True))
    delete, keep = retention.plan_retention(sets, keep_last=1, max_age_days=30, protected={"1.0.0"}, now=NOW)
    assert [d for d, _ in delete] == ["a"]  # verified, but not the newest verified one
    assert dict(keep) == {"e": "one of the newest 1", "d": "younger than 30 days", "c": "newest verified backup",
                          "b": "linked to release 1.0.0 (still current or good)"}
    assert retention.plan_retention(sets, None, None, now=NOW)[0] == []


def test_protected_releases_reads_the_release_ledger(tmp_path):
    (tmp_path / "releases" / "1.1.0").mkdir(parents=True)
    os.symlink("releases/1.1.0", tmp_path / "current")
    assert retention.protected_releases(str(tmp_path)) == ({"1.1.0"}, set())  # no ledger yet: the current release
    (tmp_path / "releases" / "ledger.json").write_text(json.dumps({"format": 1, "history": [], "releases": {
        "1.0.0": {"version": "1.0.0", "status": "good", "backup_id": None},
        "1.2.0-broken": {"version": "1.2.0-broken", "status": "bad", "backup_id": "20261120T000000Z-b"},
        "0.9.0": {"version": "0.9.0", "status": "installed"},
        "1.1.0": {"version": "1.1.0", "status": "installed", "backup_id": "20261121T000000Z-a"}}}))
    assert retention.protected_releases(str(tmp_path)) == ({"1.0.0", "1.1.0"}, {"20261121T000000Z-a"})
    (tmp_path / "releases" / "ledger.json").write_text("{not json")
    assert retention.protected_releases(str(tmp_path)) == ({"1.1.0"}, set())


def test_retention_keeps_backups_the_ledger_names():
    sets = sets_of(("b", "2026-11-20T00:00:00Z", None, False), ("a", "2026-01-01T00:00:00Z", None, False))
    delete, keep = retention.plan_retention(sets, keep_last=1, now=NOW, protected_ids={"a"})
    assert delete == [] and dict(keep)["a"].startswith("named by the release history")


def write_set(store_dir, backup_id, created_at=None, safety_for=None, manifest=None):
    """A set directory as BackupStore reads it: manifest.json (given raw text, or built) and a file."""
    directory = store_dir / backup_id
    directory.mkdir(parents=True)
    (directory / "files.tar.gz").write_bytes(b"data")
    if manifest is None:
        manifest = json.dumps({"backup_id": backup_id, "created_at": created_at, "safety_for": safety_for})
    if manifest is not False:
        (directory / "manifest.json").write_text(manifest)
    return directory


def test_damaged_sets_are_listed_in_their_place_with_the_reason(tmp_path):
    write_set(tmp_path, "20261121T020000Z-a", "2026-11-21T02:00:00Z")
    write_set(tmp_path, "20261121T020600Z-b", manifest='{"backup_id": "20261121T020600Z-b", "created_')
    write_set(tmp_path, "20261121T010000Z-c", manifest=False)
    write_set(tmp_path, "20261121T030000Z-d", manifest=json.dumps({"backup_id": "20261121T020000Z-a"}))
    write_set(tmp_path, "20261121T000000Z-e", manifest="[]")
    (tmp_path / "20261120T000000Z-f").write_text("a file, not a set")
    (tmp_path / ".tmp-20261121T040000Z-g").mkdir()  # an unfinished backup, not a damaged set
    write_set(tmp_path, "20261121T050000Z-h", "2026-11-21T05:00:00Z", safety_for="20261121T020000Z-a")
    store = backup_store.BackupStore(str(tmp_path))
    listed = {s["backup_id"]: s for s in store.list()}
    assert list(listed) == ["20261121T050000Z-h", "20261121T030000Z-d", "20261121T020600Z-b", "20261121T020000Z-a",
                            "20261121T010000Z-c", "20261121T000000Z-e", "20261120T000000Z-f"]
    try:
        json.loads('{"backup_id": "20261121T020600Z-b", "created_')
    except ValueError as exc:
        truncated = f"manifest.json unreadable: {exc}"
    assert {b: s["damaged"] for b, s in listed.items()} == {
        "20261121T050000Z-h": None, "20261121T020000Z-a": None,
        "20261121T030000Z-d": "manifest.json describes backup '20261121T020000Z-a', not this set",
        "20261121T020600Z-b": truncated,
        "20261121T010000Z-c": "manifest.json missing",
        "20261121T000000Z-e": "manifest.json is not a JSON object",
        "20261120T000000Z-f": "not a directory"}
    assert listed["20261121T020600Z-b"]["manifest"] == {} and listed["20261121T020600Z-b"]["verification"] is None
    assert backup_store.summarize(listed["20261121T020600Z-b"])["created_at"] == "2026-11-21T02:06:00Z"
    with pytest.raises(backup_store.DamagedBackup, match="20261121T010000Z-c .* is damaged \\(manifest.json missing\\)"):
        store.load("20261121T010000Z-c")
    with pytest.raises(backup_store.BackupError, match="not found"):
        store.load("20261121T010000Z-none")


def test_latest_counts_a_damaged_set_whose_kind_is_unknown(tmp_path):
    store = backup_store.BackupStore(str(tmp_path))
    write_set(tmp_path, "20261121T020000Z-a", "2026-11-21T02:00:00Z")
    write_set(tmp_path, "20261121T030000Z-safety", "2026-11-21T03:00:00Z", safety_for="20261121T020000Z-a")
    assert store.resolve("latest") == "20261121T020000Z-a"  # safety backups are skipped, as before
    write_set(tmp_path, "20261121T010000Z-old", manifest="{")
    assert store.resolve("latest") == "20261121T020000Z-a"  # a damaged set older than it changes nothing
    write_set(tmp_path, "20261121T020600Z-b", manifest="")  # newer than a, older than the safety backup
    with pytest.raises(backup_store.DamagedBackup) as refused:
        store.resolve("latest")
    assert (refused.value.backup_id, refused.value.reason) == (
        "20261121T020600Z-b", "manifest.json unreadable: Expecting value: line 1 column 1 (char 0)")
    assert "'latest' does not resolve past a damaged set" in str(refused.value)
    assert "e.g. --backup=20261121T020000Z-a" in str(refused.value)
    assert store.resolve("20261121T020000Z-a") == "20261121T020000Z-a"
    with pytest.raises(backup_store.DamagedBackup, match="manifest.json unreadable"):
        store.resolve("20261121T020600Z-b")
    (tmp_path / "20261121T020000Z-a" / "manifest.json").write_text("{")
    with pytest.raises(backup_store.DamagedBackup, match="no older readable set to fall back to"):
        store.resolve("latest")


def test_retention_keeps_damaged_sets_outside_keep_last():
    sets = sets_of(("d", "2026-11-20T00:00:00Z", None, False), ("c", "2026-10-01T00:00:00Z", None, True),
                   ("b", "2026-09-01T00:00:00Z", None, False), ("a", "2026-08-01T00:00:00Z", None, False))
    sets[0].update(manifest={}, verification={"ok": True}, damaged="manifest.json missing")
    sets[2].update(manifest={}, damaged="manifest.json unreadable: Expecting value: line 1 column 1 (char 0)")
    delete, keep = retention.plan_retention(sets, keep_last=1, max_age_days=1, now=NOW)
    assert [d for d, _ in delete] == ["a"]
    keep = dict(keep)
    assert keep["c"] == "one of the newest 1"  # a damaged set is not one of the newest readable ones
    assert keep["d"].startswith("damaged (manifest.json missing): retention never deletes a damaged set")
    assert keep["b"].startswith("damaged (manifest.json unreadable: Expecting value")
    assert dict(retention.plan_retention(sets, None, None, now=NOW)[1])["d"].startswith("damaged (")


def test_compare_counts_names_each_difference():
    db = {"row_counts": {"trades": 10, "orders": 2}, "ledger_max_id": 10, "alembic_revision": "0002"}
    assert bb.compare_counts(db, {"trades": 10, "orders": 2}, 10, "0002") == []
    assert bb.compare_counts(db, {"trades": 9, "orders": 2}, 9, "0003") == [
        "trades: 9 rows, manifest says 10", "ledger max id 9, manifest says 10", "alembic revision 0003, manifest says 0002"]


def test_file_restore_ignores_members_outside_the_allowed_paths(tmp_path):
    root = tmp_path / "root"
    (root / "shared" / "config").mkdir(parents=True)
    tar_path = tmp_path / "files.tar.gz"
    with tarfile.open(tar_path, "w:gz") as tar:
        for name in ("shared/config/bot.json", "../evil", "/etc/evil", "shared/other/x"):
            data = b"{}\n"
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o600
            tar.addfile(info, io.BytesIO(data))
    plan = backup_paths.plan_files(str(root), str(tar_path), ["shared/config"])
    assert [(n, why) for n, _, why in plan] == [("shared/config/bot.json", "missing")]
    assert backup_paths.apply_files(str(root), str(tar_path), plan) == ["shared/config/bot.json"]
    assert (root / "shared" / "config" / "bot.json").read_bytes() == b"{}\n"
    assert not (tmp_path / "evil").exists()
    assert backup_paths.plan_files(str(root), str(tar_path), ["shared/config"]) == []


# --------------------------------------------------------------------------- PostgreSQL engine

try:
    pg_bin("pg_dump")
    from tests.integration.pgredis import PostgresCluster
    HAVE_PG = True
except Exception:  # noqa: BLE001 - no PostgreSQL here: those tests are skipped
    HAVE_PG = False

needs_pg = pytest.mark.skipif(not HAVE_PG, reason="PostgreSQL binaries not installed")


@pytest.fixture(scope="module")
def cluster():
    if not HAVE_PG:
        pytest.skip("PostgreSQL binaries not installed")
    c = PostgresCluster()
    try:
        c.init()
        c.start()
        yield c
    finally:
        c.destroy()


DATABASES = iter(range(1, 1000))


@pytest.fixture
def engine(cluster):
    import psycopg

    name = f"bkbot{next(DATABASES):03d}"
    url = cluster.create_database(name, password="pw")
    cluster.execute(f'ALTER ROLE "{name}" CREATEDB')
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("""
            CREATE TABLE trades (id bigint PRIMARY KEY, symbol text NOT NULL, qty numeric NOT NULL);
            CREATE TABLE orders (id bigint PRIMARY KEY, status text NOT NULL);
            CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY);
            INSERT INTO alembic_version VALUES ('0002_trade_fee');
            INSERT INTO trades SELECT g, 'BTC-USD', 1 FROM generate_series(1, 500) g;
            INSERT INTO orders SELECT g, 'open' FROM generate_series(1, 7) g;
        """)
    db = Database({"host": "127.0.0.1", "port": cluster.port, "name": name, "user": name}, "pw")
    return pg_engine.PostgresEngine(db, ["trades", "orders", "positions"], {"table": "trades", "id": "id"})


def bot_for(tmp_path):
    root = tmp_path / "bot"
    (root / "shared" / "config").mkdir(parents=True)
    (root / "shared" / "config" / "bot.json").write_text("{}\n")
    return {"name": "b07", "root": str(root)}


PROFILE = {"family": "mojorust", "backup": {"paths": ["shared/config"]}}


@needs_pg
def test_counts_missing_tables_are_null(engine):
    counts, ledger_max, revision = engine.counts()
    assert counts == {"trades": 500, "orders": 7, "positions": None}
    assert (ledger_max, revision) == (500, "0002_trade_fee")


@needs_pg
@pytest.mark.parametrize("fmt", ["custom_zstd", "custom", "directory"])
def test_every_format_round_trips_through_a_scratch_database(engine, tmp_path, fmt):
    store = backup_store.BackupStore(str(tmp_path / "backups"))
    manifest = bb.create_backup(store, engine, bot_for(tmp_path), PROFILE, fmt=fmt)
    db = manifest["database"]
    assert db["format"] == fmt and db["row_counts"] == {"trades": 500, "orders": 7, "positions": None}
    assert db["pg_dump_version"][0].isdigit() and db["snapshot"]
    set_dir = store.path(manifest["backup_id"])
    assert backup_store.verify_files(set_dir, manifest) == []
    problems, observed, scratch = bb.test_restore(engine, set_dir, manifest)
    assert problems == [] and observed["row_counts"]["trades"] == 500
    assert not engine.exists(scratch)


@needs_pg
def test_counts_are_taken_in_the_dump_snapshot_while_the_bot_writes(engine, tmp_path):
    stop = threading.Event()

    def writer():
        next_id = 501
        while not stop.is_set():
            engine.query(f"INSERT INTO trades VALUES ({next_id}, 'ETH-USD', 2)")
            next_id += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        time.sleep(0.2)
        store = backup_store.BackupStore(str(tmp_path / "backups"))
        manifest = bb.create_backup(store, engine, bot_for(tmp_path), PROFILE)
        time.sleep(0.2)
    finally:
        stop.set()
        thread.join()
    db = manifest["database"]
    assert db["row_counts"]["trades"] == db["ledger_max_id"] > 500
    assert engine.counts()[1] > db["ledger_max_id"]  # the writer went on after the snapshot
    problems, observed, _ = bb.test_restore(engine, store.path(manifest["backup_id"]), manifest)
    assert problems == [] and observed["ledger_max_id"] == db["ledger_max_id"]


@needs_pg
def test_swap_keeps_the_previous_database_and_marks_the_new_one(engine, tmp_path):
    store = backup_store.BackupStore(str(tmp_path / "backups"))
    manifest = bb.create_backup(store, engine, bot_for(tmp_path), PROFILE)
    engine.query("DELETE FROM trades WHERE id > 100")
    scratch = bb.scratch_name(engine, "restore", manifest["backup_id"])
    engine.create_like(scratch, engine.name)
    engine.restore_into(store.path(manifest["backup_id"]), manifest["database"], scratch)
    engine.set_marker(scratch, {"backup_id": manifest["backup_id"]})
    previous = backup_store.derived_db_name(engine.name, "pre_restore", "20261121T000000Z")
    engine.swap(scratch, previous)
    assert engine.counts()[1] == 500 and engine.counts(previous)[1] == 100
    assert engine.marker(engine.name) == {"backup_id": manifest["backup_id"]}
    assert engine.marker(previous) is None and not engine.exists(scratch)
    engine.drop(previous)


@needs_pg
def test_drop_and_swap_wait_out_a_session_this_role_may_not_end(engine, cluster, tmp_path):
    """Autovacuum on a freshly restored database looks like this to a bot's non-superuser role: a
    session it may not terminate. DROP ... WITH (FORCE) failed on it at once."""
    import psycopg

    cluster.execute("DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'other') "
                    "THEN CREATE ROLE other LOGIN PASSWORD 'other'; END IF; END$$")

    def hold(dbname, seconds):
        """Another role's session on dbname for `seconds`; returns when it is connected."""
        cluster.execute(f'GRANT CONNECT ON DATABASE "{dbname}" TO other')
        connected = threading.Event()

        def run():
            with psycopg.connect(cluster.url(dbname, "other", "other")) as conn:
                connected.set()
                with contextlib.suppress(psycopg.OperationalError):  # ended by the superuser below
                    conn.execute("SELECT pg_sleep(%s)", (seconds,))

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        assert connected.wait(10)
        return thread

    store = backup_store.BackupStore(str(tmp_path / "backups"))
    manifest = bb.create_backup(store, engine, bot_for(tmp_path), PROFILE)
    scratch = bb.scratch_name(engine, "restore", manifest["backup_id"])
    engine.create_like(scratch, engine.name)
    engine.restore_into(store.path(manifest["backup_id"]), manifest["database"], scratch)
    previous = backup_store.derived_db_name(engine.name, "pre_restore", "20261121T000001Z")
    held = hold(scratch, 1.0)
    engine.swap(scratch, previous)  # waits for the other session to end, then swaps
    held.join()
    assert engine.exists(previous) and not engine.exists(scratch) and engine.counts()[1] == 500
    held = hold(previous, 1.0)
    engine.drop(previous)
    held.join()
    assert not engine.exists(previous)

    engine.create_like(scratch, engine.name)
    held = hold(scratch, 30.0)  # longer than the drop waits: a clear failure, the database kept
    with pytest.raises(backup_store.BackupError, match=f"drop database {scratch}: .*being accessed by other users"):
        engine.drop(scratch, attempts=1)
    assert engine.exists(scratch)
    cluster.execute(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{scratch}'")
    held.join()
    engine.drop(scratch)


@needs_pg
def test_database_down_leaves_no_set_and_no_temp_dir(engine, tmp_path):
    engine.db.port = 1  # nothing listens there
    store = backup_store.BackupStore(str(tmp_path / "backups"))
    with pytest.raises(backup_store.BackupError, match="open a snapshot of database"):
        bb.create_backup(store, engine, bot_for(tmp_path), PROFILE)
    assert os.listdir(store.directory) == []


@needs_pg
def test_failed_restore_step_is_fatal(engine, tmp_path):
    store = backup_store.BackupStore(str(tmp_path / "backups"))
    manifest = bb.create_backup(store, engine, bot_for(tmp_path), PROFILE, fmt="custom")
    scratch = bb.scratch_name(engine, "restore", manifest["backup_id"])
    engine.create_like(scratch, engine.name)
    engine.query("CREATE TABLE trades (x int)", scratch)  # the restore's CREATE TABLE trades will fail
    with pytest.raises(backup_store.BackupError, match="pg_restore into .* failed"):
        engine.restore_into(store.path(manifest["backup_id"]), manifest["database"], scratch)
    engine.drop(scratch)


@needs_pg
def test_the_largest_tables_are_dumped_and_restored_side_by_side(engine, tmp_path, monkeypatch):
    """custom_zstd: the `jobs` largest tables' rows go into parts of their own, in the dump's snapshot;
    a restore brings back every row, sequence, index and constraint (a foreign key between two
    parts; a part's indexes are built as soon as its rows are in, the rest after every table's)."""
    monkeypatch.setattr(pg_engine, "PART_MIN_BYTES", 0)
    engine.query("CREATE TABLE fills (id serial PRIMARY KEY, trade_id bigint NOT NULL REFERENCES trades (id), "
                 "venue text, UNIQUE (venue, id)); CREATE INDEX fills_trade ON fills (trade_id); "
                 "INSERT INTO fills (trade_id) SELECT g FROM generate_series(1, 400) g; ANALYZE")
    store, bot = backup_store.BackupStore(str(tmp_path / "backups")), bot_for(tmp_path)
    manifest = bb.create_backup(store, engine, bot, PROFILE, jobs=2)
    db = manifest["database"]
    assert [p["table"] for p in db["parts"]] == ["public.trades", "public.fills"]
    # fills: its primary key and unique constraint (each a constraint and its index) and one index
    assert [len(p["indexes"]) for p in db["parts"]] == [2, 5]
    assert {p["path"] for p in db["parts"]} | {"database.dump.zst"} <= set(manifest["files"])
    set_dir = store.path(manifest["backup_id"])
    scratch = bb.scratch_name(engine, "restore", manifest["backup_id"])
    engine.create_like(scratch, engine.name)
    built_early, pipelines = [], engine._pipelines

    def spy(entries, what):  # what each part builds once its rows are in: `pg_restore -L` of its list
        for _commands, _target, *then in entries:
            lists = [argv[argv.index("-L") + 1] for argv in (then[0] if then else [])]
            built_early.append(sorted(line.split()[-2] for path in lists for line in open(path)))
        return pipelines(entries, what)

    monkeypatch.setattr(engine, "_pipelines", spy)
    engine.restore_into(set_dir, db, scratch, jobs=2)
    assert built_early == [[], ["trades_pkey"], ["fills_pkey", "fills_trade", "fills_venue_id_key"]]
    query = ("SELECT (SELECT count(*) FROM trades), (SELECT count(*) FROM orders), (SELECT count(*) FROM fills), "
             "(SELECT last_value FROM fills_id_seq), (SELECT count(*) FROM pg_constraint WHERE contype = 'f')")
    assert engine.query(query, scratch) == engine.query(query) == [["500", "7", "400", "400", "1"]]
    schema = ("SELECT string_agg(indexdef, '; ' ORDER BY indexdef) FROM pg_indexes WHERE schemaname = 'public' "
              "UNION ALL SELECT string_agg(conname || ' ' || pg_get_constraintdef(oid), '; ' ORDER BY conname) "
              "FROM pg_constraint WHERE connamespace = 'public'::regnamespace")
    assert engine.query(schema, scratch) == engine.query(schema)
    assert "fills_trade ON public.fills" in engine.query(schema, scratch)[0][0]
    engine.drop(scratch)
    assert os.listdir(tmp_path / "backups") == [manifest["backup_id"]]  # the decompressed main dump is gone
    one_job = bb.create_backup(store, engine, bot, PROFILE, jobs=1)
    assert one_job["database"]["parts"] == [] and not [f for f in one_job["files"] if ".part" in f]


@needs_pg
def test_a_set_with_custom_archive_parts_still_restores(engine, tmp_path, monkeypatch):
    """Sets of the earlier version hold each part as a custom archive (database.partN.dump.zst) and
    list no indexes: they restore, indexes and all, through pg_restore."""
    monkeypatch.setattr(pg_engine, "PART_MIN_BYTES", 0)
    store = backup_store.BackupStore(str(tmp_path / "backups"))
    manifest = bb.create_backup(store, engine, bot_for(tmp_path), PROFILE, jobs=2)
    set_dir, db = store.path(manifest["backup_id"]), manifest["database"]
    for part in db["parts"]:
        os.remove(os.path.join(set_dir, part["path"]))
        part["path"] = part["path"].replace(".sql.zst", ".dump.zst")
        del part["indexes"]
        dump = subprocess.run([backup_store.find_bin("pg_dump"), "-Fc", "-Z0", "--data-only", "-t", part["table"],
                               *engine.db.conn_args()], env=engine.db.env(), capture_output=True, check=True)
        with open(os.path.join(set_dir, part["path"]), "wb") as f:
            f.write(subprocess.run(["zstd", "-q", "-c"], input=dump.stdout, capture_output=True, check=True).stdout)
    scratch = bb.scratch_name(engine, "restore", manifest["backup_id"])
    engine.create_like(scratch, engine.name)
    engine.restore_into(set_dir, db, scratch, jobs=2)
    query = ("SELECT (SELECT count(*) FROM trades), (SELECT count(*) FROM orders), "
             "(SELECT string_agg(indexname, ',' ORDER BY indexname) FROM pg_indexes WHERE schemaname = 'public')")
    assert engine.query(query, scratch) == engine.query(query)
    engine.drop(scratch)


@needs_pg
def test_a_failed_part_fails_the_restore_and_stops_the_others(engine, tmp_path, monkeypatch):
    monkeypatch.setattr(pg_engine, "PART_MIN_BYTES", 0)
    store = backup_store.BackupStore(str(tmp_path / "backups"))
    manifest = bb.create_backup(store, engine, bot_for(tmp_path), PROFILE, jobs=2)
    set_dir = store.path(manifest["backup_id"])
    part = os.path.join(set_dir, manifest["database"]["parts"][0]["path"])
    with open(part, "r+b") as f:
        f.truncate(os.path.getsize(part) // 2)
    scratch = bb.scratch_name(engine, "restore", manifest["backup_id"])
    engine.create_like(scratch, engine.name)
    with pytest.raises(backup_store.BackupError, match=r"zstd \(restore into .*\) failed \(rc=1\)"):
        engine.restore_into(set_dir, manifest["database"], scratch, jobs=2)
    assert not [n for n in os.listdir(tmp_path / "backups") if n.startswith(backup_store.TMP_PREFIX)]
    engine.drop(scratch)


@needs_pg
def test_a_manifest_part_outside_the_set_is_refused(engine, tmp_path):
    dbinfo = {"format": "custom_zstd", "parts": [{"table": "public.trades", "path": "../../etc/passwd"}]}
    with pytest.raises(backup_store.BackupError, match="names a database part that is not one"):
        engine.restore_into(str(tmp_path), dbinfo, "nowhere", jobs=2)


@needs_pg
def test_a_failed_part_dump_fails_the_backup_and_leaves_no_set(engine, cluster, tmp_path, monkeypatch):
    """A table the bot's role may not read is the largest: its part's pg_dump fails while the main
    one succeeds; the backup fails naming pg_dump and its error, and nothing looks like a set."""
    monkeypatch.setattr(pg_engine, "PART_MIN_BYTES", 0)
    cluster.execute("CREATE TABLE audit (id int, note text); INSERT INTO audit SELECT g, repeat('x', 200) "
                    "FROM generate_series(1, 3000) g; ANALYZE audit", engine.name)
    store = backup_store.BackupStore(str(tmp_path / "backups"))
    with pytest.raises(backup_store.BackupError, match=r"pg_dump \(dump of database .*\) failed \(rc=1\):.*permission denied"):
        bb.create_backup(store, engine, bot_for(tmp_path), PROFILE, jobs=2)
    assert os.listdir(store.directory) == []


LEDGER_PROFILE = {"database": {"ledger": {"table": "trades", "id": "id",
                                          "id_floor": {"table": "bot_state", "key": "botops_id_floor"}}}}


@needs_pg
def test_the_ledger_loss_is_measured_and_the_restored_copy_keeps_ids_above_the_replaced_ones(engine):
    from ansible_collections.botops.fleet.plugins.module_utils.botops_ledger import describe_loss, ledger_loss, live_max_ids, raise_id_floor

    loss = ledger_loss(engine, LEDGER_PROFILE, 420)
    assert (loss["rows"], loss["first_id"], loss["last_id"]) == (80, 421, 500), loss
    assert describe_loss(loss).startswith("80 trades row(s) (ids 421-500")
    assert ledger_loss(engine, LEDGER_PROFILE, 500)["rows"] == 0
    assert live_max_ids(engine, LEDGER_PROFILE) == {"trades": 500}

    engine.query("CREATE TABLE bot_state (key text PRIMARY KEY, value jsonb NOT NULL)")
    done = raise_id_floor(engine, LEDGER_PROFILE, engine.name, {"trades": 500})
    assert done == ["trades ids start above 500 (bot_state.botops_id_floor)"]
    raise_id_floor(engine, LEDGER_PROFILE, engine.name, {"trades": 450})  # a lower floor never lowers it
    assert engine.query("SELECT value->>'trades' FROM bot_state WHERE key = 'botops_id_floor'") == [["500"]]

    # a serial id column: its sequence is moved above the replaced database's highest id
    engine.query("CREATE TABLE fills (id serial PRIMARY KEY, n int)")
    engine.query("INSERT INTO fills (n) VALUES (1), (2)")
    serial = {"database": {"ledger": {"table": "fills", "id": "id"}}}
    assert raise_id_floor(engine, serial, engine.name, {"fills": 900}) == ["sequence public.fills_id_seq set above 900"]
    assert engine.query("INSERT INTO fills (n) VALUES (3) RETURNING id") == [["901"]]
