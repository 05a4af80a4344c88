"""The in-memory ledger: the trading writer without a database, for bench-only bots.

A bot whose ``bot.json`` says ``"ledger": "memory"`` trades exactly as the PostgreSQL writer
does (the same tick decisions, kill-switch levels, order and position life cycle, continuous
trade ids), but into Python structures owned by its writer thread. Nothing survives a restart:
each start is a first start. The ledger exists so that a benchmark can run a thousand bots on
one machine, many per process (``python -m refbot --fleet-file``), without a thousand
databases, a thousand PostgreSQL connections and a thousand Alembic runs: what such a benchmark
measures is the control path (HTTP API, kill switches, verification), which is identical.

Only the storage differs: ``MemoryTrader`` overrides the table operations of
:class:`~refbot.trading.Trader`, and every tick and operator command still runs in the one
writer thread, one "transaction" at a time.
"""

from __future__ import annotations

import collections
import threading
import time
from decimal import Decimal
from typing import Any, Callable

from .state import utcnow_iso
from .trading import (FEE_RATE, INITIAL_CAPITAL, MODE_FROM_CONFIG, Order, Position, Trader, Tx, _pnl,
                      log)

# Trades kept for GET /api/trades (ids stay continuous: last_trade_id counts every trade).
KEEP_TRADES = 1000


class MemoryLedger:
    """The tables of one bot. Only its writer thread changes them, under ``lock``; readers take it too."""

    def __init__(self):
        self.lock = threading.RLock()
        self.trades: collections.deque = collections.deque(maxlen=KEEP_TRADES)
        self.last_trade_id = 0
        self.positions: dict[int, dict] = {}  # open positions only
        self.last_position_id = 0
        self.orders: dict[int, dict] = {}  # open orders only
        self.last_order_id = 0
        self.state: dict[str, Any] = {}  # bot_state
        self.day = time.strftime("%Y-%m-%d", time.gmtime())
        self.day_trades = 0
        self.day_volume = Decimal(0)
        self.day_fees = Decimal(0)

    def roll_day(self) -> None:
        today = time.strftime("%Y-%m-%d", time.gmtime())
        if today != self.day:
            self.day, self.day_trades, self.day_volume, self.day_fees = today, 0, Decimal(0), Decimal(0)


class MemoryTrader(Trader):
    """The trading writer on a :class:`MemoryLedger` (see the module docstring)."""

    memory = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.ledger = MemoryLedger()
        self._recovered = False

    def close(self) -> None:
        pass

    # --- "transactions" -------------------------------------------------------------------

    def _connection(self) -> MemoryLedger:
        if not self._recovered:
            self._recover(self.ledger)
        return self.ledger

    def _transaction(self, fn: Callable[[Tx], dict], tick: bool = False) -> dict:
        ledger = self._connection()
        with ledger.lock:
            tx = Tx(ledger)
            result = fn(tx)
            self.persist_state(ledger, "marks", {s: str(p) for s, p in sorted(self._prices.items())})
            snapshot = self._snapshot(tx)
        self._committed(tx, snapshot, tick)
        return result

    def _recover(self, ledger: MemoryLedger) -> None:
        cfg, state = self.cfg, self.state
        with ledger.lock:
            if cfg.family in MODE_FROM_CONFIG or "execution_mode" not in ledger.state:
                ledger.state["execution_mode"] = cfg.execution_mode
                ledger.state["paper_trading"] = cfg.paper_trading
            mode, paper = ledger.state["execution_mode"], ledger.state["paper_trading"]
            if cfg.paper_only:
                paper = True
            state.set_mode(mode, paper)
            if cfg.family == "hyperliquid":
                self._recover_circuit_breaker(ledger, ledger.state.get("kill_switch"))
            snapshot = self._snapshot(Tx(ledger))
        state.publish(snapshot)
        state.recovered = True
        self._recovered = True
        log.info("in-memory ledger: started empty (execution_mode=%s paper_trading=%s kill_switch=%s)",
                 mode, str(paper).lower(), state.kill_level())

    @staticmethod
    def persist_state(cur: MemoryLedger, key: str, value: Any) -> None:
        cur.state[key] = value

    # --- table operations -------------------------------------------------------------------

    @staticmethod
    def open_positions(tx: Tx) -> list[Position]:
        return [Position(p["id"], p["symbol"], p["side"], p["qty"], p["entry_price"])
                for p in tx.cur.positions.values()]

    @staticmethod
    def open_orders(tx: Tx) -> list[Order]:
        return [Order(o["id"], o["symbol"], o["side"], o["qty"], o["price"]) for o in tx.cur.orders.values()]

    @staticmethod
    def cancel_orders(tx: Tx, orders: list[Order]) -> int:
        return sum(1 for o in orders if tx.cur.orders.pop(o.id, None) is not None)

    def _new_order(self, tx: Tx, symbol: str, side: str, qty: Decimal, price: Decimal, status: str) -> int:
        ledger = tx.cur
        ledger.last_order_id += 1
        if status == "open":
            ledger.orders[ledger.last_order_id] = {"id": ledger.last_order_id, "symbol": symbol, "side": side,
                                                   "qty": qty, "price": price, "created_at": utcnow_iso()}
        return ledger.last_order_id

    def _write_trade(self, tx: Tx, symbol: str, side: str, qty: Decimal, price: Decimal,
                     position_id: int, order_id: int) -> int:
        ledger = tx.cur
        fee = (qty * price * Decimal(str(FEE_RATE))).quantize(Decimal("0.0001"))
        ledger.roll_day()
        ledger.last_trade_id += 1
        trade = {"id": ledger.last_trade_id, "ts": utcnow_iso(), "symbol": symbol, "side": side, "qty": qty,
                 "price": price, "position_id": position_id, "order_id": order_id,
                 "mode": self.state.execution_mode, "paper": self.state.paper_trading}
        if self.release.writes_fee:
            trade["fee"] = fee
            tx.fees += float(fee)
            ledger.day_fees += fee
        ledger.trades.append(trade)
        ledger.day_trades += 1
        ledger.day_volume += qty * price
        return ledger.last_trade_id

    def open_position(self, tx: Tx, symbol: str, side: str, qty: Decimal, price: Decimal,
                      order_id: int | None = None) -> int:
        ledger = tx.cur
        if order_id is None:
            order_id = self._new_order(tx, symbol, side, qty, price, "filled")
        else:
            ledger.orders.pop(order_id, None)  # filled
        ledger.last_position_id += 1
        position_id = ledger.last_position_id
        ledger.positions[position_id] = {"id": position_id, "symbol": symbol, "side": side, "qty": qty,
                                         "entry_price": price, "status": "open", "opened_at": utcnow_iso()}
        self._write_trade(tx, symbol, side, qty, price, position_id, order_id)
        return position_id

    def _mark_closed(self, tx: Tx, position: Position) -> None:
        tx.cur.positions.pop(position.id, None)

    def _snapshot(self, tx: Tx):
        from .state import Snapshot

        ledger = tx.cur
        unrealized = sum(_pnl(p["side"], p["qty"], p["entry_price"], self._prices.get(p["symbol"], p["entry_price"]))
                         for p in ledger.positions.values())
        return Snapshot(last_trade_id=ledger.last_trade_id, open_positions=len(ledger.positions),
                        open_orders=len(ledger.orders), portfolio_value=INITIAL_CAPITAL + unrealized)

    # --- read routes (what the PostgreSQL bot answers with SELECTs) -----------------------------

    def recent_trades(self, limit: int) -> list[dict]:
        with self.ledger.lock:
            trades = list(self.ledger.trades)[-limit:]
        return [dict(t) for t in reversed(trades)]

    def open_position_rows(self) -> list[dict]:
        with self.ledger.lock:
            return [dict(p) for p in sorted(self.ledger.positions.values(), key=lambda p: p["id"])]

    def daily_stats(self) -> dict:
        with self.ledger.lock:
            self.ledger.roll_day()
            row = {"date": self.ledger.day, "trades": self.ledger.day_trades, "volume": self.ledger.day_volume}
            if self.release.writes_fee:
                row["fees"] = self.ledger.day_fees
        return row
