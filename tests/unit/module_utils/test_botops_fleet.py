"""botops_fleet: what the bots of one fleet run share (process table, service gate, Redis, scrub)."""

from __future__ import annotations

import http.server
import os
import socketserver
import subprocess
import sys
import threading
import time
import xmlrpc.client
from pathlib import Path

import pytest

from ansible_collections.botops.fleet.plugins.module_utils import botops_fleet
from ansible_collections.botops.fleet.plugins.module_utils.botops_bot import Bot
from ansible_collections.botops.fleet.plugins.module_utils.botops_errors import BotError
from ansible_collections.botops.fleet.plugins.module_utils.botops_fleet import (FleetRun, ProcessTable, RedisClient, RedisReplyError, ServiceGate,
                                               scrub)
from ansible_collections.botops.fleet.plugins.module_utils.botops_service import UnixSocketTransport
from ansible_collections.botops.fleet.plugins.module_utils.botops_kill_switch_record import AuditIndex, append_audit, read_audits

PROFILE = {
    "family": "fake",
    "http": {"ports": {"api": 1}, "timeout": 1.0},
    "auth": {"type": "none"},
    "service": {"manager": "supervisor", "name": "fake", "process_match": "no-such-process"},
}


def bot(name, service_name="pack01", config="/tmp/none.conf", manager="supervisor"):
    return Bot(PROFILE, {"name": name, "root": f"/tmp/{name}", "service": {"name": service_name, "config": config,
                                                                           "manager": manager}})


# ------------------------------------------------------------------------------ process table
def test_process_table_scans_once_for_callers_that_asked_before_the_scan(monkeypatch):
    scans = []

    def fake_scan(exclude=()):
        scans.append(time.monotonic())
        time.sleep(0.05)
        return [(101, "python -m refbot --fleet-file /x/pack01.json"), (102, "python -m refbot --fleet-file /x/pack02.json")]

    monkeypatch.setattr(botops_fleet, "scan_processes", fake_scan)
    table = ProcessTable()
    results = []
    threads = [threading.Thread(target=lambda: results.append(table.pids(r"pack01\.json$"))) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [[101]] * 20
    assert len(scans) <= 2, "a wave of callers costs at most two scans"
    # a caller that asks after the last scan began gets a new scan: never a stale answer
    before = len(scans)
    assert table.pids(r"pack02\.json$") == [102]
    assert len(scans) == before + 1


def test_process_table_scans_at_most_once_per_gap_for_callers_that_keep_arriving(monkeypatch):
    scans = []

    def fake_scan(exclude=()):
        scans.append(time.monotonic())
        return [(101, "python -m refbot --fleet-file /x/pack01.json")]

    monkeypatch.setattr(botops_fleet, "scan_processes", fake_scan)
    table = ProcessTable(gap=0.1)
    results, threads = [], []
    started = time.monotonic()
    for _ in range(40):  # one caller every 10 ms for 0.4 s: without the gap, a scan each
        asked = time.monotonic()
        t = threading.Thread(target=lambda asked=asked: results.append((asked, table.pids(r"pack01\.json$"))))
        t.start()
        threads.append(t)
        time.sleep(0.01)
    for t in threads:
        t.join()
    assert [pids for _, pids in results] == [[101]] * 40
    assert len(scans) <= (time.monotonic() - started) / 0.1 + 2
    assert all(b - a >= 0.099 for a, b in zip(scans, scans[1:])), "scans begin at least the gap apart"
    # freshness is kept: every caller got a scan that began after it asked
    assert all(any(scan >= asked for scan in scans) for asked, _ in results)


def test_process_table_finds_this_test_process_parent_but_not_itself():
    table = ProcessTable()
    me = os.getpid()
    assert me not in table.pids(r".")
    assert os.getppid() in table.pids(r".") or os.getppid() == 1


# ------------------------------------------------------------------------------ service gate
def test_bots_behind_one_service_share_one_operation(monkeypatch):
    gate = ServiceGate()
    done = []

    def execute(b, op):
        time.sleep(0.1)
        done.append((b.name, op))
        return f"{op} ok"

    monkeypatch.setattr(gate, "_execute", execute)
    bots = [bot(f"b{i}") for i in range(10)]
    out = []
    threads = [threading.Thread(target=lambda b=b: out.append(gate.run(b, "restart"))) for b in bots]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(done) == 1 and out == ["restart ok"] * 10
    # another service is another operation; another op on the same service too
    gate.run(bot("c1", service_name="pack02"), "restart")
    gate.run(bots[0], "stop")
    assert len(done) == 3


def test_a_bot_whose_last_action_came_after_the_operation_started_gets_its_own(monkeypatch):
    gate = ServiceGate()
    done = []
    monkeypatch.setattr(gate, "_execute", lambda b, op: done.append(op) or "ok")
    first, second = bot("b1"), bot("b2")
    gate.run(first, "restart")
    second.last_action_at = time.monotonic()  # e.g. it just edited its config: an earlier restart does not count
    gate.run(second, "restart")
    assert done == ["restart", "restart"]


def test_a_failed_shared_operation_fails_every_bot_that_joined(monkeypatch):
    gate = ServiceGate()
    calls = []

    def execute(b, op):
        calls.append(op)
        time.sleep(0.1)
        raise BotError("supervisorctl stop pack01 failed: no such process")

    monkeypatch.setattr(gate, "_execute", execute)
    errors = []

    def one(b):
        try:
            gate.run(b, "stop")
        except BotError as exc:
            errors.append(str(exc))

    threads = [threading.Thread(target=one, args=(bot(f"b{i}"),)) for i in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(errors) == 5 and all("no such process" in e for e in errors)


def test_without_a_supervisor_socket_the_gate_runs_the_service_command(tmp_path):
    calls = []
    b = Bot(PROFILE, {"name": "b1", "root": str(tmp_path), "service": {"manager": "systemd", "name": "bot-b1"}},
            run_command=lambda cmd: calls.append(cmd) or (0, "", ""))
    FleetRun().attach(b)
    b.service("restart")
    assert calls == [["systemctl", "restart", "bot-b1"]]


def test_supervisor_over_xml_rpc(tmp_path):
    """A fake supervisord on a unix socket: stop/start/restart as supervisorctl does them."""
    from xmlrpc.server import SimpleXMLRPCDispatcher, SimpleXMLRPCRequestHandler
    import xmlrpc.client

    state = {"pack01": "RUNNING"}
    calls = []

    class Supervisor:
        def stopProcess(self, name, wait):
            calls.append(("stop", name))
            if name not in state:
                raise xmlrpc.client.Fault(10, f"BAD_NAME: {name}")
            if state[name] != "RUNNING":
                raise xmlrpc.client.Fault(70, f"NOT_RUNNING: {name}")
            state[name] = "STOPPED"
            return True

        def startProcess(self, name, wait):
            calls.append(("start", name))
            if state[name] == "RUNNING":
                raise xmlrpc.client.Fault(60, f"ALREADY_STARTED: {name}")
            state[name] = "RUNNING"
            return True

        def getProcessInfo(self, name):
            return {"name": name, "statename": state[name]}

    class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer, SimpleXMLRPCDispatcher):
        daemon_threads = True
        logRequests = False

        def __init__(self, path):
            SimpleXMLRPCDispatcher.__init__(self, allow_none=True)
            socketserver.UnixStreamServer.__init__(self, path, Handler)

    class Handler(SimpleXMLRPCRequestHandler):
        disable_nagle_algorithm = False  # a unix socket has no TCP options

        def address_string(self):
            return "unix"

        def log_message(self, *args):
            pass

    class Root:
        supervisor = Supervisor()

    sock = str(tmp_path / "s.sock")
    server = Server(sock)
    server.register_instance(Root(), allow_dotted_names=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    conf = tmp_path / "supervisord.conf"
    conf.write_text(f"[unix_http_server]\nfile = {sock}\n")
    try:
        run = FleetRun()
        b1 = run.attach(bot("b1", config=str(conf)))
        b2 = run.attach(bot("b2", config=str(conf)))
        assert b1.service_state() == "RUNNING"
        b1.service("stop")
        assert b1.service_state() == "STOPPED"
        b2.last_action_at = time.monotonic()
        assert "not running" in b2.service("stop")  # its own call: NOT_RUNNING is fine, as with supervisorctl
        b1.last_action_at = time.monotonic()
        b1.service("restart")
        assert state["pack01"] == "RUNNING"
        b2.last_action_at = time.monotonic()
        assert "already started" in b2.service("start")
        ghost = run.attach(bot("b3", service_name="nope", config=str(conf)))
        with pytest.raises(BotError, match="supervisord stopProcess nope: BAD_NAME"):
            ghost.service("stop")
    finally:
        server.shutdown()
        server.server_close()


SLOW_STOP = """\
import signal, sys, time
def stop(signum, frame):
    time.sleep(1.0)  # a bot that closes its positions before it exits
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
while True:
    time.sleep(0.05)
"""


@pytest.fixture
def real_supervisord(tmp_path):
    """A real supervisord with one program (pack01) whose process takes a second to stop."""
    script = tmp_path / "slow_stop.py"
    script.write_text(SLOW_STOP)
    conf = tmp_path / "supervisord.conf"
    conf.write_text(f"""[unix_http_server]
file = {tmp_path}/s.sock
[supervisord]
logfile = {tmp_path}/supervisord.log
pidfile = {tmp_path}/supervisord.pid
childlogdir = {tmp_path}
nodaemon = true
[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface
[supervisorctl]
serverurl = unix://{tmp_path}/s.sock
[program:pack01]
command = {sys.executable} {script}
startsecs = 1
stopwaitsecs = 10
""")
    proc = subprocess.Popen([str(Path(sys.executable).with_name("supervisord")), "-c", str(conf)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rpc = xmlrpc.client.ServerProxy("http://localhost", transport=UnixSocketTransport(str(tmp_path / "s.sock"), 10))
    deadline = time.monotonic() + 20
    while True:
        try:
            if rpc.supervisor.getProcessInfo("pack01")["statename"] == "RUNNING":
                break
        except OSError:
            pass
        assert time.monotonic() < deadline, "supervisord did not start pack01"
        time.sleep(0.05)
    try:
        yield conf, rpc
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_a_start_asked_in_the_middle_of_a_restart_waits_for_it(real_supervisord):
    """A bot that sees its process gone while another bot's restart is stopping it asks a start:
    the start waits for the restart. Run together, supervisord refused the start (the process was
    still stopping), or started it under the restart's stop, which then waited minutes for a
    stopped state that never came (a 1000-bot release hung on one pack for 300 s)."""
    conf, rpc = real_supervisord
    first_pid = rpc.supervisor.getProcessInfo("pack01")["pid"]
    run = FleetRun()
    restarter = run.attach(bot("b1", config=str(conf)))
    starter = run.attach(bot("b2", config=str(conf)))
    outcome = {}

    def restart():
        try:
            outcome["restart"] = restarter.service("restart")
        except BotError as exc:
            outcome["restart"] = exc

    thread = threading.Thread(target=restart)
    thread.start()
    deadline = time.monotonic() + 10
    while rpc.supervisor.getProcessInfo("pack01")["statename"] != "STOPPING":
        assert time.monotonic() < deadline, "the restart never began its stop"
        time.sleep(0.01)
    starter.last_action_at = time.monotonic()
    started = starter.service("start")  # raised ABNORMAL_TERMINATION before the fix
    thread.join(timeout=60)
    assert not thread.is_alive()
    assert outcome["restart"] == "pack01: stopped\npack01: started"
    assert started == "pack01: ERROR (already started)"
    info = rpc.supervisor.getProcessInfo("pack01")
    assert info["statename"] == "RUNNING" and info["pid"] not in (0, first_pid)
    assert run.services.done == [(ServiceGate.key(restarter), "restart"), (ServiceGate.key(starter), "start")]


# ------------------------------------------------------------------------------ Redis
class _FakeRedis(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self):
        self.data = {0: {}, 3: {}}
        self.password = "s3cret-pw"
        super().__init__(("127.0.0.1", 0), _RedisHandler)


class _RedisHandler(socketserver.StreamRequestHandler):
    def read_command(self):
        line = self.rfile.readline()
        if not line:
            return None
        n = int(line[1:])
        args = []
        for _ in range(n):
            size = int(self.rfile.readline()[1:])
            args.append(self.rfile.read(size + 2)[:-2].decode())
        return args

    def handle(self):
        db, authed = 0, False
        while True:
            args = self.read_command()
            if args is None:
                return
            cmd = args[0].upper()
            if cmd == "AUTH":
                authed = args[-1] == self.server.password
                self.wfile.write(b"+OK\r\n" if authed else b"-WRONGPASS invalid password\r\n")
            elif not authed:
                self.wfile.write(b"-NOAUTH Authentication required.\r\n")
            elif cmd == "SELECT":
                db = int(args[1])
                self.wfile.write(b"+OK\r\n")
            elif cmd == "GET":
                value = self.server.data[db].get(args[1])
                self.wfile.write(b"$-1\r\n" if value is None else b"$%d\r\n%s\r\n" % (len(value), value.encode()))
            elif cmd == "SET":
                self.server.data[db][args[1]] = args[2]
                self.wfile.write(b"+OK\r\n")


@pytest.fixture
def fake_redis():
    server = _FakeRedis()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def test_redis_client_auth_select_get_set(fake_redis):
    port = fake_redis.server_address[1]
    client = RedisClient(timeout=1)
    url = f"redis://:s3cret-pw@127.0.0.1:{port}/3"
    assert client.command(url, "GET", "exec_mode") is None
    assert client.command(url, "SET", "exec_mode", '{"mode": "DRY"}') == "OK"
    assert client.command(url, "GET", "exec_mode") == b'{"mode": "DRY"}'
    assert fake_redis.data[3] == {"exec_mode": '{"mode": "DRY"}'} and fake_redis.data[0] == {}
    with pytest.raises(RedisReplyError, match="WRONGPASS"):
        client.command(f"redis://:wrong@127.0.0.1:{port}/3", "GET", "x")


def test_bot_uses_the_shared_redis_client_with_the_same_answers(fake_redis):
    port = fake_redis.server_address[1]
    b = Bot(PROFILE, {"name": "b1", "root": "/tmp/b1", "redis_url": f"redis://:s3cret-pw@127.0.0.1:{port}/3"},
            run_command=lambda cmd: pytest.fail(f"no redis-cli process expected: {cmd}"))
    FleetRun().attach(b)
    assert b.redis_get_json("exec_mode") is None
    b.redis_set_json("exec_mode", {"mode": "DRY", "emergency_stop": True})
    assert b.redis_get_json("exec_mode") == {"mode": "DRY", "emergency_stop": True}
    assert b.check({"redis": {"key": "exec_mode"}, "json": "emergency_stop", "equals": True})[0]
    dead = FleetRun().attach(Bot(PROFILE, {"name": "b2", "root": "/tmp/b2", "redis_url": "redis://127.0.0.1:1/0"}))
    with pytest.raises(BotError, match="Redis GET failed"):
        dead.redis_get_json("exec_mode")


# ------------------------------------------------------------------------------ fail fast
@pytest.fixture
def silent_port():
    """A port that accepts connections and never answers."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    yield listener.getsockname()[1]
    listener.close()


def test_after_one_timeout_a_bot_fails_fast(silent_port, tmp_path):
    profile = dict(PROFILE, http={"ports": {"api": silent_port}, "timeout": 0.6})
    b = FleetRun(fail_fast=0.1).attach(Bot(profile, {"name": "b1", "root": str(tmp_path)}))
    started = time.monotonic()
    with pytest.raises(BotError, match="timed out"):
        b.request({"path": "/health"})
    first = time.monotonic() - started
    started = time.monotonic()
    with pytest.raises(BotError, match="timed out"):
        b.request({"method": "POST", "path": "/kill"})
    second = time.monotonic() - started
    assert first >= 0.5 and second < 0.4 and b.unresponsive


# ------------------------------------------------------------------------------ requests per host
class _CountingHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - stdlib name
        server = self.server
        with server.lock:
            server.in_flight += 1
            server.most = max(server.most, server.in_flight)
        time.sleep(0.05)
        with server.lock:
            server.in_flight -= 1
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def counting_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _CountingHandler)
    server.lock, server.in_flight, server.most = threading.Lock(), 0, 0
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_at_most_per_host_requests_in_flight_to_one_host(counting_server, tmp_path):
    profile = dict(PROFILE, http={"ports": {"api": counting_server.server_address[1]}, "timeout": 5.0})
    run = FleetRun(per_host=3)
    bots = [run.attach(Bot(profile, {"name": f"b{i}", "root": str(tmp_path)})) for i in range(12)]
    answers = []
    threads = [threading.Thread(target=lambda b=b: answers.append(b.request({"path": "/health"}))) for b in bots]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert answers == [(200, {"ok": True})] * 12
    assert counting_server.most == 3

    unbounded = [Bot(profile, {"name": f"u{i}", "root": str(tmp_path)}) for i in range(12)]  # no fleet run
    counting_server.most = 0
    threads = [threading.Thread(target=lambda b=b: b.request({"path": "/health"})) for b in unbounded]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert counting_server.most > 3, "the bound is the fleet run's, a lone Bot has none"


def test_a_bot_that_timed_out_takes_no_slot_of_its_host(silent_port, tmp_path):
    profile = dict(PROFILE, http={"ports": {"api": silent_port}, "timeout": 0.3})
    run = FleetRun(fail_fast=5.0, per_host=1)
    dead = run.attach(Bot(profile, {"name": "dead", "root": str(tmp_path)}))
    with pytest.raises(BotError, match="timed out"):
        dead.request({"path": "/health"})
    assert dead.unresponsive
    slot = run.http_slots("127.0.0.1")
    assert slot.acquire(timeout=0), "the timed-out request gave its slot back"
    try:  # the only slot is taken: the unresponsive bot's next request does not wait for it
        started = time.monotonic()
        with pytest.raises(BotError, match="timed out"):
            dead.request({"path": "/health"})
        assert time.monotonic() - started < 1.0
    finally:
        slot.release()


# ------------------------------------------------------------------------------ audit index, scrub
def test_audit_index_reads_a_shared_log_once_and_sees_what_the_run_appends(tmp_path, monkeypatch):
    log = str(tmp_path / "audit.log")
    append_audit(log, {"bot": "b1", "time": "2026-01-01T00:00:00.000Z", "action": "engage", "level": "halt",
                       "outcome": "engaged"})
    append_audit(log, {"bot": "b2", "time": "2026-01-01T00:00:01.000Z", "action": "engage", "level": "pause",
                       "outcome": "engaged"})
    index = AuditIndex([log])
    opened = []
    real_open = open

    def counting_open(path, *args, **kwargs):
        opened.append(path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", counting_open)
    assert [r["level"] for r in read_audits([log], "b1", index)] == ["halt"]
    assert [r["level"] for r in read_audits([log], "b2", index)] == ["pause"]
    assert opened.count(log) == 1
    index.add(log, {"bot": "b1", "time": "2026-01-01T00:00:02.000Z", "action": "release", "level": "halt",
                    "outcome": "released"})
    assert [r["outcome"] for r in read_audits([log], "b1", index)] == ["engaged", "released"]
    assert read_audits([log], "b9", index) == []


def test_scrub_is_the_no_log_rule_once_per_distinct_string():
    secrets = ["tok-123456789"]
    value = {"msg": "auth tok-123456789 refused", "token": "tok-123456789", "n": 3, "ok": True,
             "list": ["tok-123456789-x", "plain"] * 3, "nested": {"why": "tok-123456789"}}
    assert scrub(value, secrets) == {"msg": "auth ******** refused", "token": "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER",
                                     "n": 3, "ok": True, "list": ["********-x", "plain"] * 3,
                                     "nested": {"why": "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"}}


def test_scrub_keeps_keys_as_ansible_does():
    """A short secret masks values, never the keys a result is read by (Ansible's remove_values)."""
    from ansible.module_utils.common.parameters import remove_values

    value = {"bots": {"bot01": {"msg": "kill switch engaged on bot 'bot01'", "level": "halt"}}}
    assert scrub(value, ["ot"]) == remove_values(value, {"ot"})
    assert list(scrub(value, ["ot"])["bots"]) == ["bot01"]


def test_a_bot_that_starts_late_joins_an_operation_begun_before_it_existed(monkeypatch):
    """Threads start bots one after the other: the last bot of a process must not restart it again."""
    run = FleetRun()
    done = []
    monkeypatch.setattr(run.services, "_execute", lambda b, op: done.append(op) or "ok")
    early = run.attach(bot("b1"))
    early.service("restart")
    late = run.attach(bot("b2"))  # created after the restart began
    late.service("restart")
    assert done == ["restart"]
    late.last_action_at = time.monotonic()  # but after an action of its own, it needs its own
    late.service("restart")
    assert done == ["restart", "restart"]
