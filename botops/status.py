"""`botops status`: the morning check of every bot, through playbooks/status.yml."""

from __future__ import annotations

from invoke import task

from botops.fleet_task import run_operation

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
    ("identity", "identity"),
    ("credentials", "credentials"),
    ("message", "message"),
]


def identity_cell(identity) -> str | None:
    """'ok', the id the bot answers as ('bot02, not bot03'), 'another API', or None (not checked)."""
    if not isinstance(identity, dict) or identity.get("ok") is None:
        return None
    if identity["ok"]:
        return "ok"
    if identity.get("reported") is not None:
        return f"{identity['reported']}, not {identity.get('expected')}"
    return "another API"


def credentials_cell(credentials) -> str | None:
    """'ok', 'REFUSED (HTTP 401)', 'MISSING', or None (not checked)."""
    if not isinstance(credentials, dict) or credentials.get("ok") is None:
        return None
    if credentials["ok"]:
        return "ok"
    return f"REFUSED (HTTP {credentials['status']})" if credentials.get("status") else "MISSING"


def rows(report: dict) -> list[dict]:
    """One row per bot; the kill switch an operator engaged as '<level> by <who> at <time>'; who the
    bot says it is and whether it accepts its credentials, the message saying what is wrong."""
    lines = []
    for name in sorted(report):
        row = dict(report[name], name=name)
        engaged = row.get("kill_switch")
        if isinstance(engaged, dict):
            row["kill_switch"] = f"{engaged.get('level')} by {engaged.get('who')} at {engaged.get('time')}"
        identity, credentials = row.get("identity"), row.get("credentials")
        problems = [part.get("message") for part in (identity, credentials)
                    if isinstance(part, dict) and part.get("ok") is False and part.get("message")]
        row["identity"], row["credentials"] = identity_cell(identity), credentials_cell(credentials)
        if row.get("execution_mode") == "LIVE" and row.get("paper_trading"):
            # LIVE mode with the bot's paper flag on sends no real order: never shown as plain LIVE
            row["execution_mode"] = "LIVE on paper"
        row.setdefault("message", "; ".join(problems) or None)
        lines.append(row)
    return lines


@task(
    help={
        "inventory": "inventory file or directory (default: the sandbox, inventory/sandbox/hosts.yml)",
        "limit": "only these bots or groups, e.g. bot01,vanta (Ansible --limit pattern)",
    }
)
def status(c, inventory=None, limit=None):
    """Show health, readiness, release, mode and open positions of every bot, who each bot says it is and
    whether it accepts the credentials its kill switch needs; exit 1 if one is unhealthy, answers as
    another bot, or refuses its credentials."""
    run_operation("status", "status.yml", inventory=inventory, limit=limit, columns=COLUMNS, lock=False, rows=rows)
