#!/usr/bin/python
# Copyright: botops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: bot_backup_info
short_description: List the backup sets of one trading bot
description:
  - Lists the complete backup sets in C(<bot_root>/backups) (taken by M(bot_backup)), newest first, with
    their size, release, label, format, row counts and verification state. Never changes anything.
  - Sets still being written (C(.tmp-*)) are not listed.
version_added: "0.1.0"
options:
  profile:
    description: The bot family's profile, as returned by C(lookup('bot_profile', bot_family)).
    type: dict
    required: true
  bot:
    description: The bot's inventory facts (C(botops_bot) in C(playbooks/group_vars/all/botops.yml)).
    type: dict
    required: true
  secrets:
    description: Not used; accepted so every bot module takes the same three inputs.
    type: dict
    default: {}
  backup_id:
    description: Only this set (or C(latest)), with its full manifest.
    type: str
  backup_dir:
    description: Directory of the backup sets. Default C(<bot_root>/backups).
    type: path
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
author: botops contributors
"""

EXAMPLES = r"""
- name: List the bot's backups
  bot_backup_info:
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
    backup_id: {description: Id of the set., type: str}
    path: {description: Directory of the set., type: str}
    created_at: {description: When it was taken (UTC ISO 8601)., type: str}
    size: {description: Total bytes of its files., type: int}
    release: {description: Release current when it was taken., type: str}
    linked_release: {description: Release the backup is linked to (deploys)., type: str}
    label: {description: Label given when it was taken., type: str}
    reason: {description: Reason given when it was taken., type: str}
    safety_for: {description: For a restore's safety backup, the backup that restore put back., type: str}
    format: {description: Database dump format., type: str}
    alembic_revision: {description: Alembic revision of the database in the set., type: str}
    row_counts: {description: Row counts of the profile's tables., type: dict}
    ledger_max_id: {description: Max id of the ledger table., type: int}
    verified: {description: The last verification passed., type: bool}
    verified_at: {description: When it was last verified., type: str}
    test_restored: {description: A test restore into a scratch database passed., type: bool}
latest:
  description: Id of the newest set that is not a restore's safety backup (what C(backup_id=latest) resolves to), or null.
  returned: always
  type: str
manifest:
  description: The full manifest of the set asked for with C(backup_id).
  returned: when backup_id is given
  type: dict
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.botops_backup import BackupError, BackupStore, summarize
from ansible.module_utils.botops_bot import bot_argument_spec


def main():
    argument_spec = bot_argument_spec()
    argument_spec.update(backup_id=dict(type="str"), backup_dir=dict(type="path"))
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    p = module.params
    result = dict(changed=False, backups=[], latest=None)
    store = BackupStore(p["backup_dir"] or os.path.join(p["bot"]["root"], "backups"))
    try:
        sets = store.list()
        result["latest"] = next((s["backup_id"] for s in sets if not s["manifest"].get("safety_for")), None)
        if p["backup_id"]:
            wanted = store.resolve(p["backup_id"])
            sets = [s for s in sets if s["backup_id"] == wanted]
            result["manifest"] = sets[0]["manifest"]
        result["backups"] = [summarize(s) for s in sets]
    except (BackupError, OSError) as exc:
        module.fail_json(msg=f"Failed to list backups of bot '{p['bot']['name']}': {exc}", **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
