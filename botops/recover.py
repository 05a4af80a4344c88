"""`botops recover`: after a crash, every bot back in a consistent, running state."""

from __future__ import annotations

from invoke import task

from botops.fleet_task import run_operation
from botops.deploy import COMMON_HELP

COLUMNS = [
    ("name", "bot"),
    ("result", "result"),
    ("found", "found"),
    ("done", "done"),
    ("release_after", "release"),
    ("ready", "ready"),
    ("message", "message"),
]


def recover_rows(report: dict) -> list[dict]:
    return [dict(report[name], name=name, found="; ".join(report[name].get("found") or []) or "nothing",
                 done="; ".join(report[name].get("done") or []) or "nothing")
            for name in sorted(report)]


@task(help={k: COMMON_HELP[k] for k in ("inventory", "limit", "check")})
def recover(c, inventory=None, limit=None, check=False):
    """After a crash: report what dead runs left on each bot and put it back running (stale locks taken over)."""
    run_operation("recover", "recover.yml", inventory=inventory, limit=limit, check=check, takeover=True,
                  columns=COLUMNS, rows=recover_rows)
