"""Check an inventory and a --limit before a run, so bad input fails before anything changes."""

from __future__ import annotations

import re
from pathlib import Path

from botops.runner import resolve_inventory

# what a --limit may hold: host and group names, patterns, commas, ranges; never shell or path tricks
LIMIT_PATTERN = re.compile(r"^[A-Za-z0-9_.,:*!&\[\]~-]{1,2000}$")


class InventoryError(ValueError):
    pass


def hosts(inventory: str | None, limit: str | None = None) -> tuple[Path, list[str]]:
    """Parse the inventory (malformed or empty is an error) and return the bots the limit selects."""
    from ansible import constants
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader

    constants.HOST_PATTERN_MISMATCH = "ignore"  # an unmatched --limit is reported below, in one sentence

    try:
        path = resolve_inventory(inventory)
    except ValueError as exc:
        raise InventoryError(str(exc)) from None
    if limit is not None and not LIMIT_PATTERN.match(limit):
        raise InventoryError(
            f"--limit {limit!r} is not a valid host pattern (bot or group names separated by commas, "
            "e.g. --limit=bot01,vanta)"
        )
    try:
        manager = InventoryManager(loader=DataLoader(), sources=[str(path)], parse=True)
    except Exception as exc:  # ansible raises several types for a broken file
        raise InventoryError(f"inventory {path} cannot be parsed: {exc}") from None
    known = sorted(h.name for h in manager.get_hosts() if h.name != "localhost")
    if not known:
        raise InventoryError(f"inventory {path} is malformed or holds no bots (check its YAML and groups)")
    if limit:
        manager.subset(limit)
        selected = sorted(h.name for h in manager.get_hosts() if h.name != "localhost")
        if not selected:
            shown = ", ".join(known[:20]) + (" ..." if len(known) > 20 else "")
            groups = ", ".join(sorted(g for g in manager.groups if g not in ("all", "ungrouped")))
            raise InventoryError(f"--limit {limit!r} matches no bot (bots: {shown}; groups: {groups})")
        return path, selected
    return path, known
