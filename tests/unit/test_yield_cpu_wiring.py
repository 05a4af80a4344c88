"""Which work yields the CPU to the bots (plugins/module_utils/botops_priority.py), read from the
playbooks and modules themselves: every play of an operation that is not an emergency sets the
BOTOPS_NICE environment, and every module lowers its priority to it; the kill switch, the emergency
stop, the status check and notifications never do."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
YIELDING_ENV = "{{ botops_nice_environment }}"
NEVER_YIELD_PLAYBOOKS = {"kill_switch.yml", "emergency_stop.yml", "status.yml", "notify.yml"}
NEVER_YIELD_MODULES = {"bot_kill_switch.py", "bot_fleet_kill_switch.py", "bot_notify.py"}


def plays():
    for path in sorted((REPO / "playbooks").glob("*.yml")):
        for play in yaml.safe_load(path.read_text()) or []:
            if "hosts" in play:
                yield path.name, play


def test_every_play_of_an_operation_that_is_no_emergency_yields_and_no_other_does():
    wrong = []
    for name, play in plays():
        env = play.get("environment")
        if name in NEVER_YIELD_PLAYBOOKS and env is not None:
            wrong.append(f"{name}: play {play.get('name')!r} sets environment {env!r}: it must never yield")
        elif name not in NEVER_YIELD_PLAYBOOKS and env != YIELDING_ENV:
            wrong.append(f"{name}: play {play.get('name')!r} has environment {env!r}, not {YIELDING_ENV!r}")
    assert not wrong, "\n".join(wrong)
    variables = yaml.safe_load((REPO / "playbooks" / "group_vars" / "all" / "botops.yml").read_text())
    assert variables["botops_nice_environment"] == {"BOTOPS_NICE": "{{ bot_ops_nice | default(10) }}"}


def test_every_module_yields_but_the_kill_switch_and_notifications():
    wrong = []
    for path in sorted((REPO / "plugins" / "modules").glob("bot_*.py")):
        calls = re.findall(r"^    yield_cpu\(module\)$", path.read_text(), re.M)
        if path.name in NEVER_YIELD_MODULES and calls:
            wrong.append(f"{path.name} calls yield_cpu: it must never yield")
        elif path.name not in NEVER_YIELD_MODULES and len(calls) != 1:
            wrong.append(f"{path.name}: {len(calls)} calls of yield_cpu(module) in main(), not 1")
    assert not wrong, "\n".join(wrong)
