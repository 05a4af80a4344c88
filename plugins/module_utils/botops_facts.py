# Copyright: botops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The state of one bot as its profile says: health, release, mode, positions, schema revision.

Shared by bot_facts and bot_incident (the status snapshot of an incident bundle).
"""

from __future__ import annotations

import os
import time

from ansible_collections.botops.fleet.plugins.module_utils.botops_bot import POLL_INTERVAL
from ansible_collections.botops.fleet.plugins.module_utils.botops_errors import BotError
from ansible_collections.botops.fleet.plugins.module_utils.botops_kill_switch_record import Engagements
from ansible_collections.botops.fleet.plugins.module_utils.botops_pg import PgError


def current_release(root):
    link = os.path.join(root, "current")
    if not os.path.islink(link):
        return None
    return os.path.basename(os.path.realpath(link))


NOT_CHECKED = {"checked": False, "ok": None, "status": None}


def gather(bot, profile, database=None, ready_wait=0.0, credentials=True):
    """The facts; a bot not ready is asked again for up to `ready_wait` seconds (busy for a moment).

    First who the bot at the inventory's address is (the profile's identity probe): when it answers
    as another bot, nothing read through its API is this bot's (live, ready, health and the HTTP
    facts are reported false / null, saying why), and its credentials are not tried on that bot.
    `credentials`: try the profile's auth.check on a bot that answers (`credentials` fact)."""
    facts = {"name": bot.name, "errors": {}}
    health = profile["health"]
    facts["identity"] = identity = bot.identity()
    other = identity["message"] if identity["ok"] is False else None
    if other:
        facts["ready"] = facts["live"] = False
        facts["errors"]["ready"] = facts["errors"]["live"] = f"not read: {other}"
    else:
        deadline = time.monotonic() + ready_wait
        facts["ready"], observed = bot.check(health["readiness"])
        while not facts["ready"] and time.monotonic() < deadline:
            time.sleep(POLL_INTERVAL)
            facts["ready"], observed = bot.check(health["readiness"])
        facts["live"], live_observed = bot.check(health["liveness"])
        if not facts["ready"]:
            facts["errors"]["ready"] = observed
    if other or not credentials:
        facts["credentials"] = dict(NOT_CHECKED, message=f"not checked: {other}" if other else "not asked")
    elif not facts["live"]:
        facts["credentials"] = dict(NOT_CHECKED, message="not checked: the bot is not answering")
    else:
        facts["credentials"] = bot.credentials()
    facts["health"] = None
    if facts["live"] and health.get("details"):
        try:
            facts["health"] = bot.request(health["details"])[1]
        except BotError as exc:
            facts["errors"]["health"] = str(exc)
    facts["release"] = current_release(bot.root)
    try:
        # what an operator engaged, from the record on the bot's host (not from the bot's memory)
        facts["kill_switch"] = Engagements(bot.root).operator()
    except BotError as exc:
        facts["kill_switch"] = None
        facts["errors"]["kill_switch"] = str(exc)
    try:
        stat = os.statvfs(bot.root)
        facts["disk_free_mb"] = stat.f_bavail * stat.f_frsize // (1024 * 1024)
    except OSError as exc:
        facts["disk_free_mb"] = None
        facts["errors"]["disk_free_mb"] = str(exc)
    try:
        facts["service_state"] = bot.service_state()
    except (BotError, OSError) as exc:
        facts["service_state"] = None
        facts["errors"]["service_state"] = str(exc)
    for name in ("version", "execution_mode", "paper_trading", "open_positions", "open_orders", "portfolio_value"):
        spec = profile["facts"].get(name)
        facts[name] = None
        if spec is None:
            continue
        if other and "http" in spec:
            facts["errors"][name] = f"not read: {other}"
            continue
        if not facts["live"] and "http" in spec:
            facts["errors"][name] = "bot is not answering"
            continue
        try:
            facts[name] = bot.probe(spec)
        except BotError as exc:
            facts["errors"][name] = str(exc)
    facts["alembic_revision"] = None
    if database is not None:
        try:
            facts["alembic_revision"] = database.alembic_revision()
        except PgError as exc:
            facts["errors"]["alembic_revision"] = str(exc)
    return facts
