"""`invoke status`: the morning check of every bot, through playbooks/status.yml."""

from __future__ import annotations

from invoke import task

from botops.operation import run_operation

COLUMNS = [
    ("name", "bot"),
    ("live", "live"),
    ("ready", "ready"),
    ("service_state", "service"),
    ("release", "release"),
    ("execution_mode", "mode"),
    ("paper_trading", "paper"),
    ("open_positions", "positions"),
    ("open_orders", "orders"),
    ("alembic_revision", "revision"),
    ("kill_switch", "kill switch (operator)"),
]


def rows(report: dict) -> list[dict]:
    """One row per bot; the kill switch an operator engaged as '<level> by <who> at <time>'."""
    lines = []
    for name in sorted(report):
        row = dict(report[name], name=name)
        engaged = row.get("kill_switch")
        if isinstance(engaged, dict):
            row["kill_switch"] = f"{engaged.get('level')} by {engaged.get('who')} at {engaged.get('time')}"
        lines.append(row)
    return lines


@task(
    help={
        "inventory": "inventory file or directory (default: the sandbox, inventory/sandbox/hosts.yml)",
        "limit": "only these bots or groups, e.g. bot01,vanta (Ansible --limit pattern)",
    }
)
def status(c, inventory=None, limit=None):
    """Show health, readiness, release, mode and open positions of every bot; exit 1 if one is unhealthy."""
    run_operation("status", "status.yml", inventory=inventory, limit=limit, columns=COLUMNS, lock=False, rows=rows)
