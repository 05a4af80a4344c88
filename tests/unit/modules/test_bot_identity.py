"""A bot is who the inventory says: the identity probe and the credentials check of the profile, as
bot_facts reports them and refuses with them, and as the kill switch acts on them.

The misported bot is b03, whose inventory port points at b02's API (both of the fake family): its
process side (pids, service, signals) stays b03's own, as a real service manager's would."""

from __future__ import annotations

import json
import os

import pytest

from ansible_collections.botops.fleet.plugins.modules import bot_facts
from ansible_collections.botops.fleet.plugins.modules import bot_fleet_kill_switch
from ansible_collections.botops.fleet.plugins.modules import bot_kill_switch
from ansible_collections.botops.fleet.plugins.module_utils import botops_bot
from ansible_collections.botops.fleet.plugins.module_utils.botops_bot import Bot

from .fake_bot import ESCALATION, TOKEN, _rung, api_profile, fakes, identity_profile  # noqa: F401  (fixtures)
from .utils import run_module


@pytest.fixture
def pair(fakes, monkeypatch):
    """(b02, b03): two fake bots, their process sides found by bot name, not by the port asked."""
    other, bot = fakes("b02"), fakes("b03")
    by_name = {"b02": other, "b03": bot}
    monkeypatch.setattr(botops_bot.Bot, "pids", lambda self: by_name[self.name].pids())
    monkeypatch.setattr(botops_bot.Bot, "service", lambda self, op: by_name[self.name].service(op))
    monkeypatch.setattr(botops_bot.Bot, "send_signal", lambda self, sig: by_name[self.name].signal(sig))
    monkeypatch.setattr(botops_bot.Bot, "service_state",
                        lambda self: "RUNNING" if by_name[self.name].running else "STOPPED")
    return other, bot


def port(fake) -> int:
    return fake.server.server_address[1]


def args_for(fake, profile=None, at=None, **kw):
    """The fake's module arguments; `at`: another fake whose port the inventory gives it."""
    args = fake.args(profile or identity_profile(), **kw)
    if at is not None:
        args["bot"]["ports"] = {"api": port(at)}
    return args


def client(fake, profile=None, at=None, secrets=None, **bot):
    args = args_for(fake, profile, at)
    args["bot"].update(bot)
    return Bot(args["profile"], args["bot"], args["secrets"] if secrets is None else secrets)


def posts(fake):
    return [c for c in fake.calls if c[0] == "POST"]


# ---------------------------------------------------------------------------- the identity probe
def test_a_bot_that_reports_its_inventory_id_is_who_the_inventory_says(pair):
    _, bot = pair
    assert client(bot).identity() == {"expected": "b03", "reported": "b03", "ok": True, "message": None}


def test_a_port_pointing_at_another_bot_is_named_with_both_ids_and_the_port(pair):
    other, bot = pair
    seen = client(bot, at=other).identity()
    assert (seen["expected"], seen["reported"], seen["ok"]) == ("b03", "b02", False)
    assert seen["message"].startswith(
        f"b03 answers as b02 on port {port(other)}: the inventory's port points at another bot")


def test_the_inventory_bot_id_is_what_the_bot_must_report(pair):
    _, bot = pair
    bot.reports_as = "hl-eu-1"
    assert client(bot).identity()["ok"] is False
    seen = client(bot, bot_id="hl-eu-1").identity()
    assert (seen["expected"], seen["reported"], seen["ok"]) == ("hl-eu-1", "hl-eu-1", True)
    bot.reports_as = 7  # a numeric id is compared as text
    assert client(bot, bot_id="7").identity()["ok"] is True
    bot.reports_as = "hl-eu-2"
    assert client(bot, bot_id="hl-eu-1").identity()["message"].startswith(
        "b03 (bot_id hl-eu-1) answers as hl-eu-2 on port")


def test_a_port_serving_another_api_is_not_the_bot(pair):
    _, bot = pair
    profile = identity_profile()
    profile["identity"] = {"http": {"path": "/api/status"}, "json": "bot_id"}  # 404 on the fake: another API
    seen = client(bot, profile).identity()
    assert seen["ok"] is False and seen["reported"] is None
    assert seen["message"].startswith(f"b03 does not answer as a fakeapi bot on port {port(bot)} "
                                      "(GET /api/status answered HTTP 404)")


@pytest.mark.parametrize("case", ["stopped", "no probe", "no id in the answer", "unwell"])
def test_an_identity_that_cannot_be_told_is_not_a_mismatch(pair, case):
    _, bot = pair
    profile = identity_profile()
    if case == "stopped":
        bot.running = False
    elif case == "no probe":
        profile = api_profile()
    elif case == "no id in the answer":
        profile["identity"] = {"http": {"path": "/status"}, "json": "instance.id"}
    else:
        profile["identity"] = {"http": {"path": "/ready"}, "json": "bot_id"}
        bot.ready = False  # 503 without an id
    seen = client(bot, profile).identity()
    assert seen["ok"] is None and seen["reported"] is None and seen["message"].startswith("not checked: "), seen


# ---------------------------------------------------------------------------- the credentials check
def test_the_credentials_check_carries_the_token_even_on_a_get(pair):
    """The profile sends credentials with POSTs only; the check is a GET that needs them."""
    _, bot = pair
    assert client(bot).credentials() == {"checked": True, "ok": True, "status": 200, "message": None}
    assert ("GET", "/admin/breaker", None) in bot.calls and bot.breaker == "closed"


def test_a_refused_token_is_found_by_the_check(pair):
    _, bot = pair
    seen = client(bot, secrets={"api_token": "rotated-0b1c"}).credentials()
    assert (seen["checked"], seen["ok"], seen["status"]) == (True, False, 401)
    assert seen["message"].startswith("its API refused botops' credentials (GET /admin/breaker answered HTTP 401)")
    assert "rotated-0b1c" not in seen["message"]


def test_a_missing_token_fails_the_check_without_a_request(pair):
    _, bot = pair
    seen = client(bot, secrets={}).credentials()
    assert (seen["checked"], seen["ok"], seen["status"]) == (True, False, None)
    assert "needs a bearer token" in seen["message"] and not bot.calls


@pytest.mark.parametrize("case", ["no auth", "no check", "another status", "stopped"])
def test_credentials_that_cannot_be_told_are_not_refused(pair, case):
    _, bot = pair
    profile = identity_profile()
    if case == "no auth":
        profile["auth"] = {"type": "none"}
    elif case == "no check":
        del profile["auth"]["check"]
    elif case == "another status":
        profile["auth"]["check"]["http"]["path"] = "/no-such-path"
    else:
        bot.running = False
    seen = client(bot, profile).credentials()
    assert seen["ok"] is None and seen["message"].startswith("not checked: "), seen
    assert seen["checked"] is (case == "another status")


# ---------------------------------------------------------------------------- bot_facts
def facts(fake, **kw):
    return run_module(bot_facts.main, args_for(fake, **kw))


def test_facts_say_who_the_bot_is_and_that_its_credentials_are_accepted(pair):
    _, bot = pair
    res = facts(bot)
    assert not res.get("failed"), res.get("msg")
    assert res["bot"]["identity"] == {"expected": "b03", "reported": "b03", "ok": True, "message": None}
    assert res["bot"]["credentials"] == {"checked": True, "ok": True, "status": 200, "message": None}
    assert res["bot"]["ready"] and res["bot"]["version"] == "1.0.0"


def test_facts_of_a_port_pointing_at_another_bot_show_none_of_that_bots_data(pair):
    other, bot = pair
    other.positions = 9
    res = facts(bot, at=other)
    assert not res.get("failed"), "without require_identity the facts are reported"
    fact = res["bot"]
    assert fact["identity"]["ok"] is False and fact["identity"]["reported"] == "b02"
    assert (fact["live"], fact["ready"], fact["health"]) == (False, False, None)
    for name in ("version", "open_positions", "open_orders", "execution_mode", "paper_trading"):
        assert fact[name] is None and fact["errors"][name].startswith("not read: b03 answers as b02"), name
    assert fact["credentials"]["checked"] is False, "b03's credentials were tried on b02"
    assert not [c for c in other.calls if c[1] == "/admin/breaker"]


def test_require_identity_refuses_another_bot_before_any_change(pair):
    other, bot = pair
    res = facts(bot, at=other, require_identity=True)
    assert res["failed"] and res["identity_refused"] is True
    assert res["msg"].startswith(
        f"b03 answers as b02 on port {port(other)}: the inventory's port points at another bot")
    assert res["msg"].endswith("refused before any change")
    assert res["bot"]["identity"]["reported"] == "b02"
    assert not posts(other) and not posts(bot) and bot.running and other.running


def test_require_identity_does_not_refuse_a_bot_that_cannot_be_checked(pair):
    """A stopped bot cannot say who it is: readiness and the other checks judge it."""
    _, bot = pair
    bot.running = False
    res = facts(bot, require_identity=True)
    assert not res.get("failed"), res.get("msg")
    assert res["bot"]["identity"]["ok"] is None and res["bot"]["ready"] is False
    ok = facts(bot, profile=api_profile(), require_identity=True)
    assert not ok.get("failed") and ok["bot"]["identity"]["ok"] is None


def test_facts_report_refused_credentials_and_can_leave_them_unchecked(pair):
    _, bot = pair
    res = facts(bot, secrets={"api_token": "rotated-77"})
    assert res["bot"]["credentials"]["ok"] is False and res["bot"]["credentials"]["status"] == 401
    assert res["bot"]["ready"] is True, "a refused token does not make the bot unhealthy"
    unchecked = facts(bot, credentials=False)
    assert unchecked["bot"]["credentials"]["checked"] is False
    assert [c[1] for c in bot.calls].count("/admin/breaker") == 1, "credentials=false still sent the check"


# ---------------------------------------------------------------------------- the kill switch
def engage(fake, check_mode=False, **kw):
    args = args_for(fake, **kw)
    args.update(level=kw.pop("level", "halt"), reason="drawdown over limit", who="alice")
    for key in ("profile", "at"):
        kw.pop(key, None)
    args.update(kw)
    return run_module(bot_kill_switch.main, args, check_mode=check_mode)


def engagements(fake):
    path = os.path.join(fake.root, "shared", "data", "botops-kill-switch.json")
    with open(path) as f:
        return json.load(f)


def test_the_kill_switch_halts_the_bot_the_inventory_names_not_the_one_at_its_port(pair):
    """The level's own rung would open b02's breaker and verify on b02: b03 would trade on, reported
    halted. Instead b03 is stopped by its escalation (its own service) and fails loudly."""
    other, bot = pair
    res = engage(bot, at=other)
    assert res["failed"]
    assert res["msg"].startswith(
        f"b03 answers as b02 on port {port(other)}: the inventory's port points at another bot")
    assert "engaged on bot 'b03' only by the escalation rung 'service stop'" in res["msg"]
    assert (res["engaged_by"], res["current_level"]) == ("service stop", "halt")
    assert res["identity"]["reported"] == "b02" and res["ladder"] == [r["name"] for r in ESCALATION]
    assert not bot.running, "b03 is still trading"
    assert other.running and other.breaker == "closed" and not posts(other), "b02 was acted on through b03's entry"
    assert engagements(bot)["operator"]["level"] == "halt", "the operator's level is recorded on b03"


def test_a_flatten_is_not_verified_on_the_other_bots_positions(pair):
    """b02 is flat; b03, stopped by its escalation, is not verified flat by b02's answer."""
    other, bot = pair
    other.positions = 0
    res = engage(bot, at=other, level="flatten")
    assert res["failed"] and res["msg"].startswith("b03 answers as b02")
    assert "the open positions cannot be read" in res["msg"] and res["open_positions"] is None
    assert not bot.running and bot.positions == 2 and not posts(other)


def test_without_escalation_nothing_is_done_on_either_bot(pair):
    other, bot = pair
    res = engage(bot, at=other, escalate=False)
    assert res["failed"] and res["msg"].startswith("b03 answers as b02")
    assert "escalate=false: nothing was done on bot 'b03'" in res["msg"]
    assert bot.running and other.running and other.breaker == "closed" and not posts(other)


def test_check_mode_says_so_and_changes_nothing(pair):
    other, bot = pair
    res = engage(bot, at=other, check_mode=True)
    assert res["failed"] and res["msg"].startswith("b03 answers as b02")
    assert "would engage 'halt' starting with rung 'service stop'" in res["msg"]
    assert bot.running and other.running and not posts(other) and not bot.calls


def test_a_bot_that_is_who_the_inventory_says_is_halted_by_its_own_rung(pair):
    _, bot = pair
    res = engage(bot)
    assert not res.get("failed"), res.get("msg")
    assert res["engaged_by"] == "breaker" and bot.breaker == "open" and bot.running


def test_the_identity_check_costs_the_kill_switch_no_request(fakes):
    """The probe reads the answer the level's checks read already (one look, memoized): a halt is not
    held up by it."""
    counts = {}
    for profile in (api_profile(), identity_profile()):
        fake = fakes(f"b{len(counts) + 1:02d}")
        fake.reports_as = fake.name
        seen = []
        original = fake.get
        fake.get = lambda path, auth=None, _seen=seen, _get=original: (_seen.append(path), _get(path, auth))[1]
        res = run_module(bot_kill_switch.main, dict(fake.args(profile), level="halt", reason="r", who="alice"))
        assert not res.get("failed"), res.get("msg")
        counts[profile.get("identity") is not None] = len(seen)
    assert counts[True] == counts[False], counts


def test_a_release_through_another_bots_api_is_refused(pair):
    """Releasing b03 at b02's port would reset b02's breaker: refused, b03's level stays."""
    other, bot = pair
    assert not engage(bot).get("failed")
    other.breaker = "open"  # b02 halted by its own operator
    args = args_for(bot, at=other)
    args.update(state="released", level="halt", who="bob")
    res = run_module(bot_kill_switch.main, args)
    assert res["failed"] and res["refused"]
    assert res["msg"].startswith("b03 answers as b02")
    assert "refused to release kill switch level 'halt' on bot 'b03'" in res["msg"]
    assert other.breaker == "open" and bot.breaker == "open" and not posts(other)
    assert engagements(bot)["operator"]["level"] == "halt"


def test_own_rungs_that_act_on_the_bot_itself_but_verify_through_another_bots_api_fail_loudly(pair, tmp_path):
    """Like vanta's Redis flag: the rung acts on the bot itself (no API, so no look before it), its
    verification reads the other bot's API and never holds; the escalation stops the bot, and the
    identity read afterwards says why."""
    other, bot = pair
    profile = identity_profile()
    flag = _rung("config flag", [{"config_file": {"path": "config.json", "key": "halted", "value": True}}],
                 [{"http": {"path": "/status"}, "json": "breaker", "equals": "open"}], 0.3)
    profile["kill_switch"]["levels"]["halt"]["engage"] = [flag]
    res = engage(bot, at=other, profile=profile)
    assert res["failed"] and res["msg"].startswith("b03 answers as b02")
    assert (res["engaged_by"], res["current_level"]) == ("service stop", "halt") and not bot.running
    assert other.running and not posts(other)


def test_the_fleet_halts_every_bot_and_fails_only_the_misported_one(pair, tmp_path):
    other, bot = pair
    entries = []
    for fake, at in ((other, None), (bot, other)):
        args = args_for(fake, at=at)
        entries.append({"bot": dict(args["bot"], family="fakeapi"), "secrets": args["secrets"], "local": True})
    res = run_module(bot_fleet_kill_switch.main, dict(
        bots=entries, profiles={"fakeapi": identity_profile()}, level="halt", reason="exchange incident",
        who="carol", audit_log=str(tmp_path / "controller" / "audit.log")))
    assert other.breaker == "open" and not bot.running
    assert [c for c in posts(other) if c[1] == "/breaker"] == [("POST", "/breaker", {"reason": "exchange incident"})], \
        "b02 was engaged through b03's entry too"
    row = res["bots"]["b03"]
    assert row["failed"] and row["msg"].startswith("b03 answers as b02") and row["current_level"] == "halt"
    summary = res["summary"]
    assert (summary["total"], summary["halted"], summary["failed"], summary["failed_bots"]) == (2, 2, 1, ["b03"])
    assert TOKEN not in json.dumps(res)
