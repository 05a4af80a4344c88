"""The kill switch always wins: the engagement record on the bot's host, operations yielding to it,
and the level put back after a start (bot_kill_switch, bot_service, the Engagements record)."""

from __future__ import annotations

import json
import os
import threading

from ansible_collections.botops.fleet.plugins.modules import bot_kill_switch
from ansible_collections.botops.fleet.plugins.modules import bot_mode
from ansible_collections.botops.fleet.plugins.modules import bot_service
from ansible_collections.botops.fleet.plugins.module_utils.botops_kill_switch_record import Engagements

from .fake_bot import fake, fakes, stop_profile  # noqa: F401  (fixtures)
from .utils import run_module


def record(fake):
    path = os.path.join(fake.root, "shared", "data", "botops-kill-switch.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def kill(fake, state="engaged", level="halt", **kw):
    args = fake.args(state=state, level=level, who="alice")
    if state == "engaged":
        args["reason"] = "desk halt"
    args.update(kw)
    return run_module(bot_kill_switch.main, args)


def service(fake, state="restarted", **kw):
    args = fake.args(state=state, ready_timeout=5, ready_stable_for=0.1, graceful_timeout=1, term_timeout=1)
    args.update(kw)
    return run_module(bot_service.main, args)


def test_an_engage_is_recorded_with_who_and_why_and_the_release_removes_it(fake):
    res = kill(fake, run_id="run-1")
    assert not res.get("failed"), res["msg"]
    operator = record(fake)["operator"]
    assert (operator["level"], operator["who"], operator["reason"], operator["run_id"]) == \
        ("halt", "alice", "desk halt", "run-1")
    assert res["engagement"]["level"] == "halt"
    mode = os.stat(os.path.join(fake.root, "shared", "data", "botops-kill-switch.json")).st_mode & 0o777
    assert mode == 0o600
    rel = kill(fake, state="released")
    assert not rel.get("failed"), rel["msg"]
    assert record(fake) is None and fake.breaker == "closed"


def test_a_failed_engage_stays_recorded(fake):
    fake.failing.add("/breaker")
    fake.ignore.update({"stop", "TERM", "KILL"})
    res = kill(fake)
    assert res["failed"] and "stays recorded" in res["msg"]
    assert record(fake)["operator"]["level"] == "halt"


def test_a_weaker_engage_keeps_the_stronger_record(fake):
    kill(fake, level="halt")
    kill(fake, level="pause")
    assert record(fake)["operator"]["level"] == "halt"


def test_a_release_clears_a_record_the_bot_no_longer_shows(fake):
    kill(fake, level="pause")
    fake.maintenance = False  # restarted outside botops: the in-memory pause is gone
    rel = kill(fake, state="released", level="pause")
    assert not rel.get("failed"), rel["msg"]
    assert rel["changed"] and record(fake) is None


def test_an_operations_release_never_lifts_the_operators_level(fake):
    pause = kill(fake, level="pause", holder="operation", run_id="deploy-7", reason="botops deploy")
    assert pause["changed"] and fake.maintenance
    assert record(fake)["operations"]["deploy-7"]["level"] == "pause"
    kill(fake, level="pause")  # the operator pauses too, while the deploy holds its own pause
    rel = kill(fake, state="released", level="pause", holder="operation", run_id="deploy-7")
    assert not rel.get("failed"), rel["msg"]
    assert rel["yielded_to"]["who"] == "alice"
    assert fake.maintenance, "the operation's release lifted the operator's pause"
    assert "operations" not in record(fake) and record(fake)["operator"]["level"] == "pause"


def test_a_restart_under_an_operators_level_changes_nothing_and_yields(fake):
    kill(fake, level="pause")
    fake.calls.clear()
    res = service(fake)
    assert res["failed"] and res["yielded"]
    assert res["msg"].startswith("Restart of bot 'b07' stopped: kill switch pause engaged by alice")
    assert not [c for c in fake.calls if c[0] == "service"], "the bot was stopped or started"
    assert fake.maintenance and fake.running


def test_an_override_restarts_and_puts_the_level_back(fake):
    kill(fake, level="pause")  # the fake keeps its pause (maintenance) in memory: a restart clears it
    res = service(fake, override_kill_switch=True)
    assert not res.get("failed"), res["msg"]
    assert ("service", "stop") in fake.calls and ("service", "start") in fake.calls
    assert fake.maintenance, "the restart lifted the pause"
    assert res["kill_switch"]["reapplied"] is True
    assert any(a.startswith("kill switch pause put back") for a in res["actions"])


def test_a_start_of_a_bot_halted_by_stopping_it_yields(fakes):
    bot = fakes()
    profile = stop_profile()
    assert not kill(bot, profile=profile).get("failed")
    assert not bot.running
    res = service(bot, state="started", profile=profile)
    assert res["failed"] and res["yielded"] and not bot.running


def test_live_is_refused_under_an_operators_level(fake):
    kill(fake, level="pause")
    res = run_module(bot_mode.main, fake.args(execution_mode="LIVE", go_no_go={"passed": True, "checks": [{"name": "ready", "passed": True}]}))
    assert res["failed"] and res.get("refused")
    assert "kill switch pause engaged by alice" in res["msg"]
    assert fake.mode == "DRY"


def test_concurrent_writers_lose_nothing(tmp_path):
    record = Engagements(str(tmp_path))

    def add(i):
        record.engage("operation", "pause", {"who": f"run{i}"}, run_id=f"run{i}")

    threads = [threading.Thread(target=add, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    record.engage("operator", "halt", {"who": "alice"})
    for t in threads:
        t.join()
    doc = record.read()
    assert sorted(doc["operations"]) == sorted(f"run{i}" for i in range(40))
    assert doc["operator"]["who"] == "alice"
    for i in range(40):
        assert record.release("operation", "pause", run_id=f"run{i}")
    assert record.release("operator", "halt")
    assert not os.path.exists(record.path)


def test_a_flatten_that_only_stopped_the_bot_fails_naming_the_open_positions(fakes):
    bot = fakes()
    profile = stop_profile()  # every level stops the process: the fake's two positions stay open
    res = kill(bot, level="flatten", profile=profile)
    assert res["failed"] and not bot.running
    assert "flatten is not verified" in res["msg"] and res["current_level"] == "halt"
    assert record(bot)["operator"]["level"] == "flatten", "the operator's flatten stays recorded"
    again = kill(bot, level="flatten", profile=profile)
    assert again["failed"], "an already stopped bot with positions open is not flat either"


def test_a_flatten_that_closed_every_position_is_verified_flat(fake):
    res = kill(fake, level="flatten")
    assert not res.get("failed"), res["msg"]
    assert res["open_positions"] == 0 and fake.positions == 0
