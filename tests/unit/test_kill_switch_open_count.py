"""A flatten whose process had to be stopped is verified on the bot's own database: positions.open_count_sql
on a real SQLite file (Freqtrade's trade database), read without leaving SQLite's companion files."""

from __future__ import annotations

import sqlite3

import pytest

from ansible_collections.botops.fleet.plugins.module_utils.botops_bot import Bot
from ansible_collections.botops.fleet.plugins.module_utils.botops_errors import BotError
from ansible_collections.botops.fleet.plugins.module_utils.botops_kill_switch_checks import open_count
from botops import profiles


def freqtrade_bot(root):
    profile = profiles.load("freqtrade")
    return Bot(profile, {"name": "ft1", "root": str(root), "ports": {"api": 1}}), profile


def test_open_count_reads_the_sqlite_file_the_profile_names(tmp_path):
    bot, profile = freqtrade_bot(tmp_path)
    (tmp_path / "shared").mkdir()
    path = tmp_path / "shared" / "tradesv3.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE trades (id INTEGER PRIMARY KEY, is_open BOOLEAN)")
        conn.executemany("INSERT INTO trades (is_open) VALUES (?)", [(1,), (1,), (0,)])
    conn.close()
    assert open_count(bot, profile, profile["positions"]["open_count_sql"]) == 2
    assert sorted(p.name for p in path.parent.iterdir()) == ["tradesv3.sqlite"], "companion files left behind"


def test_open_count_of_a_missing_database_names_the_file(tmp_path):
    bot, profile = freqtrade_bot(tmp_path)
    with pytest.raises(BotError, match=r"database file .*shared/tradesv3.sqlite does not exist"):
        open_count(bot, profile, profile["positions"]["open_count_sql"])
