"""The fleet kill switch's action plugin builds each local bot's facts from the inventory variables
itself (templating botops_bot per host is most of the cost at a thousand bots): keep it in step with
group_vars' botops_bot and botops_secrets, and keep the playbook's local path free of per-host tasks."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
GROUP_VARS = REPO / "playbooks" / "group_vars" / "all" / "botops.yml"
TASKS = REPO / "playbooks" / "tasks" / "fleet_kill_switch.yml"
PLUGIN = REPO / "playbooks" / "action_plugins" / "bot_fleet_kill_switch.py"


def group_vars_mapping(key):
    """fact -> (inventory variable, default or None) as group_vars' botops_bot or botops_secrets says."""
    out = {}
    for fact, template in yaml.safe_load(GROUP_VARS.read_text())[key].items():
        m = re.fullmatch(r"\{\{\s*(\w+)\s*(?:\|\s*default\((.*?)\))?\s*\}\}", template.strip())
        assert m, f"{key}.{fact}: unexpected template {template!r}"
        out[fact] = (m.group(1), m.group(2))
    return out


def plugin():
    spec = importlib.util.spec_from_file_location("fleet_kill_switch_action", PLUGIN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def as_template_default(value, required):
    """The plugin's default written as group_vars writes it (None for a required variable)."""
    if value is required:
        return None
    return {None: "None", "127.0.0.1": "'127.0.0.1'"}.get(value, repr(value)) if not isinstance(value, dict) else "{}"


def test_fleet_bot_facts_match_group_vars_botops_bot():
    action = plugin()
    expected = group_vars_mapping("botops_bot")
    found = {"name": ("inventory_hostname", None)}
    found.update({k: (var, as_template_default(d, action.REQUIRED)) for k, (var, d) in action.BOT_VARS.items()})
    assert set(found) == set(expected) - {"database"}, "the kill switch needs every fact but the database"
    assert found == {k: v for k, v in expected.items() if k != "database"}


def test_fleet_secrets_match_group_vars_botops_secrets():
    action = plugin()
    expected = group_vars_mapping("botops_secrets")
    found = {k: (var, as_template_default(d, action.REQUIRED)) for k, (var, d) in action.SECRET_VARS.items()}
    assert found == {k: v for k, v in expected.items() if k != "database_password"}


def test_the_local_path_has_no_per_host_task():
    """Every task up to the end_play runs once: a per-host task costs ~20 ms of CPU per bot."""
    tasks = yaml.safe_load(TASKS.read_text())
    for task in tasks:
        if task.get("ansible.builtin.meta") == "end_play":
            break
        if "ansible.builtin.import_tasks" in task:
            inner = yaml.safe_load((TASKS.parent / task["ansible.builtin.import_tasks"]).read_text())
            assert all(t.get("run_once") for t in inner), task["ansible.builtin.import_tasks"]
            continue
        assert task.get("run_once"), task["name"]
    else:
        raise AssertionError("no end_play in the local path")
