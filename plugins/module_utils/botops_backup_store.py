# Copyright: botops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The store of one bot's backup sets: what a set is, its id, its manifest and checksums, and the
directory that holds the sets (BackupStore). Stdlib only.

A backup set is a directory ``<backups>/<backup_id>/`` (mode 0700) holding, each file 0600:

- the database: ``database.dump.zst`` (format ``custom_zstd``: ``pg_dump -Fc -Z0`` piped through
  ``zstd``; the largest tables' rows, one ``database.partN.sql.zst`` each, ``pg_dump --data-only``
  beside it in the same snapshot, loaded side by side through psql), ``database.dump`` (``custom``:
  plain ``pg_dump -Fc``),
  ``database.d/`` (``directory``: ``pg_dump -Fd -j N``) or ``database.sqlite3`` (engine sqlite,
  copied with SQLite's online backup API and kept in rollback-journal mode, nothing beside it; the
  live file's journal mode is recorded and put back on restore);
- ``files.tar.gz``: the profile's ``backup.paths`` (config, data), relative to the bot root;
- ``manifest.json``: every file with sha256 and size, the bot, family, release, Alembic revision,
  row counts of the profile's ``database.tables`` and the ledger's max id (taken in the snapshot
  the dump was taken in), tool versions, label, reason and linked release;
- ``verified.json`` (later, beside the manifest): the last verification and its outcome.

A set is built in ``<backups>/.tmp-<backup_id>`` and renamed into place only when complete, so a
backup that fails or is killed never leaves a directory that looks like a set.

A directory named like a set whose manifest cannot be read (missing, truncated, not this set's) is a
damaged set: it is listed as such with the reason, never skipped, never used as a backup, and never
passed over silently by ``latest`` (BackupStore.list and resolve). Its time is the one its id starts
with, the only time known without the manifest.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import re
import secrets as secrets_mod
import shutil
import time
from datetime import datetime, timezone

from ansible_collections.botops.fleet.plugins.module_utils.botops_files import fsync_path, read_json, write_json
from ansible_collections.botops.fleet.plugins.module_utils.botops_pg import PgError, pg_bin

MANIFEST = "manifest.json"
VERIFIED = "verified.json"
FILES_TAR = "files.tar.gz"
SQLITE_FILE = "database.sqlite3"
RESTORE_RECORD = "last_restore.json"
LOCK_FILE = ".lock"
TMP_PREFIX = ".tmp-"
MANIFEST_VERSION = 1

# Database dump formats: the file (or directory) each writes into the set (botops_backup_postgres).
FORMATS = {
    "custom_zstd": "database.dump.zst",
    "custom": "database.dump",
    "directory": "database.d",
}
DEFAULT_FORMAT = "custom_zstd"
DEFAULT_LEVELS = {"custom_zstd": 1, "custom": None, "directory": 1}

BACKUP_ID_RE = re.compile(r"[0-9]{8}T[0-9]{6}Z-[A-Za-z0-9][A-Za-z0-9._-]{0,47}")
PG_IDENT_MAX = 63


class BackupError(Exception):
    """A backup operation failed; the message names the step and the cause."""


class DamagedBackup(BackupError):
    """A set that is there but cannot be used: its manifest is missing or unreadable.

    backup_id names the set and reason says what is wrong with it, so that callers can report it
    (bot_backup_info: which set keeps 'latest' from resolving)."""

    def __init__(self, message, backup_id, reason):
        super().__init__(message)
        self.backup_id = backup_id
        self.reason = reason


# --------------------------------------------------------------------------- ids, names, small helpers
def validate_backup_id(value, allow_latest=False):
    """Return the id when it is a well-formed backup id (or 'latest'); raise BackupError otherwise.

    The pattern has no '/', and '..' is refused, so an id can never leave the backups directory."""
    if allow_latest and value == "latest":
        return value
    if not isinstance(value, str) or not BACKUP_ID_RE.fullmatch(value) or ".." in value:
        raise BackupError(f"invalid backup_id {value!r}: expected YYYYMMDDTHHMMSSZ-<suffix> "
                          "(suffix: letters, digits, '.', '_', '-')" + (" or 'latest'" if allow_latest else ""))
    return value


def new_backup_id(now=None):
    now = time.time() if now is None else now
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now)) + "-" + secrets_mod.token_hex(3)


def id_time(backup_id):
    """Seconds since the epoch of the UTC time a backup id starts with (None when it is no valid time)."""
    try:
        return datetime.strptime(str(backup_id)[:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc).timestamp()
    except ValueError:
        return None


def utc_iso(ts=None):
    ts = time.time() if ts is None else ts
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def parse_iso(value):
    """Seconds since the epoch of an ISO timestamp written by utc_iso (None when unreadable)."""
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except (TypeError, ValueError):
        return None


def sha256_file(path, bufsize=1 << 20):
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while True:
            chunk = f.read(bufsize)
            if not chunk:
                break
            size += len(chunk)
            digest.update(chunk)
    return digest.hexdigest(), size


def quote_ident(name):
    return '"' + str(name).replace('"', '""') + '"'


def quote_literal(value):
    return "'" + str(value).replace("'", "''") + "'"


def derived_db_name(base, kind, suffix):
    """'<base>_<kind>_<suffix>' folded to a safe lowercase identifier of at most 63 bytes."""
    tail = re.sub(r"[^a-z0-9_]+", "_", f"{kind}_{suffix}".lower()).strip("_")
    head = re.sub(r"[^A-Za-z0-9_]+", "_", base)[: max(1, PG_IDENT_MAX - len(tail) - 1)]
    return f"{head}_{tail}"[:PG_IDENT_MAX]


KEPT_KIND = "pre_restore"  # a live database a restore replaced, kept: <db>_pre_restore_<time>, <file>.pre-restore-<time>
KEPT_TAG_RE = re.compile(r"(\d{8})[Tt](\d{6})[Zz](?:_(\d{1,2}))?$")


def kept_tag_time(tag):
    """Epoch seconds of a kept database's <time> tag (20261121T020000Z, or with _<n>), or None."""
    m = KEPT_TAG_RE.search(tag)
    if not m:
        return None
    try:
        return datetime.strptime(m.group(1) + m.group(2), "%Y%m%d%H%M%S").replace(tzinfo=timezone.utc).timestamp()
    except ValueError:
        return None


def current_release(root):
    link = os.path.join(root, "current")
    if not os.path.islink(link):
        return None
    return os.path.basename(os.path.realpath(link))


def find_bin(name):
    """A binary from PATH (or PostgreSQL's versioned directories for the pg tools)."""
    if name in ("psql", "pg_dump", "pg_restore"):
        try:
            return pg_bin(name)
        except PgError as exc:
            raise BackupError(str(exc)) from None
    found = shutil.which(name)
    if not found:
        raise BackupError(f"{name} not found: install it (apt-get install {name}) or choose another format")
    return found


def ledger_tables(ledger):
    """The tables of a profile's database.ledger: the trade ledger first, then its holdings."""
    if not ledger or not ledger.get("table"):
        return []
    return [ledger["table"]] + [h["table"] for h in ledger.get("holdings") or [] if h.get("table")]


def manifest_database(engine, counted, columns, dump_seconds, **dump):
    """The manifest's database part: the engine and its database's name, what the engine says of its
    dump (`dump`: format, compression, path, tool versions), then what every engine records of the
    copy: (row counts, ledger max id, Alembic revision) as counted, the ledger's columns, the time."""
    counts, ledger_max, revision = counted
    return {"engine": engine.engine, "name": engine.name, **dump, "alembic_revision": revision,
            "tables": engine.tables, "row_counts": counts, "ledger": engine.ledger, "ledger_max_id": ledger_max,
            "columns": columns, "dump_seconds": dump_seconds}


# --------------------------------------------------------------------------- the store of sets
class BackupStore:
    """The backups directory of one bot."""

    def __init__(self, directory):
        self.directory = directory

    def path(self, backup_id):
        return os.path.join(self.directory, validate_backup_id(backup_id))

    def temp_path(self, backup_id):
        return os.path.join(self.directory, TMP_PREFIX + validate_backup_id(backup_id))

    def ensure(self):
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        os.chmod(self.directory, 0o700)

    @contextlib.contextmanager
    def lock(self, timeout=600.0):
        """Exclusive lock of the store: one backup, prune or restore at a time per bot."""
        self.ensure()
        fd = os.open(os.path.join(self.directory, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.EACCES) or time.monotonic() > deadline:
                        raise BackupError(f"backups directory {self.directory} is locked by another operation") from None
                    time.sleep(0.2)
            yield
        finally:
            os.close(fd)

    def read(self, backup_id):
        """(manifest, None) of a complete set, (None, reason) of a damaged one: a set directory whose
        manifest is missing, unreadable, not a JSON object or about another set. BackupError when
        there is no set by that id at all."""
        directory = self.path(backup_id)
        if not os.path.lexists(directory):
            raise BackupError(f"backup {backup_id} not found in {self.directory}")
        if not os.path.isdir(directory):
            return None, "not a directory"
        try:
            manifest = read_json(os.path.join(directory, MANIFEST))
        except FileNotFoundError:
            return None, f"{MANIFEST} missing"
        except OSError as exc:
            return None, f"{MANIFEST} unreadable: {exc.strerror or exc}"
        except ValueError as exc:  # JSONDecodeError (truncated, empty), UnicodeDecodeError
            return None, f"{MANIFEST} unreadable: {exc}"
        if not isinstance(manifest, dict):
            return None, f"{MANIFEST} is not a JSON object"
        if manifest.get("backup_id") != backup_id:
            return None, f"{MANIFEST} describes backup {manifest.get('backup_id')!r}, not this set"
        return manifest, None

    def load(self, backup_id):
        """The manifest of a complete set; BackupError when there is no such set, DamagedBackup
        (naming the reason) when the set is there but its manifest cannot be read."""
        manifest, damage = self.read(backup_id)
        if damage:
            raise DamagedBackup(f"backup {backup_id} in {self.directory} is damaged ({damage}): it cannot be "
                                "used; pick another set ('botops backups' lists them)", backup_id, damage)
        return manifest

    def verification(self, backup_id):
        try:
            record = read_json(os.path.join(self.path(backup_id), VERIFIED))
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) else None

    def write_verification(self, backup_id, record):
        write_json(os.path.join(self.path(backup_id), VERIFIED), record)

    def list(self):
        """Every set, newest first: dicts with backup_id, path, manifest, verification, damaged, time.

        A damaged set (see read) is listed too, never skipped: damaged names the reason (None for a
        complete set), its manifest is {} and its verification None (a record written before the
        damage says nothing about the set as it is now). A set's time is its manifest's created_at,
        or, when that cannot be read, the time its id starts with; sets are ordered by it (then id).
        The .tmp-* directories of unfinished backups are not sets (see temp_dirs)."""
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        sets = []
        for name in names:
            if not BACKUP_ID_RE.fullmatch(name) or ".." in name:
                continue
            try:
                manifest, damage = self.read(name)
            except BackupError:  # removed since listdir
                continue
            created = (parse_iso(manifest.get("created_at")) if manifest else None) or id_time(name) or 0
            sets.append({"backup_id": name, "path": os.path.join(self.directory, name),
                         "manifest": manifest or {}, "verification": None if damage else self.verification(name),
                         "damaged": damage, "time": created})
        sets.sort(key=lambda s: (s["time"], s["backup_id"]), reverse=True)
        return sets

    def resolve(self, backup_id):
        """A backup id, or 'latest': the newest set that is not a restore's safety backup.

        'latest' never resolves past a damaged set: when the newest set that could be it is damaged
        (its kind is unknown, so it may be the newest real backup), DamagedBackup names it, the
        reason, and the newest readable set to pass explicitly instead. An explicit id of a damaged
        set fails the same way (load)."""
        validate_backup_id(backup_id, allow_latest=True)
        if backup_id != "latest":
            self.load(backup_id)
            return backup_id
        sets = self.list()
        for index, entry in enumerate(sets):
            if entry["damaged"]:
                good = next((s["backup_id"] for s in sets[index + 1:]
                             if not s["damaged"] and not s["manifest"].get("safety_for")), None)
                hint = (f"pass an explicit id to use an older set, e.g. --backup={good} (backup_id={good}), the "
                        "newest readable one" if good else "no older readable set to fall back to")
                raise DamagedBackup(f"backup {entry['backup_id']} in {self.directory} is damaged ({entry['damaged']}) "
                                    "and newer than every readable backup 'latest' could pick: 'latest' does not "
                                    f"resolve past a damaged set; {hint}", entry["backup_id"], entry["damaged"])
            if not entry["manifest"].get("safety_for"):
                return entry["backup_id"]
        raise BackupError(f"no backup in {self.directory}")

    def temp_dirs(self):
        """The .tmp-* directories of unfinished backups. Every writer holds the store's lock while its
        temporary directory exists, so under the lock each of them was left by a killed run."""
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        return sorted(os.path.join(self.directory, n) for n in names if n.startswith(TMP_PREFIX))


def summarize(entry):
    """The short form of a set for results and listings. A damaged set has no manifest to describe
    it: it shows its id's time as created_at, damaged with the reason, and is never verified."""
    m = entry["manifest"] or {}
    damaged = entry.get("damaged")
    v = {} if damaged else entry.get("verification") or {}
    db = m.get("database") or {}
    created_at = m.get("created_at")
    if damaged and id_time(entry["backup_id"]) is not None:
        created_at = utc_iso(id_time(entry["backup_id"]))
    return {
        "backup_id": entry["backup_id"],
        "path": entry["path"],
        "damaged": damaged,
        "created_at": created_at,
        "size": m.get("size"),
        "release": m.get("release"),
        "linked_release": m.get("linked_release"),
        "label": m.get("label"),
        "reason": m.get("reason"),
        "safety_for": m.get("safety_for"),
        "format": db.get("format"),
        "alembic_revision": db.get("alembic_revision"),
        "row_counts": db.get("row_counts"),
        "ledger_max_id": db.get("ledger_max_id"),
        "verified": bool(v.get("ok")),
        "verified_at": v.get("verified_at"),
        "test_restored": bool(v.get("ok") and v.get("test_restore")),
    }


# --------------------------------------------------------------------------- checksums
def verify_files(set_dir, manifest):
    """Re-check every file of the manifest: a list of problems (empty when all match)."""
    problems = []
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        return ["manifest lists no files"]
    for rel, meta in sorted(files.items()):
        path = os.path.normpath(os.path.join(set_dir, rel))
        if os.path.isabs(rel) or not path.startswith(set_dir.rstrip("/") + "/"):
            problems.append(f"{rel}: path outside the set")
            continue
        try:
            digest, size = sha256_file(path)
        except OSError as exc:
            problems.append(f"{rel}: {exc.strerror or exc}")
            continue
        if size != meta.get("size"):
            problems.append(f"{rel}: size {size} != {meta.get('size')}")
        elif digest != meta.get("sha256"):
            problems.append(f"{rel}: sha256 mismatch")
    return problems


def file_entries(directory):
    """{relative path: {sha256, size}} of every regular file under the directory."""
    entries = {}
    for dirpath, dirnames, filenames in os.walk(directory):
        dirnames.sort()
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, directory)
            if rel in (MANIFEST, VERIFIED):
                continue
            digest, size = sha256_file(path)
            entries[rel] = {"sha256": digest, "size": size}
    return entries


def secure_tree(directory):
    for dirpath, dirnames, filenames in os.walk(directory):
        os.chmod(dirpath, 0o700)
        for name in filenames:
            path = os.path.join(dirpath, name)
            os.chmod(path, 0o600)
            fsync_path(path)
