# Copyright: botops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A bot's open positions and orders, as its profile reads them: the counts of its C(facts) probes
(open_positions, open_orders) and the listing of C(positions.list).

Shared by bot_positions_info (reads) and bot_positions (cancels orders, closes positions, and counts
again until they reach 0).
"""

from __future__ import annotations

from ansible_collections.botops.fleet.plugins.module_utils.botops_errors import BotError

COUNTED = ("open_positions", "open_orders")


def count(bot, facts, name):
    """The fact `name` as a count (a list or object counts its items); None when the profile has no such fact."""
    spec = facts.get(name)
    if spec is None:
        return None
    value = bot.probe(spec)
    if isinstance(value, (list, dict)):
        return len(value)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise BotError(f"fact {name} is not a count: {value!r}") from None


def counts(bot, facts):
    """{open_positions, open_orders}, each None when the profile cannot count it."""
    return {name: count(bot, facts, name) for name in COUNTED}


def listing(bot, profile):
    """The open positions as the profile's C(positions.list) reads them; None when it has none."""
    spec = (profile.get("positions") or {}).get("list")
    return bot.probe(spec) if spec else None
