#!/usr/bin/python
# Copyright: botops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: bot_backup_info
short_description: List the backup sets of one trading bot
description:
  - Lists the backup sets in C(<bot_root>/backups) (taken by M(bot_backup)), newest first, with
    their size, release, label, format, row counts and verification state. Never changes anything.
  - Sets still being written (C(.tmp-*)) are not listed.
  - "A damaged set, a set directory whose C(manifest.json) is missing or unreadable (truncated, empty, not
    this set's), is listed too, never skipped: C(damaged) gives the reason, C(verified) is false, and it
    is placed by the time its id starts with. C(latest) never resolves past it: when the newest set is
    damaged, C(latest) is null and C(latest_blocked_by) names that set; pass an explicit C(backup_id)."
  - Listing never fails because of a damaged set; verifying it (M(bot_backup) C(state=verified)) does.
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
    description:
      - Only this set (or C(latest)), with its full manifest.
      - Fails, naming the reason, when that set is damaged, or for C(latest) when the newest set is.
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
    damaged:
      description:
        - "Why the set cannot be used (e.g. C(manifest.json unreadable: Expecting value: line 1 column 1 (char 0)),
          C(manifest.json missing)); null for a complete set. The manifest's fields of a damaged set are
          null (created_at is the time its id starts with) and verified is false."
      type: str
    created_at:
      description: When it was taken (UTC ISO 8601); for a damaged set, the time its id starts with.
      type: str
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
from ansible.module_utils.botops_backup_store import BackupError, BackupStore, DamagedBackup, summarize
from ansible.module_utils.botops_bot import bot_argument_spec


def main():
    argument_spec = bot_argument_spec()
    argument_spec.update(backup_id=dict(type="str"), backup_dir=dict(type="path"))
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
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
            wanted = store.resolve(p["backup_id"])
            sets = [s for s in sets if s["backup_id"] == wanted]
            result["manifest"] = sets[0]["manifest"]
        result["backups"] = [summarize(s) for s in sets]
    except (BackupError, OSError) as exc:
        module.fail_json(msg=f"Failed to list backups of bot '{p['bot']['name']}': {exc}", **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
