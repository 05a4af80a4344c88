"""`botops promote --to=live|dry`: a bot goes LIVE only through the Go/No-Go checklist (vanta.md)."""

from __future__ import annotations

from invoke import task

from botops.fleet_task import number_flag, run_operation, usage_error
from botops.deploy import COMMON_HELP
from botops.report import shown

TARGETS = ("live", "dry")

COLUMNS = [
    ("name", "bot"),
    ("check", "check"),
    ("passed", "passed"),
    ("detail", "detail"),
]


def checklist_rows(report: dict) -> list[dict]:
    """Each bot's checks, then a line with what happened to its mode."""
    rows = []
    for name in sorted(report):
        entry = report[name]
        for check in entry.get("checks") or []:
            rows.append({"name": name, "check": check.get("name"), "passed": check.get("passed"),
                         "detail": check.get("detail")})
        before, after, result = entry.get("mode_before"), entry.get("mode_after"), entry.get("result")
        failed = [c.get("name") for c in entry.get("checks") or [] if not c.get("passed")]
        if result == "refused":
            detail = f"stays {before}: {len(failed)} check(s) failed ({', '.join(failed)})"
        elif result == "failed":
            detail = f"{before} -> {after}: {entry.get('message') or 'failed'}"
        elif result == "changed":
            detail = f"{before} -> {after}"
        else:
            detail = f"already {after}" if after else (entry.get("message") or "")
        rows.append({"name": name, "check": "=> execution mode", "passed": result in ("ok", "changed"),
                     "detail": detail})
    return rows


@task(
    help=dict(
        COMMON_HELP,
        to="live: only when every go/no-go check passes (ready, health components, DRY now, kill switch "
           "released, database at the release's head, release marked good, a verified backup within "
           "--backup-age hours, the kill switch tested within --stop-test-age days; paper-only bots are "
           "refused) | dry: back to simulated orders, no checklist. Nothing else is accepted",
        backup_age="hours within which a verified backup must exist (default 24)",
        stop_test_age="days within which the kill switch must have been tested (default 30)",
    )
)
def promote(c, to=None, inventory=None, limit=None, check=False, backup_age="24", stop_test_age="30", takeover=False):
    """Set bots LIVE through the Go/No-Go checklist (nothing changes unless every check passes), or back to DRY."""
    if to is None:
        raise usage_error("promote", "--to is required: --to=live (through the go/no-go checklist) "
                                     "or --to=dry (back to simulated orders)")
    if to not in TARGETS:
        raise usage_error("promote", f"--to {shown(to)} is not accepted: --to=live (through the go/no-go checklist) "
                                     "or --to=dry (back to simulated orders)")
    extravars = {"botops_promote_to": to,
                 "botops_backup_max_age": number_flag("promote", "backup_age", backup_age, "hours", high=24 * 90),
                 "botops_stop_test_max_age": number_flag("promote", "stop_test_age", stop_test_age, "days", high=365)}
    run_operation("promote", "promote.yml", inventory=inventory, limit=limit, check=check, extravars=extravars,
                  takeover=takeover, columns=COLUMNS, rows=checklist_rows)
