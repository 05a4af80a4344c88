"""`invoke releases`: every bot's release ledger (current, rollback target, installed versions)."""

from __future__ import annotations

from invoke import task

from botops.operation import run_operation
from botops.release import COMMON_HELP

COLUMNS = [
    ("name", "bot"),
    ("current", "current"),
    ("previous_good", "previous good"),
    ("installed", "installed (status)"),
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


def release_rows(report: dict) -> list[dict]:
    return [dict(report[name], name=name, installed=describe(report[name].get("releases") or []))
            for name in sorted(report)]


@task(help=dict({k: COMMON_HELP[k] for k in ("inventory", "limit")},
               check="run the listing in check mode (it changes nothing either way)"))
def releases(c, inventory=None, limit=None, check=False):
    """Show every bot's current release, its rollback target and the installed versions with their status."""
    run_operation("releases", "releases.yml", inventory=inventory, limit=limit, check=check, columns=COLUMNS,
                  rows=release_rows, lock=False)
