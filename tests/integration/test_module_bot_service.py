"""bot_service on the shared sandbox fleet, through real Ansible.

Every bot restarted (check mode first) reports its downtime and is ready again with a new
process; one bot is stopped (the process really gone), stopped again (unchanged) and started.
The fleet is put back (running, ready) even when a step fails.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

try:  # tests/integration as a package or as a plain directory on sys.path
    from .playbook import run_playbook
    from .trading_state import restore_fleet, venv_on_path, wait_trading
except ImportError:
    from playbook import run_playbook
    from trading_state import restore_fleet, venv_on_path, wait_trading

ARGS = """\
        profile: "{{ botops_profile }}"
        bot: "{{ botops_bot }}"
        secrets: "{{ botops_secrets }}"
"""

RESTART = f"""\
- hosts: all
  gather_facts: false
  tasks:
    - name: Restart in check mode
      botops.fleet.bot_service:
        state: restarted
{ARGS}      check_mode: true
    - name: Restart
      botops.fleet.bot_service:
        state: restarted
{ARGS}
    - name: Started
      botops.fleet.bot_service:
        state: started
{ARGS}
"""

STOP_START = f"""\
- hosts: all
  gather_facts: false
  tasks:
    - name: Stop in check mode
      botops.fleet.bot_service:
        state: stopped
{ARGS}      check_mode: true
    - name: Stop
      botops.fleet.bot_service:
        state: stopped
{ARGS}
    - name: Stop again
      botops.fleet.bot_service:
        state: stopped
{ARGS}
    - name: See no process left
      ansible.builtin.command:
        argv: [pgrep, -f, --, "{{{{ bot_process_match }}}}"]
      register: pgrep
      changed_when: false
      failed_when: pgrep.rc != 1
    - name: Start
      botops.fleet.bot_service:
        state: started
{ARGS}
"""


# a restart as botops' non-emergency playbooks run it: their plays' environment (playbooks/group_vars)
RESTART_YIELDING = f"""\
- hosts: all
  gather_facts: false
  environment: "{{{{ botops_nice_environment }}}}"
  tasks:
    - name: Restart
      botops.fleet.bot_service:
        state: restarted
{ARGS}
"""


def niceness(pid):
    """The process's niceness (/proc/<pid>/stat field 19), None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[16])


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


@pytest.mark.slow  # the default suite keeps under 15 minutes; run with -m slow
def test_restart_reports_downtime_and_the_bot_is_ready_after(fleet, bots):
    pids = fleet.pids()
    out = run_playbook(fleet.hosts_file, RESTART)
    assert out["rc"] == 0, out["stdout"][-3000:]
    check = by_host(out, "Restart in check mode", bots)
    for name, res in check.items():
        assert res["changed"] and res["actions"] == [] and res["would"][-1] == "wait until ready", (name, res)
    restart = by_host(out, "Restart", bots)
    for name, res in restart.items():
        assert res["pids_before"] == [pids[name]], f"{name}: check mode restarted it: {res}"
        assert res["changed"] and res["actions"] == ["service stop", "service start", "ready"], (name, res)
        assert isinstance(res["downtime"], float) and 0 < res["downtime"] < 60, (name, res)
        assert isinstance(res["slot_wait"], float) and res["slot_wait"] >= 0, (name, res)  # took a window slot
        assert res["ready"] is True and res["pids_after"] and res["pids_after"] != res["pids_before"], (name, res)
    started = by_host(out, "Started", bots)
    for name, res in started.items():
        assert res["changed"] is False and res["actions"] == [] and res["ready"] is True, (name, res)
        assert res["pids_before"] == restart[name]["pids_after"], (name, res)

    now = fleet.pids()
    assert all(now[n] == restart[n]["pids_after"][0] for n in bots), (now, restart)
    assert all(fleet.is_ready(n) for n in bots)
    wait_trading(fleet, bots)


def test_stop_then_start(fleet, bots):
    name = "bot03"
    before = fleet.pids()[name]
    out = run_playbook(fleet.hosts_file, STOP_START, limit=name)
    assert out["rc"] == 0, out["stdout"][-3000:]
    check = by_host(out, "Stop in check mode", [name])[name]
    assert check["changed"] and check["actions"] == [] and check["pids_after"] == [before]
    stop = by_host(out, "Stop", [name])[name]
    assert stop["pids_before"] == [before], f"check mode stopped it: {stop}"
    assert stop["changed"] and stop["actions"] == ["service stop"] and stop["pids_after"] == []
    assert stop["state"] == "stopped" and stop["downtime"] is None
    again = by_host(out, "Stop again", [name])[name]
    assert again["changed"] is False and again["actions"] == []
    assert by_host(out, "See no process left", [name])[name]["rc"] == 1
    start = by_host(out, "Start", [name])[name]
    assert start["changed"] and start["actions"] == ["service start", "ready"] and start["ready"] is True
    assert start["downtime"] > 0
    assert fleet.processes()[name]["statename"] == "RUNNING" and fleet.is_ready(name)
    wait_trading(fleet, [name])


def test_botops_work_yields_the_cpu_but_the_bot_it_starts_keeps_its_priority(fleet, bots):
    """The module process of a non-emergency play runs at the inventory's bot_ops_nice, read from
    /proc while it runs (its environment names BOTOPS_NICE); the bot it restarts, started by
    supervisord, runs at the priority the fleet was started with."""
    name = "bot02"
    base = niceness(fleet.pids()[name])
    seen: dict[int, int] = {}  # pid of every process carrying BOTOPS_NICE -> the highest niceness seen
    done = threading.Event()

    def watch():
        while not done.is_set():
            for entry in os.scandir("/proc"):
                if not entry.name.isdigit():
                    continue
                try:
                    environ = Path(entry.path, "environ").read_bytes().split(b"\0")
                except OSError:
                    continue
                if b"BOTOPS_NICE=7" in environ:
                    nice = niceness(entry.name)
                    if nice is not None:
                        seen[int(entry.name)] = max(nice, seen.get(int(entry.name), nice))
            done.wait(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        out = run_playbook(fleet.hosts_file, RESTART_YIELDING, extravars={"bot_ops_nice": 7}, limit=name)
    finally:
        done.set()
        watcher.join()
    assert out["rc"] == 0, out["stdout"][-3000:]
    restart = by_host(out, "Restart", [name])[name]
    assert restart["pids_after"] and restart["pids_after"] != restart["pids_before"], restart
    assert seen and max(seen.values()) == max(7, base), f"processes carrying BOTOPS_NICE=7: {seen}"
    new_pid = fleet.pids()[name]
    assert new_pid == restart["pids_after"][0] and new_pid not in seen
    assert niceness(new_pid) == base, f"the restarted bot runs at niceness {niceness(new_pid)}, not {base}"
    wait_trading(fleet, [name])
