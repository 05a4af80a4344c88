"""bot_mode: reads and sets DRY/LIVE and paper, go/no-go for LIVE, paper-only bots refused."""

from __future__ import annotations

import json
import os

import bot_mode

from .fake_bot import api_profile, fake, fakes  # noqa: F401  (fixtures)
from .utils import run_module

PASSED = {"passed": True, "checks": [{"name": "dry mode 24h", "passed": True}, {"name": "on-call", "passed": True}]}


def mode(fake, check_mode=False, profile=None, **kw):
    return run_module(bot_mode.main, fake.args(profile=profile, **kw), check_mode=check_mode)


def config_mode(fake):
    with open(os.path.join(fake.root, "config.json")) as f:
        return json.load(f)["execution_mode"]


def test_reads_without_changing(fake):
    res = mode(fake)
    assert not res.get("failed"), res["msg"]
    assert (res["execution_mode"], res["paper_trading"], res["changed"]) == ("DRY", True, False)


def test_live_without_go_no_go_is_refused(fake):
    res = mode(fake, execution_mode="LIVE")
    assert res["failed"] and res.get("refused")
    assert res["msg"].startswith("Failed to set execution mode LIVE on bot 'b07': refused: going LIVE needs a passed go/no-go")
    assert fake.mode == "DRY" and config_mode(fake) == "DRY" and not fake.calls


def test_live_with_a_failed_checklist_names_the_failed_checks(fake):
    checklist = {"passed": False, "checks": [{"name": "dry mode 24h", "passed": True},
                                             {"name": "security scan", "passed": False}]}
    res = mode(fake, execution_mode="LIVE", go_no_go=checklist)
    assert res["failed"] and "security scan" in res["msg"] and "dry mode 24h" not in res["msg"]
    res = mode(fake, execution_mode="LIVE", go_no_go={"passed": True, "checks": []})
    assert res["failed"] and "lists no checks" in res["msg"]
    assert fake.mode == "DRY"


def test_paper_only_bot_is_refused_live_and_paper_off(fake):
    args = fake.args(execution_mode="LIVE", go_no_go=PASSED)
    args["bot"]["paper_only"] = True
    res = run_module(bot_mode.main, args)
    assert res["failed"] and "paper-only (inventory bot_paper_only)" in res["msg"] and fake.mode == "DRY"
    profile = api_profile()
    profile["mode"]["paper_only"] = True
    res = mode(fake, profile=profile, paper=False)
    assert res["failed"] and "paper trading cannot be turned off" in res["msg"] and "mode.paper_only" in res["msg"]
    assert fake.paper is True


def test_live_with_go_no_go_edits_config_restarts_once_and_verifies(fake):
    res = mode(fake, execution_mode="LIVE", paper=False, go_no_go=PASSED)
    assert not res.get("failed"), res["msg"]
    assert res["changed"] and (res["execution_mode"], res["paper_trading"]) == ("LIVE", False)
    assert res["actions"] == ["set execution_mode in config.json", "POST /paper -> 200", "service restart", "ready"]
    assert [c for c in fake.calls if c[0] == "service"] == [("service", "restart")]
    assert res["previous"] == {"execution_mode": "DRY", "paper_trading": True}
    assert res["diff"]["after"] == "execution_mode: LIVE\npaper_trading: false\n"
    again = mode(fake, execution_mode="LIVE", paper=False)
    assert again["changed"] is False and again["actions"] == [], "already LIVE: no checklist needed, nothing done"
    back = mode(fake, execution_mode="DRY", paper=True)
    assert back["changed"] and fake.mode == "DRY" and fake.paper is True


def test_change_that_does_not_take_effect_fails(fake):
    fake.ignore.add("config")
    res = mode(fake, execution_mode="LIVE", go_no_go=PASSED, ready_timeout=0.5)
    assert res["failed"] and "did not take effect" in res["msg"] and "reports execution mode DRY" in res["msg"]
    assert res["rolled_back"] == ["set execution_mode in config.json"] and config_mode(fake) == "DRY"


def test_check_mode_reports_the_actions(fake):
    res = mode(fake, execution_mode="LIVE", go_no_go=PASSED, check_mode=True)
    assert res["changed"] and res["would"] == ["set execution_mode in config.json", "service restart"]
    assert config_mode(fake) == "DRY" and not fake.calls


def test_profile_without_the_action_fails(fake):
    profile = api_profile()
    del profile["mode"]["set_paper"]
    res = mode(fake, profile=profile, paper=False)
    assert res["failed"] and "profile 'fakeapi' has no mode.set_paper" in res["msg"]
