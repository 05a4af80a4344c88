"""bot_service: idempotent start/stop, graceful stop escalating to signals, restart downtime."""

from __future__ import annotations

import threading

import bot_service

from .fake_bot import fake, fakes  # noqa: F401  (fixtures)
from .utils import run_module


def service(fake, state, check_mode=False, **kw):
    args = fake.args(state=state)
    args.update(kw)
    return run_module(bot_service.main, args, check_mode=check_mode)


def test_started_when_running_is_unchanged_and_ready(fake):
    res = service(fake, "started")
    assert not res.get("failed"), res["msg"]
    assert res["changed"] is False and res["actions"] == [] and res["ready"] is True and res["downtime"] == 0.0


def test_stop_then_stop_again(fake):
    res = service(fake, "stopped")
    assert not res.get("failed"), res["msg"]
    assert res["changed"] and res["actions"] == ["service stop"] and res["state"] == "stopped"
    assert res["pids_before"] == [4242] and res["pids_after"] == []
    assert res["diff"] == {"before": "process: running\n", "after": "process: stopped\n"}
    again = service(fake, "stopped")
    assert again["changed"] is False and again["actions"] == []


def test_stop_escalates_to_sigterm_then_sigkill(fake):
    fake.ignore.update({"stop", "TERM"})
    res = service(fake, "stopped", graceful_timeout=0.2, term_timeout=0.2)
    assert not res.get("failed"), res["msg"]
    assert res["actions"] == ["service stop", "SIGTERM [4242]", "SIGKILL [4242]"]
    assert not fake.running


def test_unkillable_process_fails_naming_it(fake, monkeypatch):
    monkeypatch.setattr(bot_service, "KILL_WAIT", 0.1)
    fake.ignore.update({"stop", "TERM", "KILL"})
    res = service(fake, "stopped", graceful_timeout=0.1, term_timeout=0.1)
    assert res["failed"] and res["msg"].startswith("Failed to stop bot 'b07': process still there after SIGKILL")


def test_start_waits_for_readiness(fake):
    fake.running = False
    fake.ready = False
    timer = threading.Timer(0.3, lambda: setattr(fake, "ready", True))
    timer.start()
    res = service(fake, "started")
    assert not res.get("failed"), res["msg"]
    assert res["changed"] and res["actions"] == ["service start", "ready"] and res["ready"]
    assert res["downtime"] >= 0.25


def test_restart_reports_downtime(fake):
    res = service(fake, "restarted")
    assert not res.get("failed"), res["msg"]
    assert res["changed"] and res["actions"] == ["service stop", "service start", "ready"]
    assert isinstance(res["downtime"], float) and res["state"] == "running"
    assert ("service", "stop") in fake.calls and ("service", "start") in fake.calls


def test_not_ready_after_start_fails_with_the_last_answer(fake):
    fake.running = False
    fake.ready = False
    res = service(fake, "started", ready_timeout=0.3)
    assert res["failed"] and "not ready within 0.3s" in res["msg"] and "database" in res["msg"]


def test_check_mode_changes_nothing(fake):
    res = service(fake, "restarted", check_mode=True)
    assert res["changed"] and res["would"][0].startswith("service stop") and res["actions"] == []
    assert fake.running and not [c for c in fake.calls if c[0] == "service"]
