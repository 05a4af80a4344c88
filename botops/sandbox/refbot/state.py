"""In-memory state shared by the trading writer and the HTTP threads.

Everything here is either recovered from the database (and Redis) when the writer
connects, or deliberately volatile (kill switches that a restart clears).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

# Kill-switch levels, weakest first.
LEVELS = ("none", "pause", "halt", "flatten")


def level_rank(level: str) -> int:
    return LEVELS.index(level)


def utcnow_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class KillFlag:
    level: str
    reason: str
    since: str = field(default_factory=utcnow_iso)


@dataclass
class Snapshot:
    """What the last committed tick saw."""

    last_trade_id: int = 0
    open_positions: int = 0
    open_orders: int = 0
    portfolio_value: float = 0.0
    realized_pnl: float = 0.0
    fees: float = 0.0


class BotState:
    """Thread-safe holder of mode, kill flags, trading status and the last snapshot."""

    def __init__(self, execution_mode: str, paper_trading: bool):
        self._lock = threading.Lock()
        self.execution_mode = execution_mode
        self.paper_trading = paper_trading
        self.recovered = False
        # Kill flags by source ("circuit_breaker", "maintenance", "exec_mode", ...);
        # the effective level is the strongest one engaged.
        self._flags: dict[str, KillFlag] = {}
        self.snapshot = Snapshot()
        self.ticks = 0
        self.last_tick_ok_at: float | None = None  # monotonic
        self.trading_error: str | None = None
        self.shutting_down = False
        self.started_at = utcnow_iso()

    # --- kill switch -------------------------------------------------------------------

    def engage(self, source: str, level: str, reason: str) -> bool:
        """Engage (or change) one kill flag. Returns True when something changed."""
        if level not in LEVELS:
            raise ValueError(f"unknown kill level {level!r}")
        with self._lock:
            current = self._flags.get(source)
            if level == "none":
                return self._flags.pop(source, None) is not None
            if current is not None and current.level == level:
                return False
            self._flags[source] = KillFlag(level, reason)
            return True

    def release(self, source: str) -> bool:
        return self.engage(source, "none", "")

    def flag(self, source: str) -> KillFlag | None:
        with self._lock:
            return self._flags.get(source)

    def flags(self) -> dict[str, KillFlag]:
        with self._lock:
            return dict(self._flags)

    def kill_level(self) -> str:
        with self._lock:
            if not self._flags:
                return "none"
            return max((f.level for f in self._flags.values()), key=level_rank)

    def kill_reason(self) -> str | None:
        with self._lock:
            if not self._flags:
                return None
            strongest = max(self._flags.values(), key=lambda f: level_rank(f.level))
            return strongest.reason

    # --- trading status ----------------------------------------------------------------

    def set_mode(self, execution_mode: str, paper_trading: bool) -> None:
        with self._lock:
            self.execution_mode = execution_mode
            self.paper_trading = paper_trading

    def publish(self, snapshot: Snapshot) -> None:
        """A committed transaction outside a tick (recovery, operator command)."""
        with self._lock:
            self.snapshot = snapshot

    def tick_done(self, snapshot: Snapshot) -> None:
        with self._lock:
            self.snapshot = snapshot
            self.ticks += 1
            self.last_tick_ok_at = time.monotonic()
            self.trading_error = None

    def tick_failed(self, error: str) -> None:
        with self._lock:
            self.ticks += 1
            self.trading_error = error

    def view(self) -> dict:
        """A consistent copy for the HTTP layer."""
        with self._lock:
            level = (
                max((f.level for f in self._flags.values()), key=level_rank)
                if self._flags else "none"
            )
            return {
                "execution_mode": self.execution_mode,
                "paper_trading": self.paper_trading,
                "kill_switch": level,
                "kill_flags": {k: vars(v).copy() for k, v in self._flags.items()},
                "last_trade_id": self.snapshot.last_trade_id,
                "open_positions": self.snapshot.open_positions,
                "open_orders": self.snapshot.open_orders,
                "portfolio_value": round(self.snapshot.portfolio_value, 2),
                "realized_pnl": round(self.snapshot.realized_pnl, 2),
                "fees": round(self.snapshot.fees, 4),
                "ticks": self.ticks,
                "trading_error": self.trading_error,
                "last_tick_ok_at": self.last_tick_ok_at,
                "shutting_down": self.shutting_down,
            }
