"""A fake trading bot for module unit tests: a real HTTP server plus a simulated process.

The HTTP side answers the routes of `api_profile()`; the process side (pids, service manager,
signals) is patched into the Bot client so that no real process or supervisor is involved.
A stopped bot drops every connection, as a dead process would.
"""

from __future__ import annotations

import copy
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ansible_collections.botops.fleet.plugins.module_utils import botops_bot
from botops.profiles import validate

TOKEN = "fake-token-9f2c"


def _rung(name, do, verify, timeout=None):
    rung = {"name": name, "do": do, "verify": verify}
    if timeout is not None:
        rung["timeout"] = timeout
    return rung


def _post(path, body=None):
    req = {"method": "POST", "path": path}
    if body is not None:
        req["body"] = body
    return {"http": req}


MAINT_ON = {"http": {"path": "/status"}, "json": "maintenance", "equals": True}
MAINT_OFF = {"http": {"path": "/status"}, "json": "maintenance", "equals": False}
BREAKER_OPEN = {"http": {"path": "/status"}, "json": "breaker", "equals": "open"}
BREAKER_CLOSED = {"http": {"path": "/status"}, "json": "breaker", "equals": "closed"}
ESCALATION = [
    _rung("service stop", [{"service": "stop"}], [{"process": "absent"}], 0.3),
    _rung("SIGTERM", [{"signal": "TERM"}], [{"process": "absent"}], 0.3),
    _rung("SIGKILL", [{"signal": "KILL"}], [{"process": "absent"}], 0.3),
]


def api_profile():
    """A family with an API: pause = maintenance, halt and flatten share one circuit breaker."""
    reset = [_rung("breaker reset", [_post("/breaker/reset")], [BREAKER_CLOSED])]
    profile = {
        "family": "fakeapi",
        "description": "fake bot for unit tests",
        "http": {"ports": {"api": 1}, "timeout": 1.0},
        "auth": {"type": "bearer", "methods": ["POST"]},
        "health": {
            "liveness": {"http": {"path": "/live"}},
            "readiness": {"http": {"path": "/ready"}, "status": 200},
            "details": {"path": "/health"},
        },
        "facts": {
            "version": {"http": {"path": "/status"}, "json": "version"},
            "open_positions": {"http": {"path": "/status"}, "json": "positions"},
            "open_orders": {"http": {"path": "/status"}, "json": "orders"},
            "execution_mode": {"http": {"path": "/status"}, "json": "mode"},
            "paper_trading": {"http": {"path": "/status"}, "json": "paper"},
        },
        "kill_switch": {
            "levels": {
                "pause": {
                    "engage": [_rung("maintenance", [_post("/maintenance/on")], [MAINT_ON])],
                    "engaged": [MAINT_ON],
                    "release": [_rung("maintenance off", [_post("/maintenance/off")], [MAINT_OFF])],
                },
                "halt": {
                    "engage": [_rung("breaker", [_post("/breaker", {"reason": "{reason}"})], [BREAKER_OPEN])],
                    "engaged": [BREAKER_OPEN],
                    "release": reset,
                },
                "flatten": {
                    "engage": [_rung("breaker and close all", [_post("/breaker", {"reason": "{reason}"}),
                                                                _post("/close-all")],
                                     [BREAKER_OPEN, {"http": {"path": "/status"}, "json": "positions", "equals": 0}])],
                    "engaged": [BREAKER_OPEN],
                    "release": reset,
                },
            },
            "escalation": ESCALATION,
        },
        "service": {"manager": "supervisor", "name": "fake", "process_match": "fakebot-no-such-process"},
        "database": {"engine": "none"},
        "backup": {},
        "mode": {
            "paper_only": False,
            "set_execution_mode": [
                {"config_file": {"path": "config.json", "key": "execution_mode", "value": "{mode}"}},
                {"service": "restart"},
            ],
            "set_paper": [_post("/paper", {"enabled": "{paper}"})],
        },
        "positions": {
            "list": {"http": {"path": "/positions"}, "json": ""},
            "cancel_orders": [_post("/orders/cancel")],
            "close_all": [_post("/close-all")],
        },
    }
    return validate(profile, "fakeapi")


def identity_profile():
    """api_profile() with the bot's id in its status answer and an authenticated check (GET /admin/breaker)."""
    profile = api_profile()
    profile["identity"] = {"http": {"path": "/status"}, "json": "bot_id"}
    profile["auth"]["check"] = {"http": {"method": "GET", "path": "/admin/breaker"}, "status": 200}
    return validate(profile, "fakeapi")


def stop_profile():
    """A family without a kill-switch API: every level stops the process (like mojorust)."""
    profile = api_profile()
    profile["family"] = "fakestop"
    level = {"stops_process": True, "engage": [], "engaged": [{"process": "absent"}],
             "release": [_rung("service start", [{"service": "start"}], [{"process": "present"}], 1)]}
    profile["kill_switch"]["levels"] = {name: copy.deepcopy(level) for name in ("pause", "halt", "flatten")}
    profile["positions"] = {}
    return validate(profile, "fakestop")


class FakeBot:
    """State of the fake bot; the HTTP handler and the patched process functions act on it."""

    def __init__(self, root, name="b07"):
        self.name = name
        self.root = str(root)
        self.running = True
        self.ready = True
        self.maintenance = False
        self.breaker = "closed"
        self.positions = 2
        self.orders = 3
        self.mode = "DRY"
        self.paper = True
        self.reports_as = name  # the id its status answer reports
        self.failing = set()  # paths answering 503
        self.ignore = set()  # "stop", "TERM", "KILL", "cancel", "config" are ignored
        self.calls = []
        self.lock = threading.Lock()
        self.server = None
        with open(os.path.join(self.root, "config.json"), "w") as f:
            json.dump({"execution_mode": "DRY"}, f)

    # ---------------------------------------------------------------- process side
    def pids(self):
        return [4242] if self.running else []

    def service(self, op):
        self.calls.append(("service", op))
        if op in ("stop", "restart") and "stop" not in self.ignore:
            self.running = False
        if op in ("start", "restart") and not self.running:
            self._boot()

    def _boot(self):
        self.running = True
        self.maintenance = False  # in memory: a restart clears it; the breaker is persisted
        if "config" not in self.ignore:
            with open(os.path.join(self.root, "config.json")) as f:
                self.mode = json.load(f)["execution_mode"]

    def signal(self, name):
        self.calls.append(("signal", name))
        pids = self.pids()
        if name not in self.ignore:
            self.running = False
        return pids

    # ---------------------------------------------------------------- HTTP side
    def status(self):
        return {"bot_id": self.reports_as, "version": "1.0.0", "maintenance": self.maintenance, "breaker": self.breaker,
                "positions": self.positions, "orders": self.orders, "mode": self.mode, "paper": self.paper}

    def get(self, path, auth=None):
        if path == "/live":
            return 200, {"status": "ok"}
        if path == "/ready":
            # a stopped bot is never ready, whatever it answered before the stop
            return (200, {"ready": True}) if self.ready and self.running else (503, {"ready": False, "failing": {"database": "down"}})
        if path == "/health":
            return 200, {"status": "healthy" if self.ready else "unhealthy", "components": {"database": "ok"}}
        if path == "/status":
            return 200, self.status()
        if path == "/positions":
            return 200, [{"id": i + 1} for i in range(self.positions)]
        if path == "/admin/breaker":  # the admin's read of the breaker: needs the token, changes nothing
            self.calls.append(("GET", path, None))
            if auth != f"Bearer {TOKEN}":
                return 401, {"detail": "unauthorized"}
            return 200, {"breaker": self.breaker}
        return 404, {"detail": "not found"}

    def post(self, path, body, auth):
        self.calls.append(("POST", path, body))
        if auth != f"Bearer {TOKEN}":
            return 401, {"detail": "unauthorized"}
        if path in self.failing:
            return 503, {"error": "database unreachable"}
        if path == "/maintenance/on":
            self.maintenance = True
        elif path == "/maintenance/off":
            self.maintenance = False
        elif path == "/breaker":
            self.breaker = "open"
            self.orders = 0
        elif path == "/breaker/reset":
            self.breaker = "closed"
        elif path == "/orders/cancel":
            if "cancel" not in self.ignore:
                self.orders = 0
        elif path == "/close-all":
            self.positions = 0
        elif path == "/paper":
            self.paper = body["enabled"]
        else:
            return 404, {"detail": "not found"}
        return 200, {"success": True}

    # ---------------------------------------------------------------- module arguments
    def args(self, profile=None, **kw):
        args = {
            "profile": profile or api_profile(),
            "bot": {"name": self.name, "root": self.root, "listen": "127.0.0.1",
                    "ports": {"api": self.server.server_address[1]}},
            "secrets": {"api_token": TOKEN},
        }
        args.update(kw)
        return args


def _handler(fake):
    class Handler(BaseHTTPRequestHandler):
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
            if not fake.running:
                self.close_connection = True
                return
            with fake.lock:
                status, doc = fake.get(self.path, self.headers.get("Authorization"))
            self._send(status, doc)

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"null")
            if not fake.running:
                self.close_connection = True
                return
            with fake.lock:
                status, doc = fake.post(self.path, body, self.headers.get("Authorization"))
            self._send(status, doc)

    return Handler


def start_fake(tmp_path, monkeypatch, name="b07"):
    root = tmp_path / name
    root.mkdir()
    fake = FakeBot(root, name)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    fake.server = server
    return fake


@pytest.fixture
def fakes(tmp_path, monkeypatch):
    """A factory of fake bots (one HTTP server each), their processes patched into Bot."""
    made = {}

    def by_port(bot):
        port = int(bot.ports["api"])
        return made[port]

    monkeypatch.setattr(botops_bot.Bot, "pids", lambda self: by_port(self).pids())
    monkeypatch.setattr(botops_bot.Bot, "service", lambda self, op: by_port(self).service(op))
    monkeypatch.setattr(botops_bot.Bot, "send_signal", lambda self, name: by_port(self).signal(name))
    monkeypatch.setattr(botops_bot.Bot, "service_state",
                        lambda self: "RUNNING" if by_port(self).running else "STOPPED")

    def make(name="b07"):
        fake = start_fake(tmp_path, monkeypatch, name)
        made[fake.server.server_address[1]] = fake
        return fake

    yield make
    for fake in made.values():
        fake.server.shutdown()
        fake.server.server_close()


@pytest.fixture
def fake(fakes):
    return fakes()
