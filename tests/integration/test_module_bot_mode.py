"""bot_mode on the shared sandbox fleet, through real Ansible.

Every bot reads DRY/paper; going LIVE without a go/no-go checklist is refused on every bot (on
the paper-only papertrader for being paper-only); papertrader may not leave paper trading; vanta
goes LIVE with a passed checklist (check mode first, then again unchanged), really trades LIVE,
and comes back to DRY. Every bot ends DRY and paper, even when a step fails.
"""

from __future__ import annotations

import json

import pytest

try:  # tests/integration as a package or as a plain directory on sys.path
    from .playbook import run_playbook
    from .trading_state import restore_fleet, venv_on_path
except ImportError:
    from playbook import run_playbook
    from trading_state import restore_fleet, venv_on_path

from botops.sandbox.fleet import wait_until

ARGS = """\
        profile: "{{ botops_profile }}"
        bot: "{{ botops_bot }}"
        secrets: "{{ botops_secrets }}"
"""
VANTA = "      when: bot_family == 'vanta'\n"

PLAY = f"""\
- hosts: all
  gather_facts: false
  vars:
    checklist:
      passed: true
      checks:
        - {{name: DRY mode tested for 24h, passed: true}}
        - {{name: on-call engineer identified, passed: true}}
  tasks:
    - name: Read the mode
      botops.fleet.bot_mode:
{ARGS}
    - name: Go LIVE without a go/no-go checklist
      botops.fleet.bot_mode:
        execution_mode: LIVE
{ARGS}      ignore_errors: true
    - name: Turn paper trading off on a paper-only bot
      botops.fleet.bot_mode:
        paper: false
{ARGS}      when: bot_paper_only | bool
      ignore_errors: true
    - name: Go LIVE in check mode
      botops.fleet.bot_mode:
        execution_mode: LIVE
        go_no_go: "{{{{ checklist }}}}"
{ARGS}{VANTA}      check_mode: true
    - name: Go LIVE
      botops.fleet.bot_mode:
        execution_mode: LIVE
        go_no_go: "{{{{ checklist }}}}"
{ARGS}{VANTA}
    - name: Go LIVE again
      botops.fleet.bot_mode:
        execution_mode: LIVE
{ARGS}{VANTA}
    - name: Back to DRY
      botops.fleet.bot_mode:
        execution_mode: DRY
{ARGS}{VANTA}
    - name: Keep DRY and paper
      botops.fleet.bot_mode:
        execution_mode: DRY
        paper: true
{ARGS}
"""


def by_host(out, task, names):
    found = {h: r for (h, t), r in out["results"].items() if t == task}
    assert sorted(found) == sorted(names), f"{task}: results for {sorted(found)}\n{out['stdout'][-3000:]}"
    return found


def stored(fleet, name, key):
    rows = fleet.db_query(name, "SELECT value FROM bot_state WHERE key = %s", (key,))
    return rows[0][0] if rows else None


@pytest.fixture
def bots(fleet, venv_on_path):
    names = fleet.bot_names()
    restore_fleet(fleet, names)
    try:
        yield names
    finally:
        restore_fleet(fleet, names)
        for name in names:
            assert wait_until(lambda: stored(fleet, name, "execution_mode") == "DRY", 10), f"{name} not back to DRY"


def test_live_needs_go_no_go_paper_only_refused_vanta_round_trip(fleet, bots):
    families = {n: fleet.bot(n)["family"] for n in bots}
    paper_only = [n for n in bots if fleet.bot(n)["paper_only"]]
    vanta = [n for n in bots if families[n] == "vanta"]
    assert paper_only == ["bot02"] and vanta == ["bot05"], (paper_only, vanta)
    last_trade = {n: fleet.db_query(n, "SELECT coalesce(max(id), 0) FROM trades")[0][0] for n in vanta}

    out = run_playbook(fleet.hosts_file, PLAY)
    assert out["rc"] == 0, out["stdout"][-3000:]

    for name, res in by_host(out, "Read the mode", bots).items():
        assert (res["execution_mode"], res["paper_trading"], res["changed"]) == ("DRY", True, False), (name, res)

    for name, res in by_host(out, "Go LIVE without a go/no-go checklist", bots).items():
        assert res["_event"] == "runner_on_failed" and res["refused"] and res["actions"] == [], (name, res)
        why = "paper-only" if name in paper_only else "needs a passed go/no-go checklist"
        assert why in res["msg"], res["msg"]

    for name, res in by_host(out, "Turn paper trading off on a paper-only bot", paper_only).items():
        assert res["_event"] == "runner_on_failed" and "paper trading cannot be turned off" in res["msg"], res

    check = by_host(out, "Go LIVE in check mode", vanta)
    live = by_host(out, "Go LIVE", vanta)
    again = by_host(out, "Go LIVE again", vanta)
    back = by_host(out, "Back to DRY", vanta)
    for name in vanta:
        assert check[name]["changed"] and check[name]["would"] == ["SET exec_mode"] and check[name]["actions"] == []
        assert live[name]["previous"]["execution_mode"] == "DRY", f"check mode changed the mode: {live[name]}"
        assert live[name]["changed"] and live[name]["execution_mode"] == "LIVE"
        assert live[name]["diff"]["after"].startswith("execution_mode: LIVE")
        assert again[name]["changed"] is False and again[name]["actions"] == []
        assert back[name]["changed"] and back[name]["execution_mode"] == "DRY"
        # the bot itself traded LIVE in between, and is back to DRY
        modes = fleet.db_query(name, "SELECT DISTINCT mode FROM trades WHERE id > %s", (last_trade[name],))
        assert ("LIVE",) in modes, f"{name} wrote no LIVE trade while LIVE: {modes}"

    for name, res in by_host(out, "Keep DRY and paper", bots).items():
        assert res["changed"] is False and (res["execution_mode"], res["paper_trading"]) == ("DRY", True), res

    # refusals changed nothing: configs still DRY/paper
    for name in bots:
        config = json.loads(fleet.bot(name)["config_path"].read_text())
        assert (config["execution_mode"], config["paper_trading"]) == ("DRY", True), (name, config)
