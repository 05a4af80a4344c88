"""The bot client: JSON paths, placeholders, auth, checks and actions against a local HTTP server."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ansible_collections.botops.fleet.plugins.module_utils.botops_actions import set_json_key
from ansible_collections.botops.fleet.plugins.module_utils.botops_bot import Bot
from ansible_collections.botops.fleet.plugins.module_utils.botops_errors import BotError
from ansible_collections.botops.fleet.plugins.module_utils.botops_values import json_path, substitute
from botops.profiles import load


class _Handler(BaseHTTPRequestHandler):
    state = {"breaker": "closed", "seen": []}

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
        if self.path == "/api/health":
            self._send(200, {"status": "healthy", "version": "1.0.0", "circuit_breaker": self.state["breaker"],
                             "execution_mode": "DRY", "paper_trading": True})
        elif self.path == "/api/trades/positions":
            self._send(200, [{"id": 1}, {"id": 2}])
        else:
            self._send(404, {"detail": "not found"})

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"null")
        self.state["seen"].append((self.path, self.headers.get("Authorization"), body))
        if self.headers.get("Authorization") != "Bearer s3cret-token":
            self._send(401, {"detail": "unauthorized"})
            return
        if self.path == "/api/emergency/circuit-breaker":
            self.state["breaker"] = "open"
        self._send(200, {"ok": True})


@pytest.fixture
def server():
    _Handler.state = {"breaker": "closed", "seen": []}
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def make_bot(server, token="s3cret-token", tmp_path=None):
    bot = {"name": "b07", "root": str(tmp_path or "/nonexistent"), "listen": "127.0.0.1",
           "ports": {"api": server.server_address[1]}, "process_match": "no-such-process-botops-test"}
    return Bot(load("hyperliquid"), bot, {"api_token": token})


def test_json_path():
    doc = {"a": {"b": [{"c": 1}]}, "x": True}
    assert json_path(doc, "a.b.0.c") == 1
    assert json_path(doc, "") is doc
    with pytest.raises(KeyError, match="no 'z' in the answer"):
        json_path(doc, "a.z")


def test_substitute_keeps_types_of_whole_placeholders():
    assert substitute({"enabled": "{paper}", "why": "stop: {reason}"}, {"paper": False, "reason": "drawdown"}) == {
        "enabled": False,
        "why": "stop: drawdown",
    }
    assert substitute(["{unknown}"], {}) == ["{unknown}"]


def test_probe_and_count(server):
    bot = make_bot(server)
    assert bot.probe({"http": {"path": "/api/health"}, "json": "version"}) == "1.0.0"
    assert bot.probe({"http": {"path": "/api/trades/positions"}, "json": "", "count": True}) == 2
    with pytest.raises(BotError, match="GET /api/nope answered HTTP 404"):
        bot.probe({"http": {"path": "/api/nope"}, "json": ""})


def test_bearer_token_only_on_post_and_engage_is_verified(server):
    bot = make_bot(server)
    level = bot.profile["kill_switch"]["levels"]["halt"]
    ok, _ = bot.check_all(level["engaged"])
    assert not ok
    for action in level["engage"][0]["do"]:
        bot.do(action, {"reason": "drawdown"})
    assert bot.wait_for(level["engage"][0]["verify"], timeout=2)[0]
    path, auth, body = _Handler.state["seen"][0]
    assert (path, auth, body) == ("/api/emergency/circuit-breaker", "Bearer s3cret-token", {"reason": "drawdown"})


def test_wrong_token_fails_with_the_status_and_without_the_token(server):
    bot = make_bot(server, token="wrong-token-value")
    with pytest.raises(BotError) as info:
        bot.do({"http": {"method": "POST", "path": "/api/emergency/circuit-breaker"}})
    assert "HTTP 401" in str(info.value)
    assert "wrong-token-value" not in str(info.value)


def test_missing_token_is_a_clear_error(server):
    bot = make_bot(server, token=None)
    with pytest.raises(BotError, match="set bot_api_token"):
        bot.do({"http": {"method": "POST", "path": "/api/emergency/circuit-breaker"}})


def test_unreachable_bot_check_fails_fast_with_reason(server):
    bot = make_bot(server)
    bot.ports["api"] = 1  # nothing listens there
    ok, observed = bot.check({"http": {"path": "/api/health"}, "json": "status", "equals": "healthy"})
    assert not ok and "ConnectionRefusedError" in observed["error"]


def test_process_checks(server):
    bot = make_bot(server)
    assert bot.check({"process": "absent"})[0]
    assert not bot.check({"process": "present"})[0]


def test_set_json_key_atomic_and_keeps_mode(tmp_path):
    path = tmp_path / "bot.json"
    path.write_text(json.dumps({"execution_mode": "DRY", "api_token": "x"}))
    path.chmod(0o600)
    assert set_json_key(str(path), "execution_mode", "LIVE") is True
    assert set_json_key(str(path), "execution_mode", "LIVE") is False
    assert json.loads(path.read_text()) == {"execution_mode": "LIVE", "api_token": "x"}
    assert path.stat().st_mode & 0o777 == 0o600
