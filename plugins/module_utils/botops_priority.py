# Copyright: botops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""botops' own work on a bot's host yields the CPU to the bots: yield_cpu. Stdlib only.

A deploy, rollback, restart, restore, backup or maintenance window runs modules on hosts where
bots trade: a backup's pg_dump, a migration's alembic, a module's own Python. On a busy host they
compete with the bots for the CPU, and a bot starting in its change window is down for as long as
it waits for it. The playbooks of those operations put the inventory's ``bot_ops_nice`` (default
10, 0 to keep the bots' priority) in their tasks' environment as BOTOPS_NICE; a module that calls
yield_cpu() lowers its own priority to that niceness first, and the programs it runs inherit it.

Bots never inherit it: they are started by their service manager (supervisord, systemd,
docker), never as a module's child. The kill switch never yields: bot_kill_switch and the fleet
kill switch do not call it, and the kill switch and emergency stop playbooks do not set it.
"""

from __future__ import annotations

import os

NICE_ENV = "BOTOPS_NICE"
NICE_MAX = 19


def yield_cpu(module=None, environ=None):
    """Lower this process's priority to the niceness BOTOPS_NICE names (0-19); never raise it.

    Returns the niceness the process runs at. A value that is not a whole number from 0 to 19
    fails the module (nothing has been changed yet) or, without one, raises ValueError."""
    raw = (os.environ if environ is None else environ).get(NICE_ENV, "").strip()
    current = os.nice(0)
    if not raw:
        return current
    try:
        wanted = int(raw)
        if not 0 <= wanted <= NICE_MAX:
            raise ValueError
    except ValueError:
        msg = f"{NICE_ENV}={raw!r} (bot_ops_nice): a niceness is a whole number from 0 to {NICE_MAX}, e.g. 10"
        if module is None:
            raise ValueError(msg) from None
        module.fail_json(msg=msg)
    if wanted > current:
        current = os.nice(wanted - current)
    return current
