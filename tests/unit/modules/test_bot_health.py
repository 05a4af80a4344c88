"""bot_health: waits for liveness or readiness, returns the components, fails with the last answer."""

from __future__ import annotations

import threading

from ansible_collections.botops.fleet.plugins.modules import bot_health

from .fake_bot import fake, fakes  # noqa: F401  (fixtures)
from .utils import run_module


def test_ready_bot_answers_at_once_with_its_components(fake):
    res = run_module(bot_health.main, fake.args())
    assert not res.get("failed"), res["msg"]
    assert res["live"] and res["ready"] and res["changed"] is False
    assert res["components"] == {"status": "healthy", "components": {"database": "ok"}}
    assert res["waited"] < 0.5


def test_waits_until_ready(fake):
    fake.ready = False
    timer = threading.Timer(0.3, lambda: setattr(fake, "ready", True))
    timer.start()
    res = run_module(bot_health.main, fake.args(timeout=5))
    assert not res.get("failed"), res["msg"]
    assert res["ready"] and res["waited"] >= 0.25


def test_live_but_not_ready(fake):
    fake.ready = False
    res = run_module(bot_health.main, fake.args(wait_for="live", timeout=1))
    assert not res.get("failed"), res["msg"]
    assert res["live"] is True and res["ready"] is False


def test_timeout_fails_with_the_last_response(fake):
    fake.ready = False
    res = run_module(bot_health.main, fake.args(timeout=0.2))
    assert res["failed"] and res["live"] is True and res["ready"] is False
    assert res["msg"].startswith("Failed to wait for the readiness of bot 'b07': not ready after")
    assert 'HTTP 503 (expected HTTP 200): {"ready": false' in res["msg"] and "database" in res["msg"]
    assert res["observed"][0]["status"] == 503


def test_dead_bot_is_not_live(fake):
    fake.running = False
    res = run_module(bot_health.main, fake.args(wait_for="live", timeout=0))
    assert res["failed"] and res["live"] is False and "error" in res["observed"][0]
