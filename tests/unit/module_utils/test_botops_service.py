"""botops_service: supervisord over its socket (config parsing, stop polled until reaped, a start
that supervisord restarts is tolerated, one it gives up on is not) and the window slots (at most
N bots of a host in their window at once, across processes)."""

from __future__ import annotations

import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from ansible_collections.botops.fleet.plugins.module_utils import botops_service
from ansible_collections.botops.fleet.plugins.module_utils.botops_errors import BotError
from ansible_collections.botops.fleet.plugins.module_utils.botops_service import RpcStarting, SupervisorRPC, supervisor_endpoint, supervisor_rpc


class FakeBot:
    def __init__(self, conf):
        self.service_conf = conf


def test_supervisor_rpc_needs_a_supervisor_config_naming_a_unix_socket(tmp_path):
    sock_path = tmp_path / "s.sock"
    conf = tmp_path / "supervisord.conf"
    conf.write_text(f"[supervisorctl]\nserverurl = unix://{sock_path}\n")
    assert supervisor_rpc(FakeBot({"manager": "systemd", "name": "b", "config": str(conf)})) is None
    assert supervisor_rpc(FakeBot({"manager": "supervisor", "name": "b"})) is None
    assert supervisor_rpc(FakeBot({"manager": "supervisor", "name": "b", "config": str(conf)})) is None  # no socket
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(sock_path))
    try:
        rpc = supervisor_rpc(FakeBot({"manager": "supervisor", "name": "b07", "config": str(conf)}))
        assert isinstance(rpc, SupervisorRPC) and rpc.name == "b07"
        conf.write_text("[supervisorctl]\nserverurl = http://127.0.0.1:9001\n")
        assert supervisor_rpc(FakeBot({"manager": "supervisor", "name": "b", "config": str(conf)})) is None
    finally:
        server.close()


def test_supervisor_endpoint_is_where_supervisorctl_would_talk(tmp_path):
    conf = tmp_path / "supervisord.conf"
    here = str(tmp_path)
    cases = [
        # [supervisorctl] serverurl wins over [unix_http_server] file; %% is a percent sign
        ("[unix_http_server]\nfile = /run/sup.sock\n[supervisorctl]\nserverurl = unix:///run/sup%%x.sock\n",
         ("/run/sup%x.sock", None, None)),
        # %(here)s is the config's directory
        ("[supervisorctl]\nserverurl = unix://%(here)s/s.sock\n", (f"{here}/s.sock", None, None)),
        # no serverurl: the server's own socket, a relative path taken from the config's directory
        ("[unix_http_server]\nfile = sup.sock\n", (f"{here}/sup.sock", None, None)),
        # credentials go with it (supervisorctl sends them as basic auth)
        ("[unix_http_server]\nfile = /run/s.sock\nusername = u\npassword = p\n"
         "[supervisorctl]\nserverurl = unix:///run/s.sock\nusername = u\npassword = p\n", ("/run/s.sock", "u", "p")),
        # over HTTP, with an expansion only supervisorctl knows, or with no socket at all: left to supervisorctl
        ("[inet_http_server]\nport = 127.0.0.1:9001\n[supervisorctl]\nserverurl = http://127.0.0.1:9001\n", None),
        ("[supervisorctl]\nserverurl = unix:///run/%(ENV_USER)s.sock\n", None),
        ("[supervisord]\nlogfile = /tmp/x.log\n", None),
        ("not an ini file\n", None),
    ]
    for text, expected in cases:
        conf.write_text(text)
        assert supervisor_endpoint(str(conf)) == expected, text
    assert supervisor_endpoint(str(tmp_path / "missing.conf")) is None


class FakeRPC:
    name = "b07"

    def __init__(self, states):
        self.states = list(states)
        self.started = 0

    def start(self):
        self.started += 1

    def info(self):
        state = self.states.pop(0) if len(self.states) > 1 else self.states[0]
        return {"statename": state, "spawnerr": "exit status 2" if state in ("FATAL", "BACKOFF") else ""}


def test_a_start_supervisord_restarts_is_tolerated(monkeypatch):
    monkeypatch.setattr(RpcStarting, "EXITED_GRACE", 0.2)
    starting = RpcStarting(FakeRPC(["STARTING", "EXITED", "EXITED", "BACKOFF", "RUNNING"]))
    for _ in range(4):
        starting.check(every=0)
    assert "BACKOFF" in starting.tolerated
    starting.wait(5)


def test_a_start_supervisord_gave_up_on_fails_naming_why(monkeypatch):
    monkeypatch.setattr(RpcStarting, "EXITED_GRACE", 0.1)
    with pytest.raises(BotError, match="supervisord reports b07 FATAL: exit status 2"):
        RpcStarting(FakeRPC(["FATAL"])).check(every=0)
    with pytest.raises(BotError, match="supervisord reports b07 EXITED"):
        RpcStarting(FakeRPC(["EXITED"])).wait(5)


def test_stop_polls_until_supervisord_reaped_the_process(monkeypatch):
    calls = []
    rpc = SupervisorRPC(("/nonexistent.sock", None, None), "b07")
    states = iter(["STOPPING", "STOPPING", "STOPPED"])
    monkeypatch.setattr(rpc, "_call", lambda method, *a: calls.append((method, a)) or (
        {"statename": next(states)} if method == "getProcessInfo" else True))
    monkeypatch.setattr(botops_service, "POLL_INTERVAL", 0.001)
    rpc.stop(timeout=5)
    assert calls[0] == ("stopProcess", ("b07", False)) and [c[0] for c in calls[1:]] == ["getProcessInfo"] * 3


# ---------------------------------------------------------------------------------- window slots
HOLDER = """
import sys
sys.path.insert(0, sys.argv[3])
from ansible_collections.botops.fleet.plugins.module_utils.botops_service import WindowSlots
WindowSlots(int(sys.argv[2]), sys.argv[1]).take(wait=5)
print("taken", flush=True)
sys.stdin.read()  # holds the slot until its stdin closes, or it is killed
"""


def _holders(directory, count, n):
    """n processes that each took a slot of `directory` (count slots) and hold it."""
    module_utils = str(Path(botops_service.__file__).parents[5])  # the directory holding ansible_collections/
    procs = []
    for _ in range(n):
        proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(directory), str(count), module_utils],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        assert proc.stdout.readline().strip() == "taken", "a holder did not get its slot"
    return procs


def test_window_slots_let_at_most_count_windows_in_and_a_killed_holder_frees_its_slot(tmp_path):
    directory = tmp_path / "windows"
    procs = _holders(directory, 2, 2)
    try:
        third = botops_service.WindowSlots(2, str(directory))
        with pytest.raises(BotError, match=r"no window slot free on this host within 0.2s: 2 other window"):
            third.take(wait=0.2)
        assert not third.held
        procs[0].kill()  # a killed call: the kernel drops its flock
        procs[0].wait(10)
        assert third.take(wait=10) < 10
        assert third.held
        third.give()
        assert not third.held
    finally:
        for proc in procs:
            proc.stdin.close()
            proc.wait(10)


def test_a_slot_given_back_is_free_at_once(tmp_path):
    first = botops_service.WindowSlots(1, str(tmp_path / "w"))
    second = botops_service.WindowSlots(1, str(tmp_path / "w"))
    first.take(wait=1)
    with pytest.raises(BotError, match="no window slot free"):
        second.take(wait=0)
    first.give()
    assert second.take(wait=0) == 0.0
    second.give()


def test_slot_files_are_shared_by_the_hosts_users_and_never_reached_through_a_symlink(tmp_path):
    directory = tmp_path / "w"
    slots = botops_service.WindowSlots(1, str(directory))
    slots.take(wait=1)
    slots.give()
    assert stat.S_IMODE(directory.stat().st_mode) == 0o1777
    assert stat.S_IMODE((directory / "slot0").stat().st_mode) == 0o644

    target = tmp_path / "elsewhere"
    target.mkdir()
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(BotError, match=r"link is not a directory \(a symlink or a file is in its place\)"):
        botops_service.WindowSlots(1, str(link)).take(wait=0)
    assert list(target.iterdir()) == []


def test_window_slots_must_be_at_least_one():
    with pytest.raises(BotError, match="window_slots must be at least 1, got 0"):
        botops_service.WindowSlots(0)


def test_a_start_waits_for_running_and_fails_as_supervisorctl_does_when_the_program_exits_early(monkeypatch):
    """The fleet's service gate starts without waiting in supervisord (its event loop spins on a
    waiting call) and polls: RUNNING is a start; leaving STARTING for anything else (BACKOFF: it
    exited before its startsecs) fails, as `supervisorctl start` and stopProcess(wait) did."""
    monkeypatch.setattr(botops_service, "POLL_INTERVAL", 0)
    rpc = SupervisorRPC.__new__(SupervisorRPC)
    rpc.name = "pack01"
    states = ["STARTING", "STARTING", "RUNNING"]
    monkeypatch.setattr(rpc, "info", lambda: {"statename": states.pop(0) if len(states) > 1 else states[0]})
    rpc.wait_running(5)
    assert states == ["RUNNING"]
    states[:] = ["STARTING", "BACKOFF"]
    monkeypatch.setattr(rpc, "info", lambda: {"statename": states.pop(0) if len(states) > 1 else states[0],
                                              "spawnerr": "Exited too quickly"})
    with pytest.raises(BotError, match="supervisord start pack01: it is BACKOFF: Exited too quickly, not running"):
        rpc.wait_running(5)
