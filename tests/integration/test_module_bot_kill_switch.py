"""bot_kill_switch on the shared sandbox fleet (one bot of every family, two mojorust), through real Ansible.

Halt every bot in the rhythm check mode -> apply -> apply again, see in each bot's own ledger
that no trade is written any more, see releasing pause refused while halt is engaged, then
release and see trading resume. The fleet is put back (released, running, DRY/paper) even when
a step fails.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

try:  # tests/integration as a package or as a plain directory on sys.path
    from .playbook import run_playbook
    from .trading_state import AUDIT_LOG, assert_not_trading, restore_fleet, venv_on_path, wait_trading
except ImportError:
    from playbook import run_playbook
    from trading_state import AUDIT_LOG, assert_not_trading, restore_fleet, venv_on_path, wait_trading

ARGS = """\
        profile: "{{ botops_profile }}"
        bot: "{{ botops_bot }}"
        secrets: "{{ botops_secrets }}"
"""

HALT = f"""\
- hosts: all
  gather_facts: false
  tasks:
    - name: Halt in check mode
      botops.fleet.bot_kill_switch:
        level: halt
        reason: integration test halt
        who: tester
{ARGS}      check_mode: true
    - name: Halt
      botops.fleet.bot_kill_switch:
        level: halt
        reason: integration test halt
        who: tester
{ARGS}
    - name: Halt again
      botops.fleet.bot_kill_switch:
        level: halt
        reason: integration test halt
        who: tester
{ARGS}
    - name: Release pause while halt is engaged
      botops.fleet.bot_kill_switch:
        state: released
        level: pause
{ARGS}      ignore_errors: true
"""

RELEASE = f"""\
- hosts: all
  gather_facts: false
  tasks:
    - name: Release in check mode
      botops.fleet.bot_kill_switch:
        state: released
        level: halt
{ARGS}      check_mode: true
    - name: Release
      botops.fleet.bot_kill_switch:
        state: released
        level: halt
        who: tester
{ARGS}
    - name: Release again
      botops.fleet.bot_kill_switch:
        state: released
        level: halt
{ARGS}
"""


def by_host(out, task, names):
    found = {h: r for (h, t), r in out["results"].items() if t == task}
    assert sorted(found) == sorted(names), f"{task}: results for {sorted(found)}\n{out['stdout'][-3000:]}"
    return found


@pytest.fixture
def bots(fleet, venv_on_path):
    names = fleet.bot_names()
    restore_fleet(fleet, names)
    try:
        yield names
    finally:
        restore_fleet(fleet, names)


def test_halt_stops_trading_on_every_family_and_release_resumes_it(fleet, bots):
    stops_process = {n for n in bots if fleet.bot(n)["family"] == "mojorust"}

    out = run_playbook(fleet.hosts_file, HALT)
    assert out["rc"] == 0, out["stdout"][-3000:]

    check = by_host(out, "Halt in check mode", bots)
    for name, res in check.items():
        assert res["changed"] and res["actions"] == [] and res["rung"], (name, res)
        if name in stops_process:  # no kill-switch API: the ladder starts at the service manager
            assert res["rung"] == "service stop", (name, res)

    halt = by_host(out, "Halt", bots)
    for name, res in halt.items():
        assert res["changed"] and res["engaged_by"], (name, res)
        assert res["previous_level"] is None, f"{name}: check mode engaged something: {res}"
        assert res["current_level"] == "halt" and res["steps"][-1]["verified"], (name, res)

    again = by_host(out, "Halt again", bots)
    for name, res in again.items():
        assert res["changed"] is False and res["actions"] == [] and res["current_level"] == "halt", (name, res)

    refused = by_host(out, "Release pause while halt is engaged", bots)
    for name, res in refused.items():
        assert res["_event"] == "runner_on_failed", (name, res)
        assert "level 'halt' is engaged" in res["msg"] and "tester" in res["msg"] and "force" in res["msg"], res["msg"]

    # the real state: no trade written any more, mojorust processes gone, one audit record per bot
    assert_not_trading(fleet, bots)
    states = fleet.processes()
    assert {n for n in bots if states[n]["statename"] != "RUNNING"} == stops_process
    for name in bots:
        log = Path(fleet.bot(name)["root"]) / AUDIT_LOG
        assert log.stat().st_mode & 0o777 == 0o600, name
        records = [json.loads(line) for line in log.read_text().splitlines()]
        engaged = [r for r in records if r["outcome"] == "engaged"]
        assert len(engaged) == 1 and engaged[0]["who"] == "tester" and engaged[0]["level"] == "halt", records
        assert engaged[0]["rung"] == halt[name]["engaged_by"]

    out = run_playbook(fleet.hosts_file, RELEASE)
    assert out["rc"] == 0, out["stdout"][-3000:]
    check = by_host(out, "Release in check mode", bots)
    assert all(r["changed"] and r["actions"] == [] for r in check.values()), check
    released = by_host(out, "Release", bots)
    for name, res in released.items():
        assert res["changed"] and res["released_by"] and res["current_level"] is None, (name, res)
        assert res["previous_level"] == "halt", f"{name}: check mode released something: {res}"
    again = by_host(out, "Release again", bots)
    assert all(r["changed"] is False and r["actions"] == [] for r in again.values()), again

    wait_trading(fleet, bots)
    assert all(fleet.processes()[n]["statename"] == "RUNNING" for n in bots)
    for name in bots:
        records = [json.loads(line) for line in (Path(fleet.bot(name)["root"]) / AUDIT_LOG).read_text().splitlines()]
        assert records[-1]["outcome"] == "released" and records[-1]["remaining_level"] is None, records[-1]
        assert os.path.getsize(Path(fleet.bot(name)["root"]) / AUDIT_LOG) > 0
