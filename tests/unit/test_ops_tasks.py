"""The fleet tasks' front end without a fleet: input checks (exit 2, saying what is valid), the extra
vars each task hands its playbook, and how the playbooks' reports become table rows."""

from __future__ import annotations

import pytest
from invoke import Context, Exit

from botops import backup, promote, releases, restart
from botops.runner import EXIT_USAGE


@pytest.fixture
def calls(monkeypatch):
    """Replace run_operation in every task module: record the call instead of running a playbook."""
    seen = []

    def fake(task, playbook, **kwargs):
        seen.append(dict(kwargs, task=task, playbook=playbook))
        return {}

    for module in (backup, promote, releases, restart):
        monkeypatch.setattr(module, "run_operation", fake)
    return seen


def refused(task, **kwargs) -> str:
    with pytest.raises(Exit) as info:
        task(Context(), **kwargs)
    assert info.value.code == EXIT_USAGE
    return str(info.value.message)


@pytest.mark.parametrize("kwargs, expected", [
    ({"mode": "hard"}, "expected one of: graceful, quick, recover"),
    ({"positions": "yolo"}, "expected one of: refuse, wait, flatten, carry"),
    ({"mode": "quick", "positions": "refuse"}, "--mode=graceful only"),
    ({"batch": "0"}, "a number of bots or a percentage"),
    ({"batch": "101%"}, "a number of bots or a percentage"),
])
def test_restart_refuses_bad_input(calls, kwargs, expected):
    assert expected in refused(restart.restart, **kwargs)
    assert calls == []


def test_restart_hands_mode_batch_and_policy_to_the_playbook(calls):
    restart.restart(Context(), mode="recover", batch="2", limit="bot01,bot02", check=True)
    (call,) = calls
    assert call["playbook"] == "restart.yml" and call["check"] is True and call["limit"] == "bot01,bot02"
    assert call["extravars"] == {"botops_restart_mode": "recover", "botops_serial": [2],
                                 "bot_guard_positions_policy": "carry"}


@pytest.mark.parametrize("value", ["../../etc/passwd", "20261121T020000Z-../x", "latest/..", "", "LATEST",
                                   "20261121T020000Z", "2026-11-21-x"])
def test_restore_refuses_what_is_not_a_backup_id(calls, value):
    assert "is not 'latest' or a backup id" in refused(backup.restore, backup=value)
    assert calls == []


def test_restore_needs_a_backup_and_takes_latest_or_an_id(calls):
    assert "--backup is required" in refused(backup.restore)
    backup.restore(Context(), backup="latest")
    backup.restore(Context(), backup="20261121T020000Z-ab12cd")
    assert [c["extravars"]["botops_backup_id"] for c in calls] == ["latest", "20261121T020000Z-ab12cd"]


def test_backups_options(calls):
    assert "only applies with --verify or --test-restore" in refused(backup.backups, backup="latest")
    assert "is not 'latest' or a backup id" in refused(backup.backups, verify=True, backup="x/../y")
    backup.backups(Context())
    backup.backups(Context(), verify=True, prune=True)
    listing, acting = calls
    assert listing["lock"] is False and acting["lock"] is True
    assert acting["extravars"] == {"botops_verify": True, "botops_test_restore": False, "botops_prune": True}


def test_backup_label(calls):
    assert "--label" in refused(backup.backup, label="$(reboot)")
    backup.backup(Context(), label="before the audit")
    backup.backup(Context())
    assert [c["extravars"] for c in calls] == [{"botops_backup_label": "before the audit"}, {}]


@pytest.mark.parametrize("kwargs, expected", [
    ({}, "--to is required"),
    ({"to": "LIVE"}, "is not accepted: --to=live"),
    ({"to": "paper"}, "is not accepted: --to=live"),
    ({"to": "live", "backup_age": 0}, "--backup-age 0"),
    ({"to": "live", "stop_test_age": 400}, "--stop-test-age 400"),
])
def test_promote_accepts_live_and_dry_only(calls, kwargs, expected):
    assert expected in refused(promote.promote, **kwargs)
    assert calls == []


def test_promote_hands_the_checklist_limits_to_the_playbook(calls):
    promote.promote(Context(), to="live", backup_age=6)
    assert calls[0]["extravars"] == {"botops_promote_to": "live", "botops_backup_max_age": 6,
                                     "botops_stop_test_max_age": 30}


def test_checklist_rows_show_each_check_then_the_mode():
    report = {
        "bot02": {"result": "refused", "mode_before": "DRY", "mode_after": "DRY",
                  "checks": [{"name": "not paper-only", "passed": False, "detail": "paper-only bot"},
                             {"name": "ready", "passed": True, "detail": "ok"}]},
        "bot05": {"result": "changed", "mode_before": "DRY", "mode_after": "LIVE",
                  "checks": [{"name": "ready", "passed": True, "detail": "ok"}]},
    }
    rows = promote.checklist_rows(report)
    assert [(r["name"], r["check"], r["passed"]) for r in rows] == [
        ("bot02", "not paper-only", False), ("bot02", "ready", True), ("bot02", "=> execution mode", False),
        ("bot05", "ready", True), ("bot05", "=> execution mode", True)]
    assert rows[2]["detail"] == "stays DRY: 1 check(s) failed (not paper-only)"
    assert rows[4]["detail"] == "DRY -> LIVE"


def test_backup_rows_one_per_set_with_the_failure_on_its_row():
    report = {
        "bot01": {"result": "failed", "message": "a set failed", "deleted": [],
                  "problems": {"20261121T010000Z-bbbbbb": "files.tar.gz: size 3 != 2"},
                  "backups": [{"backup_id": "20261121T020000Z-aaaaaa", "size": 2 * 1048576, "verified": True,
                               "label": "manual"},
                              {"backup_id": "20261121T010000Z-bbbbbb", "size": 1048576, "verified": False,
                               "safety_for": "20261120T000000Z-cccccc"}]},
        "bot02": {"result": "ok", "backups": [], "deleted": [{"backup_id": "x", "why": "old"}]},
    }
    rows = backup.backup_rows(report)
    assert [(r["name"], r.get("backup_id")) for r in rows] == [
        ("bot01", "20261121T020000Z-aaaaaa"), ("bot01", "20261121T010000Z-bbbbbb"), ("bot02", None)]
    assert rows[0]["size_mb"] == 2.0 and rows[0]["message"] == ""
    assert rows[1]["message"] == "files.tar.gz: size 3 != 2"
    assert rows[1]["label"] == "safety before restoring 20261120T000000Z-cccccc"
    assert rows[2]["message"] == "retention deleted 1 set(s); no backups"


def test_backup_rows_show_a_damaged_set_with_its_reason():
    reason = "manifest.json unreadable: Expecting value: line 1 column 1 (char 0)"
    report = {
        "bot01": {"result": "failed", "message": "Fail the bot when a backup set failed verification: ...",
                  "latest": None, "latest_blocked_by": "20261121T020600Z-bbbbbb",
                  "problems": {"20261121T020600Z-bbbbbb": "Failed to verify backup of bot 'bot01': backup "
                                                          f"20261121T020600Z-bbbbbb in /b is damaged ({reason}): ..."},
                  "backups": [{"backup_id": "20261121T020600Z-bbbbbb", "damaged": reason, "verified": False,
                               "created_at": "2026-11-21T02:06:00Z"},
                              {"backup_id": "20261121T020000Z-aaaaaa", "damaged": None, "verified": True}]},
    }
    rows = backup.backup_rows(report)
    assert [(r["backup_id"], r["verified"]) for r in rows] == [("20261121T020600Z-bbbbbb", False),
                                                               ("20261121T020000Z-aaaaaa", True)]
    assert rows[0]["message"] == f"damaged: {reason}; blocks 'latest'"
    assert rows[0]["created_at"] == "2026-11-21T02:06:00Z" and rows[1]["message"] == ""
    report["bot01"].update(result="ok", message="", latest="20261121T030000Z-cccccc", latest_blocked_by=None,
                          problems={})
    assert backup.backup_rows(report)[0]["message"] == f"damaged: {reason}"


def test_rows_with_counts_and_release_descriptions():
    rows = backup.rows_with_counts({"bot04": {"rows": {"row_counts": {"trades": 12, "orders": 3},
                                                       "ledger_max_id": 12}}})
    assert rows == [{"name": "bot04", "rows": "orders=3 trades=12 (max id 12)"}]
    assert releases.describe([
        {"version": "1.1.0", "status": "good", "current": True, "installed": True},
        {"version": "1.2.0-broken", "status": "bad", "current": False, "installed": False},
    ]) == "1.1.0 good*, 1.2.0-broken bad (removed)"
