"""bot_fleet_kill_switch on the shared sandbox fleet: one task on the controller halts all six bots.

Check mode -> halt -> halt again, every bot's ledger stops growing, per-bot results and the
summary, the controller-side audit log plus each (local) bot's own log; then release and
trading resumes. The fleet is put back even when a step fails.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

try:  # tests/integration as a package or as a plain directory on sys.path
    from .playbook import run_playbook
    from .trading_state import AUDIT_LOG, assert_not_trading, restore_fleet, venv_on_path, wait_trading
except ImportError:
    from playbook import run_playbook
    from trading_state import AUDIT_LOG, assert_not_trading, restore_fleet, venv_on_path, wait_trading

FLEET = """\
        bots: "{{ botops__fleet | from_json }}"
        audit_log: "{{ controller_audit_log }}"
      vars:
        botops__fleet: >-
          [{% for h in ansible_play_hosts %}{{ {'bot': hostvars[h].botops_bot, 'profile': hostvars[h].botops_profile,
          'secrets': hostvars[h].botops_secrets,
          'local': hostvars[h].ansible_connection | default('ssh') == 'local'} | to_json }}{{ '' if loop.last else ',' }}{% endfor %}]
      delegate_to: localhost
      run_once: true
"""


def play(tasks):
    return f"- hosts: all\n  gather_facts: false\n  tasks:\n{tasks}"


def task(name, state, extra=""):
    reason = "        reason: integration test fleet halt\n" if state == "engaged" else ""
    return (f"    - name: {name}\n      botops.fleet.bot_fleet_kill_switch:\n        state: {state}\n        level: halt\n"
            f"        who: tester\n{reason}{FLEET}{extra}")


HALT = play(task("Halt the fleet in check mode", "engaged", "      check_mode: true\n")
            + task("Halt the fleet", "engaged") + task("Halt the fleet again", "engaged"))
RELEASE = play(task("Release the fleet", "released") + task("Release the fleet again", "released"))


def result(out, name):
    found = [r for (h, t), r in out["results"].items() if t == name]
    assert len(found) == 1, f"{name}: {len(found)} results\n{out['stdout'][-3000:]}"
    return found[0]


@pytest.fixture
def bots(fleet, venv_on_path):
    names = fleet.bot_names()
    restore_fleet(fleet, names)
    try:
        yield names
    finally:
        restore_fleet(fleet, names)


def test_fleet_halt_and_release(fleet, bots, tmp_path):
    audit = tmp_path / "artifacts" / "kill-switch-audit.log"
    extravars = {"controller_audit_log": str(audit)}

    out = run_playbook(fleet.hosts_file, HALT, extravars=extravars)
    assert out["rc"] == 0, out["stdout"][-3000:]
    check = result(out, "Halt the fleet in check mode")
    assert check["changed"] and check["actions"] == [] and sorted(check["bots"]) == bots
    assert all(r["rung"] and not r["failed"] for r in check["bots"].values()), check["bots"]

    halt = result(out, "Halt the fleet")
    assert halt["changed"] and sorted(halt["bots"]) == bots
    summary = halt["summary"]
    assert (summary["total"], summary["halted"], summary["failed"], summary["changed"]) == (6, 6, 0, 6), summary
    for name, res in halt["bots"].items():
        assert res["engaged_by"] and res["current_level"] == "halt", (name, res)
        assert res["previous_level"] is None, f"{name}: check mode engaged something: {res}"
    again = result(out, "Halt the fleet again")
    assert again["changed"] is False and again["summary"]["changed"] == 0 and again["actions"] == []

    assert_not_trading(fleet, bots)
    assert audit.stat().st_mode & 0o777 == 0o600
    controller = [json.loads(line) for line in audit.read_text().splitlines()]
    assert sorted(r["bot"] for r in controller) == bots
    assert {(r["action"], r["outcome"], r["who"], r["via"]) for r in controller} == {
        ("engage", "engaged", "tester", "bot_fleet_kill_switch")}
    for name in bots:  # sandbox bots are local: their own logs have the same record
        own = [json.loads(line) for line in (Path(fleet.bot(name)["root"]) / AUDIT_LOG).read_text().splitlines()]
        assert [r["rung"] for r in own] == [halt["bots"][name]["engaged_by"]]

    out = run_playbook(fleet.hosts_file, RELEASE, extravars=extravars)
    assert out["rc"] == 0, out["stdout"][-3000:]
    released = result(out, "Release the fleet")
    assert released["changed"] and released["summary"]["released"] == 6 and released["summary"]["failed"] == 0
    assert all(r["released_by"] and r["current_level"] is None for r in released["bots"].values()), released["bots"]
    again = result(out, "Release the fleet again")
    assert again["changed"] is False and again["actions"] == []

    wait_trading(fleet, bots)
    assert all(fleet.processes()[n]["statename"] == "RUNNING" for n in bots)
    assert [json.loads(line)["outcome"] for line in audit.read_text().splitlines()].count("released") == 6
