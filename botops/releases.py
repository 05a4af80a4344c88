"""`botops releases`: every bot's release history (current, rollback target, installed versions)."""

from __future__ import annotations

from invoke import task

from botops.fleet_task import run_operation
from botops.deploy import COMMON_HELP

COLUMNS = [
    ("name", "bot"),
    ("current", "current"),
    ("previous_good", "previous good"),
    ("installed", "installed (status)"),
    ("rollback_cost", "rollback --target=latest would"),
    ("message", "message"),
]


def describe(releases: list[dict]) -> str:
    """'1.1.0 good*, 1.0.0 good, 1.2.0-broken bad (removed)': most recently used first, * current."""
    parts = []
    for release in releases:
        text = f"{release.get('version')} {release.get('status') or 'unknown'}"
        if release.get("current"):
            text += "*"
        if not release.get("installed"):
            text += " (removed)"
        parts.append(text)
    return ", ".join(parts) or None


def rollback_cost(plan: dict | None) -> str | None:
    """What `botops rollback --target=latest` would do to the data: 'downgrade the schema' (an expand
    migration), or 'restore backup X (crosses a contract migration): carry 80 trades, 3 positions;
    keep aside none', or why it would be refused."""
    if not plan:
        return None
    if plan.get("refused"):
        return "be refused: " + plan["refused"]
    if not plan.get("restore"):
        return "keep the data (no contract migration crossed)"
    summary = (plan.get("ledger") or {}).get("summary") or {}
    return (f"restore backup {plan['restore']} (crosses a contract migration): carry forward "
            f"{summary.get('carried', 'none')}; keep aside {summary.get('kept_aside', 'none')}")


def release_rows(report: dict) -> list[dict]:
    return [dict(report[name], name=name, installed=describe(report[name].get("releases") or []),
                 rollback_cost=rollback_cost(report[name].get("rollback")))
            for name in sorted(report)]


@task(help=dict({k: COMMON_HELP[k] for k in ("inventory", "limit")},
               check="run the listing in check mode (it changes nothing either way)"))
def releases(c, inventory=None, limit=None, check=False):
    """Show every bot's current release, its rollback target and the installed versions with their status."""
    run_operation("releases", "releases.yml", inventory=inventory, limit=limit, check=check, columns=COLUMNS,
                  rows=release_rows, lock=False)
