"""The HTTP API of each bot family, as its runbook describes it.

Each builder returns the servers the family listens on (port name, routes, which requests
need the bearer token). The shapes are documented in docs/reference-bot.md; fields beyond
the runbooks' (``ticks``, ``checks``, ``last_trade_id``) are additions for operators and tests.

Every family reports who the bot is (its name from bot.json: ``bot_id``, or ``botId`` for the
Node.js families) in a status or health answer, the way a real bot reports its id, so that an
operator - and botops, by the profile's ``identity`` probe - can tell which bot a port belongs to.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import psycopg
from psycopg import sql

from .server import HttpError, Request, Routes
from .trading import CommandError, describe_error

if TYPE_CHECKING:
    from .app import Bot


@dataclass
class ServerSpec:
    port_name: str
    routes: Routes
    protect: Callable[[Request], bool] = field(default=lambda request: False)


# hyperliquid: every POST needs the bearer token; the emergency endpoints are the admin's, so reading
# the circuit breaker needs it too
_BREAKER = "/api/emergency/circuit-breaker"


def _hyperliquid_protected(request: Request) -> bool:
    return request.method == "POST" or request.path == _BREAKER


def _operate(fn: Callable[[], dict]) -> tuple[int, dict]:
    """Run an operator action; 503 with the cause when the trading loop or database fails."""
    try:
        return 200, fn()
    except (CommandError, psycopg.Error) as exc:
        return 503, {"success": False, "error": describe_error(exc) if isinstance(exc, psycopg.Error) else str(exc)}


def _kill_result(result: dict) -> tuple[int, dict]:
    """engage/release results carry ``applied``; not applied means the database write failed."""
    return (200 if result.get("applied") else 503), result


def _running_state(level: str) -> str:
    return {"none": "running", "pause": "paused"}.get(level, "halted")


def _checks(components) -> dict[str, str]:
    return {name: ("ok" if c.ok else c.detail) for name, c in components.items()}


def _reason(request: Request, default: str) -> str:
    body = request.json()
    parts = [str(body[k]) for k in ("reason", "message") if body.get(k)]
    return ": ".join(parts) if parts else default


# --- mojorust -------------------------------------------------------------------------------

def mojorust(bot: Bot) -> list[ServerSpec]:
    def health(request: Request):
        ready, components = bot.health.ready()
        body = {"status": "healthy" if ready else "unhealthy", "checks": _checks(components),
                "version": bot.version}
        return (200 if ready else 503), body

    def status(request: Request):
        v = bot.view()
        return 200, {
            "status": _running_state(v["kill_switch"]),
            "bot_id": bot.cfg.name,
            "version": bot.version,
            "open_positions": v["open_positions"],
            "open_orders": v["open_orders"],
            "portfolio_value": v["portfolio_value"],
            "execution_mode": v["execution_mode"],
            "paper_trading": v["paper_trading"],
            "kill_switch": v["kill_switch"],
            "last_trade_id": v["last_trade_id"],
            "ticks": v["ticks"],
        }

    return [
        ServerSpec("api", {("GET", "/api/status"): status}),
        ServerSpec("health", {("GET", "/health"): health}),
    ]


# --- papertrader ----------------------------------------------------------------------------

def papertrader(bot: Bot) -> list[ServerSpec]:
    def trading_state(v: dict) -> dict:
        flags = v["kill_flags"]
        emergency = "emergency_stop" in flags
        maintenance = "maintenance" in flags
        state = "stopped" if emergency else "maintenance" if maintenance else "active"
        return {"state": state, "maintenance": maintenance, "emergencyStop": emergency,
                "killSwitch": v["kill_switch"], "ticks": v["ticks"]}

    def liveness(request: Request):
        return 200, {"status": "ok"}

    def detailed(request: Request):
        ready, components = bot.health.ready()
        services = {
            name: ({"status": "up"} if c.ok else {"status": "down", "error": c.detail})
            for name, c in components.items()
        }
        body = {"status": "healthy" if ready else "unhealthy", "botId": bot.cfg.name, "version": bot.version,
                "services": services, "trading": trading_state(bot.view())}
        return (200 if ready else 503), body

    def safety(request: Request):
        v = bot.view()
        return 200, {
            "paperTradingMode": v["paper_trading"],
            "realTradesBlocked": bot.cfg.paper_only or v["paper_trading"] or v["execution_mode"] == "DRY",
            "executionMode": v["execution_mode"],
        }

    def portfolio(request: Request):
        v = bot.view()
        return 200, {"isVirtual": v["paper_trading"], "totalValue": v["portfolio_value"],
                     "openPositions": v["open_positions"], "openOrders": v["open_orders"]}

    def maintenance_enable(request: Request):
        status, result = _kill_result(bot.engage_kill(
            "maintenance", "pause", _reason(request, "maintenance mode enabled via API")))
        return status, {**result, "maintenance": True, "trading": trading_state(bot.view())}

    def maintenance_disable(request: Request):
        status, result = _kill_result(bot.release_kill("maintenance"))
        return status, {**result, "maintenance": False, "trading": trading_state(bot.view())}

    def stop_all(request: Request):
        status, result = _kill_result(bot.engage_kill(
            "emergency_stop", "halt", _reason(request, "stop-all-trading via API")))
        return status, {**result, "emergencyStop": True, "trading": trading_state(bot.view())}

    def simulation_mode(request: Request):
        enabled = request.json().get("enabled")
        if not isinstance(enabled, bool):
            raise HttpError(400, 'body must be {"enabled": true|false}')
        if not enabled and bot.cfg.paper_only:
            return 409, {"success": False, "error": "PaperTradingViolation: this bot is paper-only; "
                                                    "simulation mode cannot be disabled"}
        return _operate(lambda: {"success": True, **bot.set_paper_trading(enabled)})

    return [ServerSpec("api", {
        ("GET", "/api/health"): liveness,
        ("GET", "/api/health/detailed"): detailed,
        ("GET", "/api/health/safety"): safety,
        ("GET", "/api/portfolio/summary"): portfolio,
        ("POST", "/api/maintenance/enable"): maintenance_enable,
        ("POST", "/api/maintenance/disable"): maintenance_disable,
        ("POST", "/api/emergency/stop-all-trading"): stop_all,
        ("POST", "/api/config/simulation-mode"): simulation_mode,
    })]


# --- solana-cli -----------------------------------------------------------------------------

def solana_cli(bot: Bot) -> list[ServerSpec]:
    def liveness(request: Request):
        return 200, {"status": "ok"}

    def status(request: Request):
        ready, components = bot.health.ready()
        v = bot.view()
        flag = v["kill_flags"].get("kill_switch")
        return (200 if ready else 503), {
            "status": "healthy" if ready else "degraded",
            "botId": bot.cfg.name,
            "version": bot.version,
            "risk": {"killSwitchActive": flag is not None, "reason": flag["reason"] if flag else None,
                     "level": v["kill_switch"]},
            "health": {"checks": {name: "ok" if c.ok else "down" for name, c in components.items()},
                       "details": _checks(components)},
            "positions": {"open": v["open_positions"]},
            "orders": {"open": v["open_orders"]},
            "portfolio": {"value": v["portfolio_value"]},
            "mode": {"execution": v["execution_mode"], "paper": v["paper_trading"]},
            "last_trade_id": v["last_trade_id"],
            "ticks": v["ticks"],
        }

    def queue_status(request: Request):
        return 200, {"pending": bot.view()["open_orders"]}

    def queue_clear(request: Request):
        return _operate(lambda: {"success": True, "cleared": bot.cancel_open_orders("queue cleared via API")})

    def kill_switch(request: Request):
        status, result = _kill_result(bot.engage_kill(
            "kill_switch", "halt", _reason(request, "kill switch activated via API")))
        return status, {**result, "killSwitchActive": True}

    return [ServerSpec("api", {
        ("GET", "/health"): liveness,
        ("GET", "/api/status"): status,
        ("GET", "/api/queue/status"): queue_status,
        ("POST", "/api/queue/clear"): queue_clear,
        ("POST", "/api/kill-switch"): kill_switch,
    })]


# --- hyperliquid ----------------------------------------------------------------------------

def hyperliquid(bot: Bot) -> list[ServerSpec]:
    qty = sql.Identifier(bot.release.qty_column)
    fee = sql.SQL(", fee") if bot.release.writes_fee else sql.SQL("")

    def health(request: Request):
        ready, components = bot.health.ready()
        v = bot.view()

        def connected(name: str) -> str:
            return "connected" if components[name].ok else "disconnected"

        return (200 if ready else 503), {
            "status": "healthy" if ready else "unhealthy",
            "bot_id": bot.cfg.name,
            "version": bot.version,
            "database": connected("database"),
            "redis": connected("redis"),
            "circuit_breaker": "open" if "circuit_breaker" in v["kill_flags"] else "closed",
            "execution_mode": v["execution_mode"],
            "paper_trading": v["paper_trading"],
            "checks": _checks(components),
            "open_positions": v["open_positions"],
            "open_orders": v["open_orders"],
            "last_trade_id": v["last_trade_id"],
            "ticks": v["ticks"],
        }

    def breaker(request: Request):
        """The circuit breaker's state; changes nothing (botops' credentials check, auth.check)."""
        flag = bot.view()["kill_flags"].get("circuit_breaker")
        return 200, {"circuit_breaker": "open" if flag else "closed",
                     "reason": flag["reason"] if flag else None, "since": flag["since"] if flag else None}

    def trip(request: Request):
        status, result = _kill_result(bot.engage_kill(
            "circuit_breaker", "halt", _reason(request, "circuit breaker tripped via API"), persist=True))
        return status, {**result, "circuit_breaker": "open"}

    def reset(request: Request):
        status, result = _kill_result(bot.release_kill("circuit_breaker", persist=True))
        still_open = "circuit_breaker" in bot.view()["kill_flags"]
        return status, {**result, "circuit_breaker": "open" if still_open else "closed"}

    def cancel_all(request: Request):
        return _operate(lambda: {"success": True, "cancelled": bot.cancel_open_orders("cancel-all via API")})

    def close_all(request: Request):
        reason = _reason(request, "close-all via API")
        return _operate(lambda: {"success": True, "closed": bot.close_all_positions(reason)})

    def trades(request: Request):
        limit = request.query_int("limit", 50, 1, 1000)
        if bot.cfg.memory_ledger:
            return 200, {"trades": bot.trader.recent_trades(limit)}
        query = sql.SQL(
            "SELECT id, ts, symbol, side, {qty} AS qty, price, position_id, order_id, mode, paper{fee}"
            " FROM trades ORDER BY id DESC LIMIT %s"
        ).format(qty=qty, fee=fee)
        return _operate(lambda: {"trades": bot.read(query, (limit,))})

    def daily(request: Request):
        query = sql.SQL(
            "SELECT current_date AS date, count(*) AS trades, coalesce(sum({qty} * price), 0) AS volume"
            "{fees} FROM trades WHERE ts >= date_trunc('day', now())"
        ).format(qty=qty, fees=sql.SQL(", coalesce(sum(fee), 0) AS fees") if bot.release.writes_fee
                 else sql.SQL(""))
        def stats() -> dict:
            row = bot.trader.daily_stats() if bot.cfg.memory_ledger else bot.read(query)[0]
            v = bot.view()
            return {**row, "portfolio_value": v["portfolio_value"], "realized_pnl": v["realized_pnl"],
                    "open_positions": v["open_positions"]}

        return _operate(stats)

    def positions(request: Request):
        if bot.cfg.memory_ledger:
            return 200, {"positions": bot.trader.open_position_rows()}
        query = sql.SQL(
            "SELECT id, symbol, side, qty, entry_price, status, opened_at FROM positions"
            " WHERE status = 'open' ORDER BY id"
        )
        return _operate(lambda: {"positions": bot.read(query)})

    return [ServerSpec("api", {
        ("GET", "/api/health"): health,
        ("GET", _BREAKER): breaker,
        ("POST", _BREAKER): trip,
        ("POST", "/api/emergency/circuit-breaker/reset"): reset,
        ("POST", "/api/trades/orders/cancel-all"): cancel_all,
        ("POST", "/api/trades/positions/close-all"): close_all,
        ("GET", "/api/trades"): trades,
        ("GET", "/api/trades/stats/daily"): daily,
        ("GET", "/api/trades/positions"): positions,
    }, protect=_hyperliquid_protected)]


# --- vanta ----------------------------------------------------------------------------------

def vanta(bot: Bot) -> list[ServerSpec]:
    def liveness(request: Request):
        return 200, {"status": "ok"}

    def readiness(request: Request):
        ready, components = bot.health.ready()
        if ready:
            return 200, {"ready": True}
        failing = {name: c.detail for name, c in components.items() if not c.ok}
        return 503, {"ready": False, "failing": failing}

    def health(request: Request):
        ready, components = bot.health.ready()
        v = bot.view()
        body = {
            "status": "healthy" if ready else "unhealthy",
            "bot_id": bot.cfg.name,
            "version": bot.version,
            "components": {
                **{name: {"status": "healthy" if c.ok else "unhealthy", "detail": c.detail}
                   for name, c in components.items()},
                "executor": {"mode": v["execution_mode"], "paper": v["paper_trading"],
                             "emergency_stop": "exec_mode" in v["kill_flags"]},
                "positions": {"open": v["open_positions"], "orders_open": v["open_orders"],
                              "portfolio_value": v["portfolio_value"]},
            },
            "last_trade_id": v["last_trade_id"],
            "ticks": v["ticks"],
        }
        return (200 if ready else 503), body

    return [ServerSpec("api", {
        ("GET", "/healthz"): liveness,
        ("GET", "/readyz"): readiness,
        ("GET", "/health"): health,
    })]


BUILDERS: dict[str, Callable[[Bot], list[ServerSpec]]] = {
    "mojorust": mojorust,
    "papertrader": papertrader,
    "solana-cli": solana_cli,
    "hyperliquid": hyperliquid,
    "vanta": vanta,
}
