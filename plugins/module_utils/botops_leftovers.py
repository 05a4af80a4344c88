# Copyright: botops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What crashed botops runs left on one bot's host, and removing the debris among it
(docs/operations/leftovers.md).

Shared by bot_leftovers_info (lists) and bot_leftovers (removes the scratch databases, unfinished
backup sets and half-installed releases, under the bot's lock).
"""

from __future__ import annotations

import os
import re
import shutil

from ansible_collections.botops.fleet.plugins.module_utils.botops_backup import engine_for
from ansible_collections.botops.fleet.plugins.module_utils.botops_backup_postgres import PostgresEngine
from ansible_collections.botops.fleet.plugins.module_utils.botops_backup_sqlite import SqliteEngine
from ansible_collections.botops.fleet.plugins.module_utils.botops_backup_store import KEPT_KIND, BackupError, BackupStore
from ansible_collections.botops.fleet.plugins.module_utils.botops_errors import BotError
from ansible_collections.botops.fleet.plugins.module_utils.botops_kill_switch_record import Engagements
from ansible_collections.botops.fleet.plugins.module_utils.botops_pg import PgError
from ansible_collections.botops.fleet.plugins.module_utils.botops_release import ReleaseHistory, current_version, installed_versions

SCRATCH_KINDS = ("restore", "verify")
ERRORS = (BackupError, BotError, PgError, OSError)  # what looking or removing can fail with


def scratch_databases(engine):
    """The scratch copies of the bot's database: never the live one, never a kept previous one."""
    if isinstance(engine, PostgresEngine):
        prefixes = tuple(f"{engine.name}_{kind}_".lower() for kind in SCRATCH_KINDS)
        rows = engine.query("SELECT datname FROM pg_database", engine.maintenance_db)
        return sorted(r[0] for r in rows if r and r[0].lower().startswith(prefixes)
                      and f"_{KEPT_KIND}_" not in r[0] and r[0] != engine.name)
    if isinstance(engine, SqliteEngine):
        directory = os.path.dirname(engine.path) or "."
        base = os.path.basename(engine.path)
        pattern = re.compile(re.escape(base) + r"\.(" + "|".join(SCRATCH_KINDS) + r")-[^/]+$")
        try:
            return sorted(os.path.join(directory, n) for n in os.listdir(directory) if pattern.fullmatch(n))
        except FileNotFoundError:
            return []
    return []


class Leftovers:
    """One bot's leftovers: `look()` fills `result` (what the modules return), `remove()` removes the
    debris it found; `close()` ends the database session either opened."""

    def __init__(self, params):
        self.p = params
        self.root = params["bot"]["root"]
        self.engine = None
        self.result = dict(changed=False, operator=None, pauses=[], scratch_databases=[], temporary_sets=[], installs=[],
                           found=[], running=None, current=None, current_status=None, previous_good=None)

    def look(self, bot):
        p, result, root = self.p, self.result, self.root
        result["running"] = bool(bot.pids())
        record = Engagements(root).read()
        operations = record.get("operations") or {}
        result["operator"] = record.get("operator") if isinstance(record.get("operator"), dict) else None
        result["pauses"] = [dict(entry, run_id=run) for run, entry in sorted(operations.items())
                            if run != p["run_id"] and isinstance(entry, dict)]
        store = BackupStore(os.path.join(root, "backups"))
        result["temporary_sets"] = store.temp_dirs()
        releases = os.path.join(root, "releases")
        try:
            result["installs"] = sorted(os.path.join(releases, n) for n in os.listdir(releases)
                                        if n.startswith((".install-", ".remove-")))
        except FileNotFoundError:
            pass
        current = current_version(root)
        installed = installed_versions(releases)
        ledger = ReleaseHistory(root, p["bot"]["name"])
        result["current"] = current
        result["current_status"] = (ledger.get(current) or {}).get("status") if current else None
        result["previous_good"] = ledger.previous_good(current, installed) if current else None
        self.engine = engine_for(p["profile"], p["bot"], p["secrets"], p["maintenance_db"])
        result["scratch_databases"] = scratch_databases(self.engine)

        found = result["found"]
        found += [f"pause of run {e['run_id']} ({e.get('reason') or 'no reason'}, since {e.get('time')})"
                  for e in result["pauses"]]
        found += [f"scratch database {name}" for name in result["scratch_databases"]]
        found += [f"unfinished backup files {path}" for path in result["temporary_sets"]]
        found += [f"half-installed release files {path}" for path in result["installs"]]
        if not result["running"]:
            found.append(f"process not running (release {current or 'none'})")
        if result["operator"]:
            found.append(f"kill switch {result['operator'].get('level')} engaged by "
                         f"{result['operator'].get('who') or 'unknown'} (left as it is)")
        if current and result["current_status"] not in ("good", None):
            found.append(f"current release {current} is {result['current_status']} in the ledger")
        return result

    def remove(self, check_mode, actions):
        """Remove the scratch databases, unfinished sets and half-installed releases `look()` found (the
        pauses are only listed: the caller releases them); each one removed (or that would be) is
        appended to `actions` as it goes."""
        result = self.result
        verb = "would remove" if check_mode else "removed"
        for name in result["scratch_databases"]:
            if not check_mode:
                self.engine.drop(name)
            actions.append(f"{verb} scratch database {name}")
        for path in result["temporary_sets"] + result["installs"]:
            if not check_mode:
                shutil.rmtree(path, ignore_errors=False)
            actions.append(f"{verb} {path}")

    def close(self):
        if self.engine is not None:
            self.engine.close()
