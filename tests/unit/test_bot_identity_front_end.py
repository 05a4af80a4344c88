"""A bot is who the inventory says, on the controller's side: a bot refused for its identity is
reported refused (exit 2, nothing changed), `botops status` rows say who a bot answers as and
whether its credentials are accepted, and every change's playbook asks before it acts."""

from __future__ import annotations

import types
from pathlib import Path

import yaml

from botops import runner
from botops.runner import EXIT_FAILED, EXIT_USAGE, PlaybookRun
from botops.status import COLUMNS, rows

REPO = Path(__file__).resolve().parents[2]
REFUSAL = ("bot03 answers as bot02 on port 28103: the inventory's port points at another bot (check bot_ports, "
           "or bot_id): refused before any change")


def event(kind, host, action, res):
    return {"event": kind, "event_data": {"host": host, "task": action, "task_action": action,
                                          "resolved_action": action, "res": res}}


def fake_run(tmp_path, monkeypatch, events, failures):
    """PlaybookRun.run() over these events, as if ansible-runner had played them."""
    monkeypatch.setenv("BOTOPS_ARTIFACTS_DIR", str(tmp_path / "artifacts"))
    (tmp_path / "play.yml").write_text("- hosts: all\n  tasks: []\n")
    (tmp_path / "hosts.yml").write_text("all: {hosts: {bot02: {}, bot03: {}}}\n")
    run = PlaybookRun(str(tmp_path / "play.yml"), inventory=str(tmp_path / "hosts.yml"), progress=lambda *a: None)
    report = {h: {"result": "failed" if h in failures else "ok", "message": ""} for h in ("bot02", "bot03")}

    def play(**params):
        for e in events:
            params["event_handler"](e)
        params["event_handler"]({"event": "playbook_on_stats", "event_data": {
            "failures": failures, "dark": {}, "artifact_data": {"botops_report": report}}})
        return types.SimpleNamespace(status="failed" if failures else "successful", rc=2 if failures else 0)

    monkeypatch.setattr(runner.ansible_runner, "run", play)
    return run.run()


def test_a_bot_refused_for_its_identity_is_reported_refused_with_exit_2(tmp_path, monkeypatch):
    result = fake_run(tmp_path, monkeypatch, [
        event("runner_on_ok", "bot02", "bot_facts", {}),
        event("runner_on_failed", "bot03", "bot_facts", {"msg": REFUSAL, "identity_refused": True}),
        event("runner_on_failed", "bot03", "ansible.builtin.fail", {"msg": f"restart of bot03 failed: {REFUSAL}"}),
    ], failures={"bot03": 1})
    assert result.exit_code == EXIT_USAGE
    assert result.hosts["bot03"].refused == REFUSAL
    assert result.report["bot03"]["result"] == "refused" and result.report["bot03"]["message"] == REFUSAL
    assert result.report["bot02"]["result"] == "ok"


def test_a_failure_that_is_no_refusal_still_exits_1(tmp_path, monkeypatch):
    result = fake_run(tmp_path, monkeypatch, [
        event("runner_on_failed", "bot03", "bot_facts", {"msg": "preflight refused bot bot03: ready=False"}),
    ], failures={"bot03": 1})
    assert result.exit_code == EXIT_FAILED and not result.hosts["bot03"].refused


def test_status_rows_say_who_each_bot_answers_as_and_whether_its_credentials_are_accepted():
    ok = {"expected": "x", "reported": "x", "ok": True, "message": None}
    unknown = {"checked": False, "ok": None, "status": None, "message": "not checked: the bot is not answering"}
    report = {
        "bot01": {"identity": dict(ok, expected="bot01", reported="bot01"),
                  "credentials": {"checked": True, "ok": True, "status": 200, "message": None}},
        "bot03": {"identity": {"expected": "bot03", "reported": "bot02", "ok": False,
                               "message": "bot03 answers as bot02 on port 28103: the inventory's port points at "
                                          "another bot"},
                  "credentials": {"checked": False, "ok": None, "status": None, "message": "not checked: ..."}},
        "bot04": {"identity": dict(ok, expected="bot04", reported="bot04"),
                  "credentials": {"checked": True, "ok": False, "status": 401,
                                  "message": "its API refused botops' credentials (GET /api/emergency/circuit-breaker "
                                             "answered HTTP 401): the kill switch's API requests would fail too"}},
        "bot05": {"identity": {"expected": "bot05", "reported": None, "ok": None, "message": "not checked: ..."},
                  "credentials": unknown},
        "bot06": {"identity": {"expected": "bot06", "reported": None, "ok": False, "message": "bot06 does not answer"},
                  "credentials": {"checked": True, "ok": False, "status": None, "message": "needs a bearer token"}},
    }
    by_bot = {row["name"]: row for row in rows(report)}
    cells = {bot: (row["identity"], row["credentials"], row["message"]) for bot, row in by_bot.items()}
    assert cells["bot01"] == ("ok", "ok", None)
    assert by_bot["bot03"]["identity"] == "bot02, not bot03" and by_bot["bot03"]["credentials"] is None
    assert by_bot["bot03"]["message"].startswith("bot03 answers as bot02 on port 28103")
    assert by_bot["bot04"]["credentials"] == "REFUSED (HTTP 401)"
    assert by_bot["bot04"]["message"].startswith("its API refused botops' credentials")
    assert cells["bot05"] == (None, None, None)
    assert (by_bot["bot06"]["identity"], by_bot["bot06"]["credentials"]) == ("another API", "MISSING")
    assert by_bot["bot06"]["message"] == "bot06 does not answer; needs a bearer token"
    assert {"identity", "credentials", "message"} <= {key for key, _ in COLUMNS}


# ---------------------------------------------------------------------------- the playbooks
def load(path):
    return yaml.safe_load((REPO / path).read_text())


def test_the_preflight_of_every_change_refuses_a_bot_that_is_not_who_the_inventory_says():
    first = load("roles/bot_guard/tasks/preflight.yml")[0]
    assert first["botops.fleet.bot_facts"]["require_identity"] == "{{ bot_guard_require_identity | bool }}"
    assert load("roles/bot_guard/defaults/main.yml")["bot_guard_require_identity"] is True
    text = {p: (REPO / "playbooks" / p).read_text() for p in
            ("deploy.yml", "rollback.yml", "restart.yml", "restore.yml", "promote.yml")}
    for playbook, body in text.items():
        assert "tasks_from: preflight" in body, playbook
    # maintenance has no preflight: it asks in its own step, before its window
    maintenance = (REPO / "playbooks" / "maintenance.yml").read_text()
    assert maintenance.index("tasks_from: identity") < maintenance.index("name: bot_maintenance")
    identity = load("roles/bot_guard/tasks/identity.yml")[0]["botops.fleet.bot_facts"]
    assert identity["require_identity"] is True and identity["database"] is False


def test_status_fails_a_bot_for_its_identity_and_for_refused_credentials():
    tasks = load("playbooks/status.yml")[0]["tasks"]
    that = [t["ansible.builtin.assert"]["that"] for t in tasks if "ansible.builtin.assert" in t]
    assert "botops__facts.bot.identity.ok is not false" in that
    assert "botops__facts.bot.credentials.ok is not false" in that


def test_the_bot_id_reaches_every_module():
    assert load("playbooks/group_vars/all/botops.yml")["botops_bot"]== "{{ lookup('botops.fleet.bot_vars', 'bot') }}"
    from ansible_collections.botops.fleet.plugins.module_utils.botops_bot_vars import BOT_VARS
    assert BOT_VARS["bot_id"] == ("bot_id", None)


def test_a_live_bot_on_paper_is_not_shown_as_plain_live():
    """A bot in LIVE mode whose paper flag is on sends no real order: the status said LIVE, paper yes."""
    lines = {r["name"]: r for r in rows({"b1": {"execution_mode": "LIVE", "paper_trading": True},
                                         "b2": {"execution_mode": "LIVE", "paper_trading": False},
                                         "b3": {"execution_mode": "DRY", "paper_trading": True}})}
    assert [lines[b]["execution_mode"] for b in ("b1", "b2", "b3")] == ["LIVE on paper", "LIVE", "DRY"]
