#!/usr/bin/python
# Copyright: botops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: bot_release
short_description: Install, activate, mark and remove releases of one trading bot
description:
  - Manages C(<bot_root>/releases/<version>/), the C(<bot_root>/current) symlink and the release history
    C(<bot_root>/releases/ledger.json) (status, checksum, backup and history of every release).
  - An artifact's checksum is verified against its manifest before anything is extracted; it is extracted
    safely aside, then renamed into place.
  - C(current) is switched atomically. The module never starts or stops the bot.
  - Removal and pruning never touch the current release, the last good one nor the rollback target C(previous_good).
  - M(botops.fleet.bot_release_info) lists the releases and resolves a rollback target.
version_added: "0.1.0"
extends_documentation_fragment: [ansible.builtin.action_common_attributes, botops.fleet.botops_bot]
options:
  state:
    description:
      - V(present) installs the release; V(current) also points C(current) at it; V(absent) removes it (without
        O(version), only prunes to O(keep)); V(marked) sets its O(status).
    type: str
    choices: [present, current, absent, marked]
    default: present
  version:
    description:
      - Release version, matching C(^[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}$) and without C(..). Required unless
        O(state=absent) with O(keep).
    type: str
  artifact:
    description: The artifact tarball C(<name>-<version>.tar.gz), or a directory that holds it; needed only when the release is not installed yet.
    type: path
  artifact_name:
    description:
      - Artifact name (C(tradebot) in C(tradebot-1.1.0.tar.gz)) when O(artifact) is a directory holding artifacts of
        several names for the same version.
    type: str
  status:
    description: Status to set in the release history with O(state=marked).
    type: str
    choices: [good, bad, failed]
  backup_id:
    description: The backup taken before this deploy, recorded on the release's ledger entry when O(state=current) activates it.
    type: str
  note:
    description: Free text recorded with O(state=marked) (why the release is bad, the incident id).
    type: str
  who:
    description: Operator recorded in the ledger. Defaults to the user running the module.
    type: str
  keep:
    description:
      - With any O(state), remove the oldest installed releases until this many remain (the current release, the
        last good one and C(previous_good) are always kept).
    type: int
attributes:
  check_mode:
    support: full
    details: Verifies the artifact's checksum and reports what would be installed, switched, marked or removed; writes nothing.
  diff_mode:
    support: full
    details: Shows the C(current) version (and the status for O(state=marked)) before and after.
  platform:
    platforms: posix
notes:
  - Run it once per bot, on the bot's host. Secrets are not needed.
  - "What an artifact holds, how it is installed and what the ledger records: C(docs/operations/release.md)."
seealso:
  - module: botops.fleet.bot_release_info
  - module: botops.fleet.bot_deploy
author: botops contributors (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Install release 1.1.0 without activating it
  botops.fleet.bot_release:
    profile: "{{ botops_profile }}"
    bot: "{{ botops_bot }}"
    version: 1.1.0
    artifact: /srv/artifacts
    state: present

- name: Switch current to 1.1.0, linking the pre-deploy backup, keep 5 releases
  botops.fleet.bot_release:
    profile: "{{ botops_profile }}"
    bot: "{{ botops_bot }}"
    version: 1.1.0
    artifact: /srv/artifacts/tradebot-1.1.0.tar.gz
    state: current
    backup_id: "{{ backup.backup_id }}"
    keep: 5
  register: release

- name: Mark the release good once it is healthy
  botops.fleet.bot_release:
    profile: "{{ botops_profile }}"
    bot: "{{ botops_bot }}"
    version: 1.1.0
    state: marked
    status: good

- name: Find the rollback target (latest good release before current)
  botops.fleet.bot_release_info:
    profile: "{{ botops_profile }}"
    bot: "{{ botops_bot }}"
  register: releases

- name: Roll back to it
  botops.fleet.bot_release:
    profile: "{{ botops_profile }}"
    bot: "{{ botops_bot }}"
    version: "{{ releases.previous_good }}"
    state: current
  when: releases.previous_good
"""

RETURN = r"""
version:
  description: The version this call was about.
  returned: when O(version) is given
  type: str
previous:
  description: The version C(current) pointed to before the call (null if there was none).
  returned: always
  type: str
current:
  description: The version C(current) points to after the call (would point to, in check mode).
  returned: always
  type: str
release:
  description: The ledger entry of O(version) after the call.
  returned: when O(version) is given
  type: dict
  sample: {version: 1.1.0, sha256: "9f2c...", alembic_head: 0002_trade_fee, migration: expand,
           backup_id: "20240101T000000Z", status: installed, installed_at: "2024-01-01T00:00:00Z",
           activated_at: "2024-01-01T00:01:00Z", marked_at: null, who: ops, previous: 1.0.0}
path:
  description: The release directory of O(version).
  returned: when O(version) is given
  type: str
releases:
  description: Every known release (disk and ledger), most recently used first, with C(installed) and C(current) flags.
  returned: always
  type: list
  elements: dict
previous_good:
  description: The latest release marked good other than the current one, skipping bad and failed ones (the rollback target).
  returned: always
  type: str
last_good:
  description: The most recently activated release marked good (may be the current one).
  returned: always
  type: str
ledger:
  description: The ledger file's path.
  returned: always
  type: str
pruned:
  description: Versions removed (or that would be removed) by O(keep).
  returned: always
  type: list
  elements: str
actions:
  description: What was done (would be done in check mode), in order.
  returned: always
  type: list
  elements: str
  sample: ["verify tradebot-1.1.0.tar.gz sha256", "install 1.1.0", "switch current 1.0.0 -> 1.1.0"]
"""

import contextlib
import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.botops.fleet.plugins.module_utils.botops_bot import bot_argument_spec
from ansible_collections.botops.fleet.plugins.module_utils.botops_priority import yield_cpu
from ansible_collections.botops.fleet.plugins.module_utils.botops_release import (
    BotReleases, ReleaseError, check_version, default_who, find_artifact, install_release, ledger_lock, read_manifest,
    read_release_json, remove_leftovers, remove_release, switch_current, utcnow, verify_artifact)

ACTION_WORDS = {"present": "install", "current": "activate", "absent": "remove", "marked": "mark"}


class ReleaseRun(BotReleases):
    """One call of the module on one bot."""

    def __init__(self, module, result):
        p = module.params
        self.who = p["who"] or default_who()
        super().__init__(p["bot"]["root"], p["bot"]["name"], self.who)
        self.module = module
        self.result = result
        self.check_mode = module.check_mode
        self.dirty = False
        self.actions = result["actions"]

    # ------------------------------------------------------------ steps
    def install(self, version):
        """Install `version` from the artifact unless it is installed; returns True when it (would) change."""
        p = self.module.params
        entry = self.ledger.get(version)
        if version in self.installed:
            if p["artifact"] and entry and entry.get("sha256"):
                tarball, manifest_path = find_artifact(p["artifact"], version, p["artifact_name"])
                manifest = read_manifest(manifest_path, version)
                if manifest["sha256"].lower() != entry["sha256"].lower():
                    raise ReleaseError(f"release {version} is installed from an artifact with sha256 {entry['sha256']}, "
                                       f"not {manifest['sha256']}: a version is immutable (remove it first)")
            return False
        if not p["artifact"]:
            raise ReleaseError(f"release {version} is not installed and no artifact was given")
        tarball, manifest_path = find_artifact(p["artifact"], version, p["artifact_name"])
        manifest = read_manifest(manifest_path, version)
        verify_artifact(tarball, manifest)
        self.actions.append(f"verify {os.path.basename(tarball)} sha256")
        self.actions.append(f"install {version}")
        if not self.check_mode:
            remove_leftovers(self.releases_dir)
            path = install_release(tarball, self.releases_dir, version)
            inner = read_release_json(path) or {}
            for key in ("alembic_head", "migration", "description", "name"):
                if manifest.get(key) is None and inner.get(key) is not None:
                    manifest[key] = inner[key]
        new = self.ledger.new_entry(version, manifest, self.who)
        if entry:  # reinstalled after a removal: keep its history
            new.update({k: entry.get(k) for k in ("status", "backup_id", "activated_at", "marked_at", "previous")})
            if new["status"] not in ("good", "bad", "failed"):
                new["status"] = "installed"
        self.ledger.entries[version] = new
        self.installed = sorted(set(self.installed) | {version})
        self.dirty = True
        return True

    def activate(self, version):
        if self.current == version:
            return False
        entry = self.ledger.get(version)
        if entry and entry.get("status") in ("bad", "failed"):
            self.module.warn(f"release {version} is marked {entry['status']} in the ledger and is being activated")
        self.actions.append(f"switch current {self.current or '(none)'} -> {version}")
        if not self.check_mode:
            switch_current(self.root, version)
        self.ledger.record_activation(version, self.current, self.module.params["backup_id"], self.who)
        self.current = version
        self.dirty = True
        return True

    def mark(self, version, status):
        entry = self.ledger.get(version)
        if entry is None:
            raise ReleaseError(f"release {version} is neither installed nor in the ledger")
        note = self.module.params["note"]
        before = entry.get("status")
        self.result["diff"] = {"before": {"version": version, "status": before},
                               "after": {"version": version, "status": status}}
        if before == status and (note is None or entry.get("note") == note):
            return False
        self.actions.append(f"mark {version} {status}")
        entry.update(status=status, marked_at=utcnow(), who=self.who)
        if note is not None:
            entry["note"] = note
        self.dirty = True
        return True

    def remove(self, version, reason):
        self.actions.append(f"remove {version}{reason}")
        if not self.check_mode:
            remove_release(self.releases_dir, version)
        entry = self.ledger.get(version)
        if entry:
            entry["removed_at"] = utcnow()
        self.installed = [v for v in self.installed if v != version]
        self.dirty = True

    def refuse_removal(self, version):
        if version == self.current:
            raise ReleaseError(f"release {version} is current: switch current to another release first")
        protected = self.ledger.protected(self.current, self.installed)
        if version in protected:
            raise ReleaseError(f"release {version} is the last good release (the rollback target): mark another release good first")

    def prune(self, keep, also_keep=()):
        pruned = self.ledger.prune_candidates(self.current, self.installed, keep, also_keep)
        for version in pruned:
            self.remove(version, f" (keep {keep})")
        self.result["pruned"] = pruned
        return bool(pruned)

    def save(self):
        if self.dirty and not self.check_mode:
            self.ledger.write()


def main():
    argument_spec = bot_argument_spec()
    argument_spec.update(
        state=dict(type="str", default="present", choices=["present", "current", "absent", "marked"]),
        version=dict(type="str"),
        artifact=dict(type="path"),
        artifact_name=dict(type="str"),
        status=dict(type="str", choices=["good", "bad", "failed"]),
        backup_id=dict(type="str"),
        note=dict(type="str"),
        who=dict(type="str"),
        keep=dict(type="int"),
    )
    module = AnsibleModule(
        argument_spec=argument_spec,
        required_if=[
            ("state", "present", ["version"]),
            ("state", "current", ["version"]),
            ("state", "marked", ["version", "status"]),
            ("state", "absent", ["version", "keep"], True),
        ],
        supports_check_mode=True,
    )
    yield_cpu(module)
    p = module.params
    state, version = p["state"], p["version"]
    name = p["bot"]["name"]
    result = dict(changed=False, actions=[], pruned=[], previous=None, current=None,
                  ledger=os.path.join(p["bot"]["root"], "releases", "ledger.json"))
    if version is not None:
        result["version"] = version
    what = f"{ACTION_WORDS[state]} release {version}" if version else f"{ACTION_WORDS[state]} releases"
    try:
        if version is not None:
            check_version(version)
        if p["keep"] is not None and p["keep"] < 1:
            raise ReleaseError(f"keep must be at least 1, got {p['keep']}")
        with ledger_lock(os.path.join(p["bot"]["root"], "releases")) if not module.check_mode else contextlib.nullcontext():
            run = ReleaseRun(module, result)
            result["previous"] = run.current
            changed = False
            if state in ("present", "current"):
                changed |= run.install(version)
                if state == "current":
                    changed |= run.activate(version)
                if p["keep"]:
                    changed |= run.prune(p["keep"], also_keep=(version,))
            elif state == "absent":
                if version:
                    run.refuse_removal(version)
                    if version in run.installed:
                        run.remove(version, "")
                        changed = True
                if p["keep"]:
                    changed |= run.prune(p["keep"])
            elif state == "marked":
                changed |= run.mark(version, p["status"])
                if p["keep"]:
                    changed |= run.prune(p["keep"])
            run.save()
        result.update(run.report(version))
        if state != "marked":
            result["diff"] = {"before": {"current": result["previous"]}, "after": {"current": run.current}}
        result["changed"] = changed
    except (ReleaseError, OSError) as exc:
        module.fail_json(msg=f"Failed to {what} on bot '{name}': {exc}", **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
