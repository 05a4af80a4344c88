#!/usr/bin/python
# Copyright: botops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: bot_incident_bundle
short_description: Write one incident bundle on the controller from the evidence of many bots
description:
  - Takes what M(botops.fleet.bot_incident) captured on every bot, plus the fleet kill-switch result, and writes
    one bundle - a directory C(<dest>/<incident_id>/) with C(incident.json) and one folder per bot
    (C(status.json), C(positions.json), C(ledger.json), C(audit.json), C(last_shutdown.json),
    C(logs/<file>)), and the same as C(<dest>/<incident_id>.tar.gz).
  - Everything is redacted once more (secret-shaped values) before it is written. Directories are
    0700, files 0600.
  - Run it once, on the controller.
version_added: "0.1.0"
extends_documentation_fragment: [ansible.builtin.action_common_attributes]
options:
  dest:
    description: Directory holding the incident bundles.
    type: path
    required: true
  incident_id:
    description: Name of this incident (C(YYYYMMDDTHHMMSSZ-<run>) by default).
    type: str
  reason:
    description: Why the fleet was stopped.
    type: str
    required: true
  who:
    description: Who stopped it.
    type: str
  incidents:
    description: The C(incident) results of M(botops.fleet.bot_incident), one per bot.
    type: list
    elements: dict
    required: true
  fleet_result:
    description: The result of the fleet kill switch (per bot, summary).
    type: dict
    default: {}
  controller_audit_log:
    description: The controller's kill-switch audit log, copied into the bundle when it exists.
    type: path
attributes:
  check_mode:
    support: full
    details: Reports where the bundle would go; writes nothing.
  diff_mode:
    support: none
  platform:
    platforms: posix
author: botops contributors (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Write the incident bundle
  botops.fleet.bot_incident_bundle:
    dest: "{{ playbook_dir }}/../artifacts/incidents"
    reason: "{{ botops_reason }}"
    incidents: "{{ ansible_play_hosts | map('extract', hostvars, ['botops__capture', 'incident']) | list }}"
  delegate_to: localhost
  run_once: true
"""

RETURN = r"""
path:
  description: The bundle directory.
  returned: success
  type: str
tarball:
  description: The bundle as one tar.gz file.
  returned: success
  type: str
sha256:
  description: Checksum of the tarball.
  returned: success
  type: str
bots:
  description: Bots in the bundle.
  returned: always
  type: list
  elements: str
"""

import hashlib
import json
import os
import re
import tarfile
from datetime import datetime, timezone

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.botops.fleet.plugins.module_utils.botops_priority import yield_cpu
from ansible_collections.botops.fleet.plugins.module_utils.botops_redact import redact, redact_tree

ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")


def write_private(path, text):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def dump(path, data):
    write_private(path, json.dumps(redact_tree(data), indent=2, sort_keys=True, default=str) + "\n")


def write_bundle(p, bundle_dir):
    os.makedirs(bundle_dir, mode=0o700)
    names = []
    for incident in p["incidents"]:
        name = SAFE_NAME.sub("_", str(incident.get("bot") or "unknown"))
        names.append(name)
        bot_dir = os.path.join(bundle_dir, name)
        os.mkdir(bot_dir, 0o700)
        os.mkdir(os.path.join(bot_dir, "logs"), 0o700)
        for key in ("status", "positions", "ledger", "audit", "last_shutdown", "errors"):
            dump(os.path.join(bot_dir, f"{key}.json"), incident.get(key))
        for log_name, lines in (incident.get("logs") or {}).items():
            write_private(os.path.join(bot_dir, "logs", SAFE_NAME.sub("_", log_name)),
                          "\n".join(redact(line) for line in lines) + "\n")
    summary = {
        "incident_id": os.path.basename(bundle_dir),
        "reason": p["reason"],
        "who": p["who"],
        "written_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "bots": names,
        "fleet_kill_switch": p["fleet_result"],
    }
    dump(os.path.join(bundle_dir, "incident.json"), summary)
    audit = p["controller_audit_log"]
    if audit and os.path.exists(audit):
        with open(audit, errors="replace") as f:
            write_private(os.path.join(bundle_dir, "controller-audit.log"), "".join(redact(line) for line in f))
    return names


def main():
    module = AnsibleModule(
        argument_spec=dict(
            dest=dict(type="path", required=True),
            incident_id=dict(type="str"),
            reason=dict(type="str", required=True),
            who=dict(type="str"),
            incidents=dict(type="list", elements="dict", required=True),
            fleet_result=dict(type="dict", default={}),
            controller_audit_log=dict(type="path"),
        ),
        supports_check_mode=True,
    )
    yield_cpu(module)
    p = module.params
    incident_id = p["incident_id"] or datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    result = dict(changed=True, bots=[str(i.get("bot")) for i in p["incidents"]])
    if not ID_RE.match(incident_id):
        module.fail_json(msg=f"Failed to write the incident bundle: incident_id {incident_id!r} is not a plain name", **result)
    bundle_dir = os.path.join(p["dest"], incident_id)
    tarball = bundle_dir + ".tar.gz"
    result.update(path=bundle_dir, tarball=tarball)
    if module.check_mode:
        module.exit_json(**result)
    if os.path.exists(bundle_dir) or os.path.exists(tarball):
        module.fail_json(msg=f"Failed to write the incident bundle: {bundle_dir} already exists", **result)
    try:
        os.makedirs(p["dest"], mode=0o700, exist_ok=True)
        result["bots"] = write_bundle(p, bundle_dir)
        fd = os.open(tarball + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
            tar.add(bundle_dir, arcname=incident_id)
        os.replace(tarball + ".tmp", tarball)
        digest = hashlib.sha256()
        with open(tarball, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        result["sha256"] = digest.hexdigest()
    except OSError as exc:
        module.fail_json(msg=f"Failed to write the incident bundle {bundle_dir}: {exc}", **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
