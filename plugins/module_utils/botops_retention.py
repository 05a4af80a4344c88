# Copyright: botops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Retention of backup sets and of the databases (or files) restores kept (botops_backup.kept_name):
which to delete and why, and what the release history protects. Plans only: bot_backup deletes what
they name. Stdlib only.
"""

from __future__ import annotations

import os
import time

from ansible_collections.botops.fleet.plugins.module_utils.botops_backup_store import current_release, parse_iso, utc_iso
from ansible_collections.botops.fleet.plugins.module_utils.botops_files import read_json

SAFE_LEDGER_STATES = ("current", "good")


def protected_releases(root):
    """What the release history (<bot_root>/releases/ledger.json, written by bot_release) protects.

    Returns (releases, backup_ids): the current release (the `current` symlink) and every release
    the ledger lists as current or good, and the backups its entries for those releases name
    (bot_release records the backup taken before activating a release: the way back from it).
    An absent or unreadable ledger protects the current release only. Tolerant of the ledger's
    shape: {"releases": {version: entry}}, {"releases": [entry]} or a list of entries."""
    releases, backup_ids = set(), set()
    release = current_release(root)
    if release:
        releases.add(release)
    try:
        ledger = read_json(os.path.join(root, "releases", "ledger.json"))
    except (OSError, ValueError):
        return releases, backup_ids
    entries = ledger.get("releases") if isinstance(ledger, dict) else ledger
    if isinstance(entries, dict):
        entries = [dict(v, version=v.get("version") or k) for k, v in entries.items() if isinstance(v, dict)]
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict):
            continue
        version = str(entry.get("version") or "")
        status = str(entry.get("status") or "").lower()
        if version and (status in SAFE_LEDGER_STATES or version == release):
            releases.add(version)
            if entry.get("backup_id"):
                backup_ids.add(str(entry["backup_id"]))
    return releases, backup_ids


def plan_kept_retention(kept, keep_last=None, max_age_days=None, now=None):
    """Which kept databases ([(name, epoch)], newest first) to drop: the sets' rules (plan_retention),
    one of the newest keep_last or younger than max_age_days. Returns (drop, keep): [(name, why)]."""
    entries = [{"backup_id": name, "manifest": {"created_at": utc_iso(created)}} for name, created in kept]
    return plan_retention(entries, keep_last, max_age_days, now=now)


def plan_retention(sets, keep_last=None, max_age_days=None, protected=(), now=None, protected_ids=()):
    """Decide which sets to delete; sets are newest first (BackupStore.list()).

    A set is kept when any rule keeps it (as restic's `forget`): it is one of the newest
    keep_last, or younger than max_age_days, or the newest verified set, or linked to a release
    in `protected`, or named in `protected_ids` (the release history's backups of current and
    good releases). With neither rule given nothing is deleted.
    A damaged set (its manifest unreadable) is always kept, its reason saying why: whether it was
    worth keeping cannot be known without its manifest, and deleting it would hide the damage, so an
    operator looks at it and removes it by hand. It does not count among the newest keep_last, which
    are the readable sets a restore could use.
    Returns (delete: [(backup_id, why)], keep: [(backup_id, why)])."""
    now = time.time() if now is None else now
    delete, keep = [], []
    newest_verified = next((s["backup_id"] for s in sets
                            if not s.get("damaged") and (s.get("verification") or {}).get("ok")), None)
    readable = 0
    for entry in sets:
        if entry.get("damaged"):
            keep.append((entry["backup_id"], f"damaged ({entry['damaged']}): retention never deletes a damaged "
                                             "set; look at it, then repair or remove it by hand"))
            continue
        if keep_last is None and max_age_days is None:
            keep.append((entry["backup_id"], "no retention rule"))
            continue
        index, readable = readable, readable + 1
        m = entry["manifest"]
        created = parse_iso(m.get("created_at"))
        age_days = (now - created) / 86400.0 if created is not None else None
        if keep_last is not None and index < keep_last:
            keep.append((entry["backup_id"], f"one of the newest {keep_last}"))
        elif max_age_days is not None and (age_days is None or age_days <= max_age_days):
            keep.append((entry["backup_id"], f"younger than {max_age_days} days"))
        elif entry["backup_id"] == newest_verified:
            keep.append((entry["backup_id"], "newest verified backup"))
        elif m.get("linked_release") and m["linked_release"] in protected:
            keep.append((entry["backup_id"], f"linked to release {m['linked_release']} (still current or good)"))
        elif entry["backup_id"] in protected_ids:
            keep.append((entry["backup_id"], "named by the release history for a current or good release"))
        else:
            why = []
            if keep_last is not None:
                why.append(f"not one of the newest {keep_last}")
            if max_age_days is not None:
                why.append(f"{age_days:.1f} days old (> {max_age_days})")
            delete.append((entry["backup_id"], ", ".join(why)))
    return delete, keep
