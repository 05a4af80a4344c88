"""bot_fleet_kill_switch: all bots at once, the same ladder code, failure only after trying all."""

from __future__ import annotations

import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ansible_collections.botops.fleet.plugins.module_utils import botops_bot, botops_processes
from ansible_collections.botops.fleet.plugins.modules import bot_fleet_kill_switch

from .fake_bot import TOKEN, api_profile, fake, fakes  # noqa: F401  (fixtures)
from .utils import run_module


original_service = botops_processes.BotProcesses.service  # before the fakes fixture patches Bot.service


def entry(fake, local=True):
    args = fake.args()
    return {"bot": args["bot"], "profile": args["profile"], "secrets": args["secrets"], "local": local}


def fleet(bots, tmp_path, check_mode=False, **kw):
    args = dict(bots=bots, level="halt", reason="exchange incident", who="carol",
                audit_log=str(tmp_path / "controller" / "audit.log"))
    args.update(kw)
    return run_module(bot_fleet_kill_switch.main, args, check_mode=check_mode)


def lines(path):
    return [json.loads(line) for line in open(path)] if os.path.exists(path) else []


def test_halts_every_bot_then_again_is_unchanged(fakes, tmp_path):
    bots = [fakes(f"b{i:02d}") for i in range(1, 5)]
    res = fleet([entry(b) for b in bots], tmp_path)
    assert not res.get("failed"), res["msg"]
    assert res["changed"] and sorted(res["bots"]) == ["b01", "b02", "b03", "b04"]
    assert all(r["engaged_by"] == "breaker" for r in res["bots"].values())
    assert all(b.breaker == "open" for b in bots)
    summary = res["summary"]
    assert (summary["total"], summary["halted"], summary["failed"], summary["changed"]) == (4, 4, 0, 4)
    assert summary["duration"] >= 0
    controller = lines(tmp_path / "controller" / "audit.log")
    assert sorted(r["bot"] for r in controller) == ["b01", "b02", "b03", "b04"]
    assert all(r["via"] == "bot_fleet_kill_switch" and r["who"] == "carol" for r in controller)
    # local bots: the record is also on the bot's own log
    assert lines(os.path.join(bots[0].root, "shared", "data", "botops-kill-switch.log"))[0]["outcome"] == "engaged"
    assert (tmp_path / "controller" / "audit.log").stat().st_mode & 0o777 == 0o600

    again = fleet([entry(b) for b in bots], tmp_path)
    assert again["changed"] is False and again["summary"]["changed"] == 0 and again["actions"] == []

    released = fleet([entry(b) for b in bots], tmp_path, state="released")
    assert not released.get("failed") and released["summary"]["released"] == 4
    assert all(b.breaker == "closed" for b in bots)


def test_check_mode_changes_no_bot(fakes, tmp_path):
    bots = [fakes("b01"), fakes("b02")]
    res = fleet([entry(b) for b in bots], tmp_path, check_mode=True)
    assert res["changed"] and all(r["rung"] == "breaker" for r in res["bots"].values())
    assert all(b.breaker == "closed" for b in bots)
    assert not (tmp_path / "controller" / "audit.log").exists()


def test_one_failing_bot_fails_the_task_after_all_were_tried(fakes, tmp_path):
    good, bad = fakes("b01"), fakes("b02")
    bad.failing.add("/breaker")
    bad.ignore.update({"stop", "TERM", "KILL"})
    res = fleet([entry(good), entry(bad)], tmp_path)
    assert res["failed"]
    assert good.breaker == "open" and res["bots"]["b01"]["failed"] is False
    assert res["bots"]["b02"]["failed"] and res["summary"]["failed_bots"] == ["b02"]
    assert res["summary"]["halted"] == 1
    assert "on 1 of 2 bots" in res["msg"] and "b02" in res["msg"] and "'SIGKILL'" in res["msg"]


def test_remote_bots_cannot_use_host_rungs(fakes, tmp_path):
    bot = fakes("b01")
    bot.failing.add("/breaker")
    res = fleet([entry(bot, local=False)], tmp_path)
    assert res["failed"]
    steps = res["bots"]["b01"]["steps"]
    assert [s["name"] for s in steps] == ["breaker", "service stop", "SIGTERM", "SIGKILL"]
    assert "needs a shell on the bot's host" in steps[1]["errors"][0]
    assert bot.running, "nothing on the controller may touch a remote bot's process"
    assert not os.path.exists(os.path.join(bot.root, "shared")), "only the controller log for remote bots"


class _Hang(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        time.sleep(3)

    do_POST = do_GET


@pytest.fixture
def hung_bot(tmp_path):
    """hung_bot(timeout): a remote bot entry whose API accepts connections and never answers."""
    hung = ThreadingHTTPServer(("127.0.0.1", 0), _Hang)
    hung.daemon_threads = True
    threading.Thread(target=hung.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    def make(timeout):
        profile = api_profile()
        profile["http"]["timeout"] = timeout
        return {"bot": {"name": "b99", "root": str(tmp_path / "b99"), "ports": {"api": hung.server_address[1]}},
                "profile": profile, "secrets": {"api_token": TOKEN}, "local": False}

    yield make
    hung.shutdown()
    hung.server_close()


def test_a_hung_bot_does_not_slow_the_others(fakes, hung_bot, tmp_path):
    quick = [fakes(f"b{i:02d}") for i in range(1, 4)]
    started = time.monotonic()
    res = fleet([entry(b) for b in quick] + [hung_bot(0.3)], tmp_path)
    took = time.monotonic() - started
    assert res["failed"] and res["summary"]["failed_bots"] == ["b99"]
    assert all(res["bots"][b.name]["seconds"] < 1.0 for b in quick)
    assert took < 5, f"the hung bot held the fleet for {took:.1f}s"


def test_one_slot_per_host_still_halts_every_bot_and_a_hung_one_holds_it_once(fakes, hung_bot, tmp_path):
    quick = [fakes(f"b{i:02d}") for i in range(1, 6)]
    started = time.monotonic()
    res = fleet([hung_bot(0.5)] + [entry(b) for b in quick], tmp_path, max_requests_per_host=1)
    took = time.monotonic() - started
    assert res["summary"]["failed_bots"] == ["b99"]
    assert all(b.breaker == "open" for b in quick)
    # every request of the quick bots went one at a time, the hung bot's only its first
    assert took < 0.5 + 3, f"the hung bot held the only slot for {took:.1f}s"


def test_max_requests_per_host_below_one_is_refused(fake, tmp_path):
    res = fleet([entry(fake)], tmp_path, max_requests_per_host=0)
    assert res["failed"] and "max_requests_per_host must be 1 or more" in res["msg"] and fake.breaker == "closed"


def test_bots_given_twice_are_refused(fake, tmp_path):
    res = fleet([entry(fake), entry(fake)], tmp_path)
    assert res["failed"] and "given twice" in res["msg"] and fake.breaker == "closed"


def test_secrets_are_not_in_the_result(fakes, tmp_path):
    res = fleet([entry(fakes("b01"))], tmp_path)
    assert TOKEN not in json.dumps(res)


# ---------------------------------------------------------------- one bad entry, the others halted
def test_a_bot_without_a_profile_fails_alone_and_the_others_are_halted(fakes, tmp_path):
    good = [fakes("b01"), fakes("b02")]
    orphan = {"bot": {"name": "b03", "family": "vantax", "root": str(tmp_path / "b03")}, "local": True}
    res = fleet([entry(good[0]), orphan, entry(good[1])], tmp_path, profiles={})
    assert res["failed"]
    assert all(b.breaker == "open" for b in good), "a bot without a profile held up the others"
    assert [res["bots"][b.name]["failed"] for b in good] == [False, False]
    assert res["bots"]["b03"]["failed"] and "no profile (bot_family 'vantax')" in res["bots"]["b03"]["msg"]
    summary = res["summary"]
    assert (summary["total"], summary["halted"], summary["failed"], summary["failed_bots"]) == (3, 2, 1, ["b03"])
    assert "on 1 of 3 bots" in res["msg"] and "b03" in res["msg"]


def test_run_fleet_counts_the_bots_it_was_given_no_entry_for(fake, tmp_path):
    """The action plugin hands over the hosts whose variables made no entry: failed, in the summary."""
    params = dict(bots=[entry(fake)], profiles={}, state="engaged", level="halt", reason="drill", who="carol",
                  force=False, escalate=True, audit_log=str(tmp_path / "audit.log"), max_workers=8,
                  max_requests_per_host=8, fail_fast=0.5)
    params["bots"][0].update(audit_log=None)
    result, failure = bot_fleet_kill_switch.run_fleet(params, False, refused={"b09": "its inventory sets no bot_root"})
    assert fake.breaker == "open" and not result["bots"][fake.name]["failed"]
    assert result["bots"]["b09"]["failed"] and "sets no bot_root" in result["bots"]["b09"]["msg"]
    assert (result["summary"]["total"], result["summary"]["failed_bots"]) == (2, ["b09"])
    assert failure and "on 1 of 2 bots" in failure


@pytest.mark.parametrize("root", ["", "relative/b02"])
def test_a_root_that_is_not_absolute_fails_alone_and_writes_nothing_in_the_working_directory(
        fakes, tmp_path, monkeypatch, root):
    good, bad = fakes("b01"), fakes("b02")
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    broken = entry(bad)
    broken["bot"]["root"] = root
    res = fleet([entry(good), broken], tmp_path)
    assert good.breaker == "open" and bad.breaker == "closed"
    assert res["bots"]["b02"]["failed"] and "is not an absolute path" in res["bots"]["b02"]["msg"]
    assert list(workdir.iterdir()) == [], "the audit log or kill-switch record landed in the working directory"


@pytest.mark.parametrize("port", ["abc", 0, 70000, True])
def test_a_port_that_is_not_a_port_number_fails_alone(fakes, tmp_path, port):
    good, bad = fakes("b01"), fakes("b02")
    broken = entry(bad)
    broken["bot"]["ports"] = {"api": port}
    res = fleet([entry(good), broken], tmp_path)
    assert good.breaker == "open" and not res["bots"]["b01"]["failed"]
    assert res["bots"]["b02"]["failed"] and f"bot_ports.api {port!r} is not a port number" in res["bots"]["b02"]["msg"]
    assert res["summary"]["failed_bots"] == ["b02"]


def test_a_wrong_token_is_halted_by_escalation_and_fails_naming_the_token(fakes, tmp_path):
    """Its API refuses the token: the process is stopped (the kill switch reaches it), and the bot
    fails, because its API refuses every later operation too and the row must say why."""
    good, bad = fakes("b01"), fakes("b02")
    broken = entry(bad)
    broken["secrets"] = {"api_token": "rotated-3c1d7e"}
    res = fleet([entry(good), broken], tmp_path)
    assert good.breaker == "open" and not res["bots"]["b01"]["failed"]
    assert not bad.running, "the bot with the wrong token was not halted at all"
    row = res["bots"]["b02"]
    assert row["failed"] and (row["engaged_by"], row["current_level"]) == ("service stop", "halt")
    assert row["msg"].startswith("its API refused botops' credentials (check bot_api_token")
    assert "HTTP 401" in row["msg"] and "rotated-3c1d7e" not in json.dumps(res)
    summary = res["summary"]
    assert (summary["total"], summary["halted"], summary["failed"], summary["failed_bots"]) == (2, 2, 1, ["b02"])


def test_a_bot_that_does_not_answer_in_time_is_escalated_without_failing(fakes, tmp_path):
    """A slow or frozen bot is what escalation is for: only an inventory fault fails an escalated bot."""
    bot = fakes("b01")
    bot.failing.add("/breaker")  # 503: the bot is unwell, its entry is right
    res = fleet([entry(bot)], tmp_path)
    assert not res.get("failed"), res["msg"]
    assert res["bots"]["b01"]["engaged_by"] == "service stop" and not bot.running


def test_a_bot_whose_shared_process_a_sibling_stopped_is_not_blamed_on_its_inventory(fakes, tmp_path, monkeypatch):
    """Two bots in one process (one service): the first one's escalation stops it, so the second's
    API refuses the connection. That is not a wrong port: the second is halted and does not fail
    (in a 1000-bot halt with a frozen pack, one bot failed 'nothing listens ... check bot_ports')."""
    shared = fakes("b01")
    shared.failing.add("/breaker")  # unwell, not misconfigured: the first bot escalates to service stop

    def service_run(bot, op):  # the real service gate, over a manager that stops the one process
        shared.service(op)
        if not shared.running:
            shared.server.shutdown()
            shared.server.server_close()  # nothing listens any more: connections are refused
        return ""

    monkeypatch.setattr(botops_bot.Bot, "service", original_service)
    monkeypatch.setattr(botops_bot.Bot, "service_run", service_run)
    first = entry(shared)
    second = entry(shared)
    second["bot"] = dict(second["bot"], name="b02", root=str(tmp_path / "b02"))
    os.makedirs(second["bot"]["root"])
    res = fleet([first, second], tmp_path, max_workers=1)  # one after the other: b01's stop comes first
    assert not shared.running
    row = res["bots"]["b02"]
    assert not row["failed"], row["msg"]
    assert row["engaged_by"] == "service stop" and row["current_level"] == "halt", row
    assert "its service was stopped for bot 'b01', which shares it" in row["msg"], row["msg"]
    assert not res.get("failed"), res.get("msg")


def test_a_short_token_masks_only_its_own_bot_and_never_the_names(fakes, tmp_path):
    """Scrubbed of one bot's token "b0", every other bot's row would lose its name and keys."""
    good, bad = fakes("b01"), fakes("b02")
    broken = entry(bad)
    broken["secrets"] = {"api_token": "b0"}
    res = fleet([entry(good), broken], tmp_path)
    assert sorted(res["bots"]) == ["b01", "b02"] and res["summary"]["failed_bots"] == ["b02"]
    assert res["bots"]["b01"]["msg"] == "kill switch 'halt' engaged on bot 'b01' by rung 'breaker'"
    assert "b0" not in res["bots"]["b02"]["msg"], "a bot's own token must be masked in its own row"


def test_arriving_bots_are_halted_as_they_come_while_the_next_are_still_being_read(fakes, tmp_path):
    """The action plugin reads a thousand hosts' variables one after another (about a second): each bot
    is driven as soon as its entry comes, not once every host is read. The second entry is held back
    until the first bot's breaker is open: were the bots driven only after the reading, it never opens."""
    first, second = fakes("b01"), fakes("b02")
    refused = {}
    waited = {}

    def arriving():
        yield entry(first)
        deadline = time.monotonic() + 30
        while first.breaker != "open" and time.monotonic() < deadline:
            time.sleep(0.01)
        waited["first_open"] = first.breaker == "open"
        refused["b03"] = "its inventory sets no bot_root"  # found while reading, counted at the end
        yield entry(second)

    params = dict(bots=[], profiles={}, state="engaged", level="halt", reason="drill", who="carol", force=False,
                  escalate=True, audit_log=str(tmp_path / "audit.log"), max_workers=8, max_requests_per_host=8,
                  fail_fast=0.5)
    result, failure = bot_fleet_kill_switch.run_fleet(params, False, refused=refused, arriving=arriving())
    assert waited["first_open"], "the first bot was not driven before the second was read"
    assert first.breaker == "open" and second.breaker == "open"
    assert sorted(result["bots"]) == ["b01", "b02", "b03"] and result["summary"]["failed_bots"] == ["b03"]
    assert result["summary"]["halted"] == 2 and failure and "on 1 of 3 bots" in failure
