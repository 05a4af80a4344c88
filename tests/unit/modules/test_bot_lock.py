"""bot_lock: atomic acquire, idempotent re-acquire, live locks refused, stale locks need takeover."""

from __future__ import annotations

import json
import subprocess
import sys

from ansible_collections.botops.fleet.plugins.modules import bot_lock

from .utils import run_module


def lock_args(path, **kw):
    return dict(dict(path=str(path), run_id="run-a", operation="deploy"), **kw)


def test_acquire_then_again_is_unchanged(tmp_path):
    path = tmp_path / "locks" / "fleet.lock"
    first = run_module(bot_lock.main, lock_args(path))
    assert first["changed"] and json.loads(path.read_text())["run_id"] == "run-a"
    assert path.stat().st_mode & 0o777 == 0o600
    again = run_module(bot_lock.main, lock_args(path))
    assert again["changed"] is False and not again.get("failed")


def test_second_run_is_refused_while_the_first_holds_it(tmp_path):
    path = tmp_path / "fleet.lock"
    run_module(bot_lock.main, lock_args(path))
    other = run_module(bot_lock.main, lock_args(path, run_id="run-b", operation="maintenance"))
    assert other["failed"]
    assert "held by run run-a (deploy)" in other["msg"]
    assert json.loads(path.read_text())["run_id"] == "run-a"


def test_expired_lock_is_stale_and_needs_takeover(tmp_path):
    path = tmp_path / "fleet.lock"
    run_module(bot_lock.main, lock_args(path, ttl=-1))
    refused = run_module(bot_lock.main, lock_args(path, run_id="run-b"))
    assert refused["failed"] and "stale lock" in refused["msg"] and "takeover" in refused["msg"]
    taken = run_module(bot_lock.main, lock_args(path, run_id="run-b", takeover=True))
    assert taken["changed"] and taken["previous"]["stale"]
    assert json.loads(path.read_text())["run_id"] == "run-b"


def test_dead_owner_process_makes_the_lock_stale(tmp_path):
    path = tmp_path / "fleet.lock"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run_module(bot_lock.main, lock_args(path, owner_pid=dead.pid))
    refused = run_module(bot_lock.main, lock_args(path, run_id="run-b"))
    assert refused["failed"] and f"process {dead.pid}" in refused["msg"]


def test_release_only_by_its_run_unless_forced(tmp_path):
    path = tmp_path / "fleet.lock"
    run_module(bot_lock.main, lock_args(path))
    assert run_module(bot_lock.main, lock_args(path, run_id="run-b", state="released"))["failed"]
    assert path.exists()
    assert run_module(bot_lock.main, lock_args(path, state="released"))["changed"]
    assert not path.exists()
    assert run_module(bot_lock.main, lock_args(path, state="released"))["changed"] is False


def test_check_mode_takes_nothing(tmp_path):
    path = tmp_path / "fleet.lock"
    result = run_module(bot_lock.main, lock_args(path), check_mode=True)
    assert result["changed"] and not path.exists()


def engaged_by_operator(record_path, level="halt"):
    """The record bot_kill_switch writes on the bot's host when an operator engages a level."""
    record_path.parent.mkdir(parents=True, exist_ok=True)
    record_path.write_text(json.dumps({"operator": {"level": level, "who": "alice", "time": "2026-12-07T03:00:00Z",
                                                    "reason": "exchange outage", "run_id": None, "via": "bot_kill_switch"}}))


def test_a_bot_whose_operator_engaged_the_kill_switch_is_not_locked(tmp_path):
    path, record = tmp_path / "botops.lock", tmp_path / "botops-kill-switch.json"
    engaged_by_operator(record)
    for check_mode in (True, False):
        res = run_module(bot_lock.main, lock_args(path, kill_switch_record=str(record)), check_mode=check_mode)
        assert not res.get("failed") and res["changed"] is False and res["yielded"] is True, res
        assert res["kill_switch"] == {"level": "halt", "who": "alice", "time": "2026-12-07T03:00:00Z",
                                      "reason": "exchange outage"}
        assert res["msg"] == "skipped: kill switch halt engaged by alice at 2026-12-07T03:00:00Z (exchange outage)"
        assert not path.exists(), "the lock was taken on a bot an operator stopped"


def test_override_takes_the_lock_and_still_names_the_level(tmp_path):
    path, record = tmp_path / "botops.lock", tmp_path / "botops-kill-switch.json"
    engaged_by_operator(record, level="pause")
    res = run_module(bot_lock.main, lock_args(path, kill_switch_record=str(record), override_kill_switch=True))
    assert res["changed"] and res["yielded"] is False and res["kill_switch"]["level"] == "pause", res
    assert json.loads(path.read_text())["run_id"] == "run-a"


def test_no_operator_level_takes_the_lock(tmp_path):
    path, record = tmp_path / "botops.lock", tmp_path / "botops-kill-switch.json"
    res = run_module(bot_lock.main, lock_args(path, kill_switch_record=str(record)))  # no record at all
    assert res["changed"] and res["yielded"] is False and res["kill_switch"] is None, res
    path.unlink()
    # an operation's own pause (held under its run id) is not an operator's level
    record.write_text(json.dumps({"operations": {"run-x": {"level": "pause", "who": "botops", "reason": "deploy"}}}))
    res = run_module(bot_lock.main, lock_args(path, kill_switch_record=str(record)))
    assert res["changed"] and res["yielded"] is False and res["kill_switch"] is None, res
    assert json.loads(path.read_text())["run_id"] == "run-a"


def test_an_unreadable_kill_switch_record_fails_and_takes_nothing(tmp_path):
    path, record = tmp_path / "botops.lock", tmp_path / "botops-kill-switch.json"
    record.write_text('{"operator": {"level": "ha')  # cut short
    res = run_module(bot_lock.main, lock_args(path, kill_switch_record=str(record)))
    assert res["failed"] and f"cannot read the kill switch record {record}" in res["msg"], res
    assert not path.exists()
