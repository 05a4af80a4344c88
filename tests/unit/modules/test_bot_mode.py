"""bot_mode: reads and sets DRY/LIVE and paper, go/no-go for LIVE, paper-only bots refused."""

from __future__ import annotations

import json
import os

from ansible_collections.botops.fleet.plugins.modules import bot_mode
import pytest
from ansible.module_utils import basic

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


# ------------------------------------------------------------------ keep_out_of_live (restart, restore)
def keep(fake, profile=None, warned=None, **kw):
    kw.setdefault("execution_mode", "DRY")
    kw.setdefault("paper", True)
    return mode(fake, profile=profile, keep_out_of_live=True, ready_timeout=5, **kw)


def without(*capabilities):
    profile = api_profile()
    for capability in capabilities:
        del profile["mode"][capability]
    return profile


@pytest.fixture
def warned(monkeypatch):
    messages = []
    monkeypatch.setattr(basic.AnsibleModule, "warn", lambda self, msg: messages.append(msg))
    return messages


def test_keep_a_dry_bot_of_a_family_that_cannot_set_the_mode_does_not_fail(fake, warned):
    res = keep(fake, profile=without("set_execution_mode"))
    assert not res.get("failed"), res["msg"]
    assert res["changed"] is False and res["actions"] == [] and not fake.calls
    assert res["kept_by"] == "execution_mode" and res["missing"] == ["mode.set_execution_mode"]
    assert warned == [], "the capability did not matter: the bot is not LIVE"


def test_keep_a_bot_back_live_with_the_mode_it_can_set(fake, warned):
    fake.mode = "LIVE"  # came back LIVE (its config was not the one it ran with)
    res = keep(fake)
    assert not res.get("failed"), res["msg"]
    assert res["changed"] and res["kept_by"] == "execution_mode" and res["missing"] == []
    assert fake.mode == "DRY" and config_mode(fake) == "DRY" and fake.paper is True
    assert res["actions"] == ["set execution_mode in config.json", "service restart", "ready"]
    assert warned == []


def test_keep_a_bot_back_live_on_paper_when_the_family_can_only_set_paper(fake, warned):
    fake.mode, fake.paper = "LIVE", False
    res = keep(fake, profile=without("set_execution_mode"))
    assert not res.get("failed"), res["msg"]
    assert res["changed"] and res["kept_by"] == "paper" and fake.paper is True
    assert res["actions"] == ["POST /paper -> 200"] and res["missing"] == ["mode.set_execution_mode"]
    assert len(warned) == 1 and "has no mode.set_execution_mode" in warned[0] and "paper trading only" in warned[0]
    assert warned[0].startswith("bot 'b07': profile 'fakeapi'")


def test_keep_a_bot_back_live_that_nothing_can_put_back_fails_loudly(fake, warned):
    fake.mode, fake.paper = "LIVE", False
    res = keep(fake, profile=without("set_execution_mode", "set_paper"))
    assert res["failed"] and res["kept_by"] == "none"
    assert "reports LIVE (it was not before)" in res["msg"] and "neither mode.set_execution_mode nor mode.set_paper" in res["msg"]
    assert res["msg"].startswith("Failed to keep the bot out of LIVE (execution mode DRY, paper true) on bot 'b07'")
    assert fake.mode == "LIVE" and not fake.calls, "nothing was done to it"


def test_keep_off_paper_but_dry_without_set_paper_only_warns(fake, warned):
    fake.paper = False
    res = keep(fake, profile=without("set_paper"))
    assert not res.get("failed"), res["msg"]
    assert res["kept_by"] == "execution_mode" and res["missing"] == ["mode.set_paper"] and not fake.calls
    assert len(warned) == 1 and "has no mode.set_paper" in warned[0] and "execution mode DRY keeps it out of LIVE" in warned[0]


def test_keep_live_and_off_paper_without_set_paper_fails(fake, warned):
    """A bot that was LIVE on paper before (only the paper flag is kept) and comes back off paper."""
    fake.mode, fake.paper = "LIVE", False
    res = mode(fake, profile=without("set_paper"), keep_out_of_live=True, paper=True)
    assert res["failed"] and "came back LIVE off paper trading" in res["msg"] and fake.paper is False


def test_keep_check_mode_reports_and_changes_nothing(fake, warned):
    fake.mode = "LIVE"
    res = keep(fake, check_mode=True)
    assert res["changed"] and res["would"] == ["set execution_mode in config.json", "service restart"]
    assert res["kept_by"] == "execution_mode" and fake.mode == "LIVE" and not fake.calls


def test_keep_takes_only_limits(fake):
    res = mode(fake, keep_out_of_live=True, execution_mode="LIVE")
    assert res["failed"] and "keep_out_of_live takes execution_mode=DRY and/or paper=true" in res["msg"]
    res = mode(fake, keep_out_of_live=True)
    assert res["failed"] and fake.mode == "DRY" and not fake.calls


def test_keep_with_nothing_readable_says_so(fake, warned):
    """A bot whose answer carries neither the mode nor the paper flag: nothing to act on, a warning."""
    profile = api_profile()
    profile["facts"]["execution_mode"] = {"http": {"path": "/status"}, "json": "no_such_mode"}
    res = keep(fake, profile=profile)
    assert not res.get("failed"), res["msg"]
    assert res["kept_by"] == "paper" and res["execution_mode"] is None
    assert any("cannot read facts.execution_mode" in w for w in warned)
    profile["facts"]["paper_trading"] = {"http": {"path": "/status"}, "json": "no_such_flag"}
    res = keep(fake, profile=profile)
    assert res["failed"] and "cannot read the mode" in res["msg"], "a bot answering neither is not guessed at"
