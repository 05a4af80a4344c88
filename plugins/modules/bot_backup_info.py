#!/usr/bin/python
# Copyright: botops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: bot_backup_info
short_description: List the backup sets of one trading bot
description:
  - Lists the backup sets in C(<bot_root>/backups) (taken by M(botops.fleet.bot_backup)), newest first, with their size,
    release, label, format, row counts and verification state. Never changes anything.
  - Sets still being written (C(.tmp-*)) are not listed.
  - A damaged set (its C(manifest.json) missing or unreadable) is listed with the reason in C(damaged), and
    V(latest) never resolves past it (RV(latest_blocked_by)).
version_added: "0.1.0"
extends_documentation_fragment: [ansible.builtin.action_common_attributes, botops.fleet.botops_bot]
options:
  backup_id:
    description:
      - Only this set (or V(latest)), with its full manifest. Fails, naming the reason, when that set is damaged.
    type: str
  backup_dir:
    description: Directory of the backup sets. Default C(<bot_root>/backups).
    type: path
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  platform:
    platforms: posix
notes:
  - O(secrets) is not used; it is accepted so every bot module takes the same three inputs.
  - "What a set holds and why a damaged set is never skipped: C(docs/operations/backup.md)."
seealso:
  - module: botops.fleet.bot_backup
author: botops contributors (!UNKNOWN)
"""

EXAMPLES = r"""
- name: List the bot's backups
  botops.fleet.bot_backup_info:
    profile: "{{ botops_profile }}"
    bot: "{{ botops_bot }}"
  register: backups

- name: Show the newest one
  ansible.builtin.debug:
    msg: "{{ backups.latest }}"
"""

RETURN = r"""
backups:
  description: The sets, newest first.
  returned: always
  type: list
  elements: dict
  contains:
    backup_id: {description: "Id of the set.", type: str}
    path: {description: "Directory of the set.", type: str}
    damaged:
      description:
        - "Why the set cannot be used (e.g. C(manifest.json missing)); null for a complete set. A damaged
          set's manifest fields are null and C(verified) is false."
      type: str
    created_at:
      description: When it was taken (UTC ISO 8601); for a damaged set, the time its id starts with.
      type: str
    size: {description: "Total bytes of its files.", type: int}
    release: {description: "Release current when it was taken.", type: str}
    linked_release: {description: "Release the backup is linked to (deploys).", type: str}
    label: {description: "Label given when it was taken.", type: str}
    reason: {description: "Reason given when it was taken.", type: str}
    safety_for: {description: "For a restore's safety backup, the backup that restore put back.", type: str}
    format: {description: "Database dump format.", type: str}
    alembic_revision: {description: "Alembic revision of the database in the set.", type: str}
    row_counts: {description: "Row counts of the profile's tables.", type: dict}
    ledger_max_id: {description: "Max id of the ledger table.", type: int}
    verified: {description: "The last verification passed.", type: bool}
    verified_at: {description: "When it was last verified.", type: str}
    test_restored: {description: "A test restore into a scratch database passed.", type: bool}
latest:
  description:
    - Id of the newest set that is not a restore's safety backup (what C(backup_id=latest) resolves to), or null
      when there is none or the newest set is damaged (see C(latest_blocked_by)).
  returned: always
  type: str
latest_blocked_by:
  description:
    - Id of the damaged set that keeps C(backup_id=latest) from resolving (it is newer than every readable set
      that is not a safety backup), or null. Pass an explicit backup id to use an older set.
  returned: always
  type: str
manifest:
  description: The full manifest of the set asked for with C(backup_id).
  returned: when backup_id is given
  type: dict
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.botops.fleet.plugins.module_utils.botops_backup_store import BackupError, BackupStore, DamagedBackup, summarize
from ansible_collections.botops.fleet.plugins.module_utils.botops_bot import bot_argument_spec
from ansible_collections.botops.fleet.plugins.module_utils.botops_priority import yield_cpu


def main():
    argument_spec = bot_argument_spec()
    argument_spec.update(backup_id=dict(type="str"), backup_dir=dict(type="path"))
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    yield_cpu(module)
    p = module.params
    result = dict(changed=False, backups=[], latest=None, latest_blocked_by=None)
    store = BackupStore(p["backup_dir"] or os.path.join(p["bot"]["root"], "backups"))
    try:
        sets = store.list()
        try:
            result["latest"] = store.resolve("latest") if sets else None
        except DamagedBackup as exc:  # listed below with its reason; only an explicit id gets past it
            result["latest_blocked_by"] = exc.backup_id
        except BackupError:  # only safety backups: nothing 'latest' would pick
            pass
        if p["backup_id"]:
            try:
                wanted = store.resolve(p["backup_id"])
            except BackupError as exc:  # an id this bot does not have: bad input, nothing was changed
                module.fail_json(msg=f"Backup {p['backup_id']} of bot '{p['bot']['name']}' cannot be used: {exc}",
                                 input_refused=True, **result)
            sets = [s for s in sets if s["backup_id"] == wanted]
            result["manifest"] = sets[0]["manifest"]
        result["backups"] = [summarize(s) for s in sets]
    except (BackupError, OSError) as exc:
        module.fail_json(msg=f"Failed to list backups of bot '{p['bot']['name']}': {exc}", **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
