"""bot_positions_info and bot_positions on the shared sandbox fleet, through real Ansible.

hyperliquid (bot04): open orders are cancelled (check mode first: the orders are still open for
the real run), verified in the bot's database; then, with the bot halted so that nothing new
opens, its positions are closed (check mode, apply, apply again) and each has its closing trade
in the ledger. papertrader has no order API: the module says so and points at the kill switch.

Test data goes in through the bot's own writer lock (the advisory lock its single writer takes),
so ids stay continuous. The bot ends released, running and trading.
"""

from __future__ import annotations

import psycopg
import pytest

try:  # tests/integration as a package or as a plain directory on sys.path
    from .playbook import run_playbook
    from .trading_state import restore_fleet, venv_on_path, wait_trading
except ImportError:
    from playbook import run_playbook
    from trading_state import restore_fleet, venv_on_path, wait_trading

from botops.sandbox.refbot.trading import WRITER_LOCK_KEY

BOT = "bot04"  # hyperliquid: cancel-all and close-all APIs
NO_API = "bot02"  # papertrader: neither
SEEDED_ORDERS = 100  # the bot itself touches at most one order per tick

ARGS = """\
        profile: "{{ botops_profile }}"
        bot: "{{ botops_bot }}"
        secrets: "{{ botops_secrets }}"
"""
ONLY = "      when: inventory_hostname == '{}'\n"

CANCEL = f"""\
- hosts: all
  gather_facts: false
  tasks:
    - name: List
      botops.fleet.bot_positions_info:
{ARGS}{ONLY.format(BOT)}
    - name: Cancel orders in check mode
      botops.fleet.bot_positions:
        state: orders_cancelled
{ARGS}{ONLY.format(BOT)}      check_mode: true
    - name: Cancel orders
      botops.fleet.bot_positions:
        state: orders_cancelled
{ARGS}{ONLY.format(BOT)}
    - name: Cancel orders on a bot without the API
      botops.fleet.bot_positions:
        state: orders_cancelled
{ARGS}{ONLY.format(NO_API)}      ignore_errors: true
    - name: Halt so that nothing new opens
      botops.fleet.bot_kill_switch:
        level: halt
        reason: positions integration test
{ARGS}{ONLY.format(BOT)}
"""

CLOSE = f"""\
- hosts: all
  gather_facts: false
  tasks:
    - name: Close positions in check mode
      botops.fleet.bot_positions:
        state: closed
{ARGS}      check_mode: true
    - name: Close positions
      botops.fleet.bot_positions:
        state: closed
{ARGS}
    - name: Close positions again
      botops.fleet.bot_positions:
        state: closed
{ARGS}
    - name: Cancel orders again
      botops.fleet.bot_positions:
        state: orders_cancelled
{ARGS}
    - name: Release
      botops.fleet.bot_kill_switch:
        state: released
        level: halt
{ARGS}
"""


def one(out, task, host):
    found = [r for (h, t), r in out["results"].items() if t == task and h == host]
    assert len(found) == 1, f"{task} on {host}: {len(found)} results\n{out['stdout'][-3000:]}"
    return found[0]


def with_writer_lock(fleet, fn):
    with psycopg.connect(fleet.bot(BOT)["database_url"], autocommit=True) as conn:
        with conn.transaction():
            cur = conn.cursor()
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (WRITER_LOCK_KEY,))
            return fn(cur)


def seed_orders(fleet):
    """SEEDED_ORDERS open limit orders near the last price; returns their ids."""
    def insert(cur):
        cur.execute(
            "INSERT INTO orders (id, symbol, side, qty, price, status)"
            " SELECT m.id + g, 'ETH-USD', 'buy', 0.01, coalesce(p.price, 3000) * 0.98, 'open'"
            " FROM (SELECT coalesce(max(id), 0) AS id FROM orders) m,"
            " (SELECT max(price) AS price FROM trades WHERE symbol = 'ETH-USD') p,"
            " generate_series(1, %s) g RETURNING id", (SEEDED_ORDERS,))
        return [r[0] for r in cur.fetchall()]
    return with_writer_lock(fleet, insert)


def seed_position(fleet):
    """One open position entered the way the bot enters one: filled order, position, entry trade."""
    def insert(cur):
        cur.execute("SELECT coalesce(max(price), 3000) FROM trades WHERE symbol = 'ETH-USD'")
        price = cur.fetchone()[0]
        cur.execute("INSERT INTO orders (id, symbol, side, qty, price, status) SELECT coalesce(max(id), 0) + 1,"
                    " 'ETH-USD', 'buy', 0.05, %s, 'filled' FROM orders RETURNING id", (price,))
        order_id = cur.fetchone()[0]
        cur.execute("INSERT INTO positions (id, symbol, side, qty, entry_price, status) SELECT coalesce(max(id), 0) + 1,"
                    " 'ETH-USD', 'buy', 0.05, %s, 'open' FROM positions RETURNING id", (price,))
        position_id = cur.fetchone()[0]
        cur.execute("INSERT INTO trades (id, symbol, side, qty, price, position_id, order_id, mode, paper)"
                    " SELECT coalesce(max(id), 0) + 1, 'ETH-USD', 'buy', 0.05, %s, %s, %s, 'DRY', true FROM trades",
                    (price, position_id, order_id))
        return position_id
    return with_writer_lock(fleet, insert)


@pytest.fixture
def bots(fleet, venv_on_path):
    names = [BOT, NO_API]
    restore_fleet(fleet, names)
    try:
        yield names
    finally:
        restore_fleet(fleet, names)


def test_cancel_orders_and_close_positions(fleet, bots):
    seeded = seed_orders(fleet)
    out = run_playbook(fleet.hosts_file, CANCEL, limit=",".join(bots))
    assert out["rc"] == 0, out["stdout"][-3000:]

    listed = one(out, "List", BOT)
    assert listed["changed"] is False and listed["open_orders"] > 0 and isinstance(listed["positions"], list)
    check = one(out, "Cancel orders in check mode", BOT)
    assert check["changed"] and check["would"] == ["POST /api/trades/orders/cancel-all"] and check["actions"] == []
    cancel = one(out, "Cancel orders", BOT)
    assert cancel["previous"]["open_orders"] > 0, f"check mode cancelled the orders: {cancel}"
    assert cancel["changed"] and cancel["actions"] == ["POST /api/trades/orders/cancel-all -> 200"]
    assert cancel["open_orders"] == 0
    no_api = one(out, "Cancel orders on a bot without the API", NO_API)
    assert no_api["_event"] == "runner_on_failed"
    assert "profile 'papertrader' has no positions.cancel_orders" in no_api["msg"] and "halt" in no_api["msg"]
    rows = fleet.db_query(BOT, "SELECT status, count(*) FROM orders WHERE id = ANY(%s) GROUP BY status", (seeded,))
    assert "open" not in dict(rows) and dict(rows).get("cancelled", 0) > 0, rows

    # halted now: nothing opens or closes by itself; make sure there is a position to close
    seed_position(fleet)
    out = run_playbook(fleet.hosts_file, CLOSE, limit=BOT)
    assert out["rc"] == 0, out["stdout"][-3000:]
    check = one(out, "Close positions in check mode", BOT)
    assert check["changed"] and check["would"] == ["POST /api/trades/positions/close-all"]
    open_ids = [p["id"] for p in check["positions"]]
    assert open_ids and check["open_positions"] == len(open_ids)
    close = one(out, "Close positions", BOT)
    assert close["previous"]["open_positions"] == len(open_ids), f"check mode closed positions: {close}"
    assert close["changed"] and close["open_positions"] == 0 and close["positions"] == []
    again = one(out, "Close positions again", BOT)
    assert again["changed"] is False and again["actions"] == []
    assert one(out, "Cancel orders again", BOT)["changed"] is False
    assert one(out, "Release", BOT)["changed"]

    rows = fleet.db_query(
        BOT, "SELECT p.id, p.status, count(t.id) FROM positions p LEFT JOIN trades t ON t.position_id = p.id"
             " AND t.side <> p.side WHERE p.id = ANY(%s) GROUP BY p.id, p.status", (open_ids,))
    assert sorted(rows) == sorted((i, "closed", 1) for i in open_ids), rows
    count, last = fleet.db_query(BOT, "SELECT count(*), max(id) FROM trades")[0]
    assert count == last, "the ledger lost or duplicated a trade"
    wait_trading(fleet, [BOT])
