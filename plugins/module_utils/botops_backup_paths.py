# Copyright: botops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The files of a backup set besides the database: the profile's backup.paths (config, data) archived
into files.tar.gz, and what putting them back would change (plan_files) and does (apply_files).
Stdlib only.
"""

from __future__ import annotations

import os
import tarfile

from ansible_collections.botops.fleet.plugins.module_utils.botops_backup_store import BackupError
from ansible_collections.botops.fleet.plugins.module_utils.botops_files import write_atomic


def archive_paths(root, paths, target):
    """Tar the paths (relative to root) into target; returns (archived paths, missing paths)."""
    archived, missing = [], []
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as raw:
        with tarfile.open(fileobj=raw, mode="w:gz", compresslevel=3) as tar:
            for rel in paths:
                rel = os.path.normpath(rel)
                if os.path.isabs(rel) or rel.startswith(".."):
                    raise BackupError(f"backup path {rel!r} must be relative to the bot root")
                full = os.path.join(root, rel)
                if not os.path.lexists(full):
                    missing.append(rel)
                    continue
                tar.add(full, arcname=rel, recursive=True)
                archived.append(rel)
        raw.flush()
        os.fsync(raw.fileno())
    return archived, missing


def _safe_member(root, member, allowed):
    name = os.path.normpath(member.name)
    if os.path.isabs(name) or name == ".." or name.startswith("../"):
        return None
    if allowed and not any(name == a or name.startswith(a.rstrip("/") + "/") for a in allowed):
        return None
    target = os.path.join(root, name)
    parent = os.path.realpath(os.path.dirname(target))
    real_root = os.path.realpath(root)
    if parent != real_root and not parent.startswith(real_root + "/"):
        return None
    return target


def plan_files(root, tar_path, allowed):
    """What restoring the tarball would change: [(member name, target, reason)] of files that differ."""
    plan = []
    with tarfile.open(tar_path, "r:gz") as tar:
        for member in tar.getmembers():
            if not member.isfile():
                continue
            target = _safe_member(root, member, allowed)
            if target is None:
                continue
            data = tar.extractfile(member).read()
            try:
                with open(target, "rb") as f:
                    same = f.read() == data
                mode_same = (os.stat(target).st_mode & 0o7777) == (member.mode & 0o7777)
            except FileNotFoundError:
                plan.append((member.name, target, "missing"))
                continue
            if not same:
                plan.append((member.name, target, "content"))
            elif not mode_same:
                plan.append((member.name, target, "mode"))
    return plan


def apply_files(root, tar_path, plan):
    """Write the planned files from the tarball, each atomically (temp file, rename), keeping modes."""
    wanted = {name for name, target, why in plan}
    written = []
    with tarfile.open(tar_path, "r:gz") as tar:
        for member in tar.getmembers():
            if member.name not in wanted or not member.isfile():
                continue
            target = _safe_member(root, member, None)
            if target is None:
                continue
            os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
            write_atomic(target, tar.extractfile(member), member.mode & 0o7777)
            written.append(member.name)
    return written
