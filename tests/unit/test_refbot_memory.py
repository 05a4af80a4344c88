"""refbot's in-memory ledger: the trading writer without a database (bench-only bots)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from botops.sandbox.refbot.config import ConfigError, Release, load_config
from botops.sandbox.refbot.memory import MemoryTrader
from botops.sandbox.refbot.state import BotState

RELEASE = Release(name="refbot", version="1.1.0", alembic_head="0002_trade_fee", migration="expand", description="",
                  qty_column="qty", writes_fee=True, broken=False, directory=Path("."))


def write_config(root: Path, **over) -> Path:
    cfg = {"name": "b0001", "family": "hyperliquid", "listen": "127.0.0.1", "ports": {"api": 21000},
           "ledger": "memory", "redis_url": "redis://127.0.0.1:1/1", "api_token": "t0ken-xyz", "trade_interval": 0.01,
           "execution_mode": "DRY", "paper_trading": True, "paper_only": False}
    cfg.update(over)
    path = root / "shared" / "config" / "bot.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(cfg))
    return root


def trader(tmp_path, **over):
    cfg = load_config(write_config(tmp_path, **over))
    state = BotState(cfg.execution_mode, cfg.paper_trading)
    return MemoryTrader(cfg, RELEASE, state, None), state


def test_memory_ledger_needs_no_database_url_and_rejects_unknown_ledgers(tmp_path):
    cfg = load_config(write_config(tmp_path))
    assert cfg.memory_ledger and cfg.database_url == ""
    with pytest.raises(ConfigError, match="ledger must be postgres or memory"):
        load_config(write_config(tmp_path, ledger="sqlite"))
    with pytest.raises(ConfigError, match="database_url"):
        load_config(write_config(tmp_path, ledger="postgres"))


def test_ticks_trade_with_continuous_ids(tmp_path):
    t, state = trader(tmp_path)
    for _ in range(300):
        t._tick()
    view = state.view()
    assert view["ticks"] == 300 and view["trading_error"] is None
    trades = t.recent_trades(1000)
    assert [tr["id"] for tr in trades] == list(range(view["last_trade_id"], 0, -1)), "newest first, no gap"
    assert view["last_trade_id"] > 50
    assert view["open_positions"] == len(t.open_position_rows())
    assert all(tr["mode"] == "DRY" and tr["paper"] is True and "fee" in tr for tr in trades)
    assert t.daily_stats()["trades"] == view["last_trade_id"]


def test_halt_cancels_open_orders_and_stops_trading_flatten_closes_positions(tmp_path):
    t, state = trader(tmp_path)
    while not (state.view()["open_orders"] and state.view()["open_positions"]):
        t._tick()
    state.engage("circuit_breaker", "halt", "test")
    t._tick()
    view = state.view()
    assert view["open_orders"] == 0 and view["open_positions"] > 0
    last = view["last_trade_id"]
    for _ in range(20):
        t._tick()
    assert state.view()["last_trade_id"] == last, "no trade while halted"
    state.engage("operator", "flatten", "test")
    t._tick()
    assert state.view()["open_positions"] == 0 and state.view()["last_trade_id"] > last


def test_operator_commands_run_in_the_writer_and_persist_state(tmp_path):
    t, state = trader(tmp_path)
    t.start()
    try:
        out = t.call(lambda tx: t.persist_state(tx.cur, "kill_switch", {"level": "halt"}) or {"done": True})
        assert out == {"done": True} and t.ledger.state["kill_switch"] == {"level": "halt"}
        n = t.call(lambda tx: {"n": t.cancel_orders(tx, t.open_orders(tx))})["n"]
        assert n >= 0 and state.view()["open_orders"] == 0
    finally:
        assert t.stop(5)


def test_hyperliquid_breaker_in_the_ledger_is_restored_at_recovery(tmp_path):
    t, state = trader(tmp_path)
    t.ledger.state["kill_switch"] = {"level": "halt", "reason": "set before start", "since": "x"}
    t._tick()
    assert state.kill_level() == "halt"
