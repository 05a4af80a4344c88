"""The front end counts the module calls of every bot from ansible-runner's events."""

from __future__ import annotations

from botops.runner import PlaybookRun, is_module_call


def event(kind, host, action, res=None):
    return {"event": kind, "event_data": {"host": host, "task": action, "task_action": action,
                                          "resolved_action": action, "res": res or {}}}


def test_controller_side_actions_are_not_module_calls():
    assert is_module_call("bot_deploy") and is_module_call("ansible.builtin.copy")
    for action in ("ansible.builtin.set_fact", "set_stats", "ansible.builtin.assert", "fail", "meta",
                   "ansible.builtin.validate_argument_spec"):  # the role entry points' argument checks
        assert not is_module_call(action), action
    assert not is_module_call(None)


def test_modules_loop_items_and_failures_count_skips_do_not(tmp_path):
    (tmp_path / "play.yml").write_text("- hosts: all\n  tasks: []\n")
    (tmp_path / "hosts.yml").write_text("all: {hosts: {b1: {}, b2: {}}}\n")
    run = PlaybookRun(str(tmp_path / "play.yml"), inventory=str(tmp_path / "hosts.yml"), progress=lambda *a: None)
    for e in [
        event("runner_on_ok", "b1", "bot_lock"),
        event("runner_on_ok", "b1", "ansible.builtin.set_fact"),
        event("runner_on_skipped", "b1", "bot_positions"),
        event("runner_on_ok", "b1", "ansible.builtin.copy", {"results": [{"changed": True}, {"skipped": True}, {}]}),
        event("runner_on_failed", "b1", "bot_deploy", {"msg": "reverted"}),
        event("runner_on_ok", "b2", "ansible.builtin.assert"),
    ]:
        run._on_event(e)
    assert run._hosts["b1"].module_calls == 1 + 2 + 1
    assert run._hosts["b2"].module_calls == 0


def test_progress_gets_the_steps_that_ran_and_every_failure_not_skips_or_task_starts(tmp_path):
    (tmp_path / "play.yml").write_text("- hosts: all\n  tasks: []\n")
    (tmp_path / "hosts.yml").write_text("all: {hosts: {b1: {}}}\n")
    lines = []
    run = PlaybookRun(str(tmp_path / "play.yml"), inventory=str(tmp_path / "hosts.yml"),
                      progress=lambda host, task, kind, res: lines.append((host, task, kind)))
    check = "ansible.builtin.validate_argument_spec"
    for e in [
        {"event": "playbook_on_play_start", "event_data": {"play": "Restart"}},
        {"event": "playbook_on_task_start", "event_data": {"task": "Take the bot's operation lock",
                                                           "task_action": "bot_lock", "resolved_action": "bot_lock"}},
        event("runner_on_ok", "b1", check, {}),
        event("runner_on_ok", "b1", "botops.fleet.bot_lock", {"changed": True}),
        event("runner_on_skipped", "b1", "botops.fleet.bot_kill_switch", {}),
        event("runner_on_ok", "b1", "ansible.builtin.set_fact", {}),
        event("runner_on_failed", "b1", check, {"msg": "Validation of arguments failed"}),
    ]:
        run._on_event(e)
    assert lines == [(None, "Restart", "playbook_on_play_start"),
                     ("b1", "botops.fleet.bot_lock", "runner_on_ok"),
                     ("b1", check, "runner_on_failed")]
    assert run._hosts["b1"].module_calls == 1 and run._hosts["b1"].failed == 1
