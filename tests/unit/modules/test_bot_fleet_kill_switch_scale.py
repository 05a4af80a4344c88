"""bot_fleet_kill_switch at fleet scale: profiles once per family, compact invocation, many bots at once."""

from __future__ import annotations

import json
import time

from ansible_collections.botops.fleet.plugins.modules import bot_fleet_kill_switch

from .fake_bot import TOKEN, api_profile, fakes  # noqa: F401  (fixtures)
from .utils import run_module


def entry(fake, family="fakeapi"):
    args = fake.args()
    return {"bot": dict(args["bot"], family=family), "secrets": args["secrets"], "local": True}


def fleet(bots, tmp_path, **kw):
    args = dict(bots=bots, level="halt", reason="exchange incident", who="carol",
                audit_log=str(tmp_path / "controller" / "audit.log"))
    args.update(kw)
    return run_module(bot_fleet_kill_switch.main, args)


def test_each_family_profile_given_once(fakes, tmp_path):
    bots = [fakes(f"b{i:02d}") for i in range(1, 4)]
    res = fleet([entry(b) for b in bots], tmp_path, profiles={"fakeapi": api_profile()})
    assert not res.get("failed"), res.get("msg")
    assert res["summary"]["halted"] == 3 and all(b.breaker == "open" for b in bots)
    # an entry's own profile still wins over the family's
    released = fleet([dict(entry(b), profile=api_profile()) for b in bots], tmp_path, state="released",
                     profiles={"fakeapi": {"not": "a profile"}})
    assert not released.get("failed"), released.get("msg")
    assert all(b.breaker == "closed" for b in bots)


def test_a_bot_without_a_profile_fails_with_nothing_tried_on_it(fakes, tmp_path):
    """Its own failure, not the call's: the other bots are driven (test_bot_fleet_kill_switch.py)."""
    bot = fakes("b01")
    res = fleet([entry(bot, family="nofamily")], tmp_path, profiles={"fakeapi": api_profile()})
    assert res["failed"] and res["summary"]["failed_bots"] == ["b01"]
    assert "bot 'b01': it has no profile (bot_family 'nofamily')" in res["bots"]["b01"]["msg"]
    assert bot.breaker == "closed" and bot.calls == []


def test_the_invocation_names_the_bots_without_their_arguments(fakes, tmp_path):
    bots = [fakes("b01"), fakes("b02")]
    res = fleet([entry(b) for b in bots], tmp_path, profiles={"fakeapi": api_profile()})
    args = res["invocation"]["module_args"]
    assert args["bots"] == ["b01", "b02"] and args["profiles"] == ["fakeapi"] and args["level"] == "halt"
    text = json.dumps(res)
    assert TOKEN not in text and "kill_switch" not in json.dumps(args)


def test_forty_bots_at_once_take_about_the_time_of_one(fakes, tmp_path):
    bots = [fakes(f"b{i:02d}") for i in range(40)]
    started = time.monotonic()
    res = fleet([entry(b) for b in bots], tmp_path, profiles={"fakeapi": api_profile()})
    took = time.monotonic() - started
    assert not res.get("failed") and res["summary"]["halted"] == 40
    slowest = max(r["seconds"] for r in res["bots"].values())
    assert took < slowest + 2.0, f"{took:.2f}s for 40 bots whose slowest took {slowest:.2f}s"
