"""The fleet kill-switch playbook builds each local bot's facts from the inventory variables itself
(templating botops_bot per host is most of the cost at a thousand bots): keep it in step with
group_vars' botops_bot, and keep the local path free of per-host tasks."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
GROUP_VARS = REPO / "playbooks" / "group_vars" / "all" / "botops.yml"
TASKS = REPO / "playbooks" / "tasks" / "fleet_kill_switch.yml"


def botops_bot_mapping():
    """key -> (inventory variable, default or None) as group_vars' botops_bot says."""
    bot = yaml.safe_load(GROUP_VARS.read_text())["botops_bot"]
    out = {}
    for key, template in bot.items():
        m = re.fullmatch(r"\{\{\s*(\w+)\s*(?:\|\s*default\((.*?)\))?\s*\}\}", template.strip())
        assert m, f"botops_bot.{key}: unexpected template {template!r}"
        out[key] = (m.group(1), m.group(2))
    return out


def fleet_mapping():
    tasks = yaml.safe_load(TASKS.read_text())
    split = next(t for t in tasks if "botops__fleet_split" in (t.get("ansible.builtin.set_fact") or {}))
    text = split["ansible.builtin.set_fact"]["botops__fleet_split"]
    bot = re.search(r"'bot': \{(.*?)\},\s*'secrets'", text, re.S).group(1)
    out = {}
    for m in re.finditer(r"'(\w+)': (?:v\.(\w+)(?: \| default\((.*?)\))?|h)(?=,|$)", bot.strip()):
        out[m.group(1)] = (m.group(2) or "inventory_hostname", m.group(3))
    return out


def normalise(default):
    return {"None": "none", "none": "none"}.get(default, default)


def test_fleet_bot_facts_match_group_vars_botops_bot():
    expected = botops_bot_mapping()
    found = fleet_mapping()
    assert set(found) == set(expected) - {"database"}, "the kill switch needs every fact but the database"
    for key, (var, default) in found.items():
        assert var == expected[key][0], key
        assert normalise(default) == normalise(expected[key][1]), key


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
