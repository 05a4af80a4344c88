#!/usr/bin/python
# Copyright: botops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: bot_deploy
short_description: Move one trading bot to a release in one short window, reverting by itself on failure
description:
  - Deploys or rolls back one bot in one call on its host - pause entries, graceful stop, migrate the
    database, switch C(current), start behind the readiness gate, release the pause, mark the release good.
  - The bot is down only for its own steps; expand-only migrations run outside the window (O(online_migrations)).
  - A downgrade across a contract migration brings the data back from a backup instead; without one the
    call refuses before changing anything.
  - Any failure after the first change is reverted by the call itself, which then fails (C(reverted=true)).
  - Idempotent - a bot already on the target, its database up to date and ready, is left alone.
version_added: "0.2.0"
extends_documentation_fragment: [ansible.builtin.action_common_attributes, botops.fleet.botops_bot]
options:
  version:
    description:
      - The release to move to, installed beforehand (O(botops.fleet.bot_release#module:state=present)).
        Default with O(backup_id) alone - the release the backup was taken on.
      - V(latest) is the newest release marked good other than the current one, resolved at each call;
        name a version for an idempotent call.
    type: str
  backup_id:
    description:
      - The backup leading back, taken before the change (M(botops.fleet.bot_backup)); recorded on a deploy, restored
        when a contract migration must be undone. V(latest) is the newest set (a damaged newest set fails the call).
    type: str
  restore:
    description: V(needed) restores O(backup_id) only when a contract migration cannot be undone; V(always) brings its data back whatever the migrations.
    type: str
    choices: [needed, always]
    default: needed
  online_migrations:
    description: Run expand-only migrations outside the window (upgrade before the stop, downgrade after the start).
    type: bool
    default: true
  pause:
    description: Engage the kill switch level V(pause) before the stop; this call releases it once the bot is ready again.
    type: bool
    default: true
  reason:
    description: Why, for the kill switch audit log and the ledger notes.
    type: str
    default: botops deploy
  who:
    description: Operator recorded in the ledger and the audit log. Default E(BOTOPS_OPERATOR), else E(SUDO_USER), else the user running the module.
    type: str
  graceful_timeout:
    description: Seconds after the stop began before SIGTERM. Default the profile's C(service.stop_timeout), else 30.
    type: float
  term_timeout:
    description: Seconds after SIGTERM before SIGKILL.
    type: float
    default: 10
  ready_timeout:
    description: Seconds a started release gets to become ready (the revert waits as long for the previous one).
    type: float
    default: 60
  ready_stable_for:
    description: Seconds readiness must then hold without a break, so a release that answers ready and falls over is reverted.
    type: float
    default: 1.0
  window_slots:
    description:
      - Bots of this host allowed in their window at once. Default the host's CPU count.
      - A call that finds no slot free within 10 minutes fails before it pauses.
    type: int
  keep_mode:
    description:
      - Put a bot that was DRY (or paper trading) before the change back to DRY (paper) if it comes back LIVE,
        as M(botops.fleet.bot_mode) O(botops.fleet.bot_mode#module:keep_out_of_live) does. A bot back LIVE that its profile cannot put back fails the call.
    type: bool
    default: true
  mark:
    description: Mark the target release good in the ledger on success, bad when the change was reverted.
    type: bool
    default: true
  replaced_status:
    description: On success, also mark the release being replaced with this status (rollbacks set V(bad), so V(latest) never points back at it).
    type: str
    choices: [bad, failed]
  keep:
    description: On success, remove the oldest installed releases until this many remain (the current, the last good and the rollback target are always kept).
    type: int
  lock_timeout:
    description: Seconds a migration statement waits for a table lock before failing (PostgreSQL C(lock_timeout)).
    type: int
    default: 30
  audit_log:
    description: The kill switch audit log on the bot's host.
    type: path
  backup_dir:
    description: Directory of the backup sets. Default C(<bot_root>/backups).
    type: path
  maintenance_db:
    description: Database the bot's role connects to for creating, renaming and dropping databases (restores).
    type: str
    default: postgres
  carry_forward:
    description:
      - When the data comes back from a backup, carry the ledger rows written since the backup into the
        restored database before the swap, as M(botops.fleet.bot_restore) O(botops.fleet.bot_restore#module:carry_forward) does.
    type: bool
    default: true
  accept_ledger_loss:
    description:
      - When the data comes back from a backup, go ahead although the live ledger holds rows the restored
        database would not; without it the call changes nothing and fails with RV(ledger_refused).
      - The revert of a failed window never refuses; RV(ledger) says what it kept aside.
    type: bool
    default: false
  run_id:
    description: The run this window belongs to, recorded with the pause it engages.
    type: str
  override_kill_switch:
    description:
      - Go ahead on a bot whose operator engaged a kill switch level, putting the level back once the bot is
        ready. Without it the call yields to the level and fails with RV(yielded).
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    details: Plans every step from the releases, the ledger, the database's revision and the backup's manifest (C(would)); changes nothing.
  diff_mode:
    support: full
    details: The release and the database revision before and after.
  platform:
    platforms: posix
notes:
  - Runs on the bot's host, once per bot, after the playbook took the bot's lock, checked the bot and took
    the backup (M(botops.fleet.bot_lock), M(botops.fleet.bot_facts), M(botops.fleet.bot_backup)).
  - "The window step by step, the direction of the migration, the revert and the window slots:
    C(docs/operations/deploy.md)."
seealso:
  - module: botops.fleet.bot_release
  - module: botops.fleet.bot_migrate
  - module: botops.fleet.bot_service
  - module: botops.fleet.bot_restore
author: botops contributors (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Deploy 1.1.0 in one window, linking the backup taken before
  botops.fleet.bot_deploy:
    profile: "{{ botops_profile }}"
    bot: "{{ botops_bot }}"
    secrets: "{{ botops_secrets }}"
    version: 1.1.0
    backup_id: "{{ backup.backup_id }}"
    reason: "deploy 1.1.0"
    keep: 5
  register: deploy

- name: Roll back to the previous good release; it becomes the rollback target no more
  botops.fleet.bot_deploy:
    profile: "{{ botops_profile }}"
    bot: "{{ botops_bot }}"
    secrets: "{{ botops_secrets }}"
    version: latest
    replaced_status: bad

- name: Roll back to a backup (code of the release it was taken on, its data)
  botops.fleet.bot_deploy:
    profile: "{{ botops_profile }}"
    bot: "{{ botops_bot }}"
    secrets: "{{ botops_secrets }}"
    backup_id: 20261121T020000Z-1a2b3c
    restore: always
"""

RETURN = r"""
ledger_loss:
  description:
    - "When the data comes back from a backup: what the live ledger holds that the backup does not (C(table), C(rows),
      C(first_id), C(last_id), C(first_time), C(last_time)); after the swap, measured in the kept database."
  returned: when the data comes back from a backup
  type: dict
ledger:
  description: "When the data comes back from a backup: where the ledger's rows went (C(carried), C(kept_aside), C(summary)); see M(botops.fleet.bot_restore)."
  returned: when the data comes back from a backup
  type: dict
ledger_refused:
  description: Refused because the live ledger would lose rows (nothing was changed).
  returned: when refused
  type: bool
yielded:
  description: The call stopped because an operator's kill switch level is engaged (nothing more was changed on the bot).
  returned: when it yielded
  type: bool
kill_switch:
  description: The operator's engagement recorded on the bot (C(level), C(who), C(time), C(reason)), when one was found.
  returned: when an operator's level is engaged
  type: dict
version:
  description: The target release (V(latest) and the backup's release resolved).
  returned: always
  type: str
release_before:
  description: The release C(current) pointed to before the call.
  returned: always
  type: str
release_after:
  description: The release C(current) points to after the call (the previous one again when reverted).
  returned: always
  type: str
revision_before:
  description: The database's Alembic revision before the call (null without migrations).
  returned: always
  type: str
revision_after:
  description: The database's Alembic revision after the call.
  returned: always
  type: str
downtime:
  description:
    - Seconds from the stop (or the pause that stopped the process) until the bot was ready again with its pause
      released - the trading downtime. Null when the window was not reached.
  returned: always
  type: float
slot_wait:
  description: Seconds the call waited for a window slot (null when the window was not reached).
  returned: always
  type: float
ready:
  description: The readiness gate passed (null when not reached).
  returned: always
  type: bool
timings:
  description: Seconds spent in each step, by the step's name (revert steps too).
  returned: always
  type: dict
  sample: {"pause entries": 0.031, "stop": 0.412, "switch current": 0.004, "start": 0.853, "release the pause": 0.02, "readiness gate": 1.004}
migration:
  description:
    - "What the database needs: C({release, direction, from, to, pending, contract}) of the migration, or
      C({restore, revision}) when the data comes back from a backup; null without migrations."
  returned: always
  type: dict
backup_id:
  description: The backup whose data was (or would be) restored.
  returned: always
  type: str
restored:
  description: The database was swapped for the restored backup.
  returned: always
  type: bool
previous_database:
  description: Name of the replaced database, kept after a restore.
  returned: always
  type: str
paused:
  description: This call engaged the pause (and so released it).
  returned: always
  type: bool
mode:
  description:
    - The execution mode and paper flag before the change (after, when it was kept out of LIVE).
  returned: always
  type: dict
kept_by:
  description: What keeps the bot out of LIVE after the change when O(keep_mode) checked it - V(execution_mode), V(paper) or V(none).
  returned: when the bot was DRY or paper before the change and the change went through
  type: str
  sample: execution_mode
reverted:
  description: The change failed and was reverted by this call.
  returned: always
  type: bool
failure:
  description: The step that failed and why (when the change was reverted).
  returned: on failure
  type: str
pruned:
  description: Releases removed by O(keep).
  returned: always
  type: list
  elements: str
would:
  description: In check mode, the steps that would run, in order.
  returned: check mode
  type: list
  elements: str
actions:
  description: What was done, in order (a revert's actions after C(revert:)); empty when nothing changed.
  returned: always
  type: list
  elements: str
  sample: ["pause entries (maintenance)", "service stop", "switch current 1.0.0 -> 1.1.0",
           "upgrade 0001_initial -> 0002_trade_fee (release 1.1.0's scripts)", "service start", "ready",
           "release the pause (maintenance off)", "mark 1.1.0 good"]
seconds:
  description: Duration of the call.
  returned: always
  type: float
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.botops.fleet.plugins.module_utils.botops_bot import bot_argument_spec, module_bot
from ansible_collections.botops.fleet.plugins.module_utils.botops_errors import BotError
from ansible_collections.botops.fleet.plugins.module_utils.botops_deploy import Deploy
from ansible_collections.botops.fleet.plugins.module_utils.botops_deploy_errors import DeployFailed
from ansible_collections.botops.fleet.plugins.module_utils.botops_priority import yield_cpu


def main():
    argument_spec = bot_argument_spec()
    argument_spec.update(
        version=dict(type="str"),
        backup_id=dict(type="str"),
        restore=dict(type="str", choices=["needed", "always"], default="needed"),
        online_migrations=dict(type="bool", default=True),
        pause=dict(type="bool", default=True),
        reason=dict(type="str", default="botops deploy"),
        who=dict(type="str"),
        graceful_timeout=dict(type="float"),
        term_timeout=dict(type="float", default=10),
        ready_timeout=dict(type="float", default=60),
        ready_stable_for=dict(type="float", default=1.0),
        window_slots=dict(type="int"),
        keep_mode=dict(type="bool", default=True),
        mark=dict(type="bool", default=True),
        replaced_status=dict(type="str", choices=["bad", "failed"]),
        keep=dict(type="int"),
        lock_timeout=dict(type="int", default=30),
        audit_log=dict(type="path"),
        backup_dir=dict(type="path"),
        maintenance_db=dict(type="str", default="postgres"),
        run_id=dict(type="str"),
        override_kill_switch=dict(type="bool", default=False),
        accept_ledger_loss=dict(type="bool", default=False),
        carry_forward=dict(type="bool", default=True),
    )
    module = AnsibleModule(
        argument_spec=argument_spec,
        required_one_of=[("version", "backup_id")],
        required_if=[("restore", "always", ["backup_id"])],
        supports_check_mode=True,
    )
    yield_cpu(module)
    p = module.params
    name = p["bot"]["name"]
    result = dict(changed=False, actions=[])
    try:
        if p["keep"] is not None and p["keep"] < 1:
            raise BotError(f"keep must be at least 1, got {p['keep']}")
        deploy = Deploy(module_bot(module), p["profile"], p, secrets=p["secrets"],
                        run_command=lambda cmd, cwd, env: module.run_command(cmd, cwd=cwd, environ_update=env),
                        check_mode=module.check_mode, warn=module.warn)
        result = deploy.run()
    except DeployFailed as exc:
        module.fail_json(msg=str(exc), **exc.result)
    except (BotError, KeyError) as exc:
        module.fail_json(msg=f"Failed to deploy release {p['version'] or p['backup_id']} on bot '{name}': {exc}",
                         **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
