"""`botops maintenance --window=daily|weekly|monthly`: a maintenance window across the fleet.

The window must be open for the targeted bots' families (playbooks/vars/maintenance_windows.yml)
unless --force: outside it the task refuses with exit 2 before anything runs, saying when the
window opens next. Inside it, playbooks/maintenance.yml announces the start, maintains the due bots
in batches (graceful stop, backup, VACUUM ANALYZE / REINDEX, log rotation, backup retention,
restart, verify), and announces the end. cron and AWX run the same playbook with the same extra vars.
"""

from __future__ import annotations

import re
from datetime import datetime

from invoke import Exit, task

from botops import profiles, maintenance_windows
from botops.inventory import InventoryError, hosts
from botops.fleet_task import run_operation, usage_error
from botops.deploy import OVERRIDE_HELP
from botops.report import shown
from botops.runner import EXIT_USAGE, resolve_inventory

SERIAL_RE = re.compile(r"^([1-9][0-9]{0,5}|([1-9][0-9]?|100)%)$")

COLUMNS = [
    ("name", "bot"),
    ("result", "result"),
    ("window", "window"),
    ("downtime", "downtime s"),
    ("backup_id", "backup"),
    ("tables", "tables"),
    ("logs_rotated", "logs rotated"),
    ("backups_deleted", "backups deleted"),
    ("ready", "ready"),
    ("message", "message"),
]


def load_windows(task_name: str) -> dict[str, maintenance_windows.Window]:
    try:
        return maintenance_windows.load(families=profiles.available())
    except maintenance_windows.WindowError as exc:
        raise usage_error(task_name, str(exc)) from None


def bot_families(inventory: str | None, bots: list[str]) -> dict[str, str | None]:
    """bot_family of each bot as the inventory (hosts, groups, group_vars/host_vars) says; None if unknown.

    Vault-encrypted variable files cannot be read here; bots whose family is only there stay unknown
    and the playbook decides for them."""
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader
    from ansible.vars.manager import VariableManager

    loader = DataLoader()
    manager = InventoryManager(loader=loader, sources=[str(resolve_inventory(inventory))])
    found: dict[str, str | None] = {}
    variables = None
    for name in bots:
        host = manager.get_host(name)
        family = host.get_vars().get("bot_family") if host else None
        if family is None and host is not None:
            for group in sorted(host.get_groups(), key=lambda g: g.depth, reverse=True):
                family = group.get_vars().get("bot_family")
                if family:
                    break
        if family is None and host is not None:
            try:
                variables = variables or VariableManager(loader=loader, inventory=manager)
                family = variables.get_vars(host=host, include_hostvars=False).get("bot_family")
            except Exception:  # an encrypted vars file, a broken template: let the playbook decide
                family = None
        found[name] = family if isinstance(family, str) else None
    return found


def window_status(window: maintenance_windows.Window, families: dict[str, str | None], now: datetime) -> dict[str, dict]:
    """The window's plan per family of the targeted bots (all known families for bots of unknown family)."""
    wanted = {f for f in families.values() if f}
    if any(f is None for f in families.values()):
        wanted |= set(profiles.available()) | set(window.families)
    return {family: maintenance_windows.plan(window, now, family) for family in sorted(wanted)}


def closed_message(window: maintenance_windows.Window, plans: dict[str, dict], families: dict[str, str | None],
                   now: datetime) -> str:
    lines = [f"the {window.name} maintenance window is closed for every targeted bot at {now:%Y-%m-%d %H:%M} UTC:"]
    for family, plan in sorted(plans.items(), key=lambda item: item[1]["next_open"]):
        bots = sorted(b for b, f in families.items() if f == family)
        who = f"{family} ({', '.join(bots)})" if bots else family
        when = datetime.fromisoformat(plan["next_open"])
        lines.append(f"  {who}: {plan['schedule_text']}; next opens {when:%a %Y-%m-%d %H:%M} UTC")
    lines.append("nothing was changed; --force runs it now anyway")
    return "\n".join(lines)


def parse_tasks(task_name: str, value: str | None) -> list[str] | None:
    if value is None:
        return None
    listed = [t.strip() for t in value.split(",") if t.strip()]
    if not listed:
        raise usage_error(task_name, f"--tasks is empty: give task names, comma-separated "
                                     f"(expected: {', '.join(maintenance_windows.TASKS)}), or leave --tasks out for the window's")
    if len(value) > 1000:
        raise usage_error(task_name, f"--tasks {shown(value)} is too long (expected task names, comma-separated, "
                                     f"from: {', '.join(maintenance_windows.TASKS)})")
    try:
        return list(maintenance_windows.check_tasks(listed, "--tasks"))
    except maintenance_windows.WindowError as exc:
        raise usage_error(task_name, str(exc)) from None


@task(
    help={
        "window": "the maintenance window to run: daily, weekly or monthly (playbooks/vars/maintenance_windows.yml)",
        "force": "run even outside the window, on every targeted bot, and again in an occurrence already done",
        "limit": "only these bots or groups, e.g. bot01,vanta (Ansible --limit pattern)",
        "inventory": "inventory file or directory (default: the sandbox, inventory/sandbox/hosts.yml)",
        "check": "dry run: report what would be done, change nothing, send no notification",
        "serial": "bots maintained at once, a number or a percentage (default 1); the run stops at the first failure",
        "tasks": "replace the window's tasks, comma-separated, e.g. backup,verify",
        "now": "decide the window at this ISO 8601 UTC instant instead of the clock (dry runs, tests)",
        "takeover": "take over a stale lock left by a crashed run (never a live one)",
        **OVERRIDE_HELP,
    }
)
def maintenance(c, window=None, force=False, limit=None, inventory=None, check=False, serial="1", tasks=None,
                now=None, takeover=False, override_kill_switch=False):
    """Run a maintenance window (daily, weekly, monthly) on the bots whose window is open; exit 2 outside it."""
    name = "maintenance"
    loaded = load_windows(name)
    if not window:
        raise usage_error(name, f"--window is required (expected one of: {', '.join(loaded)})")
    if window not in loaded:
        raise usage_error(name, f"--window: unknown maintenance window {shown(window)} "
                                f"(expected one of: {', '.join(loaded)})")
    chosen = maintenance_windows.get(loaded, window)
    if not SERIAL_RE.match(str(serial)):
        raise usage_error(name, f"--serial {shown(serial)} must be a number of bots or a percentage, e.g. 2 or 25%")
    task_list = parse_tasks(name, tasks)
    if now is not None and not now.strip():
        raise usage_error(name, "--now is empty: give an ISO 8601 instant (e.g. 2026-11-22T03:00:00Z), "
                                "or leave --now out for the clock")
    try:
        moment = maintenance_windows.parse_now(now)
    except (ValueError, OverflowError):
        raise usage_error(name, f"--now {shown(now)} is not an ISO 8601 instant (e.g. 2026-11-22T03:00:00Z)") from None
    if not 2000 <= moment.year <= 2999:  # the windows' next occurrences must stay within datetime's range
        raise usage_error(name, f"--now {shown(now)} is out of range (expected an ISO 8601 instant of the years "
                                "2000 to 2999, e.g. 2026-11-22T03:00:00Z)")
    try:
        _, bots = hosts(inventory, limit)
    except InventoryError as exc:
        raise usage_error(name, str(exc)) from None

    families = bot_families(inventory, bots)
    plans = window_status(chosen, families, moment)
    open_families = sorted(f for f, p in plans.items() if p["open"])
    if not force and not open_families:
        raise Exit(f"{name}: {closed_message(chosen, plans, families, moment)}", code=EXIT_USAGE)
    if force:
        print(f"{name}: {window} window forced on every targeted bot", flush=True)
    else:
        print(f"{name}: {window} window open for {', '.join(open_families)}", flush=True)

    extravars = {
        "botops_maintenance_window": window,
        "botops_maintenance_force": bool(force),
        "botops_maintenance_serial": int(serial) if str(serial).isdigit() else serial,
    }
    if now:
        extravars["botops_maintenance_now"] = moment.isoformat()
    if task_list is not None:
        extravars["botops_maintenance_tasks"] = task_list
    report = run_operation(name, "maintenance.yml", inventory=inventory, limit=limit, check=check,
                           extravars=extravars, takeover=takeover, columns=COLUMNS,
                           override_kill_switch=override_kill_switch)
    if report and all(row.get("result") == "skipped" and "window closed" in str(row.get("message"))
                      for row in report.values()):
        raise Exit(f"{name}: the {window} window is closed for every targeted bot; nothing was changed",
                   code=EXIT_USAGE)
