#!/usr/bin/python
# Copyright: botops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: bot_backup
short_description: Take, verify and prune the backup sets of one trading bot
description:
  - V(present) takes a backup set C(<bot_root>/backups/<backup_id>/) - the database dump, a tarball of the
    profile's C(backup.paths) and C(manifest.json) (checksums, release, revision, row counts).
  - A set is built aside and renamed into place only when complete; its row counts are taken in the dump's own snapshot.
  - V(verified) re-checks every checksum and size, and with O(test_restore) restores the set into a scratch database.
  - V(pruned) applies retention to the sets and to the databases restores replaced; it never deletes a
    damaged set, the newest verified one, or one the release history still links to a current or good release.
  - Listing the sets is the read-only module M(botops.fleet.bot_backup_info).
version_added: "0.1.0"
extends_documentation_fragment: [ansible.builtin.action_common_attributes, botops.fleet.botops_bot]
options:
  state:
    description: V(present) takes a backup; V(verified) verifies one; V(pruned) applies retention.
    type: str
    choices: [present, verified, pruned]
    default: present
  backup_id:
    description:
      - "V(present): the id of the new set (C(YYYYMMDDTHHMMSSZ-<suffix>)); an existing set changes nothing.
        Default a new id, so every run takes a backup."
      - "V(verified): the set to verify, or V(latest) (the default: the newest that is not a restore's safety backup)."
    type: str
  label:
    description: A short label recorded in the manifest (e.g. C(pre-deploy), C(daily)).
    type: str
  reason:
    description: Why the backup was taken, recorded in the manifest.
    type: str
  linked_release:
    description: The release this backup belongs to; retention keeps the set while the release history lists that release as current or good.
    type: str
  format:
    description:
      - Database dump format - V(custom_zstd) (C(pg_dump -Fc -Z0) through C(zstd), large tables dumped side
        by side), V(custom) (C(pg_dump -Fc)) or V(directory) (C(pg_dump -Fd)). Ignored for SQLite (a file copy).
    type: str
    choices: [custom_zstd, custom, directory]
    default: custom_zstd
  compress_level:
    description: Compression level (zstd 1-19 for V(custom_zstd), gzip 0-9 otherwise). Default per format (zstd 1, gzip default).
    type: int
  jobs:
    description: Parallel jobs of C(pg_dump) (tables dumped side by side) and of C(pg_restore) in a test restore.
    type: int
    default: 2
  test_restore:
    description: With O(state=verified), also restore into a scratch database and compare row counts.
    type: bool
    default: false
  force:
    description: With O(state=verified), test-restore again even when a passed test restore is recorded.
    type: bool
    default: false
  keep_last:
    description: With O(state=pruned), keep the newest N sets. Default the profile's C(backup.retention.keep_last).
    type: int
  max_age_days:
    description: With O(state=pruned), keep sets younger than N days. Default the profile's C(backup.retention.max_age_days).
    type: int
  backup_dir:
    description: Directory of the backup sets. Default C(<bot_root>/backups).
    type: path
  maintenance_db:
    description: Database the bot's role connects to for creating and dropping scratch databases.
    type: str
    default: postgres
attributes:
  check_mode:
    support: full
    details:
      - Reports the set that would be created, the verification that would be recorded or the sets that would be
        deleted; writes nothing and creates no scratch database.
  diff_mode:
    support: partial
    details: The list of backup ids before and after (present, pruned).
  platform:
    platforms: posix
notes:
  - A test restore needs the bot's database role to have CREATEDB; format V(custom_zstd) needs the C(zstd) binary on the host.
  - "How a set is taken, verified and pruned, and why: C(docs/operations/backup.md)."
seealso:
  - module: botops.fleet.bot_backup_info
  - module: botops.fleet.bot_restore
author: botops contributors (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Take a backup before the deploy, linked to the release being replaced
  botops.fleet.bot_backup:
    profile: "{{ botops_profile }}"
    bot: "{{ botops_bot }}"
    secrets: "{{ botops_secrets }}"
    label: pre-deploy
    reason: "deploy 1.1.0"
    linked_release: "{{ facts.bot.release }}"
  register: backup

- name: Verify the newest backup by restoring it into a scratch database
  botops.fleet.bot_backup:
    profile: "{{ botops_profile }}"
    bot: "{{ botops_bot }}"
    secrets: "{{ botops_secrets }}"
    state: verified
    backup_id: latest
    test_restore: true

- name: Apply the profile's retention
  botops.fleet.bot_backup:
    profile: "{{ botops_profile }}"
    bot: "{{ botops_bot }}"
    secrets: "{{ botops_secrets }}"
    state: pruned
"""

RETURN = r"""
backup_id:
  description: Id of the set taken or verified (null in check mode without an explicit backup_id).
  returned: state is present or verified
  type: str
  sample: 20261121T020000Z-3fa9c1
backup_path:
  description: Directory of the set (not C(path), which Ansible would overwrite with that directory's own attributes and C(size)).
  returned: state is present or verified
  type: str
manifest:
  description: The set's manifest (files with sha256 and size, release, alembic revision, row counts, ledger max id, format).
  returned: state is present or verified
  type: dict
size:
  description: Total bytes of the set's files.
  returned: state is present or verified
  type: int
duration:
  description: Seconds this call took.
  returned: always
  type: float
would_back_up:
  description: In check mode, the row counts and ledger max id the backup would hold now (proves the database answers).
  returned: check mode, state is present
  type: dict
verification:
  description: The verification record written to C(verified.json) (ok, verified_at, checksums, test_restore, problems, observed row counts).
  returned: state is verified
  type: dict
deleted:
  description: Sets deleted (or that would be) by retention, with the reason.
  returned: state is pruned
  type: list
  elements: dict
kept:
  description: Sets kept by retention, with the rule that keeps each (a damaged set with its reason).
  returned: state is pruned
  type: list
  elements: dict
damaged:
  description: Damaged sets (manifest missing or unreadable) retention kept, each with backup_id and reason.
  returned: state is pruned
  type: list
  elements: dict
deleted_databases:
  description: Kept databases (of replaced live databases) dropped (or that would be) by retention, with the reason.
  returned: state is pruned
  type: list
  elements: dict
kept_databases:
  description: Kept databases retention keeps, with the rule that keeps each.
  returned: state is pruned
  type: list
  elements: dict
actions:
  description: What was done (or would be, in check mode); empty when nothing changed.
  returned: always
  type: list
  elements: str
"""

import os
import shutil
import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.botops.fleet.plugins.module_utils.botops_backup import create_backup, engine_for, test_restore
from ansible_collections.botops.fleet.plugins.module_utils.botops_backup_postgres import PostgresEngine
from ansible_collections.botops.fleet.plugins.module_utils.botops_backup_store import (
    BackupError, BackupStore, find_bin, new_backup_id, utc_iso, validate_backup_id, verify_files)
from ansible_collections.botops.fleet.plugins.module_utils.botops_bot import bot_argument_spec
from ansible_collections.botops.fleet.plugins.module_utils.botops_pg import PgError
from ansible_collections.botops.fleet.plugins.module_utils.botops_priority import yield_cpu
from ansible_collections.botops.fleet.plugins.module_utils.botops_retention import plan_kept_retention, plan_retention, protected_releases


def backup_dir(params):
    return params["backup_dir"] or os.path.join(params["bot"]["root"], "backups")


def take(module, store, engine, result):
    p = module.params
    bot, profile = p["bot"], p["profile"]
    before = [s["backup_id"] for s in store.list()]
    result["diff"] = {"before": {"backups": before}, "after": {"backups": before}}
    if p["backup_id"]:
        validate_backup_id(p["backup_id"])
        if p["backup_id"] in before:
            manifest = store.load(p["backup_id"])
            result.update(backup_id=p["backup_id"], backup_path=store.path(p["backup_id"]), manifest=manifest,
                          size=manifest.get("size"))
            return
    if module.check_mode:
        # Prove the tools are there and the database answers, show what the dump would hold; write nothing.
        if isinstance(engine, PostgresEngine):
            find_bin("pg_dump")
            if p["format"] == "custom_zstd":
                find_bin("zstd")
        counts = engine.counts() if engine is not None else None
        backup_id = p["backup_id"]
        result.update(changed=True, backup_id=backup_id, backup_path=store.path(backup_id) if backup_id else None,
                      would_back_up={"row_counts": counts[0], "ledger_max_id": counts[1]} if counts else None)
        result["actions"].append(f"would take backup {backup_id or '(new id)'} in {store.directory}")
        result["diff"]["after"] = {"backups": sorted(before + [backup_id or "(new id)"], reverse=True)}
        return
    with store.lock():
        if p["backup_id"] and os.path.isdir(store.path(p["backup_id"])):  # taken meanwhile by another run
            manifest = store.load(p["backup_id"])
            result.update(backup_id=p["backup_id"], backup_path=store.path(p["backup_id"]), manifest=manifest,
                          size=manifest.get("size"))
            return
        manifest = create_backup(store, engine, bot, profile, backup_id=p["backup_id"] or new_backup_id(),
                                 fmt=p["format"], level=p["compress_level"], jobs=p["jobs"], label=p["label"],
                                 reason=p["reason"], linked_release=p["linked_release"])
    backup_id = manifest["backup_id"]
    result.update(changed=True, backup_id=backup_id, backup_path=store.path(backup_id), manifest=manifest,
                  size=manifest["size"])
    result["actions"].append(f"took backup {backup_id} ({manifest['size']} bytes)")
    result["diff"]["after"] = {"backups": [backup_id] + before}


def verify(module, store, engine, result):
    p = module.params
    backup_id = store.resolve(p["backup_id"] or "latest")
    manifest = store.load(backup_id)
    path = store.path(backup_id)
    result.update(backup_id=backup_id, backup_path=path, manifest=manifest, size=manifest.get("size"))
    previous = store.verification(backup_id) or {}
    problems = verify_files(path, manifest)
    want_test = p["test_restore"] and bool(manifest.get("database"))
    tested_before = bool(previous.get("ok") and previous.get("test_restore"))
    run_test = want_test and not problems and (p["force"] or not tested_before)
    if problems:
        record = {"ok": False, "checksums": "mismatch", "problems": problems, "test_restore": False}
        changed = previous.get("ok", True) or previous.get("problems") != problems
    elif run_test:
        record = None  # written after the test restore
        changed = True
    else:
        record = {"ok": True, "checksums": "ok", "problems": [], "test_restore": tested_before,
                  "observed": previous.get("observed") if tested_before else None}
        changed = not previous.get("ok")
    if module.check_mode:
        result["changed"] = changed
        if run_test:
            result["actions"].append(f"would test-restore {backup_id} into a scratch database")
        if changed:
            result["actions"].append(f"would record the verification of {backup_id}")
        result["verification"] = record or previous or None
        if problems:
            module.fail_json(msg=f"Failed to verify backup {backup_id} of bot '{p['bot']['name']}': "
                                 + "; ".join(problems), **result)
        return
    if changed:
        with store.lock():  # retention must not delete the set while it is being restored
            store.load(backup_id)
            if run_test:
                if engine is None:
                    raise BackupError("the profile has no database to test-restore into")
                test_problems, observed, scratch = test_restore(engine, path, manifest, p["jobs"])
                result["actions"].append(f"test-restored {backup_id} into {scratch} and dropped it")
                record = {"ok": not test_problems, "checksums": "ok", "problems": test_problems, "test_restore": True,
                          "observed": observed, "scratch_database": scratch}
            record["verified_at"] = utc_iso()
            store.write_verification(backup_id, record)
        result["changed"] = True
        result["actions"].append(f"recorded verification of {backup_id}: {'ok' if record['ok'] else 'FAILED'}")
        result["verification"] = record
    else:
        result["verification"] = previous
    if not record["ok"]:
        module.fail_json(msg=f"Failed to verify backup {backup_id} of bot '{p['bot']['name']}': "
                             + "; ".join(record["problems"]), **result)


def prune(module, store, engine, result):
    p = module.params
    retention = (p["profile"].get("backup") or {}).get("retention") or {}
    keep_last = p["keep_last"] if p["keep_last"] is not None else retention.get("keep_last")
    max_age = p["max_age_days"] if p["max_age_days"] is not None else retention.get("max_age_days")
    sets = store.list()
    releases, backup_ids = protected_releases(p["bot"]["root"])
    delete, keep = plan_retention(sets, keep_last, max_age, releases, protected_ids=backup_ids)
    stale = store.temp_dirs()
    try:
        kept_dbs = engine.kept() if engine is not None else []
    except (BackupError, PgError) as exc:  # a role that may not list databases: the sets are still pruned
        kept_dbs = []
        module.warn(f"bot '{p['bot']['name']}': the databases restores kept were not looked at: {exc}")
    drop_dbs, keep_dbs = plan_kept_retention(kept_dbs, keep_last, max_age)
    damaged = [{"backup_id": s["backup_id"], "reason": s["damaged"]} for s in sets if s["damaged"]]
    for entry in damaged:  # kept (plan_retention), and said so on every run until someone looks at it
        module.warn(f"bot '{p['bot']['name']}': backup {entry['backup_id']} is damaged ({entry['reason']}); "
                    "retention keeps it: look at it, then repair or remove it by hand")
    result.update(keep_last=keep_last, max_age_days=max_age, damaged=damaged,
                  deleted=[{"backup_id": b, "why": why} for b, why in delete],
                  kept=[{"backup_id": b, "why": why} for b, why in keep],
                  deleted_databases=[{"name": n, "why": why} for n, why in drop_dbs],
                  kept_databases=[{"name": n, "why": why} for n, why in keep_dbs])
    before = [s["backup_id"] for s in sets]
    gone = {b for b, why in delete}
    dbs_before = [n for n, why in kept_dbs]
    dbs_gone = {n for n, why in drop_dbs}
    result["diff"] = {"before": {"backups": before, "kept_databases": dbs_before},
                      "after": {"backups": [b for b in before if b not in gone],
                                "kept_databases": [n for n in dbs_before if n not in dbs_gone]}}
    if not delete and not stale and not drop_dbs:
        return
    result["changed"] = True
    verb = "would delete" if module.check_mode else "deleted"
    if module.check_mode:
        result["actions"] += [f"{verb} backup {b} ({why})" for b, why in delete]
        result["actions"] += [f"{verb} stale temporary directory {os.path.basename(t)}" for t in stale]
        result["actions"] += [f"would drop kept database {n} ({why})" for n, why in drop_dbs]
        return
    with store.lock():  # a restore holds it while it creates a kept database
        for backup_id, why in delete:
            shutil.rmtree(store.path(backup_id))
            result["actions"].append(f"{verb} backup {backup_id} ({why})")
        for tmp in store.temp_dirs():  # under the lock: every one was left by a killed run
            shutil.rmtree(tmp, ignore_errors=True)
            result["actions"].append(f"{verb} stale temporary directory {os.path.basename(tmp)}")
        for name, why in drop_dbs:
            engine.drop(name)
            result["actions"].append(f"dropped kept database {name} ({why})")


def main():
    argument_spec = bot_argument_spec()
    argument_spec.update(
        state=dict(type="str", choices=["present", "verified", "pruned"], default="present"),
        backup_id=dict(type="str"),
        label=dict(type="str"),
        reason=dict(type="str"),
        linked_release=dict(type="str"),
        format=dict(type="str", choices=["custom_zstd", "custom", "directory"], default="custom_zstd"),
        compress_level=dict(type="int"),
        jobs=dict(type="int", default=2),
        test_restore=dict(type="bool", default=False),
        force=dict(type="bool", default=False),
        keep_last=dict(type="int"),
        max_age_days=dict(type="int"),
        backup_dir=dict(type="path"),
        maintenance_db=dict(type="str", default="postgres"),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    yield_cpu(module)
    p = module.params
    started = time.monotonic()
    result = dict(changed=False, actions=[])
    name = p["bot"]["name"]
    action = {"present": "back up", "verified": "verify backup of", "pruned": "prune backups of"}[p["state"]]
    engine = None
    try:
        if p["keep_last"] is not None and p["keep_last"] < 1:
            raise BackupError("keep_last must be at least 1")
        if p["max_age_days"] is not None and p["max_age_days"] < 1:
            raise BackupError("max_age_days must be at least 1")
        store = BackupStore(backup_dir(p))
        engine = engine_for(p["profile"], p["bot"], p["secrets"], p["maintenance_db"])
        if p["state"] == "present":
            take(module, store, engine, result)
        elif p["state"] == "verified":
            verify(module, store, engine, result)
        else:
            prune(module, store, engine, result)
    except (BackupError, PgError, OSError, KeyError) as exc:
        result["duration"] = round(time.monotonic() - started, 3)
        module.fail_json(msg=f"Failed to {action} bot '{name}': {exc}", **result)
    finally:
        if engine is not None:
            engine.close()
    result["duration"] = round(time.monotonic() - started, 3)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
