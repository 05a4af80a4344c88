"""bot_notify against a real local HTTP server: payload per format, nothing without a URL,
failures only warn, the URL (a secret) never in the result, check mode posts nothing."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ansible_collections.botops.fleet.plugins.modules import bot_notify

from .utils import run_module


@pytest.fixture
def webhook():
    received = []

    class Handler(BaseHTTPRequestHandler):
        status = 200

        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append({"path": self.path, "type": self.headers["Content-Type"], "json": json.loads(body)})
            self.send_response(received_status[0])
            self.end_headers()
            self.wfile.write(b'{"ok": true}')

        def log_message(self, *a):
            pass

    received_status = [200]
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    server.received = received
    server.status = received_status
    server.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/T0KEN-abc"
    yield server
    server.shutdown()
    server.server_close()


def notify(**kw):
    return run_module(bot_notify.main, dict(dict(event="maintenance_started", msg="Weekly maintenance starts"), **kw))


def test_generic_payload(webhook):
    result = notify(url=webhook.url, details={"window": "weekly", "bots": ["bot01"]})
    assert result["changed"] and result["sent"] and result["status"] == 200
    [post] = webhook.received
    assert post["path"] == "/hooks/T0KEN-abc" and post["type"] == "application/json"
    body = post["json"]
    assert body["source"] == "botops" and body["event"] == "maintenance_started"
    assert body["message"] == "Weekly maintenance starts" and body["details"] == {"window": "weekly", "bots": ["bot01"]}
    assert "T0KEN-abc" not in json.dumps(result)


def test_slack_payload(webhook):
    notify(url=webhook.url, format="slack")
    assert webhook.received[0]["json"] == {"text": "Weekly maintenance starts"}


def test_telegram_payload_and_chat_id(webhook):
    notify(url=webhook.url, format="telegram", chat_id="-100123")
    assert webhook.received[0]["json"] == {"chat_id": "-100123", "text": "Weekly maintenance starts",
                                           "disable_web_page_preview": True}
    refused = notify(url=webhook.url, format="telegram")
    assert refused["failed"] and "needs chat_id" in refused["msg"] and len(webhook.received) == 1


def test_no_url_sends_nothing_and_does_not_fail():
    for url in (None, ""):
        result = notify(url=url)
        assert result["changed"] is False and result["sent"] is False and not result.get("failed")
        assert "nothing sent" in result["msg"]


def test_check_mode_posts_nothing(webhook):
    result = run_module(bot_notify.main, dict(event="e", msg="m", url=webhook.url), check_mode=True)
    assert result["changed"] and result["sent"] is False and result["payload"]["message"] == "m"
    assert webhook.received == []


def test_a_failing_webhook_only_warns_unless_asked(webhook):
    webhook.status[0] = 500
    result = notify(url=webhook.url)
    assert not result.get("failed") and result["sent"] is False and result["status"] == 500
    assert result["changed"] is False
    strict = notify(url=webhook.url, fail_on_error=True)
    assert strict["failed"] and strict["msg"].startswith("Failed to post notification 'maintenance_started'")
    assert "T0KEN-abc" not in json.dumps(strict)


def test_unreachable_webhook_warns():
    result = notify(url="http://127.0.0.1:9/hook", timeout=2)
    assert not result.get("failed") and result["sent"] is False
