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
    assert found == expected, "the kill switch reads every fact (the database verifies a flatten)"


def test_fleet_secrets_match_group_vars_botops_secrets():
    action = plugin()
    expected = group_vars_mapping("botops_secrets")
    found = {k: (var, as_template_default(d, action.REQUIRED)) for k, (var, d) in action.SECRET_VARS.items()}
    assert found == expected


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


def entry_spec():
    import bot_fleet_kill_switch  # library/ is on the path (tests/conftest.py)

    return bot_fleet_kill_switch.argument_spec()["bots"]["options"]


def test_a_required_variable_set_to_nothing_is_missing():
    """`bot_root:` alone is null in YAML, and an empty root would be the controller's working directory."""
    action = plugin()
    for value in (None, ""):
        try:
            action.read_vars({"bot_family": "vanta", "bot_root": value}, action.BOT_VARS)
        except KeyError as exc:
            assert exc.args[0] == "bot_root"
        else:
            raise AssertionError(f"bot_root {value!r} was taken for a root")
    assert action.read_vars({"bot_family": "vanta", "bot_root": "/srv/b1"}, action.BOT_VARS)["process_match"] is None


def test_one_entry_with_a_wrong_value_leaves_the_others_valid():
    """Validated as one list, bot_ports: 27040 on one bot failed the whole call: no bot was driven."""
    action = plugin()
    good = {"bot": {"name": "b1", "family": "vanta", "root": "/srv/b1", "ports": {"api": 27010}},
            "secrets": {"api_token": "tok-1"}, "local": True}
    wrong = {"bot": {"name": "b2", "family": "vanta", "root": "/srv/b2", "ports": 27020},
             "secrets": {}, "local": True}
    valid, refused = action.check_entries([good, wrong], entry_spec())
    assert [e["bot"]["name"] for e in valid] == ["b1"] and valid[0]["bot"]["listen"] == "127.0.0.1"
    assert refused == {"b2": "bot_ports is of type int and we were unable to convert to dict: "
                             "<class 'int'> cannot be converted to a dict"}


def test_emergency_stop_fails_each_bot_that_was_not_halted_as_itself():
    """A run_once assert failed the play's first bot whichever bot failed: the exit line, the
    summary's hosts and the table named a bot that was halted."""
    play = yaml.safe_load((REPO / "playbooks" / "emergency_stop.yml").read_text())[0]
    last = play["tasks"][-1]
    assert "ansible.builtin.fail" in last and not last.get("run_once"), last
    assert not any("ansible.builtin.assert" in t and t.get("run_once") for t in play["tasks"])
