"""`botops restart`: the runbooks' three restarts (graceful, quick, recover), per bot under its lock."""

from __future__ import annotations

from invoke import task

from botops.fleet_task import run_operation, usage_error
from botops.deploy import COMMON_HELP, OVERRIDE_HELP, POSITION_POLICIES, serial_plan
from botops.report import shown

MODES = ("graceful", "quick", "recover")

COLUMNS = [
    ("name", "bot"),
    ("result", "result"),
    ("mode", "mode"),
    ("release_after", "release"),
    ("ready", "ready"),
    ("downtime", "downtime s"),
    ("kill_level", "kill switch"),
    ("recovered", "recovered"),
    ("message", "message"),
]


@task(
    help=dict(
        COMMON_HELP,
        **OVERRIDE_HELP,
        mode="graceful (pause entries, graceful stop, start, readiness gate, restore state; default) | "
             "quick (a hung bot: short graceful timeout, then signals) | "
             "recover (restart, then verify the bot recovered mode, kill switch level, positions and ledger)",
        positions="graceful: open positions policy refuse | wait | flatten | carry (default carry)",
        batch="bots restarted at once: a number or a percentage (default 100%); "
              "a batch with a failed bot stops the next ones",
    )
)
def restart(c, mode="graceful", inventory=None, limit=None, check=False, positions="carry", batch="100%",
            takeover=False, override_kill_switch=False):
    """Restart bots: graceful, quick or with state recovery; per-bot downtime, readiness gate."""
    if mode not in MODES:
        raise usage_error("restart", f"--mode {shown(mode)} is not a restart mode "
                                     f"(expected one of: {', '.join(MODES)})")
    if positions not in POSITION_POLICIES:
        raise usage_error("restart", f"--positions {shown(positions)} is not a policy "
                                     f"(expected one of: {', '.join(POSITION_POLICIES)})")
    if positions != "carry" and mode != "graceful":
        raise usage_error("restart", f"--positions applies to --mode=graceful only (a {mode} restart does not wait)")
    extravars = {
        "botops_restart_mode": mode,
        "botops_serial": serial_plan("restart", 0, batch),
        "bot_guard_positions_policy": positions,
    }
    run_operation("restart", "restart.yml", inventory=inventory, limit=limit, check=check, extravars=extravars,
                  takeover=takeover, columns=COLUMNS, override_kill_switch=override_kill_switch)
