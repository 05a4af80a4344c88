"""``botops sandbox.*``: the local fleet of reference bots that tests and demos operate.

The work is done by :mod:`botops.sandbox.fleet`; these tasks parse arguments, print progress and map
errors to exit codes (2: bad input, nothing changed; 1: a step failed).
"""

from __future__ import annotations

import sys

from invoke import Collection, Exit, task

from botops.sandbox.fleet import (
    DEFAULT_BASE_PORT,
    DEFAULT_BOTS,
    DEFAULT_TRADE_INTERVAL,
    FAMILY_NAMES,
    Fleet,
    FleetError,
)


def _progress(line: str) -> None:
    print(line, flush=True)


# What the sandbox runs on beside botops itself: the `sandbox` extra (pip install 'botops[sandbox]').
SANDBOX_PACKAGES = {"psycopg": "psycopg", "supervisor": "supervisor", "alembic": "alembic",
                    "sqlalchemy": "sqlalchemy", "redis": "redis"}


def missing_packages() -> list[str]:
    import importlib.util

    missing = []
    for module, package in SANDBOX_PACKAGES.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a module set to None in sys.modules: not installed
            found = False
        if not found:
            missing.append(package)
    return missing


def _fleet(base_port=None) -> Fleet:
    missing = missing_packages()
    if missing:
        raise Exit(f"sandbox: the sandbox's Python packages are not installed ({', '.join(missing)}); "
                   "install them with: pip install 'botops[sandbox]'", code=2)
    try:
        return Fleet(base_port=base_port, log=_progress)
    except FleetError as exc:
        raise Exit(str(exc), code=exc.exit_code) from None


def _run(action):
    try:
        return action()
    except FleetError as exc:
        raise Exit(str(exc), code=exc.exit_code) from None


@task(
    help={
        "bots": f"number of bots (default {DEFAULT_BOTS}); more than exist adds bots, fewer is refused",
        "families": f"comma-separated families to round-robin over (default all: {','.join(FAMILY_NAMES)})",
        "base-port": f"first port of the bots' port blocks, 10 per bot (default {DEFAULT_BASE_PORT})",
        "trade-interval": f"seconds between trading ticks (default {DEFAULT_TRADE_INTERVAL} for new bots; "
                          "when given, applied to every bot)",
    }
)
def up(c, bots=None, families=None, base_port=None, trade_interval=None):
    """Start the sandbox fleet: PostgreSQL, Redis, supervisord and N reference bots.

    Idempotent: running it again changes nothing, restarts nothing, and starts bots that
    were stopped. It writes inventory/sandbox/hosts.yml for the playbooks.
    """
    fleet = _fleet(base_port)
    _run(lambda: fleet.up(DEFAULT_BOTS if bots is None else bots, families, trade_interval))


def _cell(value) -> str:
    return "-" if value is None else str(value)


@task
def status(c):
    """Show every sandbox bot: family, release, process state, trades, open positions."""
    fleet = _fleet()
    rows = _run(fleet.status)
    if not rows:
        print(f"no sandbox in {fleet.state_dir}: start one with `botops sandbox.up`")
        return
    header = ("bot", "family", "release", "state", "trades", "open positions", "kill switch")
    table = [header] + [
        (r["bot"], r["family"], _cell(r["release"]), r["state"], _cell(r["trades"]), _cell(r["open_positions"]),
         _cell(r["kill_switch"]))
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    numeric = {4, 5}
    for row in table:
        print("  ".join(cell.rjust(w) if i in numeric else cell.ljust(w)
                        for i, (cell, w) in enumerate(zip(row, widths))).rstrip())
    services = _run(fleet.services)
    print("services: " + ", ".join(f"{name} {state}" for name, state in services.items()))
    sys.stdout.flush()


@task(help={"purge": "also delete the state directory (databases, bot roots, logs) and the generated inventory"})
def down(c, purge=False):
    """Stop the sandbox: every bot, Redis, supervisord, then PostgreSQL; verify nothing is left."""
    fleet = _fleet()
    _run(lambda: fleet.down(purge=purge))


collection = Collection("sandbox", up, status, down)
