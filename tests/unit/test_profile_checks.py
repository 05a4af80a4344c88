"""Value maps, checks beyond equality and the STOP / CONT signals, against a real local HTTP server
(a bot that speaks like Freqtrade: `runmode: dry_run | live`, `dry_run: true | false`) and real
child processes frozen with SIGSTOP."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ansible_collections.botops.fleet.plugins.module_utils.botops_bot import Bot
from ansible_collections.botops.fleet.plugins.module_utils.botops_errors import BotError
from ansible_collections.botops.fleet.plugins.module_utils.botops_kill_switch import KillSwitch, KillSwitchError
from ansible_collections.botops.fleet.plugins.module_utils.botops_values import as_epoch, describe_check
from botops import profiles
from botops.profiles import ProfileError

from tests.unit.modules.fake_bot import stop_profile


class _Freqtrade(BaseHTTPRequestHandler):
    state: dict = {}

    def log_message(self, *args):
        pass

    def _send(self, status, doc):
        raw = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_GET(self):
        if self.path == "/api/v1/show_config":
            self._send(200, {key: self.state[key] for key in ("runmode", "dry_run", "state", "max_open_trades")})
        elif self.path == "/api/v1/health":
            self._send(200, {"last_process": self.state["last_process"], "last_process_ts": self.state["last_process_ts"]})
        else:
            self._send(404, {"detail": "not found"})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"null")
        self.state["posted"].append((self.path, body))
        if self.path == "/api/v1/runmode":
            self.state["runmode"] = body["runmode"]
            self.state["dry_run"] = body["runmode"] == "dry_run"
        self._send(200, {"status": "ok"})


@pytest.fixture
def freqtrade():
    now = time.time()
    _Freqtrade.state = {"runmode": "dry_run", "dry_run": True, "state": "running", "max_open_trades": "3",
                        "last_process_ts": int(now) - 5,
                        "last_process": datetime.fromtimestamp(now - 5, timezone.utc).isoformat(), "posted": []}
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Freqtrade)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield _Freqtrade.state, srv.server_address[1]
    srv.shutdown()
    srv.server_close()


def make_bot(port, root="/nonexistent", process_match="no-such-process-botops-test"):
    bot = {"name": "ft01", "root": str(root), "listen": "127.0.0.1", "ports": {"api": port},
           "process_match": process_match}
    return Bot(profiles.load("mojorust"), bot)


CONFIG = {"http": {"path": "/api/v1/show_config"}}
HEALTH = {"http": {"path": "/api/v1/health"}}


# ---------------------------------------------------------------------------- value maps
def test_a_probe_maps_the_value_it_reads(freqtrade):
    state, port = freqtrade
    bot = make_bot(port)
    mode = dict(CONFIG, json="runmode", map={"dry_run": "DRY", "live": "LIVE"})
    assert bot.probe(mode) == "DRY"
    state["runmode"] = "live"
    assert bot.probe(mode) == "LIVE"


def test_a_probe_maps_booleans_as_yaml_and_as_json_write_them(freqtrade):
    state, port = freqtrade
    bot = make_bot(port)
    from_yaml = dict(CONFIG, json="dry_run", map={True: "DRY", False: "LIVE"})
    # the profile as it reaches the bot's host: JSON module arguments, every key a string
    from_json = json.loads(json.dumps(from_yaml))
    assert from_json["map"] == {"true": "DRY", "false": "LIVE"}
    for spec in (from_yaml, from_json):
        state["dry_run"] = True
        assert bot.probe(spec) == "DRY"
        state["dry_run"] = False
        assert bot.probe(spec) == "LIVE"


def test_an_unmapped_value_is_an_error_naming_it_and_the_maps_keys(freqtrade):
    state, port = freqtrade
    bot = make_bot(port)
    state["runmode"] = "backtest"
    with pytest.raises(BotError) as info:
        bot.probe(dict(CONFIG, json="runmode", map={"dry_run": "DRY", "live": "LIVE"}))
    msg = str(info.value)
    assert '"backtest"' in msg and "dry_run, live" in msg and "GET /api/v1/show_config" in msg


def test_an_action_sends_its_placeholder_mapped(freqtrade):
    state, port = freqtrade
    bot = make_bot(port)
    action = {"http": {"method": "POST", "path": "/api/v1/runmode", "body": {"runmode": "{mode}"}},
              "map": {"mode": {"DRY": "dry_run", "LIVE": "live"}}}
    bot.do(action, {"mode": "LIVE"})
    assert state["posted"][-1] == ("/api/v1/runmode", {"runmode": "live"})
    probe = dict(CONFIG, json="runmode", map={"dry_run": "DRY", "live": "LIVE"})
    assert bot.probe(probe) == "LIVE"
    bot.do(action, {"mode": "DRY"})
    assert bot.probe(probe) == "DRY"


def test_an_action_maps_a_boolean_into_a_config_file(tmp_path, freqtrade):
    _, port = freqtrade
    (tmp_path / "config.json").write_text(json.dumps({"dry_run": True}))
    bot = make_bot(port, root=tmp_path)
    action = {"config_file": {"path": "config.json", "key": "runmode", "value": "{paper}"},
              "map": {"paper": {True: "dry_run", False: "live"}}}
    bot.do(action, {"paper": False})
    assert json.loads((tmp_path / "config.json").read_text())["runmode"] == "live"
    bot.do(json.loads(json.dumps(action)), {"paper": True})  # as JSON module arguments carry it
    assert json.loads((tmp_path / "config.json").read_text())["runmode"] == "dry_run"


def test_an_action_with_an_unmapped_value_sends_nothing(freqtrade):
    state, port = freqtrade
    bot = make_bot(port)
    action = {"http": {"method": "POST", "path": "/api/v1/runmode", "body": {"runmode": "{mode}"}},
              "map": {"mode": {"DRY": "dry_run", "LIVE": "live"}}}
    with pytest.raises(BotError, match=r'\{mode\} of action POST /api/v1/runmode: "PAPER" is not in .*DRY, LIVE'):
        bot.do(action, {"mode": "PAPER"})
    assert state["posted"] == []


# ---------------------------------------------------------------------------- checks beyond equality
def test_not_equals_and_one_of(freqtrade):
    state, port = freqtrade
    bot = make_bot(port)
    assert bot.check(dict(CONFIG, json="state", not_equals="stopped"))[0]
    assert bot.check(dict(CONFIG, json="runmode", one_of=["dry_run", "live"]))[0]
    state["state"] = "stopped"
    ok, seen = bot.check(dict(CONFIG, json="state", not_equals="stopped"))
    assert not ok and seen["value"] == "stopped" and seen["expected"] == "'state' not equal to \"stopped\""
    state["runmode"] = "backtest"
    ok, seen = bot.check(dict(CONFIG, json="runmode", one_of=["dry_run", "live"]))
    assert not ok and seen["value"] == "backtest" and 'one of ["dry_run", "live"]' in seen["expected"]


def test_equality_tells_booleans_from_numbers(freqtrade):
    state, port = freqtrade
    bot = make_bot(port)
    state["dry_run"] = True
    assert bot.check(dict(CONFIG, json="dry_run", equals=True))[0]
    assert not bot.check(dict(CONFIG, json="dry_run", equals=1))[0]
    assert not bot.check(dict(CONFIG, json="dry_run", one_of=[1, "yes"]))[0]


def test_numeric_comparisons_read_numbers_and_numeric_strings(freqtrade):
    state, port = freqtrade
    bot = make_bot(port)
    trades = dict(CONFIG, json="max_open_trades")  # the bot answers "3", a string
    assert bot.check(dict(trades, at_most=3, at_least=3, less_than=4, greater_than=2))[0]
    ok, seen = bot.check(dict(trades, less_than=3))
    assert not ok and seen["expected"] == "'max_open_trades' less than 3"
    ok, seen = bot.check(dict(trades, at_least=1, greater_than=5))
    assert not ok and seen["expected"] == "'max_open_trades' greater than 5"
    state["max_open_trades"] = 2.5
    assert bot.check(dict(trades, greater_than=2, at_most=2.5))[0]
    state["max_open_trades"] = "unlimited"
    ok, seen = bot.check(dict(trades, at_most=10))
    assert not ok and "(not a number)" in seen["expected"]
    state["max_open_trades"] = True  # true is not 1
    assert not bot.check(dict(trades, at_least=1))[0]


@pytest.mark.parametrize("form", ["epoch seconds", "epoch milliseconds", "ISO Z", "ISO offset", "ISO naive",
                                  "numeric string"])
def test_age_below_reads_every_timestamp_form(freqtrade, form):
    state, port = freqtrade
    bot = make_bot(port)

    def stamp(age):
        moment = datetime.now(timezone.utc) - timedelta(seconds=age)
        return {"epoch seconds": int(moment.timestamp()),
                "epoch milliseconds": int(moment.timestamp() * 1000),
                "ISO Z": moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                "ISO offset": moment.astimezone(timezone(timedelta(hours=2))).isoformat(),
                "ISO naive": moment.replace(tzinfo=None).isoformat(sep=" "),
                "numeric string": str(moment.timestamp())}[form]

    spec = dict(HEALTH, json="last_process_ts", age_below=60)
    state["last_process_ts"] = stamp(10)
    ok, seen = bot.check(spec)
    assert ok, seen
    assert 9 <= seen["age"] <= 15
    state["last_process_ts"] = stamp(600)
    ok, seen = bot.check(spec)
    assert not ok and 599 <= seen["age"] <= 605
    assert seen["expected"] == "'last_process_ts' a timestamp less than 60s old"


def test_age_below_of_something_that_is_no_timestamp(freqtrade):
    state, port = freqtrade
    bot = make_bot(port)
    state["last_process"] = "yesterday"
    ok, seen = bot.check(dict(HEALTH, json="last_process", age_below=60))
    assert not ok and "not a timestamp" in seen["expected"] and seen["value"] == "yesterday"
    assert as_epoch(None) is None and as_epoch("") is None and as_epoch(True) is None
    assert as_epoch("2024-01-01T00:00:00+0000") == as_epoch(1704067200000) == 1704067200.0


def test_a_failed_check_says_what_it_expected(freqtrade):
    _, port = freqtrade
    bot = make_bot(port)
    ok, seen = bot.check({"http": {"path": "/api/v1/nope"}, "status": 200})
    assert not ok and seen["status"] == 404 and seen["expected"] == "HTTP 200"
    ok, seen = bot.check(dict(CONFIG, json="nothing.here", equals=1))
    assert not ok and "no 'nothing'" in seen["error"] and "'nothing.here' equal to 1" in seen["expected"]
    assert describe_check(dict(HEALTH, json="last_process_ts", age_below=60, status=200)) == (
        "GET /api/v1/health, HTTP 200, 'last_process_ts' a timestamp less than 60s old")


# ---------------------------------------------------------------------------- the schema
FREQTRADE_FACTS = {
    "execution_mode": {"http": {"path": "/api/v1/show_config"}, "json": "runmode",
                       "map": {"dry_run": "DRY", "live": "LIVE"}},
    "paper_trading": {"http": {"path": "/api/v1/show_config"}, "json": "dry_run"},
}


def _profile(**changes):
    profile = copy.deepcopy(profiles.load("mojorust"))
    profile["facts"].update(FREQTRADE_FACTS)
    profile["mode"]["set_execution_mode"] = [
        {"http": {"method": "POST", "path": "/api/v1/runmode", "body": {"runmode": "{mode}"}},
         "map": {"mode": {"DRY": "dry_run", "LIVE": "live"}}}]
    profile["health"]["readiness"] = {"http": {"path": "/api/v1/health"}, "json": "last_process_ts", "age_below": 60}
    for path, value in changes.items():
        node = profile
        *parents, last = path.split(".")
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        node[int(last) if last.isdigit() else last] = value
    return profile


def test_a_freqtrade_like_profile_is_valid():
    profile = _profile()
    profile["facts"]["paper_trading"]["map"] = {True: True, False: False}
    profile["kill_switch"]["levels"]["pause"]["engaged"] = [
        {"http": {"path": "/api/v1/show_config"}, "json": "state", "one_of": ["stopped", "paused"]},
        {"process": "running"}]
    profiles.validate(profile, "mojorust")


@pytest.mark.parametrize("change, message", [
    ({"health.readiness": {"http": {"path": "/h"}, "less_than": 5}}, "health.readiness: 'less_than' needs 'json'"),
    ({"health.readiness": {"http": {"path": "/h"}, "json": "n", "less_than": "five"}},
     "health.readiness.less_than: expected number"),
    ({"health.readiness": {"http": {"path": "/h"}, "json": "t", "age_below": 0}}, "health.readiness.age_below"),
    ({"facts.execution_mode.map": {"dry_run": ["DRY"]}}, "facts.execution_mode.map.dry_run: expected"),
    ({"facts.execution_mode.map": {True: "DRY", "true": "LIVE"}}, "facts.execution_mode.map: true listed twice"),
    ({"mode.set_execution_mode.0.map": {"runmode": {"DRY": "dry_run"}}},
     "mode.set_execution_mode[0].map.runmode: the action has no {runmode} placeholder"),
    ({"identity.map": {"a": "b"}}, "identity.map: the id is compared as the bot reports it"),
    ({"mode.set_execution_mode.0.service": "restart"}, "mode.set_execution_mode[0]: expected exactly one of"),
])
def test_the_schema_refuses_wrong_maps_and_checks(change, message):
    with pytest.raises(ProfileError) as info:
        profiles.validate(_profile(**change), "mojorust")
    assert f"mojorust: {message}" in str(info.value)


def test_a_rung_that_only_thaws_cannot_end_an_engage():
    profile = _profile()
    rungs = profile["kill_switch"]["escalation"]
    thaw = next(r for r in rungs if r["name"] == "SIGCONT")
    del thaw["ends_walk"]
    with pytest.raises(ProfileError, match=r"kill_switch.escalation\[0\]: rung 'SIGCONT' only sends SIGCONT"):
        profiles.validate(profile, "mojorust")


@pytest.mark.parametrize("family", profiles.available())
def test_every_shipped_ladder_thaws_before_anything_stops_the_bot(family):
    """A frozen bot acts on no signal but SIGKILL: the service manager's stop (its SIGTERM) would wait
    out its stop timeout and kill it. SIGCONT comes first; a dead bot passes it at once."""
    names = [rung["name"] for rung in profiles.load(family)["kill_switch"]["escalation"]]
    assert names.index("SIGCONT") == 0 and names.index("SIGCONT") < names.index("service stop") < names.index("SIGTERM")
    thaw = profiles.load(family)["kill_switch"]["escalation"][0]
    assert thaw["do"] == [{"signal": "CONT"}]
    assert thaw["verify"] == [{"any_of": [{"process": "running"}, {"process": "absent"}]}]
    assert thaw["ends_walk"] is False


# ---------------------------------------------------------------------------- STOP and CONT on real processes
CHILD = """
import signal, sys, time
def bye(signum, frame):
    open(sys.argv[1], "w").write("clean exit")
    sys.exit(0)
signal.signal(signal.SIGTERM, bye)
open(sys.argv[1] + ".ready", "w").close()
while True:
    time.sleep(0.05)
"""


@pytest.fixture
def child(tmp_path):
    """A real process with a unique command line that exits cleanly on SIGTERM, writing a file."""
    marker = f"botops-test-{uuid.uuid4().hex}"
    exit_file = tmp_path / "exit"
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(exit_file), marker])
    deadline = time.monotonic() + 10
    while not (tmp_path / "exit.ready").exists() and time.monotonic() < deadline:
        time.sleep(0.02)  # its SIGTERM handler is in place
    yield proc, marker, exit_file
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=5)


def _state(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def _wait_state(pid, states, timeout=5):
    deadline = time.monotonic() + timeout
    while _state(pid) not in states and time.monotonic() < deadline:
        time.sleep(0.02)
    return _state(pid)


def test_stop_freezes_and_the_shipped_cont_rung_thaws(child, tmp_path):
    proc, marker, _ = child
    bot = Bot(profiles.load("hyperliquid"), {"name": "b1", "root": str(tmp_path), "process_match": marker})
    assert bot.check({"process": "running"})[0]
    bot.do({"signal": "STOP"})
    assert _wait_state(proc.pid, "Tt") in ("T", "t")
    ok, seen = bot.check({"process": "stopped"})
    assert ok and seen["states"] == {str(proc.pid): "T"}
    ok, seen = bot.check({"process": "running"})
    assert not ok and seen["expected"] == "a process, none stopped (state T)"
    thaw = next(r for r in bot.profile["kill_switch"]["escalation"] if r["name"] == "SIGCONT")
    for action in thaw["do"]:
        assert bot.do(action) == f"SIGCONT to [{proc.pid}]"
    ok, seen = bot.wait_for(thaw["verify"], thaw["timeout"])
    assert ok, seen
    assert _state(proc.pid) not in ("T", "t")
    assert proc.poll() is None  # thawed, not stopped


def test_no_process_is_neither_stopped_nor_running(tmp_path):
    bot = Bot(profiles.load("hyperliquid"), {"name": "b1", "root": str(tmp_path),
                                             "process_match": f"botops-test-{uuid.uuid4().hex}"})
    assert not bot.check({"process": "stopped"})[0]
    assert not bot.check({"process": "running"})[0]


def test_the_kill_switch_thaws_a_frozen_bot_so_sigterm_exits_it_cleanly(child, tmp_path):
    proc, marker, exit_file = child
    profile = stop_profile()
    shipped = profiles.load("mojorust")["kill_switch"]["escalation"]
    profile["kill_switch"]["escalation"] = [
        dict(rung, timeout=min(rung.get("timeout", 5), 3)) for rung in shipped if rung["name"] != "service stop"]
    profiles.validate(profile, "fakestop")
    bot = Bot(profile, {"name": "b1", "root": str(tmp_path), "process_match": marker})
    os.kill(proc.pid, signal.SIGSTOP)
    assert _wait_state(proc.pid, "Tt") in ("T", "t")
    res = KillSwitch(bot, profile, "halt", reason="frozen bot", who="test").engage()
    assert [(s["name"], s["verified"]) for s in res["steps"]] == [("SIGCONT", True), ("SIGTERM", True)]
    assert res["engaged_by"] == "SIGTERM" and res["current_level"] == "halt"
    assert proc.wait(timeout=5) == 0
    assert exit_file.read_text() == "clean exit"  # SIGTERM's handler ran: not SIGKILL


def test_without_the_thaw_a_frozen_bot_needs_sigkill(child, tmp_path):
    proc, marker, exit_file = child
    profile = stop_profile()
    shipped = profiles.load("mojorust")["kill_switch"]["escalation"]
    profile["kill_switch"]["escalation"] = [
        dict(rung, timeout=0.5) for rung in shipped if rung["name"] in ("SIGTERM", "SIGKILL")]
    bot = Bot(profile, {"name": "b1", "root": str(tmp_path), "process_match": marker})
    os.kill(proc.pid, signal.SIGSTOP)
    assert _wait_state(proc.pid, "Tt") in ("T", "t")
    res = KillSwitch(bot, profile, "halt", reason="frozen bot", who="test").engage()
    assert [(s["name"], s["verified"]) for s in res["steps"]] == [("SIGTERM", False), ("SIGKILL", True)]
    assert proc.wait(timeout=5) == -signal.SIGKILL and not exit_file.exists()


def test_a_verified_thaw_does_not_end_the_walk_and_a_failed_walk_says_so(child, tmp_path):
    proc, marker, _ = child
    profile = stop_profile()
    profile["kill_switch"]["escalation"] = [
        {"name": "SIGCONT", "do": [{"signal": "CONT"}], "verify": [{"process": "running"}], "timeout": 1,
         "ends_walk": False},
        {"name": "SIGSTOP", "do": [{"signal": "STOP"}], "verify": [{"process": "absent"}], "timeout": 0.3}]
    profiles.validate(profile, "fakestop")
    bot = Bot(profile, {"name": "b1", "root": str(tmp_path), "process_match": marker})
    with pytest.raises(KillSwitchError) as info:
        KillSwitch(bot, profile, "halt", reason="r", who="test").engage()
    msg = str(info.value)
    assert "'SIGCONT' (verified after" in msg and "the walk went on" in msg
    assert "'SIGSTOP' (verify saw" in msg and "no process" in msg
    assert info.value.result["engaged_by"] is None
    assert _wait_state(proc.pid, "Tt") in ("T", "t")


def test_a_mode_in_the_bots_own_words_is_an_error_not_taken_for_dry(freqtrade):
    """facts.execution_mode must read DRY or LIVE and paper_trading true or false: an unmapped `live`
    or "false" is an error naming the value and the fix, never 'not LIVE'."""
    from ansible_collections.botops.fleet.plugins.module_utils.botops_mode import read_mode, read_what_can_be_read

    state, port = freqtrade
    state.update(runmode="live", dry_run=False)
    profile = copy.deepcopy(stop_profile())
    profile["http"]["ports"] = {"api": port}
    profile["facts"]["execution_mode"] = {"http": {"path": "/api/v1/show_config"}, "json": "runmode"}
    profile["facts"]["paper_trading"] = {"http": {"path": "/api/v1/show_config"}, "json": "max_open_trades"}
    bot = Bot(profile, {"name": "ft", "root": "/nonexistent"})
    with pytest.raises(BotError, match=r"facts.execution_mode reported 'live', not DRY or LIVE: .*map"):
        read_mode(bot, profile["facts"])
    warnings = []
    with pytest.raises(BotError, match="cannot read the mode"):
        read_what_can_be_read(bot, profile["facts"], warnings)
    profile["facts"]["execution_mode"]["map"] = {"dry_run": "DRY", "live": "LIVE"}
    warnings = []
    assert read_what_can_be_read(bot, profile["facts"], warnings) == ("LIVE", None)
    assert "facts.paper_trading reported '3', not true or false" in warnings[0]
