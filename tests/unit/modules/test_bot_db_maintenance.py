"""bot_db_maintenance against a fake database: tables found, statements built, min_interval skips,
the reindex record, check mode, errors naming the bot, the password kept out of results."""

from __future__ import annotations

import json

import pytest
from ansible_collections.botops.fleet.plugins.module_utils import botops_pg
from ansible_collections.botops.fleet.plugins.module_utils.botops_pg import Database

from ansible_collections.botops.fleet.plugins.modules import bot_db_maintenance

from .utils import run_module

PASSWORD = "s3cret-pw"
PROFILE = {"family": "testfam", "database": {"engine": "postgresql", "name": "trading_bot"}}


class FakeDb:
    def __init__(self):
        # table -> (seconds since vacuum, seconds since analyze), -1 = never
        self.tables = {"orders": (-1, -1), "positions": (-1, -1), "trades": (-1, -1)}
        self.runs = []
        self.fail_with = None


@pytest.fixture
def db(monkeypatch):
    fake = FakeDb()

    def query(self, sql, dbname=None):
        assert "pg_has_role" in sql
        return [[t, str(v), str(a)] for t, (v, a) in sorted(fake.tables.items())]

    def run(self, cmd, input_text=None, timeout=None):
        fake.runs.append({"cmd": cmd, "env": self.env(), "timeout": timeout})
        if fake.fail_with:
            return 1, "", fake.fail_with
        for i, arg in enumerate(cmd):
            if arg == "-c" and cmd[i + 1].startswith("VACUUM"):
                for t in fake.tables:
                    if f'"{t}"' in cmd[i + 1]:
                        fake.tables[t] = (0, 0)
        return 0, "", ""

    monkeypatch.setattr(Database, "query", query)
    monkeypatch.setattr(Database, "run", run)
    monkeypatch.setattr(botops_pg, "pg_bin", lambda name: f"/usr/bin/{name}")
    return fake


def args(root, **kw):
    return dict(dict(profile=PROFILE, bot={"name": "bot01", "root": str(root),
                                           "database": {"host": "127.0.0.1", "port": 5432, "name": "bot01", "user": "bot01"}},
                     secrets={"database_password": PASSWORD}), **kw)


def statements(run):
    cmd = run["cmd"]
    return [cmd[i + 1] for i, arg in enumerate(cmd) if arg == "-c"]


def test_vacuum_analyze_and_reindex_every_owned_table(db, tmp_path):
    result = run_module(bot_db_maintenance.main, args(tmp_path, vacuum_analyze=True, reindex=True))
    assert result["changed"] and not result.get("failed")
    assert result["tables_done"] == {"vacuum_analyze": ["orders", "positions", "trades"],
                                     "reindex": ["orders", "positions", "trades"]}
    assert statements(db.runs[0]) == ['VACUUM (ANALYZE) "orders", "positions", "trades"', 'REINDEX TABLE "orders"',
                                      'REINDEX TABLE "positions"', 'REINDEX TABLE "trades"']
    assert result["queries"] == statements(db.runs[0]) == result["actions"]
    assert len(db.runs) == 1, "one psql call for every statement"
    assert db.runs[0]["env"]["PGPASSWORD"] == PASSWORD
    assert PASSWORD not in " ".join(db.runs[0]["cmd"]) and PASSWORD not in json.dumps(result)
    record = json.loads((tmp_path / "shared" / "data" / "botops-db-maintenance.json").read_text())
    assert set(record["reindex"]) == {"orders", "positions", "trades"}


def test_min_interval_makes_the_second_run_unchanged(db, tmp_path):
    first = run_module(bot_db_maintenance.main, args(tmp_path, vacuum_analyze=True, reindex=True, min_interval=3600))
    assert first["changed"]
    again = run_module(bot_db_maintenance.main, args(tmp_path, vacuum_analyze=True, reindex=True, min_interval=3600))
    assert again["changed"] is False and again["queries"] == []
    assert again["tables_skipped"]["vacuum_analyze"] == ["orders", "positions", "trades"]
    assert again["tables_skipped"]["reindex"] == ["orders", "positions", "trades"]
    assert len(db.runs) == 1


def test_without_min_interval_every_run_does_the_work(db, tmp_path):
    run_module(bot_db_maintenance.main, args(tmp_path, vacuum_analyze=True))
    again = run_module(bot_db_maintenance.main, args(tmp_path, vacuum_analyze=True))
    assert again["changed"] and len(db.runs) == 2


def test_check_mode_runs_nothing(db, tmp_path):
    result = run_module(bot_db_maintenance.main, args(tmp_path, reindex=True), check_mode=True)
    assert result["changed"] and result["tables_done"]["reindex"] == ["orders", "positions", "trades"]
    assert db.runs == []
    assert not (tmp_path / "shared").exists()


def test_reindex_concurrently_for_a_running_bot(db, tmp_path):
    run_module(bot_db_maintenance.main, args(tmp_path, reindex=True, concurrently=True, tables=["trades"]))
    assert statements(db.runs[0]) == ['REINDEX TABLE CONCURRENTLY "trades"']


def test_only_the_tables_asked(db, tmp_path):
    result = run_module(bot_db_maintenance.main, args(tmp_path, vacuum_analyze=True, tables=["trades"]))
    assert statements(db.runs[0]) == ['VACUUM (ANALYZE) "trades"']
    assert result["tables_done"]["vacuum_analyze"] == ["trades"]


def test_unknown_table_is_refused_before_anything_runs(db, tmp_path):
    result = run_module(bot_db_maintenance.main, args(tmp_path, vacuum_analyze=True, tables=["trades", "ledger"]))
    assert result["failed"] and "bot 'bot01'" in result["msg"] and "'ledger'" in result["msg"]
    assert "tables: orders, positions, trades" in result["msg"]
    assert db.runs == []


def test_psql_failure_names_the_bot_and_the_cause(db, tmp_path):
    db.fail_with = 'ERROR:  must be owner of table trades'
    result = run_module(bot_db_maintenance.main, args(tmp_path, reindex=True))
    assert result["failed"]
    assert result["msg"] == "Failed to run REINDEX on bot 'bot01': psql: ERROR:  must be owner of table trades"


def test_nothing_asked_is_an_error(db, tmp_path):
    result = run_module(bot_db_maintenance.main, args(tmp_path))
    assert result["failed"] and "nothing asked" in result["msg"]


def test_bot_without_postgresql_is_left_alone(db, tmp_path):
    profile = {"family": "redisonly", "database": {"engine": "none"}}
    result = run_module(bot_db_maintenance.main, args(tmp_path, profile=profile, vacuum_analyze=True))
    assert result["changed"] is False and not result.get("failed") and "no PostgreSQL" in result["msg"]
    assert db.runs == []


def test_quote_table():
    assert bot_db_maintenance.quote_table("trades") == '"trades"'
    assert bot_db_maintenance.quote_table("audit.events") == '"audit"."events"'
    assert bot_db_maintenance.quote_table('"Odd"') == '"Odd"'
