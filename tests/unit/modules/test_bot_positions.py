"""bot_positions_info: counts and lists; bot_positions: cancel orders, close positions; idempotent, verified,
clear when impossible."""

from __future__ import annotations

from ansible_collections.botops.fleet.plugins.modules import bot_positions, bot_positions_info

from .fake_bot import fake, fakes, stop_profile  # noqa: F401  (fixtures)
from .utils import run_module


def positions(fake, check_mode=False, profile=None, **kw):
    return run_module(bot_positions.main, fake.args(profile=profile, **kw), check_mode=check_mode)


def test_info_counts_and_lists(fake):
    res = run_module(bot_positions_info.main, fake.args())
    assert not res.get("failed"), res["msg"]
    assert (res["open_positions"], res["open_orders"], res["changed"]) == (2, 3, False)
    assert res["positions"] == [{"id": 1}, {"id": 2}]
    assert (fake.positions, fake.orders) == (2, 3)


def test_a_state_is_required(fake):
    res = positions(fake)
    assert res["failed"] and "state" in res["msg"]


def test_cancel_orders_then_again_is_unchanged(fake):
    res = positions(fake, state="orders_cancelled")
    assert not res.get("failed"), res["msg"]
    assert res["changed"] and res["actions"] == ["POST /orders/cancel -> 200"]
    assert res["previous"] == {"open_positions": 2, "open_orders": 3} and res["open_orders"] == 0
    assert fake.positions == 2, "cancelling orders leaves positions open"
    again = positions(fake, state="orders_cancelled")
    assert again["changed"] is False and again["actions"] == []


def test_close_cancels_orders_and_closes_positions(fake):
    res = positions(fake, state="closed")
    assert not res.get("failed"), res["msg"]
    assert res["actions"] == ["POST /orders/cancel -> 200", "POST /close-all -> 200"]
    assert (res["open_positions"], res["open_orders"]) == (0, 0)
    assert res["diff"]["after"] == "open_positions: 0\nopen_orders: 0\n"
    assert positions(fake, state="closed")["changed"] is False


def test_check_mode_changes_nothing(fake):
    res = positions(fake, state="closed", check_mode=True)
    assert res["changed"] and res["would"] == ["POST /orders/cancel", "POST /close-all"] and res["actions"] == []
    assert (fake.positions, fake.orders) == (2, 3)


def test_orders_that_stay_open_fail_the_verification(fake):
    fake.ignore.add("cancel")
    res = positions(fake, state="orders_cancelled", timeout=0.2)
    assert res["failed"] and "still open after 0.2s: open_orders=3" in res["msg"]


def test_profile_without_the_action_names_it_and_the_kill_switch(fake):
    res = positions(fake, profile=stop_profile(), state="closed")
    assert res["failed"]
    assert "profile 'fakestop' has no positions.close_all" in res["msg"] and "flatten" in res["msg"]
    res = positions(fake, profile=stop_profile(), state="orders_cancelled")
    assert res["failed"] and "positions.cancel_orders" in res["msg"] and "halt" in res["msg"]
    assert (fake.positions, fake.orders) == (2, 3)
