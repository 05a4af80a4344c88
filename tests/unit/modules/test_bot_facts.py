"""bot_facts: reads the bot's state; with ready_wait, a bot busy for a moment is asked again."""

from __future__ import annotations

import threading

from ansible_collections.botops.fleet.plugins.modules import bot_facts

from .fake_bot import fake, fakes  # noqa: F401  (fixtures)
from .utils import run_module


def test_a_ready_bot_is_read_at_once(fake):
    res = run_module(bot_facts.main, fake.args(ready_wait=5))
    assert not res.get("failed"), res["msg"]
    assert res["changed"] is False and res["bot"]["ready"] is True and res["bot"]["live"] is True
    assert "ready" not in res["bot"]["errors"]


def test_a_bot_ready_within_ready_wait_is_reported_ready(fake):
    fake.ready = False
    timer = threading.Timer(0.4, lambda: setattr(fake, "ready", True))
    timer.start()
    res = run_module(bot_facts.main, fake.args(ready_wait=10))
    timer.join()
    assert not res.get("failed"), res["msg"]
    assert res["bot"]["ready"] is True and "ready" not in res["bot"]["errors"]


def test_without_ready_wait_a_bot_is_asked_once_and_reported_with_its_answer(fake):
    fake.ready = False
    timer = threading.Timer(0.4, lambda: setattr(fake, "ready", True))
    timer.start()
    res = run_module(bot_facts.main, fake.args())
    timer.join()
    assert res["bot"]["ready"] is False and res["bot"]["errors"]["ready"]["status"] == 503


def test_a_bot_never_ready_is_reported_not_ready_after_ready_wait(fake):
    fake.ready = False
    res = run_module(bot_facts.main, fake.args(ready_wait=0.3))
    assert not res.get("failed"), res["msg"]
    assert res["bot"]["ready"] is False and res["bot"]["errors"]["ready"]["status"] == 503
