"""The fleet kill switch's action plugin builds each local bot's facts from the inventory variables
itself (templating botops_bot per host is most of the cost at a thousand bots), from the one
definition group_vars' botops_bot and botops_secrets use; the playbook's local path has no per-host task."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from ansible.errors import AnsibleLookupError
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible_collections.botops.fleet.plugins.action import bot_fleet_kill_switch as action
from ansible_collections.botops.fleet.plugins.lookup import bot_vars
from ansible_collections.botops.fleet.plugins.module_utils import botops_bot_vars, botops_fleet_kill_switch

REPO = Path(__file__).resolve().parents[2]
GROUP_VARS = REPO / "playbooks" / "group_vars" / "all" / "botops.yml"
TASKS = REPO / "playbooks" / "tasks" / "fleet_kill_switch.yml"


def test_group_vars_build_botops_bot_and_botops_secrets_from_the_one_definition():
    group_vars = yaml.safe_load(GROUP_VARS.read_text())
    assert group_vars["botops_bot"] == "{{ lookup('botops.fleet.bot_vars', 'bot') }}"
    assert group_vars["botops_secrets"] == "{{ lookup('botops.fleet.bot_vars', 'secrets') }}"
    assert action.bot_entry is botops_bot_vars.bot_entry and action.read_vars is botops_bot_vars.read_vars


class _Templar:
    def template(self, value):
        return value


def lookup(host, term):
    plugin = bot_vars.LookupModule(templar=_Templar())
    return plugin.run([term], variables=host)[0]


def test_the_lookup_reads_every_variable_with_its_default():
    host = {"inventory_hostname": "b1", "bot_family": "vanta", "bot_root": "/srv/b1", "bot_ports": {"api": 1},
            "bot_api_token": "tok-1"}
    bot = lookup(host, "bot")
    assert bot == {"name": "b1", "bot_id": None, "family": "vanta", "root": "/srv/b1", "listen": "127.0.0.1",
                   "ports": {"api": 1}, "service": {}, "process_match": None, "database": {}, "redis_url": None,
                   "paper_only": None}
    assert set(bot) - {"name"} == set(botops_fleet_kill_switch.argument_spec()["bots"]["options"]["bot"]["options"]) - {"name"}
    assert lookup(host, "secrets") == {"api_token": "tok-1", "username": None, "password": None,
                                             "database_password": None}
    bot["service"]["name"] = "changed"  # a default is the bot's own copy
    assert lookup(host, "bot")["service"] == {}
    with pytest.raises(AnsibleLookupError, match="bot b1: its inventory sets no bot_root"):
        lookup({"inventory_hostname": "b1", "bot_family": "vanta"}, "bot")


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
    return botops_fleet_kill_switch.argument_spec()["bots"]["options"]


def test_a_required_variable_set_to_nothing_is_missing():
    """`bot_root:` alone is null in YAML, and an empty root would be the controller's working directory."""
    for value in (None, ""):
        with pytest.raises(botops_bot_vars.MissingVariable) as info:
            botops_bot_vars.read_vars({"bot_family": "vanta", "bot_root": value}, botops_bot_vars.BOT_VARS)
        assert info.value.variable == "bot_root"
    found = botops_bot_vars.read_vars({"bot_family": "vanta", "bot_root": "/srv/b1"}, botops_bot_vars.BOT_VARS)
    assert found["process_match"] is None


def test_one_entry_with_a_wrong_value_leaves_the_others_valid():
    """Validated as one list, bot_ports: 27040 on one bot failed the whole call: no bot was driven."""
    good = {"bot": {"name": "b1", "family": "vanta", "root": "/srv/b1", "ports": {"api": 27010}},
            "secrets": {"api_token": "tok-1"}, "local": True}
    wrong = {"bot": {"name": "b2", "family": "vanta", "root": "/srv/b2", "ports": 27020},
             "secrets": {}, "local": True}
    validator = ArgumentSpecValidator(entry_spec())  # one for every host's entry, as HostReader checks them
    checked = {e["bot"]["name"]: action.check_entry(e, validator) for e in (wrong, good, wrong)}
    valid = [entry for entry, why in checked.values() if why is None]
    refused = {name: why for name, (entry, why) in checked.items() if why is not None}
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
