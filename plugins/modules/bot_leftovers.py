#!/usr/bin/python
# Copyright: botops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: bot_leftovers
short_description: Find (and remove) what crashed botops runs left on one bot
description:
  - Lists what runs killed in the middle of an operation left on the bot's host - other runs' pauses, scratch
    databases, unfinished backup sets, half-installed or half-removed releases - and the bot's state.
  - With O(state=absent) removes the debris; the pauses are only listed, for the caller to release with M(botops.fleet.bot_kill_switch).
  - Removing debris needs the bot's lock (M(botops.fleet.bot_lock)); without it a live run's scratch database could be taken for debris.
version_added: "0.1.0"
extends_documentation_fragment: [ansible.builtin.action_common_attributes, botops.fleet.botops_bot]
options:
  state:
    description: V(list) reports, V(absent) also removes the scratch databases, temporary sets and installs.
    type: str
    choices: [list, absent]
    default: list
  run_id:
    description: The calling run, whose own pause is not a leftover.
    type: str
  maintenance_db:
    description: Database the bot's role connects to for listing and dropping databases.
    type: str
    default: postgres
attributes:
  check_mode:
    support: full
    details: Lists what would be removed; removes nothing.
  diff_mode:
    support: none
  platform:
    platforms: posix
notes:
  - "What each kind of leftover is and why it is safe to remove: C(docs/operations/leftovers.md)."
seealso:
  - module: botops.fleet.bot_lock
author: botops contributors (!UNKNOWN)
"""

EXAMPLES = r"""
- name: What did the crashed run leave?
  botops.fleet.bot_leftovers:
    profile: "{{ botops_profile }}"
    bot: "{{ botops_bot }}"
    secrets: "{{ botops_secrets }}"
    run_id: "{{ botops_run_id }}"
  register: leftovers

- name: Remove the debris (under the bot's lock)
  botops.fleet.bot_leftovers:
    profile: "{{ botops_profile }}"
    bot: "{{ botops_bot }}"
    secrets: "{{ botops_secrets }}"
    run_id: "{{ botops_run_id }}"
    state: absent
"""

RETURN = r"""
pauses:
  description: "Other runs' pauses still recorded on the bot: C(run_id), C(level), C(reason), C(who), C(time)."
  returned: always
  type: list
  elements: dict
scratch_databases:
  description: Scratch databases (or SQLite files) found.
  returned: always
  type: list
  elements: str
temporary_sets:
  description: Unfinished backup sets and carry-forward directories found.
  returned: always
  type: list
  elements: str
installs:
  description: Half-installed or half-removed release directories found.
  returned: always
  type: list
  elements: str
operator:
  description: The kill switch level an operator engaged (C(level), C(who), C(time), C(reason)), or null.
  returned: always
  type: dict
running:
  description: The bot's process is running.
  returned: always
  type: bool
current:
  description: The current release (null when none).
  returned: always
  type: str
current_status:
  description: The current release's status in the ledger (good, bad, pending; null when unknown).
  returned: always
  type: str
previous_good:
  description: The latest good release other than the current one (null when none).
  returned: always
  type: str
found:
  description: One line per leftover, for people.
  returned: always
  type: list
  elements: str
actions:
  description: What was removed (or would be, in check mode).
  returned: always
  type: list
  elements: str
"""

import os
import re
import shutil

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.botops.fleet.plugins.module_utils.botops_backup import engine_for
from ansible_collections.botops.fleet.plugins.module_utils.botops_backup_postgres import PostgresEngine
from ansible_collections.botops.fleet.plugins.module_utils.botops_backup_sqlite import SqliteEngine
from ansible_collections.botops.fleet.plugins.module_utils.botops_backup_store import KEPT_KIND, BackupError, BackupStore
from ansible_collections.botops.fleet.plugins.module_utils.botops_bot import bot_argument_spec, module_bot
from ansible_collections.botops.fleet.plugins.module_utils.botops_errors import BotError
from ansible_collections.botops.fleet.plugins.module_utils.botops_kill_switch_record import Engagements
from ansible_collections.botops.fleet.plugins.module_utils.botops_pg import PgError
from ansible_collections.botops.fleet.plugins.module_utils.botops_release import ReleaseHistory, current_version, installed_versions

SCRATCH_KINDS = ("restore", "verify")


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


def main():
    argument_spec = bot_argument_spec()
    argument_spec.update(
        state=dict(type="str", choices=["list", "absent"], default="list"),
        run_id=dict(type="str"),
        maintenance_db=dict(type="str", default="postgres"),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    p = module.params
    root = p["bot"]["root"]
    result = dict(changed=False, operator=None, pauses=[], scratch_databases=[], temporary_sets=[], installs=[], found=[],
                  actions=[], running=None, current=None, current_status=None, previous_good=None)
    engine = None
    try:
        bot = module_bot(module)
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
        engine = engine_for(p["profile"], p["bot"], p["secrets"], p["maintenance_db"])
        result["scratch_databases"] = scratch_databases(engine)

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

        if p["state"] == "absent":
            verb = "would remove" if module.check_mode else "removed"
            for name in result["scratch_databases"]:
                if not module.check_mode:
                    engine.drop(name)
                result["actions"].append(f"{verb} scratch database {name}")
            for path in result["temporary_sets"] + result["installs"]:
                if not module.check_mode:
                    shutil.rmtree(path, ignore_errors=False)
                result["actions"].append(f"{verb} {path}")
            result["changed"] = bool(result["actions"])
    except (BackupError, BotError, PgError, OSError) as exc:
        module.fail_json(msg=f"Failed to look for leftovers on bot '{p['bot']['name']}': {exc}", **result)
    finally:
        if engine is not None:
            engine.close()
    module.exit_json(**result)


if __name__ == "__main__":
    main()
