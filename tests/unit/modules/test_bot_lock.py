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
