"""bot_health on the shared sandbox fleet, through real Ansible: every bot ready with its
components; a bot that does not answer fails with the last response observed. Read-only."""

from __future__ import annotations

import pytest

try:  # tests/integration as a package or as a plain directory on sys.path
    from .playbook import run_playbook
    from .trading_state import venv_on_path
except ImportError:
    from playbook import run_playbook
    from trading_state import venv_on_path

PLAY = """\
- hosts: all
  gather_facts: false
  tasks:
    - name: Wait until ready
      botops.fleet.bot_health:
        wait_for: ready
        timeout: 30
        profile: "{{ botops_profile }}"
        bot: "{{ botops_bot }}"
        secrets: "{{ botops_secrets }}"
      check_mode: true
    - name: Wait for a bot that does not answer
      botops.fleet.bot_health:
        wait_for: live
        timeout: 0.5
        profile: "{{ botops_profile }}"
        bot: "{{ botops_bot | combine({'ports': {'api': 1, 'health': 1}}) }}"
        secrets: "{{ botops_secrets }}"
      ignore_errors: true
"""


def by_host(out, task, names):
    found = {h: r for (h, t), r in out["results"].items() if t == task}
    assert sorted(found) == sorted(names), f"{task}: results for {sorted(found)}\n{out['stdout'][-3000:]}"
    return found


@pytest.fixture
def bots(fleet, venv_on_path):
    names = fleet.bot_names()
    fleet.wait_ready(names, timeout=60)
    return names


def test_ready_bots_and_a_bot_that_does_not_answer(fleet, bots):
    out = run_playbook(fleet.hosts_file, PLAY)
    assert out["rc"] == 0, out["stdout"][-3000:]
    ready = by_host(out, "Wait until ready", bots)
    for name, res in ready.items():
        assert res["live"] is True and res["ready"] is True and res["changed"] is False, (name, res)
        assert isinstance(res["components"], dict) and res["components"], (name, res)
        assert res["waited"] < 30
    dead = by_host(out, "Wait for a bot that does not answer", bots)
    for name, res in dead.items():
        assert res["_event"] == "runner_on_failed" and res["live"] is False, (name, res)
        assert res["msg"].startswith(f"Failed to wait for the liveness of bot '{name}': not live after"), res["msg"]
        assert "Connection refused" in res["msg"] and "error" in res["observed"][0], res
    assert all(fleet.is_ready(n) for n in bots), "bot_health changed nothing"
