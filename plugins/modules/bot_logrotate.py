#!/usr/bin/python
# Copyright: botops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: bot_logrotate
short_description: Rotate the log files of one trading bot (copytruncate)
description:
  - Rotates every log file of the bot bigger than O(size) into C(<file>.1.gz), shifting older copies up
    (C(.1.gz) to C(.2.gz) ...) and deleting those beyond O(keep), even when no file needs rotating.
  - Copies and truncates, as logrotate's C(copytruncate) does, because a running bot keeps its log file open.
    Lines written between the last copied byte and the truncation are lost; the copy is repeated until the
    file stops growing to keep that instant short.
version_added: "0.1.0"
extends_documentation_fragment: [ansible.builtin.action_common_attributes, botops.fleet.botops_bot]
options:
  path:
    description: Directory of the logs, relative to the bot root unless absolute.
    type: str
    default: shared/logs
  patterns:
    description: Shell patterns of the log files in O(path).
    type: list
    elements: str
    default: ['*.log']
  size:
    description: Rotate a file bigger than this (bytes, or with a unit such as C(512K), C(10M), C(1G)).
    type: str
    default: 10M
  keep:
    description: How many rotated copies of each file to keep.
    type: int
    default: 7
  compress:
    description: Compress the rotated copies with gzip (C(.1.gz)); otherwise C(.1).
    type: bool
    default: true
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  platform:
    platforms: posix
notes:
  - Uses only O(bot.name) and O(bot.root); O(profile) and O(secrets) are accepted for a uniform call.
author: botops contributors (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Rotate the bot's logs bigger than 10 MB, keep 7
  botops.fleet.bot_logrotate:
    profile: "{{ botops_profile }}"
    bot: "{{ botops_bot }}"
    size: 10M
    keep: 7
"""

RETURN = r"""
rotated:
  description: Files rotated (or, in check mode, that would be), with their size in bytes and the copy's name.
  returned: always
  type: list
  elements: dict
  sample: [{file: /opt/bot/shared/logs/bot.log, size: 12582912, to: /opt/bot/shared/logs/bot.log.1.gz}]
removed:
  description: Rotated copies deleted because they were beyond O(keep).
  returned: always
  type: list
  elements: str
actions:
  description: What was done, one line per rotation or removal (empty when nothing was to do).
  returned: always
  type: list
  elements: str
"""

import fnmatch
import gzip
import os
import re
import shutil

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.botops.fleet.plugins.module_utils.botops_bot import bot_argument_spec
from ansible_collections.botops.fleet.plugins.module_utils.botops_priority import yield_cpu
from ansible.module_utils.common.text.formatters import human_to_bytes

CHUNK = 1024 * 1024


def rotated_copies(directory, base):
    """{index: path} of the rotated copies of `base` (base.N and base.N.gz)."""
    found = {}
    pattern = re.compile(re.escape(base) + r"\.(\d+)(\.gz)?$")
    for entry in os.listdir(directory):
        match = pattern.match(entry)
        if match:
            found.setdefault(int(match.group(1)), []).append(os.path.join(directory, entry))
    return found


def copy_then_truncate(path, target, compress):
    """Copy the file into target (gzip or plain) until it stops growing, then empty it in place."""
    tmp = f"{target}.botops-tmp"
    mode = os.stat(path).st_mode & 0o7777
    opener = gzip.open if compress else open
    with open(path, "rb") as src, opener(tmp, "wb") as dst:
        while True:
            chunk = src.read(CHUNK)
            if chunk:
                dst.write(chunk)
                continue
            if src.tell() >= os.fstat(src.fileno()).st_size:
                break
        os.truncate(path, 0)
    os.chmod(tmp, mode)
    os.replace(tmp, target)


def main():
    argument_spec = bot_argument_spec()
    argument_spec.update(
        path=dict(type="str", default="shared/logs"),
        patterns=dict(type="list", elements="str", default=["*.log"]),
        size=dict(type="str", default="10M"),
        keep=dict(type="int", default=7),
        compress=dict(type="bool", default=True),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    yield_cpu(module)
    p = module.params
    name = p["bot"]["name"]
    result = dict(changed=False, rotated=[], removed=[], actions=[])
    try:
        threshold = human_to_bytes(p["size"])
    except ValueError as exc:
        module.fail_json(msg=f"Failed to rotate the logs of bot '{name}': size {p['size']!r}: {exc}", **result)
    if p["keep"] < 1:
        module.fail_json(msg=f"Failed to rotate the logs of bot '{name}': keep must be at least 1", **result)
    directory = p["path"] if os.path.isabs(p["path"]) else os.path.join(p["bot"]["root"], p["path"])
    if not os.path.isdir(directory):
        module.fail_json(msg=f"Failed to rotate the logs of bot '{name}': no log directory {directory}", **result)
    suffix = ".gz" if p["compress"] else ""

    try:
        logs = sorted(
            entry for entry in os.listdir(directory)
            if any(fnmatch.fnmatch(entry, pat) for pat in p["patterns"])
            and os.path.isfile(os.path.join(directory, entry))
            and not os.path.islink(os.path.join(directory, entry))
        )
        for base in logs:
            path = os.path.join(directory, base)
            size = os.path.getsize(path)
            copies = rotated_copies(directory, base)
            rotate = size > threshold
            # the copies that survive: after a rotation .1 .. .keep-1 move up one
            last_kept = p["keep"] - 1 if rotate else p["keep"]
            for index in sorted(copies, reverse=True):
                if index > last_kept:
                    for old in copies.pop(index):
                        result["removed"].append(old)
                        result["actions"].append(f"remove {old}")
                        if not module.check_mode:
                            os.unlink(old)
            if not rotate:
                continue
            target = os.path.join(directory, f"{base}.1{suffix}")
            result["rotated"].append(dict(file=path, size=size, to=target))
            result["actions"].append(f"rotate {path} ({size} bytes) to {target}")
            if module.check_mode:
                continue
            for index in sorted(copies, reverse=True):
                for old in copies[index]:
                    ext = ".gz" if old.endswith(".gz") else ""
                    shutil.move(old, os.path.join(directory, f"{base}.{index + 1}{ext}"))
            copy_then_truncate(path, target, p["compress"])
    except OSError as exc:
        module.fail_json(msg=f"Failed to rotate the logs of bot '{name}': {exc}", **result)
    result["changed"] = bool(result["actions"])
    module.exit_json(**result)


if __name__ == "__main__":
    main()
