"""The reference bot, one per family, trading into a real PostgreSQL (and Redis).

Where a test must act at a precise point of the bot's trading loop, it takes the bot's
writer lock (the same ``pg_advisory_xact_lock`` the bot's single writer takes), so it can
insert an order or position with continuous ids and engage a kill switch before the bot's
next tick runs: no timing guesses, no sleeps.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest

try:  # tests/integration as a package or as a plain directory on sys.path
    from . import pgredis
except ImportError:
    import pgredis

from botops.sandbox import releases
from botops.sandbox.refbot.trading import WRITER_LOCK_KEY

pg_cluster = pgredis.pg_cluster
redis_server = pgredis.redis_server
wait_until = pgredis.wait_until
free_port = pgredis.free_port

PYTHON = sys.executable
ALEMBIC = str(Path(sys.executable).parent / "alembic")
INTERVAL = 0.05
TOKEN = "hl-token-7f3a9c5e"
FAMILIES = ["mojorust", "papertrader", "solana-cli", "hyperliquid", "vanta"]

# (port name, path) per family.
READINESS = {
    "mojorust": ("health", "/health"),
    "papertrader": ("api", "/api/health/detailed"),
    "solana-cli": ("api", "/api/status"),
    "hyperliquid": ("api", "/api/health"),
    "vanta": ("api", "/readyz"),
}
LIVENESS = {
    "mojorust": ("api", "/api/status"),
    "papertrader": ("api", "/api/health"),
    "solana-cli": ("api", "/health"),
    "hyperliquid": ("api", "/api/health"),
    "vanta": ("api", "/healthz"),
}
STATUS = {
    "mojorust": ("api", "/api/status"),
    "papertrader": ("api", "/api/health/detailed"),
    "solana-cli": ("api", "/api/status"),
    "hyperliquid": ("api", "/api/health"),
    "vanta": ("api", "/health"),
}


class RefBot:
    """One bot root on disk, its process, its HTTP API and its database."""

    def __init__(self, base: Path, name: str, family: str, database_url: str,
                 redis_url: str | None, artifacts: dict[str, Path]):
        self.root = base / name
        self.name = name
        self.family = family
        self.database_url = database_url
        self.redis_url = redis_url
        self.artifacts = artifacts
        self.ports = {"api": free_port()}
        if family == "mojorust":
            self.ports["health"] = free_port()
        self.proc: subprocess.Popen | None = None
        (self.root / "shared" / "config").mkdir(parents=True)
        (self.root / "releases").mkdir()
        config = {
            "name": name, "family": family, "listen": "127.0.0.1", "ports": self.ports,
            "database_url": database_url, "redis_url": redis_url,
            "api_token": TOKEN if family == "hyperliquid" else None,
            "trade_interval": INTERVAL, "execution_mode": "DRY", "paper_trading": True,
            "paper_only": family == "papertrader",
        }
        path = self.root / "shared" / "config" / "bot.json"
        path.write_text(json.dumps(config))
        path.chmod(0o600)

    # --- releases and migrations ----------------------------------------------------------

    def activate(self, version: str) -> None:
        target = self.root / "releases" / version
        if not target.exists():
            with tarfile.open(self.artifacts[version], "r:gz") as tar:
                tar.extractall(target, filter="data")
        tmp = self.root / "current.tmp"
        if tmp.is_symlink():
            tmp.unlink()
        tmp.symlink_to(Path("releases") / version)
        os.replace(tmp, self.root / "current")

    def alembic(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen(
            [ALEMBIC, "-c", str(self.root / "current" / "alembic.ini"), *args],
            env={**os.environ, "DATABASE_URL": self.database_url},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )

    def migrate(self, *args: str) -> None:
        proc = self.alembic(*(args or ("upgrade", "head")))
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, f"alembic {' '.join(args)} failed for {self.name}:\n{out}"

    # --- process --------------------------------------------------------------------------

    @property
    def log_path(self) -> Path:
        return self.root / "shared" / "logs" / "bot.log"

    @property
    def shutdown_path(self) -> Path:
        return self.root / "shared" / "data" / "last_shutdown.json"

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, f"{self.name} already running"
        out = open(self.root / "process.out", "ab")
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "refbot", "--root", str(self.root)],
            cwd=self.root / "current", stdout=out, stderr=subprocess.STDOUT,
        )
        out.close()

    def stop(self, timeout: float = 20) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def restart(self) -> None:
        """Graceful stop and start; the recovered portfolio value must match the one at shutdown."""
        assert self.stop() == 0
        at_shutdown = json.loads(self.shutdown_path.read_text())["portfolio_value"]
        self.start()
        self.wait_ready()
        assert self.recovered_portfolio_value() == pytest.approx(at_shutdown, abs=0.011)

    def recovered_portfolio_value(self) -> float:
        lines = [line for line in self.log_path.read_text().splitlines() if "recovered state:" in line]
        return float(lines[-1].split("portfolio_value=")[1].split()[0])

    # --- HTTP -----------------------------------------------------------------------------

    def request(self, method: str, path: str, port: str = "api", body: dict | None = None,
                token: str | None = None) -> tuple[int, dict]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"http://127.0.0.1:{self.ports[port]}{path}", data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    def get(self, path: str, port: str = "api") -> tuple[int, dict]:
        return self.request("GET", path, port)

    def post(self, path: str, body: dict | None = None, token: str | None = None) -> tuple[int, dict]:
        if token is None and self.family == "hyperliquid":
            token = TOKEN
        return self.request("POST", path, body=body, token=token)

    def readiness(self) -> tuple[int, dict]:
        port, path = READINESS[self.family]
        return self.get(path, port)

    def ready(self) -> bool:
        return self.readiness()[0] == 200

    def wait_ready(self, timeout: float = 15) -> None:
        wait_until(self.ready, timeout, f"{self.name} ready ({self.family})")

    def status(self) -> dict:
        port, path = STATUS[self.family]
        return self.get(path, port)[1]

    def ticks(self) -> int:
        body = self.status()
        return body["trading"]["ticks"] if self.family == "papertrader" else body["ticks"]

    def wait_ticks(self, n: int) -> None:
        start = self.ticks()
        wait_until(lambda: self.ticks() >= start + n, 10, f"{self.name}: {n} more ticks")

    # --- database -------------------------------------------------------------------------

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        with psycopg.connect(self.database_url, autocommit=True, connect_timeout=5) as conn:
            return conn.execute(sql, params).fetchall()

    def trade_stats(self) -> tuple[int, int, int]:
        """(count, max id, min id) of trades."""
        return self.query("SELECT count(*), coalesce(max(id), 0), coalesce(min(id), 0) FROM trades")[0]

    def last_trade_id(self) -> int:
        return self.trade_stats()[1]

    def open_order_ids(self) -> list[int]:
        return [r[0] for r in self.query("SELECT id FROM orders WHERE status = 'open' ORDER BY id")]

    def open_position_count(self) -> int:
        return self.query("SELECT count(*) FROM positions WHERE status = 'open'")[0][0]

    def order_status(self, order_id: int) -> str:
        return self.query("SELECT status FROM orders WHERE id = %s", (order_id,))[0][0]

    @contextmanager
    def writer_lock(self):
        """Hold the bot's writer lock in a transaction (committed on exit)."""
        with psycopg.connect(self.database_url, connect_timeout=5) as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (WRITER_LOCK_KEY,))
            yield conn

    def assert_continuous_ids(self) -> int:
        count, max_id, min_id = self.trade_stats()
        assert count == max_id, f"{self.name}: {count} trades but max(id) {max_id}: ids not continuous"
        assert count == 0 or min_id == 1
        return max_id

    def wait_trade_growth(self, n: int = 3, timeout: float = 10) -> int:
        start = self.last_trade_id()
        wait_until(lambda: self.last_trade_id() >= start + n, timeout, f"{self.name}: {n} new trades")
        return self.assert_continuous_ids()

    def assert_no_trades_for(self, ticks: int = 10) -> None:
        before = self.trade_stats()
        self.wait_ticks(ticks)
        assert self.trade_stats() == before, f"{self.name}: trades written while halted"


def _mark(conn: psycopg.Connection, symbol: str) -> float:
    """The bot's current mark price for ``symbol`` (persisted in bot_state by every commit)."""
    row = conn.execute("SELECT value ->> %s FROM bot_state WHERE key = 'marks'", (symbol,)).fetchone()
    return float(row[0])


def insert_open_order(conn: psycopg.Connection) -> int:
    """A resting buy order just below the market."""
    return conn.execute(
        "INSERT INTO orders (id, symbol, side, qty, price, status)"
        " SELECT coalesce(max(id), 0) + 1, 'BTC-USD', 'buy', 0.01, %s, 'open' FROM orders RETURNING id",
        (round(_mark(conn, "BTC-USD") * 0.999, 2),),
    ).fetchone()[0]


def insert_open_position(conn: psycopg.Connection) -> int:
    """An entry at the market as the bot writes it: filled order, open position, trade (1.x schema)."""
    price = _mark(conn, "ETH-USD")
    order_id = conn.execute(
        "INSERT INTO orders (id, symbol, side, qty, price, status)"
        " SELECT coalesce(max(id), 0) + 1, 'ETH-USD', 'buy', 0.5, %s, 'filled' FROM orders RETURNING id",
        (price,),
    ).fetchone()[0]
    position_id = conn.execute(
        "INSERT INTO positions (id, symbol, side, qty, entry_price, status)"
        " SELECT coalesce(max(id), 0) + 1, 'ETH-USD', 'buy', 0.5, %s, 'open' FROM positions RETURNING id",
        (price,),
    ).fetchone()[0]
    conn.execute(
        "INSERT INTO trades (id, symbol, side, qty, price, position_id, order_id, mode, paper)"
        " SELECT coalesce(max(id), 0) + 1, 'ETH-USD', 'buy', 0.5, %s, %s, %s, 'DRY', true FROM trades",
        (price, position_id, order_id),
    )
    return position_id


# --- fixtures -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("artifacts")
    return {a["version"]: Path(a["path"]) for a in releases.build_artifacts(out)}


@pytest.fixture(scope="module")
def fleet(pg_cluster, redis_server, artifacts, tmp_path_factory):
    """One bot per family on release 1.0.0, started together, all ready."""
    base = tmp_path_factory.mktemp("bots")
    bots: dict[str, RefBot] = {}
    for index, family in enumerate(FAMILIES, start=1):
        url = pg_cluster.create_database(f"bot{index}", password=f"pw-{family}-s3cret")
        redis_url = redis_server.url(index) if family != "mojorust" else None
        bots[family] = RefBot(base, f"it-{family}", family, url, redis_url, artifacts)
    try:
        migrations = []
        for bot in bots.values():
            bot.activate("1.0.0")
            migrations.append((bot, bot.alembic("upgrade", "head")))
        for bot, proc in migrations:
            out, _ = proc.communicate(timeout=60)
            assert proc.returncode == 0, f"alembic upgrade failed for {bot.name}:\n{out}"
        for bot in bots.values():
            bot.start()
        for bot in bots.values():
            bot.wait_ready()
        yield bots
    finally:
        for bot in bots.values():
            bot.kill()


# --- trading -------------------------------------------------------------------------------

@pytest.mark.parametrize("family", FAMILIES)
def test_trades_grow_with_continuous_ids(fleet, family):
    bot = fleet[family]
    last = bot.wait_trade_growth(5)
    assert last >= 5


def test_vanta_writes_exec_mode_key_at_start(fleet, redis_server):
    value = redis_server.client(FAMILIES.index("vanta") + 1).get("exec_mode")
    assert value is not None, "vanta bot did not write exec_mode at start"
    assert json.loads(value) == {"mode": "DRY", "emergency_stop": False, "paper": True}


def test_hyperliquid_post_routes_need_the_bearer_token(fleet):
    bot = fleet["hyperliquid"]
    assert bot.request("POST", "/api/emergency/circuit-breaker")[0] == 401
    assert bot.request("POST", "/api/emergency/circuit-breaker", token="not-the-token")[0] == 401
    assert bot.request("POST", "/api/trades/orders/cancel-all")[0] == 401
    assert bot.status()["circuit_breaker"] == "closed"


def test_hyperliquid_read_routes(fleet):
    bot = fleet["hyperliquid"]
    status, body = bot.get("/api/trades?limit=5")
    assert status == 200
    ids = [t["id"] for t in body["trades"]]
    assert len(ids) == 5 and ids == list(range(ids[0], ids[0] - 5, -1)), ids
    assert {"symbol", "side", "qty", "price", "mode", "paper"} <= set(body["trades"][0])
    status, daily = bot.get("/api/trades/stats/daily")
    assert status == 200 and daily["trades"] >= 5 and isinstance(daily["portfolio_value"], float)
    status, body = bot.get("/api/trades/positions")
    assert status == 200 and all(p["status"] == "open" for p in body["positions"])


def test_papertrader_maintenance_pauses_entries_but_keeps_orders_and_exits(fleet):
    bot = fleet["papertrader"]
    with ThreadPoolExecutor(1) as pool:
        with bot.writer_lock() as conn:
            order_id = insert_open_order(conn)
            position_id = insert_open_position(conn)
            enable = pool.submit(bot.post, "/api/maintenance/enable")
            wait_until(lambda: bot.status()["trading"]["maintenance"], 5, "maintenance in effect")
        assert enable.result()[0] == 200
    # Exits go on until no position is open; no entry is made; the resting order stays.
    wait_until(lambda: bot.open_position_count() == 0, 10, "positions closed by exits under pause")
    bot.wait_ticks(10)
    assert bot.query("SELECT max(id) FROM positions")[0][0] == position_id, "entry made under pause"
    assert bot.order_status(order_id) == "open", "pause must keep open orders"
    assert bot.status()["trading"]["state"] == "maintenance"

    assert bot.post("/api/maintenance/disable")[0] == 200
    wait_until(lambda: bot.query("SELECT max(id) FROM positions")[0][0] > position_id, 10,
               "entries after maintenance disable")
    bot.assert_continuous_ids()


def test_papertrader_refuses_to_leave_paper_mode(fleet):
    bot = fleet["papertrader"]
    status, body = bot.post("/api/config/simulation-mode", {"enabled": False})
    assert status == 409 and "PaperTradingViolation" in body["error"]
    safety = bot.get("/api/health/safety")[1]
    assert safety == {"paperTradingMode": True, "realTradesBlocked": True, "executionMode": "DRY"}


def _engage_halt(bot: RefBot) -> tuple[int, dict]:
    if bot.family == "papertrader":
        return bot.post("/api/emergency/stop-all-trading")
    if bot.family == "solana-cli":
        return bot.post("/api/kill-switch", {"reason": "test", "message": "halt from integration test"})
    if bot.family == "hyperliquid":
        return bot.post("/api/emergency/circuit-breaker", {"reason": "integration test"})
    raise AssertionError(bot.family)


def _halted(bot: RefBot) -> bool:
    body = bot.status()
    return {
        "papertrader": lambda: body["trading"]["emergencyStop"],
        "solana-cli": lambda: body["risk"]["killSwitchActive"],
        "hyperliquid": lambda: body["circuit_breaker"] == "open",
        "vanta": lambda: body["components"]["executor"]["emergency_stop"],
    }[bot.family]()


@pytest.mark.parametrize("family", ["papertrader", "solana-cli", "hyperliquid"])
def test_api_kill_switch_halts_and_cancels_open_orders(fleet, family):
    bot = fleet[family]
    bot.wait_ready()
    with ThreadPoolExecutor(1) as pool:
        with bot.writer_lock() as conn:
            order_id = insert_open_order(conn)
            engaged = pool.submit(_engage_halt, bot)
            wait_until(lambda: _halted(bot), 5, f"{family} kill switch engaged in memory")
        status, body = engaged.result()
    assert status == 200, body
    assert bot.order_status(order_id) == "cancelled"
    assert bot.open_order_ids() == []
    bot.assert_no_trades_for(10)
    assert bot.ready(), "a halted bot is still ready (healthy, deliberately not trading)"

    if family == "hyperliquid":
        # The circuit breaker is persisted: a restart keeps the bot halted.
        bot.restart()
        assert _halted(bot)
        bot.assert_no_trades_for(10)
        status, body = bot.post("/api/emergency/circuit-breaker/reset")
        assert status == 200 and body["circuit_breaker"] == "closed", body
    else:
        # papertrader's stop-all-trading and solana-cli's kill switch live in memory:
        # the runbooks' resolution is a restart, which clears them.
        bot.restart()
        assert not _halted(bot)
    bot.wait_trade_growth(3)


def test_vanta_emergency_stop_in_redis_halts_and_release_resumes(fleet, redis_server):
    bot = fleet["vanta"]
    client = redis_server.client(FAMILIES.index("vanta") + 1)
    with bot.writer_lock() as conn:
        order_id = insert_open_order(conn)
        client.set("exec_mode", json.dumps({"mode": "DRY", "emergency_stop": True}))
    wait_until(lambda: _halted(bot), 5, "vanta emergency_stop picked up from Redis")
    assert bot.order_status(order_id) == "cancelled"
    assert bot.open_order_ids() == []
    bot.assert_no_trades_for(10)

    client.set("exec_mode", json.dumps({"mode": "DRY", "emergency_stop": False}))
    wait_until(lambda: not _halted(bot), 5, "vanta emergency_stop released")
    bot.wait_trade_growth(3)


def test_mojorust_sigterm_closes_positions_and_exits_0(fleet):
    bot = fleet["mojorust"]
    with bot.writer_lock() as conn:
        order_id = insert_open_order(conn)
        position_id = insert_open_position(conn)
        bot.proc.send_signal(signal.SIGTERM)
    assert bot.proc.wait(20) == 0
    assert bot.order_status(order_id) in ("cancelled", "filled")
    assert bot.open_order_ids() == []
    assert bot.open_position_count() == 0
    closing = bot.query("SELECT count(*) FROM trades WHERE position_id = %s AND side = 'sell'", (position_id,))
    assert closing[0][0] == 1, "the position open at SIGTERM was not closed by a trade"
    last = bot.assert_continuous_ids()
    shutdown = json.loads(bot.shutdown_path.read_text())
    assert shutdown["open_positions"] == 0 and shutdown["last_trade_id"] == last
    assert "closed" in bot.log_path.read_text().split("received SIGTERM")[-1]

    # SIGTERM is mojorust's kill switch; starting again recovers from the database.
    bot.start()
    bot.wait_ready()
    assert bot.recovered_portfolio_value() == pytest.approx(shutdown["portfolio_value"], abs=0.011)
    assert bot.wait_trade_growth(3) > last


# --- outages ------------------------------------------------------------------------------

def test_sigkill_then_start_recovers_from_the_database(fleet):
    bot = fleet["solana-cli"]
    bot.wait_ready()
    bot.kill()
    last = bot.assert_continuous_ids()
    open_positions = bot.open_position_count()
    bot.start()
    bot.wait_ready()
    recovered = [line for line in bot.log_path.read_text().splitlines() if "recovered state:" in line][-1]
    assert f"last_trade_id={last} open_positions={open_positions} " in recovered
    assert bot.wait_trade_growth(3) > last



def test_database_outage_fails_readiness_and_recovers(fleet, pg_cluster):
    for bot in fleet.values():
        bot.wait_ready()
    pg_cluster.stop()
    try:
        for bot in fleet.values():
            wait_until(lambda: bot.readiness()[0] == 503, 10, f"{bot.name} readiness 503 without database")
        for bot in fleet.values():
            port, path = LIVENESS[bot.family]
            assert bot.proc.poll() is None, f"{bot.name} died during the outage"
            assert bot.get(path, port)[0] in (200, 503)
        body = fleet["mojorust"].readiness()[1]
        assert body["status"] == "unhealthy" and body["checks"]["database"] != "ok"
    finally:
        pg_cluster.start()
    for bot in fleet.values():
        bot.wait_ready(20)
    for bot in fleet.values():
        bot.wait_trade_growth(3)


def test_redis_outage_stops_vanta_trading_until_redis_returns(fleet, redis_server):
    """vanta reads its kill switch from Redis: without Redis it fails closed (no trading)."""
    bot = fleet["vanta"]
    bot.wait_ready()
    redis_server.stop()
    try:
        wait_until(lambda: bot.readiness()[0] == 503, 10, "vanta readiness 503 without Redis")
        assert "redis" in bot.readiness()[1]["failing"]
        wait_until(lambda: "redis" in bot.status()["components"]["trading"]["detail"], 10,
                   "vanta trading to stop for lack of Redis")
        bot.assert_no_trades_for(5)
    finally:
        redis_server.start()
    bot.wait_ready(20)
    # The restarted Redis is empty: the bot writes exec_mode again from its own state.
    value = redis_server.client(FAMILIES.index("vanta") + 1).get("exec_mode")
    assert json.loads(value) == {"mode": "DRY", "emergency_stop": False, "paper": True}
    bot.wait_trade_growth(3)


# --- graceful shutdown ----------------------------------------------------------------------

@pytest.mark.parametrize("family", FAMILIES)
def test_sigterm_writes_last_shutdown_and_exits_0(fleet, family):
    bot = fleet[family]
    bot.wait_ready()
    before = datetime.now(timezone.utc) - timedelta(milliseconds=1)  # "at" has millisecond precision
    assert bot.stop() == 0
    shutdown = json.loads(bot.shutdown_path.read_text())
    assert shutdown["reason"] == "graceful_shutdown" and shutdown["signal"] == "SIGTERM"
    assert shutdown["version"] == "1.0.0"
    assert datetime.fromisoformat(shutdown["at"].replace("Z", "+00:00")) >= before
    assert shutdown["last_trade_id"] == bot.assert_continuous_ids()
    assert shutdown["open_positions"] == bot.open_position_count()
    assert isinstance(shutdown["portfolio_value"], float)
    if family == "mojorust":
        assert shutdown["open_positions"] == 0
    log = bot.log_path.read_text()
    assert "shutdown complete" in log
    assert f"pw-{family}-s3cret" not in log, "database password leaked into the log"
    assert TOKEN not in log, "api token leaked into the log"


# --- releases and migrations ----------------------------------------------------------------

def test_release_lifecycle_expand_broken_contract_and_rollback(pg_cluster, artifacts, tmp_path):
    """1.1.0 waits for its migration, 1.2.0-broken never gets ready, 1.x cannot write on 2.0.0's schema."""
    url = pg_cluster.create_database("lifecycle", password="pw-lifecycle-s3cret")
    bot = RefBot(tmp_path, "it-lifecycle", "mojorust", url, None, artifacts)

    def health() -> tuple[int, dict]:
        return bot.get("/health", "health")

    try:
        bot.activate("1.0.0")
        bot.migrate()

        # 1.1.0 on 0001: starts, reports the pending migration, gets ready once migrated.
        bot.activate("1.1.0")
        bot.start()
        wait_until(lambda: "pending" in health()[1].get("checks", {}).get("schema", ""), 10,
                   "1.1.0 to report its pending migration")
        assert health()[0] == 503
        bot.migrate()
        bot.wait_ready()
        bot.wait_trade_growth(3)
        assert bot.query("SELECT count(*) FROM trades WHERE fee IS NOT NULL")[0][0] > 0
        assert bot.stop() == 0

        # 1.2.0-broken: alive, never ready.
        bot.activate("1.2.0-broken")
        bot.start()
        wait_until(lambda: bot.get("/api/status")[0] == 200, 10, "broken release liveness")
        for _ in range(10):
            status, body = health()
            assert status == 503 and body["checks"]["price_feed"] == "never connected", body
            bot.wait_ticks(2)
        assert bot.stop() == 0

        # 2.0.0's contract migration, then code-only rollback to 1.1.0: visibly unsafe.
        bot.activate("2.0.0")
        bot.migrate()
        bot.activate("1.1.0")
        before = bot.trade_stats()
        bot.start()
        wait_until(lambda: 'column "qty"' in health()[1].get("checks", {}).get("trading", ""), 10,
                   "1.1.0 failing to write trades on the 2.0.0 schema")
        assert health()[0] == 503
        assert bot.trade_stats() == before
        assert 'column "qty" of relation "trades" does not exist' in bot.log_path.read_text()
        assert bot.stop() == 0

        # 2.0.0 writes trades.quantity, continuing the same ids.
        bot.activate("2.0.0")
        bot.start()
        bot.wait_ready()
        assert bot.wait_trade_growth(3) > before[1]
        assert bot.stop() == 0

        # Schema rollback through 2.0.0's downgrade makes 1.1.0 work again; then down to base.
        bot.migrate("downgrade", "0002_trade_fee")
        bot.activate("1.1.0")
        bot.start()
        bot.wait_ready()
        bot.wait_trade_growth(3)
        assert bot.stop() == 0
        bot.activate("2.0.0")
        bot.migrate("downgrade", "base")
        assert bot.query("SELECT to_regclass('trades')")[0][0] is None
    finally:
        bot.kill()
