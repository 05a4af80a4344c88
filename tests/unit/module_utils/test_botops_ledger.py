"""botops_ledger: the rows written since a backup are mapped onto the backup's schema and carried
into the restored copy (real PostgreSQL and SQLite; the revision files are the reference bot's)."""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from ansible_collections.botops.fleet.plugins.module_utils.botops_backup_postgres import PostgresEngine
from ansible_collections.botops.fleet.plugins.module_utils.botops_backup_sqlite import SqliteEngine
from ansible_collections.botops.fleet.plugins.module_utils.botops_ledger import (
    carry_forward, carry_loss, ledger_report, live_max_ids, plan_carry, raise_id_floor,
)
from ansible_collections.botops.fleet.plugins.module_utils.botops_pg import Database

try:
    from tests.integration.pgredis import PostgresCluster
    HAVE_PG = True
except ImportError:  # pragma: no cover
    HAVE_PG = False

REFBOT_VERSIONS = Path(__file__).resolve().parents[3] / "botops" / "sandbox" / "refbot" / "migrations" / "versions"
LEDGER = {"table": "trades", "id": "id", "time": "ts",
          "holdings": [{"table": "positions", "id": "id"}, {"table": "orders", "id": "id"}],
          "id_floor": {"table": "bot_state", "key": "botops_id_floor"}}
PROFILE = {"family": "t", "database": {"engine": "postgresql", "ledger": LEDGER,
                                       "migrations": {"tool": "alembic", "config": "alembic.ini"}}}


def bot_root(tmp_path, with_map=True):
    """A bot with release 2.0.0 installed: the reference bot's three revisions (0003 with or
    without its botops_ledger_map)."""
    root = tmp_path / "bot"
    versions = root / "releases" / "2.0.0" / "migrations" / "versions"
    versions.mkdir(parents=True)
    (root / "releases" / "2.0.0" / "alembic.ini").write_text("[alembic]\nscript_location = migrations\n")
    for name in ("0001_initial.py", "0002_trade_fee.py", "0003_rename_qty.py"):
        text = (REFBOT_VERSIONS / name).read_text()
        if not with_map:
            text = "\n".join(line for line in text.splitlines() if not line.startswith("botops_ledger_map"))
        (versions / name).write_text(text)
    return str(root)


SCHEMA = """
CREATE TABLE trades (id bigint PRIMARY KEY, ts timestamptz NOT NULL DEFAULT now(), symbol text NOT NULL,
                     {qty} numeric NOT NULL, price numeric NOT NULL{fee});
CREATE TABLE positions (id bigint PRIMARY KEY, symbol text NOT NULL, status text NOT NULL);
CREATE TABLE orders (id bigint PRIMARY KEY, status text NOT NULL);
CREATE TABLE bot_state (key text PRIMARY KEY, value jsonb NOT NULL);
CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY);
INSERT INTO alembic_version VALUES ('{revision}');
INSERT INTO trades (id, symbol, {qty}, price{fee_col})
  SELECT g, 'BTC-USD', g * 0.5, 100 + g{fee_val} FROM generate_series(1, {trades}) g;
INSERT INTO positions SELECT g, 'BTC-USD', CASE WHEN g > {closed} THEN 'open' ELSE 'closed' END
  FROM generate_series(1, {positions}) g;
INSERT INTO orders SELECT g, 'filled' FROM generate_series(1, {positions}) g;
"""


def schema(revision, trades, positions, closed):
    new = revision == "0003_rename_qty"
    fee = revision != "0001_initial"
    return SCHEMA.format(qty="quantity" if new else "qty", fee=", fee numeric NULL" if fee else "",
                         fee_col=", fee" if fee else "", fee_val=", g * 0.01" if fee else "", revision=revision,
                         trades=trades, positions=positions, closed=closed)


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


NAMES = iter(range(1, 1000))


@pytest.fixture
def pg(cluster):
    """(engine, scratch): the live database at 0003 with 100 trades, 9 positions (3 open); the
    restored copy, a backup taken at 0002 when it held 80 trades and 6 positions (all open)."""
    name = f"ledger{next(NAMES):03d}"
    cluster.create_database(name, password="pw")
    cluster.execute(f'ALTER ROLE "{name}" CREATEDB')
    db = Database({"host": "127.0.0.1", "port": cluster.port, "name": name, "user": name}, "pw")
    engine = PostgresEngine(db, ["trades", "positions", "orders"], LEDGER)
    for statement in schema("0003_rename_qty", 100, 9, 6).split(";"):
        if statement.strip():
            engine.query(statement)
    scratch = f"{name}_restore"
    engine.create_like(scratch, engine.name)
    return engine, scratch


def fill_scratch(engine, scratch, revision):
    for statement in schema(revision, 80, 6, 0).split(";"):
        if statement.strip():
            engine.query(statement, scratch)
    counts, ledger_max, rev = engine.counts(scratch)
    return {"ledger_max_id": ledger_max, "alembic_revision": rev, "columns": engine.columns(scratch)}


def test_trades_since_the_backup_are_carried_through_the_contract_map_with_their_ids(pg, tmp_path):
    engine, scratch = pg
    backup = fill_scratch(engine, scratch, "0002_trade_fee")
    root = bot_root(tmp_path)

    plan = plan_carry(engine, PROFILE, root, backup)
    trades = plan["tables"][0]
    assert (trades["rows"], trades["first_id"], trades["last_id"], trades["carry"]) == (20, 81, 100, True), trades
    assert ["qty", '"quantity"'] in trades["columns"]
    assert carry_loss(plan) == []
    planned = ledger_report(plan, applied=False)
    assert planned["carried"] == {"trades": 20, "positions": 9, "orders": 9}
    assert planned["summary"] == {"carried": "20 trades (ids 81-100), 9 positions, 9 orders", "kept_aside": "none"}

    carried = carry_forward(engine, plan, scratch)
    assert carried == {"trades": 20, "positions": 9, "orders": 9}
    # in the restored copy: every trade with its id and content, the holdings as the bot holds them
    live = engine.query("SELECT id, ts::text, quantity::text, price::text, fee::text FROM trades WHERE id > 80 "
                        "ORDER BY id")
    restored = engine.query("SELECT id, ts::text, qty::text, price::text, fee::text FROM trades WHERE id > 80 "
                            "ORDER BY id", scratch)
    assert restored == live and len(live) == 20
    assert engine.query("SELECT count(*), max(id) FROM trades", scratch) == [["100", "100"]]
    assert engine.query("SELECT id, status FROM positions ORDER BY id", scratch) == \
        engine.query("SELECT id, status FROM positions ORDER BY id")
    assert engine.query("SELECT count(*) FROM positions WHERE status = 'open'", scratch) == [["3"]]


def test_without_the_map_nothing_is_carried_and_the_loss_is_named(pg, tmp_path):
    engine, scratch = pg
    backup = fill_scratch(engine, scratch, "0002_trade_fee")
    plan = plan_carry(engine, PROFILE, bot_root(tmp_path, with_map=False), backup)
    trades = plan["tables"][0]
    assert not trades["carry"]
    lost = carry_loss(plan)
    assert lost[0].startswith("20 trades row(s) (ids 81-100"), lost
    assert "trades.qty has no value on the backup's revision 0002_trade_fee" in lost[0]
    assert "0003_rename_qty" in lost[0]
    carry_forward(engine, plan, scratch)
    assert engine.query("SELECT max(id) FROM trades", scratch) == [["80"]]  # the trades were not touched


def test_values_the_older_schema_has_no_column_for_are_named(pg, tmp_path):
    engine, scratch = pg
    backup = fill_scratch(engine, scratch, "0001_initial")  # before trades.fee
    plan = plan_carry(engine, PROFILE, bot_root(tmp_path), backup)
    assert plan["tables"][0]["carry"] and plan["tables"][0]["lost_values"] == {"fee": 20}
    assert carry_loss(plan) == ["20 value(s) of trades.fee in the rows carried forward: the backup's revision "
                                "0001_initial has no column for them"]


def test_an_explicit_restore_without_carry_forward_only_reports_the_trades(pg, tmp_path):
    engine, scratch = pg
    backup = fill_scratch(engine, scratch, "0002_trade_fee")
    plan = plan_carry(engine, PROFILE, bot_root(tmp_path), backup, carry=False)
    assert [line.split(" (")[0] for line in carry_loss(plan)] == ["20 trades row(s)"]
    assert carry_forward(engine, plan, scratch) == {}


def test_ids_of_every_ledger_table_stay_above_the_replaced_database(pg, tmp_path):
    engine, scratch = pg
    fill_scratch(engine, scratch, "0002_trade_fee")
    highs = live_max_ids(engine, PROFILE)
    assert highs == {"trades": 100, "positions": 9, "orders": 9}
    raise_id_floor(engine, PROFILE, scratch, highs)
    assert engine.query("SELECT value->>'trades', value->>'positions', value->>'orders' FROM bot_state "
                        "WHERE key = 'botops_id_floor'", scratch) == [["100", "9", "9"]]


SQLITE_SCHEMA = """
CREATE TABLE trades (id INTEGER PRIMARY KEY AUTOINCREMENT, ts TEXT NOT NULL, symbol TEXT NOT NULL,
                     qty REAL NOT NULL);
CREATE TABLE positions (id INTEGER PRIMARY KEY, symbol TEXT NOT NULL, status TEXT NOT NULL);
CREATE TABLE orders (id INTEGER PRIMARY KEY, status TEXT NOT NULL);
CREATE TABLE bot_state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def sqlite_db(path, trades, open_positions):
    with sqlite3.connect(path) as conn:
        conn.executescript(SQLITE_SCHEMA)
        conn.executemany("INSERT INTO trades (id, ts, symbol, qty) VALUES (?, ?, 'ETH', ?)",
                         [(i, f"2026-12-07 00:{i // 60:02d}:{i % 60:02d}", i * 0.1) for i in range(1, trades + 1)])
        conn.executemany("INSERT INTO positions VALUES (?, 'ETH', ?)",
                         [(i, "open" if i <= open_positions else "closed") for i in range(1, 5)])
    conn.close()


def test_sqlite_trades_are_carried_and_new_ids_start_above_the_replaced_ones(tmp_path):
    live, scratch = str(tmp_path / "bot.sqlite"), str(tmp_path / "bot.sqlite.restore")
    sqlite_db(live, 50, 1)
    sqlite_db(scratch, 30, 4)
    engine = SqliteEngine(live, ["trades", "positions", "orders"], LEDGER)
    profile = {"database": {"engine": "sqlite", "ledger": LEDGER}}
    backup = {"ledger_max_id": 30, "alembic_revision": None, "columns": engine.columns(scratch)}

    plan = plan_carry(engine, profile, str(tmp_path), backup)
    assert (plan["tables"][0]["rows"], plan["tables"][0]["carry"]) == (20, True)
    assert carry_forward(engine, plan, scratch) == {"trades": 20, "positions": 4, "orders": 0}
    highs = live_max_ids(engine, profile)
    raise_id_floor(engine, profile, scratch, highs)
    os.unlink(live + "-wal") if os.path.exists(live + "-wal") else None
    shutil.copyfile(scratch, live)

    with sqlite3.connect(live) as conn:
        assert conn.execute("SELECT count(*), max(id) FROM trades").fetchone() == (50, 50)
        assert conn.execute("SELECT count(*) FROM positions WHERE status = 'open'").fetchone() == (1,)
        conn.execute("DELETE FROM trades WHERE id > 45")  # AUTOINCREMENT: no id is handed out twice
        assert conn.execute("INSERT INTO trades (ts, symbol, qty) VALUES ('x', 'ETH', 1) RETURNING id").fetchone() \
            == (51,)
    conn.close()
