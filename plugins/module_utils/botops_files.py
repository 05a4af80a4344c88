# Copyright: botops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Writing a file so that a reader sees the old one or the new one, never part of either.

The one atomic writer of botops' files: backup manifests and records (botops_backup_store), the
files a restore puts back (botops_backup_paths), a bot's JSON config (botops_actions.set_json_key), the
kill switch record (botops_kill_switch_record), the release history (botops_release), the maintenance
record (bot_db_maintenance). Stdlib only.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile


def write_atomic(path, data, mode=0o600):
    """Replace `path` with `data` (text, bytes, or a binary file to copy): written into a temporary
    file of its own in the same directory (mode 0600 while it is written), fsynced, set to `mode`,
    then renamed over `path`. The temporary file is removed when any step fails, and `path` is left
    as it was."""
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=os.path.dirname(path) or ".")
    try:
        with os.fdopen(fd, "wb") as f:
            if isinstance(data, str):
                data = data.encode("utf-8")
            if isinstance(data, bytes):
                f.write(data)
            else:
                shutil.copyfileobj(data, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_json(path, data, mode=0o600, indent=2, sort_keys=True):
    """Write `data` as JSON (one trailing newline) atomically, see write_atomic."""
    write_atomic(path, json.dumps(data, indent=indent, sort_keys=sort_keys) + "\n", mode)


def read_json(path):
    with open(path) as f:
        return json.load(f)


def fsync_path(path):
    """fsync a file or a directory (a rename in it), when it can be opened; errors are ignored."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
