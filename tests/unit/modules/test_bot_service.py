"""bot_service: idempotent start/stop, graceful stop escalating to signals, restart downtime."""

from __future__ import annotations

import threading

from ansible_collections.botops.fleet.plugins.modules import bot_service
import pytest
from ansible_collections.botops.fleet.plugins.module_utils import botops_service

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


# ---------------------------------------------------------------------------------- window slots
def test_a_restart_waits_for_a_window_slot_before_it_stops_the_bot_and_gives_it_back(fake, slot_dir):
    other = botops_service.WindowSlots(1)
    other.take(wait=1)  # another bot of this host is in its window
    at_release = []

    def release():
        at_release.append([c for c in fake.calls if c[0] == "service"])
        other.give()

    timer = threading.Timer(0.4, release)
    timer.start()
    res = service(fake, "restarted", window_slots=1)
    timer.join()
    assert not res.get("failed"), res["msg"]
    assert at_release == [[]], "the bot was stopped while the other window held the only slot"
    assert res["slot_wait"] >= 0.35 and res["actions"] == ["service stop", "service start", "ready"]
    after = botops_service.WindowSlots(1)
    assert after.take(wait=0) == 0.0, "the restart kept its slot"
    after.give()


def test_a_restart_that_gets_no_slot_fails_before_it_touches_the_bot(fake, slot_dir, monkeypatch):
    monkeypatch.setattr(botops_service, "SLOT_WAIT", 0.2)
    other = botops_service.WindowSlots(1)
    other.take(wait=1)
    try:
        res = service(fake, "restarted", window_slots=1)
    finally:
        other.give()
    assert res["failed"]
    assert res["msg"] == (f"Failed to restart bot 'b07': no window slot free on this host within 0.2s: 1 other "
                          f"window(s) held them all (lock files {slot_dir}/slot*)")
    assert fake.running and not [c for c in fake.calls if c[0] == "service"]


def test_a_stopped_bot_starts_without_a_slot_rather_than_stay_down(fake, slot_dir):
    fake.running = False
    other = botops_service.WindowSlots(1)
    other.take(wait=1)
    try:
        res = service(fake, "started", window_slots=1, ready_timeout=0.3)
    finally:
        other.give()
    assert not res.get("failed"), res["msg"]
    assert res["actions"][0].startswith("start without a window slot (no window slot free on this host within 0.3s")
    assert res["actions"][1:] == ["service start", "ready"] and fake.running and res["ready"]


def test_window_slots_below_one_is_refused_before_anything_is_done(fake, slot_dir):
    res = service(fake, "restarted", window_slots=0)
    assert res["failed"] and res["msg"] == "Failed to restart bot 'b07': window_slots must be at least 1, got 0"
    assert fake.running and not [c for c in fake.calls if c[0] == "service"]
