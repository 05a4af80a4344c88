"""A bot on disk for the backup and restore module tests: SQLite database, config, releases.

The SQLite engine exercises every generic path of bot_backup / bot_restore (sets, manifests,
checksums, retention, scratch copy, swap, files) without a database server; the PostgreSQL
paths are tested against a throwaway cluster (tests/unit/module_utils/test_botops_backup.py)
and the sandbox fleet (tests/integration/test_module_backup_restore.py).
"""

from __future__ import annotations

import copy
import json
import os
import sqlite3
from pathlib import Path

import yaml

from ansible_collections.botops.fleet.plugins.module_utils import botops_bot

REPO = Path(__file__).resolve().parents[3]
DB_PATH = "shared/data/bot.sqlite3"
TABLES = ("trades", "positions", "orders")


def sqlite_profile(family="mojorust"):
    """A real family profile whose database is a SQLite file."""
    profile = yaml.safe_load((REPO / "profiles" / f"{family}.yml").read_text())
    profile = copy.deepcopy(profile)
    profile["database"] = {"engine": "sqlite", "path": DB_PATH, "tables": list(TABLES),
                           "ledger": {"table": "trades", "id": "id"}}
    profile["backup"] = {"database": True, "paths": ["shared/config"], "retention": {"keep_last": 3, "max_age_days": 30}}
    return profile


def make_bot(root: Path, trades=20, release="1.0.0"):
    """A bot root: releases/<release>, current symlink, shared/config/bot.json (0600), a SQLite db."""
    (root / "releases" / release).mkdir(parents=True)
    os.symlink(f"releases/{release}", root / "current")
    config = root / "shared" / "config"
    config.mkdir(parents=True)
    (config / "bot.json").write_text(json.dumps({"name": root.name, "trade_interval": 0.2}) + "\n")
    os.chmod(config / "bot.json", 0o600)
    (root / "shared" / "data").mkdir(parents=True)
    conn = sqlite3.connect(root / DB_PATH)
    conn.executescript("""
        CREATE TABLE trades (id INTEGER PRIMARY KEY, symbol TEXT, qty REAL);
        CREATE TABLE positions (id INTEGER PRIMARY KEY, status TEXT);
        CREATE TABLE orders (id INTEGER PRIMARY KEY, status TEXT);
        CREATE TABLE alembic_version (version_num TEXT PRIMARY KEY);
        INSERT INTO alembic_version VALUES ('0001_initial');
    """)
    add_trades(root, trades, conn)
    conn.execute("INSERT INTO positions VALUES (1, 'open')")
    conn.commit()
    conn.close()
    return root


def add_trades(root: Path, n: int, conn=None):
    own = conn is None
    conn = conn or sqlite3.connect(root / DB_PATH)
    start = conn.execute("SELECT coalesce(max(id), 0) FROM trades").fetchone()[0]
    conn.executemany("INSERT INTO trades VALUES (?, 'BTC-USD', 1.0)", [(start + i + 1,) for i in range(n)])
    conn.commit()
    if own:
        conn.close()


def db_state(root: Path):
    """(trade count, max trade id) of the live SQLite database."""
    conn = sqlite3.connect(root / DB_PATH)
    try:
        return conn.execute("SELECT count(*), max(id) FROM trades").fetchone()
    finally:
        conn.close()


def module_args(root: Path, profile=None, **kw):
    bot = {"name": "b07", "root": str(root), "service": {"manager": "supervisor", "name": "b07"},
           "process_match": "botops-test-no-such-process"}
    return dict(dict(profile=profile or sqlite_profile(), bot=bot, secrets={}), **kw)


class FakeService:
    """Stands in for the service manager and the bot's process: records every call."""

    def __init__(self, running=True, ready=True):
        self.running = running
        self.ready = ready
        self.calls = []

    def install(self, monkeypatch):
        fake = self

        def service(bot, op):
            fake.calls.append(op)
            if op == "stop":
                fake.running = False
            elif op in ("start", "restart"):
                fake.running = True
            return ""

        monkeypatch.setattr(botops_bot.Bot, "service", service)
        monkeypatch.setattr(botops_bot.Bot, "pids", lambda bot: [424242] if fake.running else [])
        monkeypatch.setattr(botops_bot.Bot, "service_state", lambda bot: "RUNNING" if fake.running else "STOPPED")
        monkeypatch.setattr(botops_bot.Bot, "wait_for",
                            lambda bot, specs, timeout: (fake.running and fake.ready, [{"status": 200 if fake.ready else 503}]))
        return self
