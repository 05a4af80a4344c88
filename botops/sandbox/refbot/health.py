"""Readiness: honest checks of what the bot needs to trade.

Components, in order: ``database`` (a fresh connection with a short timeout), ``redis``
(families that use it), ``schema`` (the database's Alembic revision against the release's
head), ``trading`` (the writer's last tick succeeded recently) and, for the broken release,
``price_feed``. The bot is ready when every component is ok.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import psycopg

from .config import BotConfig, Release
from .state import BotState
from .trading import describe_error

CACHE_SECONDS = 0.5


@dataclass(frozen=True)
class Component:
    ok: bool
    detail: str


class HealthChecker:
    def __init__(self, cfg: BotConfig, release: Release, state: BotState, redis_client=None):
        self.cfg = cfg
        self.release = release
        self.state = state
        self.redis = redis_client
        self._lock = threading.Lock()
        self._cached: tuple[float, dict[str, Component]] | None = None
        # A tick that has not completed for this long means the loop is stuck.
        self.stall_seconds = max(10.0, 50 * cfg.trade_interval)

    def components(self) -> dict[str, Component]:
        with self._lock:
            now = time.monotonic()
            if self._cached is not None and now - self._cached[0] < CACHE_SECONDS:
                return self._cached[1]
            result = self._check()
            self._cached = (time.monotonic(), result)
            return result

    def ready(self) -> tuple[bool, dict[str, Component]]:
        components = self.components()
        return all(c.ok for c in components.values()), components

    def _check(self) -> dict[str, Component]:
        result: dict[str, Component] = {}
        result["database"], result["schema"] = self._check_database()
        if self.cfg.uses_redis:
            result["redis"] = self._check_redis()
        result["trading"] = self._check_trading()
        if self.release.broken:
            result["price_feed"] = Component(False, "never connected")
        # Stable order for humans: database, redis, schema, trading, price_feed.
        order = ["database", "redis", "schema", "trading", "price_feed"]
        return {k: result[k] for k in order if k in result}

    def _check_database(self) -> tuple[Component, Component]:
        if self.cfg.memory_ledger:
            return Component(True, "in-memory ledger"), Component(True, "in-memory ledger: no schema")
        try:
            with psycopg.connect(
                self.cfg.database_url,
                autocommit=True,
                connect_timeout=2,
                application_name=f"refbot:{self.cfg.name}:health",
                options="-c statement_timeout=2000",
            ) as conn:
                revision = conn.execute(
                    "SELECT CASE WHEN to_regclass('alembic_version') IS NULL THEN NULL"
                    " ELSE (SELECT max(version_num) FROM alembic_version) END"
                ).fetchone()[0]
        except psycopg.Error as exc:
            return Component(False, describe_error(exc)), Component(False, "unknown: database unreachable")
        ok, detail = self.release.schema_status(revision)
        return Component(True, "ok"), Component(ok, detail)

    def _check_redis(self) -> Component:
        if self.redis is None:
            return Component(False, "no redis_url configured")
        try:
            self.redis.ping()
        except Exception as exc:  # noqa: BLE001 - any failure means not ready
            return Component(False, describe_error(exc))
        return Component(True, "ok")

    def _check_trading(self) -> Component:
        view = self.state.view()
        if view["shutting_down"]:
            return Component(False, "shutting down")
        if view["trading_error"]:
            return Component(False, view["trading_error"])
        last_ok = view["last_tick_ok_at"]
        if last_ok is None:
            return Component(False, "starting: no tick completed yet")
        idle = time.monotonic() - last_ok
        if idle > self.stall_seconds:
            return Component(False, f"stalled: no tick completed for {idle:.0f}s")
        return Component(True, "ok")
