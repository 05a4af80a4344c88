"""Programs run and files read on the bot's host: `command` probes, checks and actions (a bot driven
by its own CLI), `file` probes and checks (a bot that writes its status to a file, and its age).

Real child processes and real files: the bot's CLI is a small Python script written under the bot's
root, its trading loop a real process that rewrites its status file every 50 ms."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from ansible_collections.botops.fleet.plugins.module_utils.botops_bot import Bot
from ansible_collections.botops.fleet.plugins.module_utils.botops_errors import BotError
from ansible_collections.botops.fleet.plugins.module_utils.botops_facts import gather
from ansible_collections.botops.fleet.plugins.module_utils.botops_kill_switch import KillSwitch, KillSwitchError
from ansible_collections.botops.fleet.plugins.module_utils.botops_kill_switch_checks import HostlessBot
from ansible_collections.botops.fleet.plugins.module_utils.botops_mode import keep_out_of_live, read_mode
from ansible_collections.botops.fleet.plugins.module_utils.botops_values import describe_action, describe_check
from botops import profiles
from botops.profiles import ProfileError

from tests.unit.modules.fake_bot import _rung, api_profile, stop_profile

CLI = r'''#!{python}
"""botctl: the CLI of a bot that keeps its state in shared/state.json under its root."""
import json, os, subprocess, sys, time

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
state_file = os.path.join(root, "shared", "state.json")
with open(os.path.join(root, "shared", "calls.log"), "a") as log:
    log.write(" ".join(sys.argv[1:2]) + "\n")
state = json.load(open(state_file))
command, args = sys.argv[1], sys.argv[2:]


def save():
    with open(state_file + ".tmp", "w") as f:
        json.dump(state, f)
    os.replace(state_file + ".tmp", state_file)


if command == "status":
    print(json.dumps(state))
elif command == "version":
    print("  " + state["version"] + "  ")
elif command == "mode":
    state["mode"] = args[0]
    save()
elif command == "halt":
    open(os.path.join(root, "shared", "halt.flag"), "w").write(args[0])
elif command == "resume":
    os.unlink(os.path.join(root, "shared", "halt.flag"))
elif command == "fail":
    print("connecting...", file=sys.stderr)
    print("boom: exchange unreachable", file=sys.stderr)
    sys.exit(int(args[0]))
elif command == "sleep":
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    open(os.path.join(root, "shared", "grandchild.pid"), "w").write(str(child.pid))
    time.sleep(60)
elif command == "echo":
    print(json.dumps({"argv": args, "cwd": os.getcwd()}))
elif command == "garbage":
    print("this is not json")
else:
    sys.exit(64)
'''

# the bot's trading loop: rewrites shared/status.json every 50 ms (halted while shared/halt.flag exists)
LOOP = r"""
import json, os, sys, time
root = sys.argv[1]
status = os.path.join(root, "shared", "status.json")
loop = 0
while True:
    loop += 1
    doc = {"halted": os.path.exists(os.path.join(root, "shared", "halt.flag")), "loop": loop, "version": "1.4.2"}
    with open(status + ".tmp", "w") as f:
        json.dump(doc, f)
    os.replace(status + ".tmp", status)
    time.sleep(0.05)
"""

STATE = {"bot_id": "b07", "mode": "LIVE", "paper": False, "positions": [{"id": 1}, {"id": 2}], "version": "1.4.2"}
T = 30  # seconds a test's program may take on a busy machine
STATUS = {"argv": ["bin/botctl", "status"], "timeout": T}


@pytest.fixture
def root(tmp_path):
    """A bot's root holding its CLI, bin/botctl, and its state."""
    (tmp_path / "bin").mkdir()
    (tmp_path / "shared").mkdir()
    cli = tmp_path / "bin" / "botctl"
    cli.write_text(CLI.replace("{python}", sys.executable, 1))
    cli.chmod(0o755)
    (tmp_path / "shared" / "state.json").write_text(json.dumps(STATE))
    return tmp_path


def calls(root):
    path = root / "shared" / "calls.log"
    return path.read_text().split() if path.exists() else []


def make_bot(root, profile=None, cls=Bot, name="b07", bot_id=None, process_match=None):
    bot = {"name": name, "root": str(root), "listen": "127.0.0.1", "ports": {"api": 1},
           "process_match": process_match or f"botops-test-none-{uuid.uuid4().hex}"}
    if bot_id:
        bot["bot_id"] = bot_id
    return cls(profile or api_profile(), bot)


def cmd(*argv, **options):
    return dict({"argv": list(argv), "timeout": T}, **options)


# ---------------------------------------------------------------------------- command probes
def test_a_command_probe_reads_what_the_cli_prints(root):
    bot = make_bot(root)
    assert bot.probe({"command": STATUS, "json": "mode"}) == "LIVE"
    assert bot.probe({"command": STATUS, "json": "positions", "count": True}) == 2
    assert bot.probe({"command": STATUS, "json": "paper", "map": {True: "paper", False: "real"}}) == "real"
    assert bot.probe({"command": STATUS}) == STATE
    assert bot.probe({"command": cmd("bin/botctl", "version", output="text")}) == "1.4.2"
    assert bot.probe({"command": cmd("bin/botctl", "version", output="text"), "json": ""}) == "1.4.2"
    with pytest.raises(BotError, match=r"^command bin/botctl: .*no 'nothing' in the answer"):
        bot.probe({"command": STATUS, "json": "nothing"})
    with pytest.raises(BotError, match=r"^bin/botctl did not print JSON: 'this is not json'"):
        bot.probe({"command": cmd("bin/botctl", "garbage")})


def test_placeholders_in_argv_and_the_working_directory(root):
    (root / "shared" / "run").mkdir()
    bot = make_bot(root, bot_id="acct-7")
    echo = {"command": cmd("bin/botctl", "echo", "{bot_root}", "{bot_name}", "{bot_id}", "--mode={mode}", "{paper}",
                           "{n}", "{unknown}")}
    seen = bot.probe(echo, {"mode": "DRY", "paper": True, "n": 3})
    assert seen["argv"] == [str(root), "b07", "acct-7", "--mode=DRY", "true", "3", "{unknown}"]
    assert seen["cwd"] == str(root)  # by default the program runs in bot_root
    in_run = {"command": cmd("bin/botctl", "echo", cwd="shared/run"), "json": "cwd"}
    assert bot.probe(in_run) == str(root / "shared" / "run")
    # an absolute argv[0], and the bot's root as a placeholder in argv[0]
    assert bot.probe({"command": cmd(str(root / "bin" / "botctl"), "status"), "json": "bot_id"}) == "b07"
    assert bot.probe({"command": cmd("{bot_root}/bin/botctl", "status"), "json": "bot_id"}) == "b07"


def test_argv0_without_a_slash_is_found_on_path(root, monkeypatch):
    monkeypatch.setenv("PATH", f"{root / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")
    assert make_bot(root).probe({"command": cmd("botctl", "status"), "json": "mode"}) == "LIVE"
    with pytest.raises(BotError, match=r"^cannot run botctl-no-such-program: No such file"):
        make_bot(root).probe({"command": cmd("botctl-no-such-program")})


def test_a_missing_program_or_working_directory_is_named(root):
    bot = make_bot(root)
    with pytest.raises(BotError) as info:
        bot.probe({"command": cmd("bin/nope", "status")})
    assert str(info.value).startswith(f"cannot run bin/nope ({root}/bin/nope): No such file")
    with pytest.raises(BotError, match=r"cannot run bin/botctl: its working directory .*/no-such-dir does not exist"):
        bot.probe({"command": cmd("bin/botctl", "status", cwd="no-such-dir")})


def test_a_failing_program_names_argv0_its_code_and_stderrs_last_line_only(root):
    bot = make_bot(root)
    probe = {"command": cmd("bin/botctl", "fail", "3", "--note={reason}")}
    with pytest.raises(BotError) as info:
        bot.probe(probe, {"reason": "value-not-to-echo"})
    assert str(info.value) == "bin/botctl exited with code 3: boom: exchange unreachable"
    # the code its ok_codes accept is a success: what it printed is read
    ok = {"command": dict(probe["command"], ok_codes=[0, 3], output="text")}
    assert bot.probe(ok, {"reason": "x"}) == ""


def test_a_program_past_its_timeout_is_killed_with_its_process_group(root):
    bot = make_bot(root)
    started = time.monotonic()
    with pytest.raises(BotError) as info:
        bot.probe({"command": {"argv": ["bin/botctl", "sleep", "{reason}"], "timeout": 1.5}}, {"reason": "hush"})
    assert str(info.value) == "bin/botctl did not finish within 1.5s (killed)"
    assert time.monotonic() - started < 15
    pid = int((root / "shared" / "grandchild.pid").read_text())
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid), "the program's own child outlived the timeout"


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_memoized_command_probes_run_once_actions_always(root):
    bot = make_bot(root)
    probe = {"command": STATUS, "json": "mode"}
    with bot.memoized():
        assert bot.probe(probe) == "LIVE"
        assert bot.check({"command": STATUS, "json": "mode", "equals": "LIVE"})[0]
        bot.do({"command": cmd("bin/botctl", "mode", "DRY")})
        assert bot.probe(probe) == "LIVE"  # the moment of the block
    assert calls(root) == ["status", "mode"]
    assert bot.probe(probe) == "DRY"
    assert calls(root) == ["status", "mode", "status"]


# ---------------------------------------------------------------------------- command checks and actions
def test_command_checks_exit_codes_and_what_it_prints(root):
    bot = make_bot(root)
    assert bot.check({"command": STATUS}) == (True, {"exit_code": 0})
    assert bot.check({"command": cmd("bin/botctl", "fail", "3"), "exit_code": 3})[0]
    ok, seen = bot.check({"command": cmd("bin/botctl", "fail", "2")})
    assert not ok and seen == {"exit_code": 2, "stderr": "boom: exchange unreachable", "expected": "exit code 0"}
    ok, seen = bot.check({"command": cmd("bin/botctl", "fail", "2", ok_codes=[0, 1])})
    assert not ok and seen["expected"] == "exit code 0 or 1"
    assert bot.check({"command": STATUS, "exit_code": 0, "json": "positions.1.id", "equals": 2})[0]
    ok, seen = bot.check({"command": STATUS, "json": "mode", "one_of": ["DRY", "PAPER"]})
    assert not ok and seen["value"] == "LIVE" and seen["exit_code"] == 0
    assert seen["expected"] == "'mode' one of [\"DRY\", \"PAPER\"]"
    ok, seen = bot.check({"command": cmd("bin/botctl", "garbage"), "json": "mode", "equals": "DRY"})
    assert not ok and "did not print JSON" in seen["error"]
    ok, seen = bot.check({"command": {"argv": ["bin/botctl", "sleep"], "timeout": 0.5}})
    assert not ok and seen["error"] == "bin/botctl did not finish within 0.5s (killed)"
    assert seen["expected"] == "command bin/botctl, exit code 0"


def test_a_command_action_runs_with_its_mapped_placeholders(root):
    bot = make_bot(root)
    action = {"command": cmd("bin/botctl", "mode", "{mode}"), "map": {"mode": {"DRY": "dry_run", "LIVE": "live"}}}
    assert bot.do(action, {"mode": "DRY"}) == "ran bin/botctl -> 0"
    assert json.loads((root / "shared" / "state.json").read_text())["mode"] == "dry_run"
    with pytest.raises(BotError, match=r'^\{mode\} of action run bin/botctl: "PAPER" is not in'):
        bot.do(action, {"mode": "PAPER"})
    with pytest.raises(BotError) as info:
        bot.do({"command": cmd("bin/botctl", "fail", "5", "{reason}")}, {"reason": "value-not-to-echo"})
    assert str(info.value) == "bin/botctl exited with code 5: boom: exchange unreachable"
    assert bot.do({"command": cmd("bin/botctl", "fail", "5", ok_codes=[5])}) == "ran bin/botctl -> 5"


# ---------------------------------------------------------------------------- files
def test_a_file_probe_reads_json_or_text(root):
    (root / "shared" / "status.json").write_text(json.dumps({"mode": "DRY", "orders": [1, 2, 3]}))
    (root / "shared" / "VERSION").write_text("2.0.1\n")
    bot = make_bot(root)
    assert bot.probe({"file": {"path": "shared/status.json"}, "json": "mode"}) == "DRY"
    assert bot.probe({"file": {"path": "shared/status.json"}, "json": "orders", "count": True}) == 3
    assert bot.probe({"file": {"path": "shared/VERSION", "format": "text"}}) == "2.0.1"
    assert bot.probe({"file": {"path": str(root / "shared" / "VERSION"), "format": "text"}}) == "2.0.1"
    (root / "shared" / "b07.json").write_text(json.dumps({"mode": "LIVE"}))
    assert bot.probe({"file": {"path": "shared/{bot_name}.json"}, "json": "mode"}) == "LIVE"
    with pytest.raises(BotError) as info:
        bot.probe({"file": {"path": "shared/missing.json"}, "json": "mode"})
    assert str(info.value) == f"file {root}/shared/missing.json is missing"
    (root / "shared" / "torn.json").write_text('{"mode": "DR')
    with pytest.raises(BotError, match=r"torn.json does not hold JSON"):
        bot.probe({"file": {"path": "shared/torn.json"}})


def test_modified_within_tells_a_fresh_status_file_from_a_stale_one(root):
    path = root / "shared" / "status.json"
    path.write_text(json.dumps({"state": "running"}))
    bot = make_bot(root)
    fresh = {"file": {"path": "shared/status.json"}, "modified_within": 60}
    ok, seen = bot.check(fresh)
    assert ok and 0 <= seen["file_age"] < 5
    stale = time.time() - 120
    os.utime(path, (stale, stale))
    ok, seen = bot.check(fresh)
    assert not ok and 119 <= seen["file_age"] < 130
    assert seen["expected"] == "file shared/status.json modified less than 60s ago"
    ok, seen = bot.check(dict(fresh, json="state", equals="running"))
    assert not ok and "value" not in seen  # stale: what it says no longer counts
    os.utime(path, None)
    ok, seen = bot.check(dict(fresh, json="state", equals="running"))
    assert ok and seen["value"] == "running" and seen["file_age"] < 5
    ok, seen = bot.check(dict(fresh, json="state", equals="halted"))
    assert not ok and seen["expected"] == "'state' equal to \"halted\""
    # without modified_within and json: the file is there
    assert bot.check({"file": {"path": "shared/status.json"}})[0]
    ok, seen = bot.check({"file": {"path": "shared/gone.json"}, "modified_within": 60})
    assert not ok and seen["error"] == f"file {root}/shared/gone.json is missing"
    assert seen["expected"] == "file shared/gone.json, modified less than 60s ago"


def test_memoized_file_reads_are_one_moment(root):
    path = root / "shared" / "status.json"
    path.write_text(json.dumps({"state": "running"}))
    bot = make_bot(root)
    probe = {"file": {"path": "shared/status.json"}, "json": "state"}
    with bot.memoized():
        assert bot.check({"file": {"path": "shared/status.json"}, "modified_within": 60})[0]  # stat only
        assert bot.probe(probe) == "running"
        path.write_text(json.dumps({"state": "halted"}))
        assert bot.probe(probe) == "running"
    assert bot.probe(probe) == "halted"


def test_descriptions_name_the_new_kinds():
    assert describe_action({"command": {"argv": ["bin/botctl", "halt", "{reason}"]}}) == "run bin/botctl"
    assert describe_check({"command": {"argv": ["botctl", "ping"]}}) == "command botctl, exit code 0"
    assert describe_check({"command": {"argv": ["botctl"], "ok_codes": [0, 3]}}) == "command botctl, exit code 0 or 3"
    assert describe_check({"command": {"argv": ["botctl"]}, "exit_code": 2, "json": "a", "equals": 1}) == (
        "command botctl, exit code 2, 'a' equal to 1")
    assert describe_check({"file": {"path": "s.json"}, "modified_within": 30, "json": "ok", "equals": True}) == (
        "file s.json, modified less than 30s ago, 'ok' equal to true")


def test_a_controller_side_bot_cannot_run_or_read_on_the_host(root):
    bot = make_bot(root, cls=HostlessBot)
    ok, seen = bot.check({"file": {"path": "shared/state.json"}})
    assert not ok and "reading shared/state.json needs a shell on the bot's host" in seen["error"]
    with pytest.raises(BotError, match="running bin/botctl needs a shell on the bot's host"):
        bot.do({"command": STATUS})
    assert calls(root) == []


# ---------------------------------------------------------------------------- facts, identity, mode
def cli_profile():
    """A family driven by its CLI and its status file: no API (its port answers nothing)."""
    profile = stop_profile()
    profile["family"] = "fakecli"
    status = {"path": "shared/status.json"}
    profile["identity"] = {"command": STATUS, "json": "bot_id"}
    profile["health"] = {"liveness": {"file": status, "modified_within": 5},
                         "readiness": {"file": status, "modified_within": 5, "json": "halted", "equals": False}}
    profile["facts"] = {"version": {"file": status, "json": "version"},
                        "open_positions": {"command": STATUS, "json": "positions", "count": True},
                        "execution_mode": {"command": STATUS, "json": "mode",
                                           "map": {"dry_run": "DRY", "live": "LIVE"}},
                        "paper_trading": {"command": STATUS, "json": "paper"}}
    profile["mode"] = {"set_execution_mode": [{"command": cmd("bin/botctl", "mode", "{mode}"),
                                               "map": {"mode": {"DRY": "dry_run", "LIVE": "live"}}}]}
    halted = {"file": status, "modified_within": 5, "json": "halted", "equals": True}
    profile["kill_switch"]["levels"]["halt"] = {
        "stops_process": False,
        "engage": [_rung("botctl halt", [{"command": cmd("bin/botctl", "halt", "{reason}")}], [halted], 10)],
        "engaged": [halted],
        "release": [_rung("botctl resume", [{"command": cmd("bin/botctl", "resume")}],
                          [dict(halted, equals=False)], 10)]}
    profile["service"]["manager"] = "docker_compose"  # no supervisorctl asked
    return profiles.validate(profile, "fakecli")


@pytest.fixture
def trading(root):
    """The bot's trading loop, a real process rewriting shared/status.json; its process_match."""
    (root / "shared" / "state.json").write_text(json.dumps(dict(STATE, mode="live")))
    marker = f"botops-test-{uuid.uuid4().hex}"
    proc = subprocess.Popen([sys.executable, "-c", LOOP, str(root), marker])
    deadline = time.monotonic() + 20
    while not (root / "shared" / "status.json").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    yield proc, marker
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def test_status_facts_and_identity_from_the_cli_and_the_status_file(root, trading):
    _, marker = trading
    profile = cli_profile()
    bot = make_bot(root, profile, process_match=marker)
    facts = gather(bot, profile, credentials=False)
    assert facts["identity"]["ok"] is True and facts["identity"]["reported"] == "b07"
    assert facts["live"] is True and facts["ready"] is True
    assert (facts["version"], facts["open_positions"], facts["execution_mode"], facts["paper_trading"]) == (
        "1.4.2", 2, "LIVE", False)
    assert not {"version", "open_positions", "execution_mode", "paper_trading"} & set(facts["errors"])
    other = make_bot(root, profile, bot_id="b99", process_match=marker).identity()
    assert other["ok"] is False and other["reported"] == "b07"
    assert "answers as b07 on command bin/botctl: the inventory's bot_root points at another bot" in other["message"]


def test_a_status_fact_from_a_file_is_read_while_the_api_does_not_answer(root):
    (root / "shared" / "status.json").write_text(json.dumps({"version": "3.1.0"}))
    profile = copy.deepcopy(api_profile())  # liveness and readiness through the API, port 1: no answer
    profile["facts"]["version"] = {"file": {"path": "shared/status.json"}, "json": "version"}
    profile["service"]["manager"] = "docker_compose"
    profiles.validate(profile, "fakeapi")
    facts = gather(make_bot(root, profile), profile, credentials=False)
    assert facts["live"] is False and facts["version"] == "3.1.0" and "version" not in facts["errors"]
    assert facts["errors"]["execution_mode"] == "bot is not answering"


def test_the_mode_is_read_and_put_back_through_the_cli(root, trading):
    _, marker = trading
    profile = cli_profile()
    bot = make_bot(root, profile, process_match=marker)
    assert read_mode(bot, profile["facts"]) == ("LIVE", False)
    actions = []
    mode, paper, kept = keep_out_of_live(bot, profile, "DRY", False, actions, timeout=20)
    assert (mode, paper, kept) == ("DRY", False, "execution_mode")
    assert actions == ["ran bin/botctl -> 0"]
    assert json.loads((root / "shared" / "state.json").read_text())["mode"] == "dry_run"


def test_a_kill_switch_level_engaged_by_the_cli_verified_by_the_status_file(root, trading):
    proc, marker = trading
    profile = cli_profile()
    bot = make_bot(root, profile, process_match=marker)
    res = KillSwitch(bot, profile, "halt", reason="exchange incident", who="test").engage()
    assert [(s["name"], s["verified"]) for s in res["steps"]] == [("botctl halt", True)]
    assert res["engaged_by"] == "botctl halt" and res["current_level"] == "halt"
    assert res["actions"] == ["ran bin/botctl -> 0"]
    assert (root / "shared" / "halt.flag").read_text() == "exchange incident"
    assert proc.poll() is None  # halted by its CLI, not stopped
    again = KillSwitch(bot, profile, "halt", reason="exchange incident", who="test").engage()
    assert again["changed"] is False and again["previous_level"] == "halt"
    res = KillSwitch(bot, profile, "halt", who="test").release()
    assert res["released_by"] == "botctl resume" and res["current_level"] is None
    assert not (root / "shared" / "halt.flag").exists()


def test_a_hung_loop_does_not_verify_its_halt(root, trading):
    """The loop frozen (SIGSTOP): the flag is set, but the status file goes stale and says nothing."""
    proc, marker = trading
    profile = cli_profile()
    rung = profile["kill_switch"]["levels"]["halt"]["engage"][0]
    rung["timeout"] = 1.5
    rung["verify"][0]["modified_within"] = 0.5
    profile["kill_switch"]["escalation"] = []
    bot = make_bot(root, profile, process_match=marker)
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        switch = KillSwitch(bot, profile, "halt", reason="r", who="test", escalate=False)
        with pytest.raises(KillSwitchError) as info:
            switch.engage()
        assert "'botctl halt' (verify saw" in str(info.value) and "file_age" in str(info.value)
    finally:
        os.kill(proc.pid, signal.SIGCONT)


# ---------------------------------------------------------------------------- the schema
def _validate(**changes):
    profile = cli_profile()
    for path, value in changes.items():
        node = profile
        *parents, last = path.split(".")
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        node[int(last) if last.isdigit() else last] = value
    return profiles.validate(profile, "fakecli")


def test_a_cli_driven_profile_is_valid():
    profile = _validate()
    assert profile["kill_switch"]["levels"]["halt"]["engage"][0]["do"][0]["command"]["argv"][0] == "bin/botctl"


@pytest.mark.parametrize("change, message", [
    ({"health.liveness": {"command": STATUS, "modified_within": 30}},
     "health.liveness: 'modified_within' needs 'file' (the file whose age it tests)"),
    ({"health.liveness": {"file": {"path": "s.json"}, "exit_code": 0}},
     "health.liveness: 'exit_code' needs 'command' (the program whose exit code it tests)"),
    ({"facts.version": {"command": cmd("bin/botctl", "version", output="text"), "json": "version"}},
     "facts.version.json: 'version' with command.output text: the text is read whole, it has no JSON path"),
    ({"facts.version": {"file": {"path": "VERSION", "format": "text"}, "json": "v"}},
     "facts.version.json: 'v' with file.format text"),
    ({"identity": {"command": {"argv": []}, "json": "bot_id"}}, "identity.command.argv: [] should be non-empty"),
    ({"identity": {"command": {"argv": ["  ", "status"]}, "json": "bot_id"}},
     "identity.command.argv[0]: the program to run is empty"),
    ({"identity": {"command": {"argv": ["botctl"], "output": "yaml"}}},
     "identity.command.output: 'yaml' is not valid (expected one of: json, text)"),
    ({"health.liveness": {"command": cmd("botctl"), "file": {"path": "s.json"}}},
     "health.liveness: expected exactly one of: http, redis, process, command, file"),
    ({"mode.set_execution_mode.0.command.argv": ["bin/botctl", "mode", "DRY"]},
     "mode.set_execution_mode[0].map.mode: the action has no {mode} placeholder"),
    ({"health.liveness.modified_within": 0}, "health.liveness.modified_within"),
    ({"health.liveness": {"command": cmd("botctl", ok_codes=[256])}}, "health.liveness.command.ok_codes[0]"),
])
def test_the_schema_refuses_wrong_commands_and_files(change, message):
    with pytest.raises(ProfileError) as info:
        _validate(**change)
    assert f"fakecli: {message}" in str(info.value)
