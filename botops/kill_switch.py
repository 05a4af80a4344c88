"""`botops kill-switch` and `botops emergency-stop`: stop a fleet from trading, fast."""

from __future__ import annotations

import getpass
import os

from invoke import task

from botops.fleet_task import run_operation, usage_error
from botops.report import shown

LEVELS = ("pause", "halt", "flatten")
KILL_COLUMNS = [
    ("name", "bot"),
    ("result", "result"),
    ("level", "level now"),
    ("rung", "step that worked"),
    ("duration", "seconds"),
    ("message", "message"),
]


def operator() -> str:
    return os.environ.get("BOTOPS_OPERATOR") or os.environ.get("SUDO_USER") or getpass.getuser()


def check_reason(task_name: str, reason: str | None, required: bool) -> None:
    if reason is None or not reason.strip():
        if required:
            raise usage_error(task_name, "--reason is required: say why (it goes to the audit log and the notification)")
        return
    if len(reason) > 500 or any(ord(ch) < 32 for ch in reason):
        raise usage_error(task_name, "--reason must be one line of at most 500 characters")


@task(
    help={
        "level": "pause (no new entries) | halt (no trading, orders cancelled) | flatten (also close positions); default halt",
        "reason": "why (required to engage; recorded in the audit log)",
        "release": "release the level instead of engaging it",
        "force": "with --release: release even a stronger level an operator engaged",
        "inventory": "inventory file or directory (default: the sandbox)",
        "limit": "only these bots or groups, e.g. bot01,vanta",
        "check": "dry run: report what each bot would do, change nothing",
    }
)
def kill_switch(c, level="halt", reason=None, release=False, force=False, inventory=None, limit=None, check=False):
    """Engage (or --release) a kill switch level on every targeted bot at once, verified per bot."""
    if level not in LEVELS:
        raise usage_error("kill-switch", f"--level {shown(level)} is not a level (expected one of: {', '.join(LEVELS)})")
    check_reason("kill-switch", reason, required=not release)
    if force and not release:
        raise usage_error("kill-switch", "--force only applies with --release")
    extravars = {
        "botops_kill_state": "released" if release else "engaged",
        "botops_kill_level": level,
        "botops_force": force,
        "botops_who": operator(),
    }
    if reason:
        extravars["botops_reason"] = reason
    run_operation("kill-switch", "kill_switch.yml", inventory=inventory, limit=limit, check=check,
                  extravars=extravars, columns=KILL_COLUMNS, lock=False, check_vars=False)


@task(
    help={
        "reason": "why (required; recorded in the audit log, the incident bundle and the notification)",
        "inventory": "inventory file or directory (default: the sandbox)",
        "limit": "only these bots or groups, e.g. bot01,vanta",
        "check": "dry run: report what each bot would do, change nothing",
    }
)
def emergency_stop(c, reason=None, inventory=None, limit=None, check=False):
    """Halt every bot at once, capture logs, status, positions and ledgers into one incident bundle, notify."""
    check_reason("emergency-stop", reason, required=True)
    extravars = {"botops_reason": reason, "botops_who": operator()}
    run_operation("emergency-stop", "emergency_stop.yml", inventory=inventory, limit=limit, check=check,
                  extravars=extravars, columns=KILL_COLUMNS, lock=False, check_vars=False)
