"""The trading writer.

One thread owns one database connection and is the only writer of the bot's tables.
Every ``trade_interval`` it runs one tick in one transaction; operator commands (cancel
orders, close positions, persist a kill switch ...) are queued to the same thread and run
between ticks, so ids stay ``max(id)+1`` and continuous without any race. A trade, order or
position id is also above the floor botops writes into ``bot_state`` (``botops_id_floor``, one
key per table) when it restores a backup over rows it kept aside: the ids those rows hold are
never handed out again.

The loop never dies on a database or Redis outage: it logs the failure once, retries on
every tick, and logs the recovery.
"""

from __future__ import annotations

import json
import logging
import queue
import random
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Callable

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from . import context
from .config import EXECUTION_MODES, BotConfig, Release
from .state import BotState, Snapshot, level_rank


# families whose execution mode and paper flag are configuration (bot.json), not an API or Redis key
MODE_FROM_CONFIG = {"mojorust", "solana-cli", "hyperliquid"}
log = logging.getLogger("refbot.trading")

INITIAL_CAPITAL = 10_000.0
BASE_PRICES = {"BTC-USD": 60_000.0, "ETH-USD": 3_000.0, "SOL-USD": 150.0}
MAX_OPEN_POSITIONS = 3
MAX_OPEN_ORDERS = 2
FEE_RATE = 0.0005
# pg_advisory_xact_lock key: serialises writers should two processes ever share a database.
WRITER_LOCK_KEY = 0x7265_6662_6F74  # "refbot"
# How often a persisting failure is logged again (the first occurrence is logged at once).
ERROR_REPEAT_SECONDS = 60.0
COMMAND_TIMEOUT = 5.0


class CommandError(Exception):
    """An operator command could not be carried out by the trading loop."""


def describe_error(exc: BaseException) -> str:
    """One line naming the failure, without secrets (connection errors carry no password)."""
    first = (str(exc).strip().splitlines() or [""])[0]
    if isinstance(exc, psycopg.OperationalError):
        return f"database unreachable: {first}" if first else "database unreachable"
    if isinstance(exc, psycopg.Error):
        return f"database error ({type(exc).__name__}): {first}"
    try:
        import redis

        if isinstance(exc, redis.RedisError):
            return f"redis unreachable: {first}" if first else "redis unreachable"
    except ImportError:  # pragma: no cover - redis-py is a dependency
        pass
    return f"{type(exc).__name__}: {first}"


@dataclass
class Position:
    id: int
    symbol: str
    side: str
    qty: Decimal
    entry_price: Decimal


@dataclass
class Order:
    id: int
    symbol: str
    side: str
    qty: Decimal
    price: Decimal


class Tx:
    """A cursor inside the writer's transaction plus the accounting it changes.

    The deltas are applied to the in-memory totals only after the commit.
    """

    def __init__(self, cur: psycopg.Cursor):
        self.cur = cur
        self.realized = 0.0
        self.fees = 0.0


def next_id(table: str) -> str:
    """SQL for the next id of `table` (selected FROM it): max(id)+1, and above the floor a restore
    leaves (botops' database.ledger.id_floor), so no id is handed out twice."""
    return (f"greatest(coalesce(max(id), 0), coalesce((SELECT (value->>'{table}')::bigint FROM bot_state"
            " WHERE key = 'botops_id_floor'), 0)) + 1")


def _opposite(side: str) -> str:
    return "sell" if side == "buy" else "buy"


def _pnl(side: str, qty: Decimal, entry: Decimal, exit_price: Decimal) -> float:
    diff = (exit_price - entry) if side == "buy" else (entry - exit_price)
    return float(diff * qty)


class Trader:
    memory = False  # the tables are in PostgreSQL (see refbot.memory for the in-memory ledger)

    def __init__(self, cfg: BotConfig, release: Release, state: BotState, redis_client=None):
        self.cfg = cfg
        self.release = release
        self.state = state
        self.redis = redis_client
        self._commands: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: psycopg.Connection | None = None
        self._rng = random.Random()
        self._prices = {s: Decimal(str(p)) for s, p in BASE_PRICES.items()}
        self._realized = 0.0
        self._fees = 0.0
        self._connected_once = False
        # Error latch: log a failure when it starts or changes, then once a minute.
        self._failing_since: float | None = None
        self._failed_ticks = 0
        self._last_error: str | None = None
        self._last_error_logged_at = 0.0
        self._exec_mode_warned: str | None = None
        self._broken_logged = False
        # Mode/paper change read from Redis exec_mode, persisted by the next tick.
        self._pending_mode: tuple[str, bool] | None = None

        qty_col = sql.Identifier(release.qty_column)
        fee_col = sql.SQL(", fee") if release.writes_fee else sql.SQL("")
        fee_ph = sql.SQL(", %(fee)s") if release.writes_fee else sql.SQL("")
        self._insert_trade = sql.SQL(
            "INSERT INTO trades (id, symbol, side, {qty}, price, position_id, order_id, mode, paper{fee_col})"
            # above the floor a restore leaves (botops' database.ledger.id_floor): no id is handed out twice
            f" SELECT {next_id('trades')}, %(symbol)s, %(side)s, %(qty)s, %(price)s,"
            " %(position_id)s, %(order_id)s, %(mode)s, %(paper)s{fee_ph} FROM trades RETURNING id"
        ).format(qty=qty_col, fee_col=fee_col, fee_ph=fee_ph)

    # --- thread control ------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="trader", daemon=True)
        self._thread.start()

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = 15.0) -> bool:
        """Ask the loop to stop after the in-flight tick; True when it has stopped."""
        self._stop.set()
        self._commands.put(None)  # wake the loop
        if self._thread is not None:
            self._thread.join(timeout)
        return not self.alive()

    def call(self, fn: Callable[[Tx], dict], timeout: float = COMMAND_TIMEOUT) -> dict:
        """Run ``fn`` in the writer's next transaction and return its result."""
        if self._stop.is_set() or not self.alive():
            raise CommandError("trading loop is not running (bot shutting down)")
        future: Future = Future()
        self._commands.put((fn, future))
        try:
            return future.result(timeout)
        except FutureTimeout:
            future.cancel()
            raise CommandError(f"trading loop did not run the command within {timeout:.0f}s") from None

    def run_final(self, fn: Callable[[Tx], dict], deadline: float) -> dict:
        """Run ``fn`` in this thread once the loop has stopped, retrying until ``deadline``."""
        assert not self.alive(), "run_final needs the trading loop stopped"
        while True:
            try:
                return self._transaction(fn)
            except Exception as exc:  # noqa: BLE001 - reported to the caller after retries
                self._drop_broken_connection(exc)
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.2)

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except psycopg.Error:
                pass
            self._conn = None

    # --- the loop ------------------------------------------------------------------------

    def _run(self) -> None:
        context.bind(self.cfg.name)
        interval = self.cfg.trade_interval
        next_tick = time.monotonic()
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                if now >= next_tick:  # a due tick goes first: commands cannot starve trading
                    self._tick_safely()
                    next_tick = max(next_tick + interval, time.monotonic())
                    continue
                try:
                    item = self._commands.get(timeout=next_tick - now)
                except queue.Empty:
                    continue
                if item is not None:  # None only wakes the loop (stop)
                    self._execute(*item)
        except BaseException:
            log.exception("trading loop crashed")
            raise
        finally:
            self._fail_pending("trading loop stopped (bot shutting down)")

    def _fail_pending(self, message: str) -> None:
        while True:
            try:
                item = self._commands.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                _fn, future = item
                if future.set_running_or_notify_cancel():
                    future.set_exception(CommandError(message))

    def _execute(self, fn: Callable[[Tx], dict], future: Future) -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            result = self._transaction(fn)
        except Exception as exc:  # noqa: BLE001 - handed to the waiting HTTP thread
            self._drop_broken_connection(exc)
            future.set_exception(exc)
        else:
            future.set_result(result)

    def _transaction(self, fn: Callable[[Tx], dict], tick: bool = False) -> dict:
        """Run ``fn`` in one transaction under the writer lock, then publish the snapshot."""
        conn = self._connection()
        with conn.transaction():
            tx = Tx(conn.cursor())
            tx.cur.execute("SELECT pg_advisory_xact_lock(%s)", (WRITER_LOCK_KEY,))
            result = fn(tx)
            # Marks are state too: a restart values open positions exactly as the last commit did.
            self.persist_state(tx.cur, "marks", {s: str(p) for s, p in sorted(self._prices.items())})
            snapshot = self._snapshot(tx)
        self._committed(tx, snapshot, tick)
        return result

    def _committed(self, tx: Tx, snapshot, tick: bool) -> None:
        """After a transaction committed: add its realized PnL and fees, publish the state."""
        self._realized += tx.realized
        self._fees += tx.fees
        snapshot.realized_pnl, snapshot.fees = self._realized, self._fees
        snapshot.portfolio_value += self._realized - self._fees
        if tick:
            self.state.tick_done(snapshot)
        else:
            self.state.publish(snapshot)

    def _tick_safely(self) -> None:
        try:
            self._tick()
        except Exception as exc:  # noqa: BLE001 - the loop must survive every failure
            self._drop_broken_connection(exc)
            self._tick_failed(describe_error(exc))
        else:
            self._tick_succeeded()

    def _tick_failed(self, message: str) -> None:
        now = time.monotonic()
        self.state.tick_failed(message)
        self._failed_ticks += 1
        if self._failing_since is None:
            self._failing_since = now
        if message != self._last_error or now - self._last_error_logged_at >= ERROR_REPEAT_SECONDS:
            if message == self._last_error:
                log.error("trading tick still failing after %d ticks: %s", self._failed_ticks, message)
            else:
                log.error("trading tick failed: %s", message)
            self._last_error = message
            self._last_error_logged_at = now

    def _tick_succeeded(self) -> None:
        if self._failing_since is not None:
            log.info(
                "trading recovered after %d failed ticks (%.1fs)",
                self._failed_ticks, time.monotonic() - self._failing_since,
            )
        self._failing_since = None
        self._failed_ticks = 0
        self._last_error = None

    # --- connection and recovery ---------------------------------------------------------

    def _drop_broken_connection(self, exc: BaseException) -> None:
        conn = self._conn
        if conn is None:
            return
        if isinstance(exc, psycopg.OperationalError) or conn.broken or conn.closed:
            self.close()

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(
                self.cfg.database_url,
                autocommit=True,
                connect_timeout=3,
                application_name=f"refbot:{self.cfg.name}",
                options="-c statement_timeout=5000 -c lock_timeout=3000",
            )
            self.state.recovered = False
        if not self.state.recovered:
            self._recover(self._conn)
        return self._conn

    def _recover(self, conn: psycopg.Connection) -> None:
        """Rebuild the in-memory state from the database (first start, reconnect, restore)."""
        cfg, state = self.cfg, self.state
        with conn.transaction():
            cur = conn.cursor()
            # Families without a mode API take their mode from the config file at every start (as
            # mojorust's trading.toml and hyperliquid's .env do); the others keep what was set since.
            conflict = "DO UPDATE SET value = EXCLUDED.value" if cfg.family in MODE_FROM_CONFIG else "DO NOTHING"
            cur.execute(
                "INSERT INTO bot_state (key, value) VALUES ('execution_mode', %s), ('paper_trading', %s)"
                f" ON CONFLICT (key) {conflict}",
                (Jsonb(cfg.execution_mode), Jsonb(cfg.paper_trading)),
            )
            cur.execute("SELECT key, value FROM bot_state")
            stored = dict(cur.fetchall())

            mode = stored.get("execution_mode")
            if mode not in EXECUTION_MODES:
                log.error("bot_state execution_mode is %r: using DRY", mode)
                mode = "DRY"
            paper = stored.get("paper_trading")
            if not isinstance(paper, bool):
                log.error("bot_state paper_trading is %r: using paper trading", paper)
                paper = True
            if cfg.paper_only and not paper:
                log.error("paper-only bot found paper_trading=false in bot_state: forcing paper trading")
                paper = True
                self.persist_state(cur, "paper_trading", True)
            state.set_mode(mode, paper)

            if cfg.family == "hyperliquid":
                self._recover_circuit_breaker(cur, stored.get("kill_switch"))

            cur.execute(
                "SELECT coalesce(sum(CASE WHEN p.side = 'buy' THEN t.price - p.entry_price"
                " ELSE p.entry_price - t.price END * p.qty), 0)"
                " FROM positions p JOIN trades t ON t.position_id = p.id AND t.side <> p.side"
                " WHERE p.status = 'closed'"
            )
            self._realized = float(cur.fetchone()[0])
            if self.release.writes_fee:
                cur.execute("SELECT coalesce(sum(fee), 0) FROM trades")
                self._fees = float(cur.fetchone()[0])
            else:
                self._fees = 0.0
            marks = stored.get("marks")
            if isinstance(marks, dict):
                rows = list(marks.items())
            else:  # written by no release yet: fall back to the last traded prices
                cur.execute("SELECT DISTINCT ON (symbol) symbol, price FROM trades ORDER BY symbol, id DESC")
                rows = cur.fetchall()
            for symbol, price in rows:
                if symbol in self._prices:
                    self._prices[symbol] = Decimal(price)
            tx = Tx(cur)
            snapshot = self._snapshot(tx)
            cur.execute(
                "SELECT CASE WHEN to_regclass('alembic_version') IS NULL THEN NULL"
                " ELSE (SELECT max(version_num) FROM alembic_version) END"
            )
            revision = cur.fetchone()[0]

        snapshot.realized_pnl, snapshot.fees = self._realized, self._fees
        snapshot.portfolio_value += self._realized - self._fees
        state.publish(snapshot)
        state.recovered = True
        verb = "reconnected to" if self._connected_once else "connected to"
        self._connected_once = True
        log.info(
            "%s database; recovered state: last_trade_id=%d open_positions=%d open_orders=%d "
            "portfolio_value=%.2f execution_mode=%s paper_trading=%s kill_switch=%s",
            verb, snapshot.last_trade_id, snapshot.open_positions, snapshot.open_orders,
            snapshot.portfolio_value, mode, str(paper).lower(), state.kill_level(),
        )
        ok, detail = self.release.schema_status(revision)
        if not ok:
            log.warning("schema: %s (the bot does not migrate: run the release's migrations)", detail)
        elif revision != self.release.alembic_head:
            log.info("schema: %s", detail)

    def _recover_circuit_breaker(self, cur: psycopg.Cursor, stored: Any) -> None:
        state = self.state
        in_memory = state.flag("circuit_breaker")
        level = stored.get("level", "none") if isinstance(stored, dict) else "none"
        if level != "none":
            reason = stored.get("reason") or "restored from bot_state"
            if state.engage("circuit_breaker", level, reason):
                log.warning("kill switch: circuit breaker restored from bot_state: %s (%s)", level, reason)
        elif in_memory is not None:
            # Tripped while the database was unreachable: the safer state wins.
            self.persist_state(cur, "kill_switch", {"level": in_memory.level, "reason": in_memory.reason,
                                               "since": in_memory.since})
            log.warning("kill switch: circuit breaker tripped during the outage persisted to bot_state")

    @staticmethod
    def persist_state(cur: psycopg.Cursor, key: str, value: Any) -> None:
        cur.execute(
            "INSERT INTO bot_state (key, value, updated_at) VALUES (%s, %s, now())"
            " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()",
            (key, Jsonb(value)),
        )

    # --- one tick ------------------------------------------------------------------------

    def _tick(self) -> None:
        self._move_prices()
        self._transaction(self._tick_body, tick=True)
        self._pending_mode = None

    def _tick_body(self, tx: Tx) -> dict:
        # Decide under the writer lock: a kill switch engaged while this tick waited for
        # the lock is honoured by this very tick.
        if self.cfg.family == "vanta":
            self._sync_exec_mode()
        level = self.state.kill_level()
        if self._pending_mode is not None:
            mode, paper = self._pending_mode
            self.persist_state(tx.cur, "execution_mode", mode)
            self.persist_state(tx.cur, "paper_trading", paper)
        positions = self.open_positions(tx)
        orders = self.open_orders(tx)
        if level_rank(level) >= level_rank("halt"):
            if orders:
                self.cancel_orders(tx, orders)
                log.warning("kill switch %s: cancelled %d open orders", level, len(orders))
            if level == "flatten" and positions:
                self.close_positions(tx, positions)
                log.warning("kill switch flatten: closed %d open positions", len(positions))
        elif self.release.broken:
            if not self._broken_logged:
                log.error("price feed never connected: not trading")
                self._broken_logged = True
        else:
            self._trade_step(tx, level, positions, orders)
        return {}

    def _trade_step(self, tx: Tx, level: str, positions: list[Position], orders: list[Order]) -> None:
        """Exactly one trading decision: fill/cancel a resting order, exit, rest an order or enter."""
        r = self._rng.random()
        if level == "pause":
            if positions and r < 0.5:
                self.close_position(tx, positions[0])
            return
        if orders and r < 0.35:
            order = orders[0]
            if self._rng.random() < 0.75:
                self.open_position(tx, order.symbol, order.side, order.qty, order.price, order_id=order.id)
            else:
                self.cancel_orders(tx, [order])
        elif positions and (len(positions) >= MAX_OPEN_POSITIONS or r < 0.6):
            self.close_position(tx, positions[0])
        elif len(orders) < MAX_OPEN_ORDERS and r < 0.8:
            symbol, side, qty = self._pick()
            offset = Decimal("0.999") if side == "buy" else Decimal("1.001")
            self._new_order(tx, symbol, side, qty, (self._prices[symbol] * offset).quantize(Decimal("0.01")), "open")
        else:
            symbol, side, qty = self._pick()
            self.open_position(tx, symbol, side, qty, self._prices[symbol])

    def _pick(self) -> tuple[str, str, Decimal]:
        symbol = self._rng.choice(sorted(self._prices))
        side = self._rng.choice(("buy", "sell"))
        qty = Decimal(self._rng.randint(1, 100)) / Decimal(100)
        return symbol, side, qty

    def _move_prices(self) -> None:
        for symbol, price in self._prices.items():
            step = Decimal(str(round(self._rng.gauss(0, 0.001), 6)))
            self._prices[symbol] = max(Decimal("0.01"), (price * (1 + step)).quantize(Decimal("0.01")))

    # --- Redis exec_mode (vanta) --------------------------------------------------------

    def exec_mode_value(self) -> dict:
        return {
            "mode": self.state.execution_mode,
            "emergency_stop": self.state.flag("exec_mode") is not None,
            "paper": self.state.paper_trading,
        }

    def _sync_exec_mode(self) -> None:
        """Read ``exec_mode`` every tick; fail closed when it cannot be understood."""
        raw = self.redis.get("exec_mode")
        if raw is None:
            value = self.exec_mode_value()
            if self.redis.set("exec_mode", json.dumps(value), nx=True):
                log.info("Redis exec_mode was absent: wrote %s from the bot's state", json.dumps(value))
            return
        try:
            data = json.loads(raw)
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            mode = data.get("mode")
            if mode not in EXECUTION_MODES:
                raise ValueError(f"mode must be DRY or LIVE, got {mode!r}")
            stop = data.get("emergency_stop", False)
            paper = data.get("paper", self.state.paper_trading)
            if not isinstance(stop, bool) or not isinstance(paper, bool):
                raise ValueError("emergency_stop and paper must be booleans")
        except ValueError as exc:
            if self.state.engage("exec_mode", "halt", f"exec_mode unreadable: {exc}"):
                log.error("kill switch: Redis exec_mode unreadable (%s): halting until it is valid", exc)
            return
        if stop:
            if self.state.engage("exec_mode", "halt", "emergency_stop set in Redis exec_mode"):
                log.warning("kill switch: emergency_stop=true in Redis exec_mode: halting")
        elif self.state.release("exec_mode"):
            log.warning("kill switch: emergency_stop=false in Redis exec_mode: trading resumes (level %s)",
                        self.state.kill_level())
        if self.cfg.paper_only and not paper:
            if self._exec_mode_warned != raw:
                log.error("Redis exec_mode asks paper=false on a paper-only bot: ignored")
                self._exec_mode_warned = raw
            paper = True
        if (mode, paper) != (self.state.execution_mode, self.state.paper_trading):
            log.warning(
                "execution mode changed via Redis exec_mode: %s paper=%s -> %s paper=%s",
                self.state.execution_mode, str(self.state.paper_trading).lower(), mode, str(paper).lower(),
            )
            self.state.set_mode(mode, paper)
            self._pending_mode = (mode, paper)

    # --- table operations (all run inside the writer's transaction) -----------------------

    @staticmethod
    def open_positions(tx: Tx) -> list[Position]:
        tx.cur.execute(
            "SELECT id, symbol, side, qty, entry_price FROM positions WHERE status = 'open' ORDER BY id"
        )
        return [Position(*row) for row in tx.cur.fetchall()]

    @staticmethod
    def open_orders(tx: Tx) -> list[Order]:
        tx.cur.execute("SELECT id, symbol, side, qty, price FROM orders WHERE status = 'open' ORDER BY id")
        return [Order(*row) for row in tx.cur.fetchall()]

    @staticmethod
    def cancel_orders(tx: Tx, orders: list[Order]) -> int:
        if not orders:
            return 0
        tx.cur.execute(
            "UPDATE orders SET status = 'cancelled', updated_at = now()"
            " WHERE status = 'open' AND id = ANY(%s)",
            ([o.id for o in orders],),
        )
        return tx.cur.rowcount

    def close_positions(self, tx: Tx, positions: list[Position]) -> int:
        for position in positions:
            self.close_position(tx, position)
        return len(positions)

    def _new_order(self, tx: Tx, symbol: str, side: str, qty: Decimal, price: Decimal, status: str) -> int:
        tx.cur.execute(
            "INSERT INTO orders (id, symbol, side, qty, price, status)"
            f" SELECT {next_id('orders')}, %s, %s, %s, %s, %s FROM orders RETURNING id",
            (symbol, side, qty, price, status),
        )
        return tx.cur.fetchone()[0]

    def _write_trade(self, tx: Tx, symbol: str, side: str, qty: Decimal, price: Decimal,
                     position_id: int, order_id: int) -> int:
        fee = (qty * price * Decimal(str(FEE_RATE))).quantize(Decimal("0.0001"))
        tx.cur.execute(self._insert_trade, {
            "symbol": symbol, "side": side, "qty": qty, "price": price,
            "position_id": position_id, "order_id": order_id,
            "mode": self.state.execution_mode, "paper": self.state.paper_trading, "fee": fee,
        })
        if self.release.writes_fee:
            tx.fees += float(fee)
        return tx.cur.fetchone()[0]

    def open_position(self, tx: Tx, symbol: str, side: str, qty: Decimal, price: Decimal,
                      order_id: int | None = None) -> int:
        if order_id is None:
            order_id = self._new_order(tx, symbol, side, qty, price, "filled")
        else:
            tx.cur.execute("UPDATE orders SET status = 'filled', updated_at = now() WHERE id = %s", (order_id,))
        tx.cur.execute(
            "INSERT INTO positions (id, symbol, side, qty, entry_price, status)"
            f" SELECT {next_id('positions')}, %s, %s, %s, %s, 'open' FROM positions RETURNING id",
            (symbol, side, qty, price),
        )
        position_id = tx.cur.fetchone()[0]
        self._write_trade(tx, symbol, side, qty, price, position_id, order_id)
        return position_id

    def close_position(self, tx: Tx, position: Position) -> int:
        price = self._prices.get(position.symbol, position.entry_price)
        side = _opposite(position.side)
        order_id = self._new_order(tx, position.symbol, side, position.qty, price, "filled")
        trade_id = self._write_trade(tx, position.symbol, side, position.qty, price, position.id, order_id)
        self._mark_closed(tx, position)
        tx.realized += _pnl(position.side, position.qty, position.entry_price, price)
        return trade_id

    def _mark_closed(self, tx: Tx, position: Position) -> None:
        tx.cur.execute(
            "UPDATE positions SET status = 'closed', closed_at = now() WHERE id = %s", (position.id,)
        )

    def _snapshot(self, tx: Tx) -> Snapshot:
        """Counts and unrealised value; realised P&L and fees are added by the caller."""
        tx.cur.execute(
            "SELECT (SELECT coalesce(max(id), 0) FROM trades),"
            " (SELECT count(*) FROM orders WHERE status = 'open')"
        )
        last_trade_id, open_orders = tx.cur.fetchone()
        positions = self.open_positions(tx)
        unrealized = sum(
            _pnl(p.side, p.qty, p.entry_price, self._prices.get(p.symbol, p.entry_price)) for p in positions
        )
        return Snapshot(
            last_trade_id=int(last_trade_id),
            open_positions=len(positions),
            open_orders=int(open_orders),
            portfolio_value=INITIAL_CAPITAL + unrealized,
        )
