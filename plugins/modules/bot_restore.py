#!/usr/bin/python
# Copyright: botops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: bot_restore
short_description: Restore one trading bot's database (and optionally its config) from a backup set
description:
  - Restores a set taken by M(botops.fleet.bot_backup) without ever leaving the live database half restored - verify
    the set, take a safety backup, restore into a scratch database and check it, stop the bot, swap the
    databases in one transaction, start the bot again and wait until it is ready.
  - Any failure before the swap leaves the live database untouched; after the swap the replaced database
    is kept (RV(previous_database)).
  - Refuses to lose ledger rows written since the backup unless O(carry_forward) carries them or O(accept_ledger_loss).
  - Idempotent - a live database that carries this backup's marker and matches its manifest is left alone.
version_added: "0.1.0"
extends_documentation_fragment: [ansible.builtin.action_common_attributes, botops.fleet.botops_bot]
options:
  backup_id:
    description:
      - The set to restore, or V(latest) (the newest set that is not a restore's safety backup).
      - A damaged set is refused, and V(latest) never resolves past a damaged set newer than every readable one.
    type: str
    required: true
  restore_files:
    description: Also put back the config and data paths from the set's tarball (only files that differ).
    type: bool
    default: false
  keep_previous:
    description: Keep the replaced live database as C(<db>_pre_restore_<ts>); when false it is dropped once the bot is ready.
    type: bool
    default: true
  safety_backup:
    description: Take a backup of the live database and files before changing anything.
    type: bool
    default: true
  force:
    description: Restore even when the live database already matches the backup.
    type: bool
    default: false
  format:
    description: Dump format of the safety backup (see M(botops.fleet.bot_backup)).
    type: str
    choices: [custom_zstd, custom, directory]
    default: custom_zstd
  jobs:
    description: Parallel jobs of pg_restore.
    type: int
    default: 2
  stop_timeout:
    description: Seconds to wait for the bot's process to exit after the service stop. Default the profile's C(service.stop_timeout), else 30.
    type: float
  ready_timeout:
    description: Seconds to wait for the bot's readiness after it is started again.
    type: float
    default: 120
  window_slots:
    description:
      - Bots of this host allowed between their stop and their readiness at once (shared with M(botops.fleet.bot_service)
        and M(botops.fleet.bot_deploy)). Default the host's CPU count; no slot free within 10 minutes fails before the stop.
    type: int
  carry_forward:
    description:
      - Carry the ledger rows written since the backup into the restored database before the swap, the bot
        stopped (trades with their ids, holdings whole). Without it the restore goes back to the backup as it was.
    type: bool
    default: false
  accept_ledger_loss:
    description:
      - Restore even though the live ledger holds rows the restored database would not; without it such a
        restore changes nothing and fails with RV(ledger_refused).
    type: bool
    default: false
  override_kill_switch:
    description:
      - Restore a bot whose operator engaged a kill switch level, putting the level back once the bot is
        ready. Without it the call changes nothing and fails with RV(yielded).
    type: bool
    default: false
  backup_dir:
    description: Directory of the backup sets. Default C(<bot_root>/backups).
    type: path
  maintenance_db:
    description: Database the bot's role connects to for creating, renaming and dropping databases.
    type: str
    default: postgres
attributes:
  check_mode:
    support: full
    details: Verifies the checksums (read only), compares the live database with the backup and reports the plan; changes nothing.
  diff_mode:
    support: partial
    details: The live database's restore marker, row counts and ledger max id before and after.
  platform:
    platforms: posix
notes:
  - The bot's database role must own its database and have CREATEDB.
  - The bot is started again only when it was running before the restore.
  - Cluster-level properties (C(ALTER DATABASE ... SET), grants on the database) are not carried over.
  - "The restore step by step, the ledger's carry-forward and SQLite bots: C(docs/operations/restore.md)."
seealso:
  - module: botops.fleet.bot_backup
  - module: botops.fleet.bot_deploy
author: botops contributors (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Restore the newest backup
  botops.fleet.bot_restore:
    profile: "{{ botops_profile }}"
    bot: "{{ botops_bot }}"
    secrets: "{{ botops_secrets }}"
    backup_id: latest
  register: restored

- name: Restore a given set with its config files, dropping the replaced database
  botops.fleet.bot_restore:
    profile: "{{ botops_profile }}"
    bot: "{{ botops_bot }}"
    secrets: "{{ botops_secrets }}"
    backup_id: 20261121T020000Z-3fa9c1
    restore_files: true
    keep_previous: false
"""

RETURN = r"""
ledger_loss:
  description:
    - "What the live ledger holds that the backup does not: C(table), C(rows), C(first_id), C(last_id),
      C(first_time), C(last_time), C(backup_max_id); after a restore, measured in the kept database."
  returned: when the live database was compared with the backup
  type: dict
ledger:
  description:
    - "Where the ledger's rows went: C(backup_max_id), C(from_revision), C(to_revision), C(carried)
      ({table: rows} carried forward), C(kept_aside) (what only the kept database holds) and C(summary)."
  returned: when the live database was compared with the backup
  type: dict
ledger_refused:
  description: The restore was refused because the live ledger would lose rows (nothing was touched).
  returned: when refused
  type: bool
yielded:
  description: The restore stopped because an operator's kill switch level is engaged.
  returned: when it yielded
  type: bool
kill_switch:
  description: The operator's engagement recorded on the bot (C(level), C(who), C(time), C(reason)).
  returned: when an operator's level is engaged
  type: dict
backup_id:
  description: The set restored (resolved when C(latest) was asked).
  returned: when the set was found
  type: str
safety_backup_id:
  description: The safety backup taken before the restore (null when none was needed or taken).
  returned: always
  type: str
previous_database:
  description: Name of the replaced live database (PostgreSQL) or file (SQLite) kept after the swap; null when dropped or untouched.
  returned: always
  type: str
row_counts:
  description: Row counts and ledger max id of the live database before and after the restore.
  returned: always
  type: dict
  contains:
    before: {description: "Live database before: {row_counts, ledger_max_id, alembic_revision}.", type: dict}
    after: {description: "Live database after (what the backup holds).", type: dict}
downtime:
  description: Seconds from the bot's stop to its readiness (null when it was not stopped).
  returned: always
  type: float
slot_wait:
  description: Seconds the restore waited for a window slot before it stopped the bot (null when it did not stop it).
  returned: always
  type: float
bot_was_running:
  description: The bot was running when the restore began (and so was started again).
  returned: always
  type: bool
timings:
  description: Seconds spent in each step of the restore (safety backup, scratch restore, stop, swap, start...).
  returned: always
  type: dict
files:
  description: Files put back from the tarball (relative to the bot root).
  returned: always
  type: list
  elements: str
duration:
  description: Seconds this call took.
  returned: always
  type: float
actions:
  description: What was done (or would be, in check mode), in order; empty when nothing changed.
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.botops.fleet.plugins.module_utils.botops_bot import bot_argument_spec
from ansible_collections.botops.fleet.plugins.module_utils.botops_priority import yield_cpu
from ansible_collections.botops.fleet.plugins.module_utils.botops_restore import Restore


def main():
    argument_spec = bot_argument_spec()
    argument_spec.update(
        backup_id=dict(type="str", required=True),
        restore_files=dict(type="bool", default=False),
        keep_previous=dict(type="bool", default=True),
        safety_backup=dict(type="bool", default=True),
        force=dict(type="bool", default=False),
        format=dict(type="str", choices=["custom_zstd", "custom", "directory"], default="custom_zstd"),
        jobs=dict(type="int", default=2),
        stop_timeout=dict(type="float"),
        ready_timeout=dict(type="float", default=120.0),
        backup_dir=dict(type="path"),
        maintenance_db=dict(type="str", default="postgres"),
        window_slots=dict(type="int"),
        override_kill_switch=dict(type="bool", default=False),
        accept_ledger_loss=dict(type="bool", default=False),
        carry_forward=dict(type="bool", default=False),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    yield_cpu(module)
    restore = Restore(module)
    try:
        restore.run()
    finally:
        if restore.engine is not None:
            restore.engine.close()
    restore.exit()


if __name__ == "__main__":
    main()
