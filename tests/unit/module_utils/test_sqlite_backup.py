"""SqliteEngine on real SQLite files: the online backup of a database the bot writes meanwhile, and
that nothing botops does leaves a -wal, -shm, -journal or .part beside a file it made or copied (the
set's copy, scratch and kept copies, the live file), in WAL and rollback-journal mode alike."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from ansible_collections.botops.fleet.plugins.module_utils import botops_backup as bb
from ansible_collections.botops.fleet.plugins.module_utils import botops_backup_sqlite as sqlite_engine
from ansible_collections.botops.fleet.plugins.module_utils import botops_backup_store as backup_store
from ansible_collections.botops.fleet.plugins.module_utils.botops_ledger import (
    carry_forward, ledger_loss, live_max_ids, plan_carry, raise_id_floor,
)

TABLES = ["trades", "positions", "orders"]
LEDGER = {"table": "trades", "id": "id", "time": "ts",
          "holdings": [{"table": "positions", "id": "id"}, {"table": "orders", "id": "id"}],
          "id_floor": {"table": "bot_state", "key": "botops_id_floor"}}
PROFILE = {"family": "t", "backup": {"paths": []}, "database": {"engine": "sqlite", "ledger": LEDGER}}
SCHEMA = """
CREATE TABLE trades (id INTEGER PRIMARY KEY AUTOINCREMENT, ts TEXT NOT NULL, symbol TEXT NOT NULL,
                     qty REAL NOT NULL, note TEXT);
CREATE TABLE positions (id INTEGER PRIMARY KEY, symbol TEXT NOT NULL, status TEXT NOT NULL);
CREATE TABLE orders (id INTEGER PRIMARY KEY, status TEXT NOT NULL);
CREATE TABLE bot_state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE totals (n INTEGER NOT NULL, qty REAL NOT NULL);
INSERT INTO totals VALUES (0, 0);
"""
COMPANION_SUFFIXES = ("-wal", "-shm", "-journal")

# The bot: a process of its own writing one trade per transaction, with the totals row kept equal to
# what the trades table holds (a copy that is no single snapshot breaks it). It says "ready" once it
# has written, and stops when the stop file appears.
WRITER = textwrap.dedent("""
    import os, sqlite3, sys, time
    path, stop = sys.argv[1], sys.argv[2]
    conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    written = 0
    while not os.path.exists(stop):
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO trades (ts, symbol, qty, note) VALUES (datetime('now'), 'ETH', 0.5, ?)",
                     ("w" * 200,))
        conn.execute("UPDATE totals SET n = n + 1, qty = qty + 0.5")
        conn.execute("COMMIT")
        written += 1
        if written == 50:
            print("ready", flush=True)
    conn.close()
    print(written, flush=True)
""")


def make_db(path, trades, journal_mode="wal"):
    conn = sqlite3.connect(path)
    try:
        assert conn.execute(f"PRAGMA journal_mode = {journal_mode}").fetchone()[0] == journal_mode
        conn.executescript(SCHEMA)
        add_trades(conn, trades)
        conn.executemany("INSERT INTO positions VALUES (?, 'ETH', ?)",
                         [(i, "open" if i == 1 else "closed") for i in range(1, 5)])
        conn.commit()
    finally:
        conn.close()


def add_trades(conn, n):
    start = conn.execute("SELECT coalesce(max(id), 0) FROM trades").fetchone()[0]
    conn.executemany("INSERT INTO trades (id, ts, symbol, qty, note) VALUES (?, ?, 'ETH', 0.5, ?)",
                     [(start + i, f"2026-12-07 00:{i // 60 % 60:02d}:{i % 60:02d}", "n" * 200)
                      for i in range(1, n + 1)])
    conn.execute("UPDATE totals SET n = n + ?, qty = qty + ?", (n, n * 0.5))
    conn.commit()


def add_live_trades(path, n):
    conn = sqlite3.connect(path)
    try:
        add_trades(conn, n)
    finally:
        conn.close()


def companions(directory):
    """Every -wal, -shm, -journal and .part file under the directory."""
    found = []
    for dirpath, _, filenames in os.walk(directory):
        found += [os.path.join(dirpath, n) for n in filenames
                  if n.endswith(COMPANION_SUFFIXES) or ".part" in n]
    return sorted(found)


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def header_journal(path):
    """The journal the file's header asks for: 'wal' (read/write versions 2) or 'rollback' (1)."""
    with open(path, "rb") as f:
        versions = f.read(20)[18:20]
    return {b"\x02\x02": "wal", b"\x01\x01": "rollback"}[versions]


def read_back(path):
    """(integrity_check, journal_mode, trade count, totals row) of a file, read through a read-write
    connection (which removes whatever it made beside the file when it closes)."""
    conn = sqlite3.connect(f"file:{path}?mode=rw", uri=True)
    try:
        return (conn.execute("PRAGMA integrity_check").fetchone()[0],
                conn.execute("PRAGMA journal_mode").fetchone()[0],
                conn.execute("SELECT count(*) FROM trades").fetchone()[0],
                conn.execute("SELECT n, qty FROM totals").fetchone())
    finally:
        conn.close()


@pytest.fixture
def bot(tmp_path):
    root = tmp_path / "bot"
    (root / "shared" / "data").mkdir(parents=True)
    return {"name": "b07", "root": str(root), "data": str(root / "shared" / "data"),
            "db": str(root / "shared" / "data" / "bot.sqlite3")}


def engine_of(bot):
    return sqlite_engine.SqliteEngine(bot["db"], TABLES, LEDGER)


def backup(bot, engine, backup_id="20261207T020000Z-base"):
    store = backup_store.BackupStore(os.path.join(bot["root"], "backups"))
    with store.lock():
        manifest = bb.create_backup(store, engine, bot, PROFILE, backup_id=backup_id)
    return store, manifest


def data_files(bot):
    return sorted(os.listdir(bot["data"]))


# --------------------------------------------------------------------------- the online backup
def test_a_wal_database_the_bot_writes_during_the_dump_is_copied_as_one_snapshot(bot, tmp_path):
    make_db(bot["db"], 20000)  # a few MB: the copy takes a while, the bot writes on meanwhile
    stop = tmp_path / "stop"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, bot["db"], str(stop)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "ready"
        before = read_back(bot["db"])[2]
        store, manifest = backup(bot, engine_of(bot))
        copied = manifest["database"]["row_counts"]["trades"]
        deadline = time.monotonic() + 20
        while read_back(bot["db"])[2] <= copied and time.monotonic() < deadline:
            time.sleep(0.05)
        after = read_back(bot["db"])[2]
    finally:
        stop.touch()
        out, _ = writer.communicate(timeout=60)
    assert writer.returncode == 0 and int(out.split()[-1]) >= 50

    db = manifest["database"]
    copy = os.path.join(store.path(manifest["backup_id"]), backup_store.SQLITE_FILE)
    check, mode, trades, (n, qty) = read_back(copy)
    assert check == "ok" and mode == "delete" and header_journal(copy) == "rollback"
    assert trades == n and qty == pytest.approx(n * 0.5)  # one snapshot: the totals agree with the rows
    assert before <= trades < after  # a snapshot of a file the bot went on writing
    assert db["journal_mode"] == "wal" and db["format"] == "sqlite"
    engine = engine_of(bot)
    assert db["row_counts"] == engine.counts(copy)[0] and db["row_counts"]["trades"] == trades
    assert db["ledger_max_id"] == engine.counts(copy)[1]
    assert backup_store.verify_files(store.path(manifest["backup_id"]), manifest) == []
    assert companions(store.directory) == []
    assert data_files(bot) == ["bot.sqlite3"]  # the bot stopped and closed: nothing botops left beside it


def test_an_open_write_transaction_neither_holds_up_the_dump_nor_gets_into_the_copy(bot):
    make_db(bot["db"], 500)
    started, finish = threading.Event(), threading.Event()
    failures = []

    def bot_writes():
        conn = sqlite3.connect(bot["db"], isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            add = [(i, "x", "ETH", 1.0, None) for i in range(10001, 10101)]
            conn.executemany("INSERT INTO trades VALUES (?, ?, ?, ?, ?)", add)
            conn.execute("UPDATE totals SET n = n + 100")
            started.set()
            finish.wait(30)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:  # pragma: no cover - reported below
            failures.append(exc)
            started.set()
        finally:
            conn.close()

    thread = threading.Thread(target=bot_writes)
    thread.start()
    try:
        assert started.wait(10)
        began = time.monotonic()
        store, manifest = backup(bot, engine_of(bot))
        assert time.monotonic() - began < 10
    finally:
        finish.set()
        thread.join(30)
    assert not failures
    copy = os.path.join(store.path(manifest["backup_id"]), backup_store.SQLITE_FILE)
    assert read_back(copy)[:4] == ("ok", "delete", 500, (500, 250.0))
    assert manifest["database"]["row_counts"]["trades"] == 500 and manifest["database"]["ledger_max_id"] == 500
    assert read_back(bot["db"])[2] == 600  # committed after the dump
    assert companions(store.directory) == [] and data_files(bot) == ["bot.sqlite3"]


@pytest.mark.parametrize("mode", ["wal", "delete"])
def test_reading_the_stopped_bots_file_leaves_nothing_and_changes_nothing(bot, mode):
    make_db(bot["db"], 40, mode)
    assert data_files(bot) == ["bot.sqlite3"]
    digest = sha256(bot["db"])
    engine = engine_of(bot)
    assert engine.counts()[0] == {"trades": 40, "positions": 4, "orders": 0}
    assert set(engine.columns()) == {"trades", "positions", "orders"}
    assert ledger_loss(engine, PROFILE, 30)["rows"] == 10
    assert live_max_ids(engine, PROFILE) == {"trades": 40, "positions": 4}
    store, manifest = backup(bot, engine)
    assert manifest["database"]["journal_mode"] == mode
    assert data_files(bot) == ["bot.sqlite3"] and sha256(bot["db"]) == digest
    assert companions(store.directory) == []


# --------------------------------------------------------------------------- the set, verified
def test_the_set_holds_no_companion_files_after_the_dump_a_verify_and_a_test_restore(bot):
    make_db(bot["db"], 300)
    engine = engine_of(bot)
    store, manifest = backup(bot, engine)
    set_dir = store.path(manifest["backup_id"])
    assert sorted(os.listdir(set_dir)) == ["database.sqlite3", "manifest.json"]
    assert set(manifest["files"]) == {"database.sqlite3"}

    assert backup_store.verify_files(set_dir, manifest) == []
    problems, observed, scratch = bb.test_restore(engine, set_dir, manifest)
    assert problems == [] and observed["row_counts"] == manifest["database"]["row_counts"]
    assert scratch == f"{bot['db']}.verify-{manifest['backup_id']}"
    store.write_verification(manifest["backup_id"], {"ok": True, "test_restore": True})

    assert sorted(os.listdir(set_dir)) == ["database.sqlite3", "manifest.json", "verified.json"]
    assert backup_store.verify_files(set_dir, manifest) == []  # the copy was never written to
    assert companions(store.directory) == [] and data_files(bot) == ["bot.sqlite3"]


# --------------------------------------------------------------------------- restore and swap
def restore(engine, store, manifest):
    """bot_restore's steps for a SQLite file: scratch copy, counts checked, swap (the previous kept)."""
    backup_id = manifest["backup_id"]
    scratch = bb.scratch_name(engine, "restore", backup_id)
    engine.drop(scratch)
    engine.restore_into(store.path(backup_id), manifest["database"], scratch)
    counts = engine.counts(scratch)
    assert bb.compare_counts(manifest["database"], *counts) == []
    assert set(engine.columns(scratch)) == {"trades", "positions", "orders"}
    return scratch


@pytest.mark.parametrize("mode", ["wal", "delete"])
def test_a_restore_leaves_the_live_file_alone_in_its_journal_mode_and_the_kept_copy_alone(bot, mode):
    make_db(bot["db"], 30, mode)
    engine = engine_of(bot)
    store, manifest = backup(bot, engine)
    add_live_trades(bot["db"], 12)  # the bot traded on after the backup

    scratch = restore(engine, store, manifest)
    assert data_files(bot) == ["bot.sqlite3", os.path.basename(scratch)]
    assert header_journal(scratch) == ("wal" if mode == "wal" else "rollback")
    previous = bb.kept_name(engine)
    engine.swap(scratch, previous)
    assert ledger_loss(engine, PROFILE, 30, dbname=previous)["rows"] == 12

    assert data_files(bot) == ["bot.sqlite3", os.path.basename(previous)]
    assert engine.kept() == [(previous, pytest.approx(time.time(), abs=120))]
    assert header_journal(bot["db"]) == ("wal" if mode == "wal" else "rollback")
    assert read_back(bot["db"]) == ("ok", mode, 30, (30, 15.0))
    assert engine.counts()[:2] == (manifest["database"]["row_counts"], manifest["database"]["ledger_max_id"])
    assert read_back(previous)[:3] == ("ok", mode, 42)
    assert data_files(bot) == ["bot.sqlite3", os.path.basename(previous)]
    engine.drop(previous)
    assert data_files(bot) == ["bot.sqlite3"] and companions(store.directory) == []


def test_carrying_the_ledger_forward_into_a_wal_copy_leaves_nothing_beside_any_file(bot):
    make_db(bot["db"], 30)
    engine = engine_of(bot)
    store, manifest = backup(bot, engine)
    add_live_trades(bot["db"], 20)
    dbinfo = manifest["database"]

    scratch = restore(engine, store, manifest)
    plan = plan_carry(engine, PROFILE, bot["root"], dbinfo, engine.columns(scratch))
    assert carry_forward(engine, plan, scratch, store.directory) == {"trades": 20, "positions": 4, "orders": 0}
    assert raise_id_floor(engine, PROFILE, scratch, live_max_ids(engine, PROFILE))
    assert data_files(bot) == ["bot.sqlite3", os.path.basename(scratch)]
    previous = bb.kept_name(engine)
    engine.swap(scratch, previous)
    assert ledger_loss(engine, PROFILE, dbinfo["ledger_max_id"], dbname=previous)["rows"] == 20

    assert data_files(bot) == ["bot.sqlite3", os.path.basename(previous)]
    assert read_back(bot["db"])[:3] == ("ok", "wal", 50) and header_journal(bot["db"]) == "wal"
    assert companions(store.directory) == [] and data_files(bot) == ["bot.sqlite3", os.path.basename(previous)]


def test_a_set_taken_before_the_journal_mode_was_recorded_is_restored_as_it_is(bot):
    """Older sets hold the copy the backup API made of a WAL file (a WAL header) and no journal_mode."""
    make_db(bot["db"], 30)
    engine = engine_of(bot)
    store, manifest = backup(bot, engine)
    set_dir = store.path(manifest["backup_id"])
    old = os.path.join(set_dir, backup_store.SQLITE_FILE)
    os.unlink(old)
    src, dst = sqlite3.connect(bot["db"]), sqlite3.connect(old)
    src.backup(dst)
    src.close()
    dst.close()
    assert header_journal(old) == "wal" and sqlite_engine.sqlite_companions(old) == []
    dbinfo = dict(manifest["database"])
    del dbinfo["journal_mode"]

    scratch = bb.scratch_name(engine, "restore", manifest["backup_id"])
    engine.restore_into(set_dir, dbinfo, scratch)
    assert header_journal(scratch) == "wal" and engine.counts(scratch)[0]["trades"] == 30
    engine.swap(scratch, bb.kept_name(engine))
    assert read_back(bot["db"])[:3] == ("ok", "wal", 30)
    assert [n for n in data_files(bot) if ".pre-restore-" not in n] == ["bot.sqlite3"]
    assert companions(bot["root"]) == []


def test_a_killed_restores_part_file_and_companions_are_dropped_with_the_scratch_copy(bot):
    make_db(bot["db"], 10)
    engine = engine_of(bot)
    scratch = bot["db"] + ".restore-20261207T020000Z-base"
    for name in (scratch, scratch + "-wal", scratch + "-shm", scratch + ".part", scratch + ".part-journal"):
        with open(name, "wb") as f:
            f.write(b"left by a killed run")
    engine.drop(scratch)
    assert data_files(bot) == ["bot.sqlite3"]


def test_a_scratch_copy_with_anything_beside_it_is_not_swapped_in(bot):
    make_db(bot["db"], 30)
    engine = engine_of(bot)
    store, manifest = backup(bot, engine)
    scratch = restore(engine, store, manifest)
    add_live_trades(bot["db"], 5)
    with open(scratch + "-wal", "wb") as f:
        f.write(b"\0" * 32)
    digest = sha256(bot["db"])
    with pytest.raises(backup_store.BackupError, match=r"swap .*: bot\.sqlite3\.restore-.*-wal left beside .*nothing was renamed"):
        engine.swap(scratch, bb.kept_name(engine))
    assert sha256(bot["db"]) == digest and engine.kept() == [] and read_back(bot["db"])[2] == 35


def test_the_live_file_is_not_swapped_out_while_another_process_reads_its_wal(bot, monkeypatch):
    """The kept copy is a hard link of the live file: it must hold every committed row in itself."""
    make_db(bot["db"], 30)
    engine = engine_of(bot)
    store, manifest = backup(bot, engine)
    scratch = restore(engine, store, manifest)
    monkeypatch.setattr(sqlite_engine, "SQLITE_TIMEOUT", 0.3)
    writer = sqlite3.connect(bot["db"])
    reader = sqlite3.connect(bot["db"], isolation_level=None)
    try:
        add_trades(writer, 5)  # committed into the WAL, not checkpointed: the writer stays open
        reader.execute("BEGIN")
        assert reader.execute("SELECT count(*) FROM trades").fetchone() == (35,)  # a read held on the WAL
        with pytest.raises(backup_store.BackupError, match="checkpoint .* before the swap: another process holds it open"):
            engine.swap(scratch, bb.kept_name(engine))
        assert engine.kept() == [] and os.path.exists(scratch)
    finally:
        reader.close()
        writer.close()
    assert read_back(bot["db"])[2] == 35
    engine.drop(scratch)
    assert data_files(bot) == ["bot.sqlite3"]
