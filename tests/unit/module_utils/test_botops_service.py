"""botops_service: supervisord over its socket (config parsing, stop polled until reaped, a start
that supervisord restarts is tolerated, one it gives up on is not)."""

from __future__ import annotations

import socket

import pytest
from ansible.module_utils import botops_service
from ansible.module_utils.botops_bot import BotError
from ansible.module_utils.botops_service import RpcStarting, SupervisorRPC, supervisor_rpc


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
    rpc = SupervisorRPC("/nonexistent.sock", "b07")
    states = iter(["STOPPING", "STOPPING", "STOPPED"])
    monkeypatch.setattr(rpc, "_call", lambda method, *a: calls.append((method, a)) or (
        {"statename": next(states)} if method == "getProcessInfo" else True))
    monkeypatch.setattr(botops_service, "POLL_INTERVAL", 0.001)
    rpc.stop(timeout=5)
    assert calls[0] == ("stopProcess", ("b07", False)) and [c[0] for c in calls[1:]] == ["getProcessInfo"] * 3
