"""`invoke status`: the morning check of every bot, through playbooks/status.yml."""

from __future__ import annotations

from invoke import Exit, task

from botops.report import table
from botops.runner import EXIT_OK, PlaybookRun

COLUMNS = [
    ("name", "bot"),
    ("live", "live"),
    ("ready", "ready"),
    ("release", "release"),
    ("execution_mode", "mode"),
    ("paper_trading", "paper"),
    ("open_positions", "positions"),
    ("open_orders", "orders"),
    ("alembic_revision", "revision"),
]


@task(
    help={
        "inventory": "inventory file or directory (default: the sandbox, inventory/sandbox/hosts.yml)",
        "limit": "only these bots or groups (Ansible --limit pattern)",
    }
)
def status(c, inventory=None, limit=None):
    """Show health, readiness, release, mode and open positions of every bot; exit 1 if one is unhealthy."""
    try:
        run = PlaybookRun("status.yml", inventory=inventory, limit=limit)
    except ValueError as exc:
        raise Exit(f"status: {exc}", code=2) from None
    result = run.run()
    rows = [result.report[name] for name in sorted(result.report)]
    for host in result.failed_hosts:
        if host not in result.report:
            rows.append({"name": host, "live": False, "ready": False})
    if rows:
        print(table(rows, COLUMNS))
    print(f"\n{len(rows)} bot(s); artifacts: {result.artifact_dir}")
    if result.exit_code != EXIT_OK:
        bad = ", ".join(result.failed_hosts) or "see the artifacts"
        raise Exit(f"status: unhealthy or unreachable bot(s): {bad}", code=result.exit_code)
