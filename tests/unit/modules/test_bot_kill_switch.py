"""bot_kill_switch: ladder walk, escalation, idempotency, refusal, check mode, audit log."""

from __future__ import annotations

import json
import os

from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from ansible_collections.botops.fleet.plugins.module_utils.botops_bot import Bot, bot_argument_spec
from ansible_collections.botops.fleet.plugins.module_utils.botops_kill_switch import KillSwitch, kill_switch_options
from ansible_collections.botops.fleet.plugins.module_utils.botops_kill_switch_record import AUDIT_LOG, Engagements
from ansible_collections.botops.fleet.plugins.modules import bot_kill_switch

from .fake_bot import fake, fakes, stop_profile  # noqa: F401  (fixtures)
from .utils import run_module


def audit_records(fake):
    path = os.path.join(fake.root, "shared", "data", "botops-kill-switch.log")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f]


def engage(fake, level="halt", check_mode=False, **kw):
    args = fake.args(level=level, reason="drawdown over limit", who="alice")
    args.update(kw)
    return run_module(bot_kill_switch.main, args, check_mode=check_mode)


def release(fake, level="halt", check_mode=False, **kw):
    args = fake.args(state="released", level=level, who="bob")
    args.update(kw)
    return run_module(bot_kill_switch.main, args, check_mode=check_mode)


def test_engage_walks_the_level_rung_then_again_is_unchanged(fake):
    first = engage(fake)
    assert not first.get("failed"), first["msg"]
    assert first["changed"] and first["engaged_by"] == "breaker"
    assert first["previous_level"] is None and first["current_level"] == "halt"
    assert [s["name"] for s in first["steps"]] == ["breaker"] and first["steps"][0]["verified"]
    assert fake.breaker == "open"
    assert ("POST", "/breaker", {"reason": "drawdown over limit"}) in fake.calls
    assert first["diff"] == {"before": "kill_switch: none\n", "after": "kill_switch: halt\n"}

    again = engage(fake)
    assert again["changed"] is False and again["actions"] == [] and again["current_level"] == "halt"
    records = audit_records(fake)
    assert len(records) == 1, "an unchanged call writes no audit record"
    rec = records[0]
    assert (rec["bot"], rec["action"], rec["level"], rec["outcome"], rec["who"], rec["rung"]) == \
        ("b07", "engage", "halt", "engaged", "alice", "breaker")
    assert rec["reason"] == "drawdown over limit" and rec["time"].endswith("Z")
    mode = os.stat(os.path.join(fake.root, "shared", "data", "botops-kill-switch.log")).st_mode & 0o777
    assert mode == 0o600


def test_check_mode_names_the_rung_and_changes_nothing(fake):
    res = engage(fake, check_mode=True)
    assert res["changed"] and res["rung"] == "breaker"
    assert res["ladder"] == ["breaker", "service stop", "SIGTERM", "SIGKILL"]
    assert res["actions"] == [] and res["steps"] == []
    assert fake.breaker == "closed" and not [c for c in fake.calls if c[0] == "POST"]
    assert audit_records(fake) == []


def test_reason_is_required_to_engage(fake):
    args = fake.args(level="halt")
    res = run_module(bot_kill_switch.main, args)
    assert res["failed"] and "reason" in res["msg"]
    assert fake.breaker == "closed"


def test_escalates_when_the_api_fails_and_release_starts_the_process(fake):
    fake.failing.add("/breaker")
    res = engage(fake)
    assert not res.get("failed"), res["msg"]
    assert res["engaged_by"] == "service stop"
    first, second = res["steps"]
    assert first["name"] == "breaker" and not first["verified"] and "HTTP 503" in first["errors"][0]
    assert first["seconds"] < 0.5, "a rung whose action failed gets one look, not its whole timeout"
    assert second["verified"] and not fake.running

    assert engage(fake)["changed"] is False, "a stopped process is engaged"

    fake.failing.clear()
    rel = release(fake)
    assert not rel.get("failed"), rel["msg"]
    assert rel["changed"] and rel["released_by"] == "service start" and fake.running
    assert rel["current_level"] is None
    assert audit_records(fake)[-1]["outcome"] == "released"


def test_signals_when_the_service_manager_does_not_stop_it(fake):
    fake.failing.add("/breaker")
    fake.ignore.update({"stop", "TERM"})
    res = engage(fake)
    assert not res.get("failed"), res["msg"]
    assert res["engaged_by"] == "SIGKILL"
    assert [(s["name"], s["verified"]) for s in res["steps"]] == [
        ("breaker", False), ("service stop", False), ("SIGTERM", False), ("SIGKILL", True)]


def test_failure_names_every_rung_tried_and_what_was_seen(fake):
    fake.failing.add("/breaker")
    fake.ignore.update({"stop", "TERM", "KILL"})
    res = engage(fake)
    assert res["failed"]
    msg = res["msg"]
    assert msg.startswith("Failed to engage kill switch level 'halt' on bot 'b07': no rung verified")
    for rung in ("'breaker'", "'service stop'", "'SIGTERM'", "'SIGKILL'"):
        assert rung in msg
    assert "HTTP 503" in msg and "pids" in msg
    assert audit_records(fake)[-1]["outcome"] == "failed"


def test_no_escalation_when_told_not_to(fake):
    fake.failing.add("/breaker")
    res = engage(fake, escalate=False)
    assert res["failed"] and [s["name"] for s in res["steps"]] == ["breaker"]
    assert fake.running


def test_releasing_a_weaker_level_is_refused_unless_forced(fake):
    engage(fake, level="halt")
    res = release(fake, level="pause")
    assert res["failed"] and res.get("refused")
    assert "level 'halt' is engaged" in res["msg"] and "alice" in res["msg"] and "force" in res["msg"]
    assert fake.breaker == "open"
    forced = release(fake, level="pause", force=True)
    assert not forced.get("failed"), forced["msg"]
    assert forced["changed"] and fake.breaker == "closed" and forced["current_level"] is None


def test_release_of_a_level_not_engaged_is_unchanged(fake):
    res = release(fake, level="halt")
    assert res["changed"] is False and res["actions"] == []
    assert audit_records(fake) == []


def test_release_check_mode_changes_nothing(fake):
    engage(fake, level="halt")
    res = release(fake, level="halt", check_mode=True)
    assert res["changed"] and res["rung"] == "breaker reset"
    assert fake.breaker == "open"


def test_look_alike_levels_are_told_apart_by_the_audit_record(fake):
    engage(fake, level="halt")
    assert fake.positions == 2
    res = engage(fake, level="flatten")
    assert res["changed"], "halt and flatten share the breaker: the record says only halt was engaged"
    assert res["engaged_by"] == "breaker and close all" and fake.positions == 0
    assert engage(fake, level="halt")["changed"] is False, "flatten is stronger than halt"
    rel = release(fake, level="halt")
    assert rel["failed"] and "level 'flatten' is engaged" in rel["msg"]


def test_stronger_engaged_level_makes_a_weaker_engage_unchanged(fake):
    engage(fake, level="halt")
    res = engage(fake, level="pause")
    assert res["changed"] is False and res["current_level"] == "halt" and not fake.maintenance


def test_distinct_levels_release_separately(fake):
    engage(fake, level="pause")
    assert fake.maintenance
    res = engage(fake, level="halt")
    assert res["changed"] and res["previous_level"] == "pause"
    refused = release(fake, level="pause")
    assert refused["failed"]
    rel = release(fake, level="halt")
    assert not rel.get("failed") and fake.breaker == "closed"
    assert rel["current_level"] == "pause" and fake.maintenance
    assert release(fake, level="pause")["changed"] and not fake.maintenance


def test_stop_process_family_escalates_and_refuses_weaker_release(fake):
    profile = stop_profile()
    res = engage(fake, level="halt", profile=profile)
    assert not res.get("failed"), res["msg"]
    assert res["engaged_by"] == "service stop" and not fake.running
    assert engage(fake, level="halt", profile=profile)["changed"] is False
    refused = release(fake, level="pause", profile=profile)
    assert refused["failed"] and "level 'halt' is engaged" in refused["msg"]
    rel = release(fake, level="halt", profile=profile)
    assert not rel.get("failed"), rel["msg"]
    assert rel["released_by"] == "service start" and fake.running


def test_stop_process_level_without_escalation_has_no_rungs(fake):
    res = engage(fake, level="halt", profile=stop_profile(), escalate=False)
    assert res["failed"] and "escalate=true" in res["msg"] and fake.running


def test_audit_log_path_can_be_given(fake, tmp_path):
    path = tmp_path / "audit" / "ks.log"
    engage(fake, audit_log=str(path))
    assert json.loads(path.read_text())["outcome"] == "engaged"
    assert path.stat().st_mode & 0o777 == 0o600


def test_token_is_never_in_the_result(fake):
    res = engage(fake)
    assert "fake-token" not in json.dumps(res)


def operator_engage(fake, level="halt"):
    """An operator's engage from another process, in the middle of something else: the module's own
    class on a Bot made from the same validated arguments."""
    validated = ArgumentSpecValidator(dict(bot_argument_spec(), **kill_switch_options())).validate(
        fake.args(level=level, reason="3 a.m. incident", who="carol"))
    assert not validated.error_messages, validated.error_messages
    p = validated.validated_parameters
    bot = Bot(p["profile"], p["bot"], p["secrets"])
    return KillSwitch(bot, p["profile"], level, reason=p["reason"], who="carol",
                      audit_logs=[os.path.join(p["bot"]["root"], AUDIT_LOG)]).run("engaged")


def during_the_release_ladder(monkeypatch, before=None, after=None):
    """Run `before` / `after` once, as the release's ladder begins / ends (the record read, not yet removed)."""
    ladder = KillSwitch._release_level
    done = []

    def release_level(switch, *args):
        if not done and before:
            done.append(before())
        answer = ladder(switch, *args)
        if not done and after:
            done.append(after())
        return answer

    monkeypatch.setattr(KillSwitch, "_release_level", release_level)
    return done


def test_a_halt_engaged_while_a_release_runs_holds_whichever_it_sees(fake, monkeypatch):
    """The kill switch an operator engages last wins. Bob's release is about to reset the breaker when
    Carol engages halt: her look still sees the breaker open ("already engaged") and her record replaces
    the one Bob's release began with; the release then resets the breaker. At its end the release finds
    a record it did not begin with: it leaves it, and puts the level back."""
    engage(fake, level="halt")
    carol = during_the_release_ladder(monkeypatch, before=lambda: operator_engage(fake))
    res = release(fake, level="halt")
    assert carol and carol[0]["msg"].startswith("kill switch already engaged"), carol
    assert fake.breaker == "open", "the release lifted a halt engaged while it ran"
    assert res.get("kept", {}).get("who") == "carol", res
    record = Engagements(fake.root).operator()
    assert record and record["level"] == "halt" and record["who"] == "carol", record


def test_a_halt_engaged_just_after_a_release_ladder_is_not_lost(fake, monkeypatch):
    """Carol's halt lands after the release's ladder reset the breaker and before the release removed
    the record: her ladder opens the breaker again, and her record is not the release's to remove."""
    engage(fake, level="halt")
    carol = during_the_release_ladder(monkeypatch, after=lambda: operator_engage(fake))
    release(fake, level="halt")
    assert carol and carol[0]["changed"] and fake.breaker == "open", carol
    record = Engagements(fake.root).operator()
    assert record and record["who"] == "carol", record


def test_a_release_with_no_engage_meanwhile_removes_the_record(fake):
    engage(fake, level="halt")
    res = release(fake, level="halt")
    assert not res.get("failed") and "kept" not in res and fake.breaker == "closed"
    assert Engagements(fake.root).operator() is None
