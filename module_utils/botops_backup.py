# Copyright: botops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Backup sets of one bot: take, list, verify, prune, and restore into a scratch database.

Shared by bot_backup, bot_backup_info and bot_restore. Stdlib only (plus the PostgreSQL client
binaries and zstd), so it runs on any managed host with Python 3.

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
import functools
import hashlib
import json
import os
import re
import secrets as secrets_mod
import shutil
import signal
import sqlite3
import subprocess
import tarfile
import tempfile
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

from ansible.module_utils.botops_pg import Database, PgError, pg_bin

MANIFEST = "manifest.json"
VERIFIED = "verified.json"
FILES_TAR = "files.tar.gz"
SQLITE_FILE = "database.sqlite3"
RESTORE_RECORD = "last_restore.json"
LOCK_FILE = ".lock"
TMP_PREFIX = ".tmp-"
MANIFEST_VERSION = 1

# Database dump formats: the file (or directory) each writes into the set.
FORMATS = {
    "custom_zstd": "database.dump.zst",
    "custom": "database.dump",
    "directory": "database.d",
}
DEFAULT_FORMAT = "custom_zstd"
DEFAULT_LEVELS = {"custom_zstd": 1, "custom": None, "directory": 1}
# custom_zstd: each of the `jobs` largest tables of at least this size gets a dump of its own rows
# (database.part<N>.sql.zst, plain COPY), taken beside the main one in the same snapshot; a single
# pg_dump reads one table at a time on one server core. Sets of an earlier version hold custom
# archives instead (database.part<N>.dump.zst); both restore.
PART_MIN_BYTES = 64 * 1024 * 1024
PART_FILE_RE = re.compile(r"database\.part[0-9]{1,3}\.(sql|dump)\.zst")

BACKUP_ID_RE = re.compile(r"[0-9]{8}T[0-9]{6}Z-[A-Za-z0-9][A-Za-z0-9._-]{0,47}")
PG_IDENT_MAX = 63
MARKER_KEY = "botops_restore"
SAFE_LEDGER_STATES = ("current", "good")


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
_KEPT_TAG = re.compile(r"(\d{8})[Tt](\d{6})[Zz](?:_(\d{1,2}))?$")


def kept_tag_time(tag):
    """Epoch seconds of a kept database's <time> tag (20261121T020000Z, or with _<n>), or None."""
    m = _KEPT_TAG.search(tag)
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


def _fsync_path(path):
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


def write_json(path, data, mode=0o600):
    """Write JSON atomically (temp file, fsync, rename) with the given mode."""
    tmp = f"{path}.tmp-{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_json(path):
    with open(path) as f:
        return json.load(f)


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


def run(cmd, env=None, timeout=None):
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    return proc.returncode, proc.stdout, proc.stderr


def _toc_object(line):
    """(catalog oid, object oid) of a line of `pg_restore -l` ("12; 2606 16390 CONSTRAINT ..."), or None."""
    match = re.match(r"\d+; (\d+) (\d+) ", line)
    return (int(match.group(1)), int(match.group(2))) if match else None


def _tail(text, limit=600):
    text = (text or "").strip()
    return text if len(text) <= limit else "..." + text[-limit:]


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
                                "used; pick another set ('invoke backups' lists them)", backup_id, damage)
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


def _file_entries(directory):
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


def _secure_tree(directory):
    for dirpath, dirnames, filenames in os.walk(directory):
        os.chmod(dirpath, 0o700)
        for name in filenames:
            path = os.path.join(dirpath, name)
            os.chmod(path, 0o600)
            _fsync_path(path)


# --------------------------------------------------------------------------- PostgreSQL
class PsqlSession:
    """One psql process held open: statements are sent one by one, results read back.

    Used to hold the exporting transaction of pg_export_snapshot() open while pg_dump runs."""

    END = "__botops_end__"

    def __init__(self, database, dbname=None):
        self._err = tempfile.TemporaryFile(mode="w+")
        cmd = [find_bin("psql"), "-X", "-q", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1",
               *database.conn_args(dbname)]
        self.proc = subprocess.Popen(cmd, env=database.env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._err, text=True, bufsize=1)

    def _error(self):
        self._err.seek(0)
        return _tail(self._err.read())

    def query(self, sql):
        try:
            self.proc.stdin.write(sql.rstrip().rstrip(";") + ";\n\\echo " + self.END + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            self.proc.wait()
            raise PgError(self._error() or "psql exited") from None
        rows = []
        while True:
            line = self.proc.stdout.readline()
            if line == "":
                self.proc.wait()
                raise PgError(self._error() or "psql exited")
            line = line.rstrip("\n")
            if line == self.END:
                return rows
            if line:
                rows.append(line.split("\t"))

    def close(self, commit=True):
        """End the session: COMMIT (True), ROLLBACK (False) or just quit (None)."""
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                end = {True: "COMMIT;\n", False: "ROLLBACK;\n", None: ""}[commit]
                self.proc.stdin.write(end + "\\q\n")
                self.proc.stdin.flush()
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._err.close()


def ledger_tables(ledger):
    """The tables of a profile's database.ledger: the trade ledger first, then its holdings."""
    if not ledger or not ledger.get("table"):
        return []
    return [ledger["table"]] + [h["table"] for h in ledger.get("holdings") or [] if h.get("table")]


def _int_or_none(value):
    return int(value) if value not in (None, "") else None


class PostgresEngine:
    """Dump, count, restore and swap the bot's PostgreSQL database (psql, pg_dump, pg_restore)."""

    engine = "postgresql"

    def __init__(self, database: Database, tables=(), ledger=None, maintenance_db="postgres"):
        self.db = database
        self.name = database.name
        self.tables = list(tables or [])
        self.ledger = ledger or None
        self.maintenance_db = maintenance_db
        self._admin = None

    # ---- queries
    def query(self, sql, dbname=None):
        """One statement; on the maintenance database through one psql session held open for all
        of them (creating, renaming and dropping databases takes a dozen statements), elsewhere
        through a one-shot psql (a session held on the live database would block its rename)."""
        if dbname != self.maintenance_db:
            return self.db.query(sql, dbname)
        if self._admin is None:
            self._admin = PsqlSession(self.db, self.maintenance_db)
        try:
            return self._admin.query(sql)
        except PgError as exc:
            self._admin.close(commit=None)
            self._admin = None
            raise PgError(f"query on database {self.maintenance_db} failed: {exc}") from None

    def close(self):
        if self._admin is not None:
            self._admin.close(commit=None)
            self._admin = None

    def counts_sql(self):
        """One statement that yields (kind, name, value) rows: the row count of each table, the
        ledger's max id and the Alembic revision. Tables that do not exist yield no row; the
        statements run through query_to_xml so a missing table is skipped, not an error, and
        everything is read in the caller's snapshot."""

        def dynamic(kind, name, statement, table):
            return (f"SELECT {quote_literal(kind)}, {quote_literal(name)}, "
                    f"(xpath('/row/c/text()', query_to_xml({quote_literal(statement)}, false, true, '')))[1]::text "
                    f"WHERE to_regclass({quote_literal(quote_ident(table))}) IS NOT NULL")

        parts = [dynamic("count", t, f"SELECT count(*) AS c FROM {quote_ident(t)}", t) for t in self.tables]
        if self.ledger:
            table, column = self.ledger["table"], self.ledger["id"]
            parts.append(dynamic("max", table, f"SELECT max({quote_ident(column)}) AS c FROM {quote_ident(table)}", table))
        parts.append(dynamic("alembic", "", "SELECT string_agg(version_num, ',' ORDER BY version_num) AS c "
                                            "FROM alembic_version", "alembic_version"))
        return " UNION ALL ".join(parts)

    def _counts_with(self, query):
        """Row counts, ledger max id and Alembic revision through query(sql) -> rows."""
        found = {(row[0], row[1]): (row[2] if len(row) > 2 else "") for row in query(self.counts_sql())}
        counts = {t: _int_or_none(found[("count", t)]) if ("count", t) in found else None for t in self.tables}
        ledger_max = _int_or_none(found.get(("max", self.ledger["table"]))) if self.ledger else None
        revision = found.get(("alembic", "")) or None
        return counts, ledger_max, revision

    def counts(self, dbname=None):
        try:
            return self._counts_with(lambda sql: self.query(sql, dbname))
        except PgError as exc:
            raise BackupError(f"count rows in database {dbname or self.name}: {exc}") from None

    def columns(self, dbname=None, query=None):
        """{table: [[column, not_null, has_default], ...]} of the ledger's tables (botops_ledger), in
        their order; a table that does not exist is left out. Generated columns are left out (no
        row can be written into them)."""
        tables = ledger_tables(self.ledger)
        if not tables:
            return {}
        sql = ("SELECT table_name, column_name, is_nullable = 'NO', (column_default IS NOT NULL OR is_identity = 'YES') "
               "FROM information_schema.columns WHERE table_schema = current_schema() AND is_generated = 'NEVER' "
               f"AND table_name IN ({', '.join(quote_literal(t) for t in tables)}) ORDER BY table_name, ordinal_position")
        found = {}
        for row in (query or (lambda q: self.query(q, dbname)))(sql):
            found.setdefault(row[0], []).append([row[1], row[2] == "t", row[3] == "t"])
        return found

    def exists(self, dbname):
        rows = self.query(f"SELECT 1 FROM pg_database WHERE datname = {quote_literal(dbname)}", self.maintenance_db)
        return bool(rows)

    def kept(self):
        """[(name, epoch seconds)], newest first: this database's replaced and kept copies, exactly the
        names a restore gives them (derived_db_name of this name, KEPT_KIND and a time tag)."""
        found = []
        for row in self.query("SELECT datname FROM pg_database", self.maintenance_db):
            name = row[0] if row else ""
            m = _KEPT_TAG.search(name)
            if not m:
                continue
            tag = f"{m.group(1)}T{m.group(2)}Z" + (f"_{m.group(3)}" if m.group(3) else "")
            created = kept_tag_time(tag)
            if derived_db_name(self.name, KEPT_KIND, tag) == name and created is not None:
                found.append((name, created))
        return sorted(found, key=lambda item: (item[1], item[0]), reverse=True)

    def marker(self, dbname):
        """The restore marker (a JSON comment on the database) or None."""
        rows = self.query("SELECT shobj_description(oid, 'pg_database') FROM pg_database "
                          f"WHERE datname = {quote_literal(dbname)}", self.maintenance_db)
        if not rows or not rows[0] or not rows[0][0]:
            return None
        try:
            doc = json.loads(rows[0][0])
        except ValueError:
            return None
        return doc.get(MARKER_KEY) if isinstance(doc, dict) else None

    def set_marker(self, dbname, value):
        text = json.dumps({MARKER_KEY: value}, sort_keys=True)
        self.query(f"COMMENT ON DATABASE {quote_ident(dbname)} IS {quote_literal(text)}", self.maintenance_db)

    def pg_dump_version(self):
        rc, out, err = run([find_bin("pg_dump"), "--version"])
        match = re.search(r"(\d+(?:\.\d+)+)", out)
        return match.group(1) if match else out.strip()

    # ---- dump
    def dump(self, workdir, fmt=DEFAULT_FORMAT, level=None, jobs=2):
        """Dump the live database into workdir in one snapshot; returns the manifest's database part."""
        if fmt not in FORMATS:
            raise BackupError(f"unknown format {fmt!r} (one of {', '.join(FORMATS)})")
        level = DEFAULT_LEVELS[fmt] if level is None else level
        target = os.path.join(workdir, FORMATS[fmt])
        pg_dump = find_bin("pg_dump")
        zstd = find_bin("zstd") if fmt == "custom_zstd" else None
        session = PsqlSession(self.db)
        try:
            try:
                session.query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                snapshot = session.query("SELECT pg_export_snapshot()")[0][0]
                server_version = session.query("SHOW server_version")[0][0]
            except PgError as exc:
                raise BackupError(f"open a snapshot of database {self.name}: {exc}") from None
            cmd = [pg_dump, "--snapshot", snapshot, "--lock-wait-timeout=60000", *self.db.conn_args()]
            parts = []
            if fmt == "custom_zstd":
                try:
                    parts = self._part_tables(session.query, jobs)
                except PgError as exc:
                    raise BackupError(f"list the tables of database {self.name}: {exc}") from None
                compress = [zstd, "-q", f"-{level}", "-T0", "-c"]
                pipelines = [([cmd + ["-Fc", "-Z0", *[f"--exclude-table-data={p['table']}" for p in parts]],
                               compress], target)]
                pipelines += [([cmd + ["-Fp", "--data-only", "-t", p["table"]], compress],
                               os.path.join(workdir, p["path"])) for p in parts]
                dump = functools.partial(self._pipelines, pipelines, f"dump of database {self.name}")
            elif fmt == "custom":
                extra = ["-Z", str(level)] if level is not None else []
                dump = functools.partial(self._dump_direct, cmd + ["-Fc", *extra, "-f", target])
            else:
                dump = functools.partial(self._dump_direct,
                                         cmd + ["-Fd", "-j", str(max(1, int(jobs))), "-Z", str(level), "-f", target])
            # The rows are counted in the same snapshot while pg_dump reads it: the counts are what
            # the dump holds, and a large database's counting costs no time of its own.
            started = time.monotonic()
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="pg_dump") as pool:
                dumping = pool.submit(dump)
                try:
                    counts, ledger_max, revision = self._counts_with(session.query)
                    columns = self.columns(query=session.query)
                except PgError as exc:
                    with contextlib.suppress(BackupError):
                        dumping.result()  # the dump writes into the set's directory: let it end first
                    raise BackupError(f"count rows in the snapshot of database {self.name}: {exc}") from None
                dumping.result()
            dump_seconds = round(time.monotonic() - started, 3)
        finally:
            session.close(commit=True)
        part = {
            "engine": self.engine,
            "name": self.name,
            "format": fmt,
            "compression": {"custom_zstd": f"zstd:{level}", "custom": f"gzip:{6 if level is None else level}",
                            "directory": f"gzip:{level}"}[fmt],
            "path": FORMATS[fmt],
            "pg_dump_version": self.pg_dump_version(),
            "server_version": server_version,
            "snapshot": snapshot,
            "alembic_revision": revision,
            "tables": self.tables,
            "row_counts": counts,
            "ledger": self.ledger,
            "ledger_max_id": ledger_max,
            "columns": columns,
            "dump_seconds": dump_seconds,
        }
        if fmt == "directory":
            part["jobs"] = max(1, int(jobs))
        if fmt == "custom_zstd":
            part["parts"] = parts
        return part

    def _part_tables(self, query, jobs):
        """The tables whose rows get a dump of their own (custom_zstd): the `jobs` largest ordinary
        tables of at least PART_MIN_BYTES, as [{table: exact pg_dump pattern, path: file, indexes}];
        none with a single job. Extension members (their data is not dumped) and names with line
        breaks stay in the main dump. The sizes are the catalog's (pg_class.relpages, kept by VACUUM
        and ANALYZE): pg_relation_size() would lock each table, and wait, without pg_dump's
        --lock-wait-timeout, behind a migration holding one. `indexes` are the table's indexes and
        index-backed constraints as [catalog oid, object oid], how the dump's table of contents
        names them: a restore builds them as soon as the table's rows are in."""
        if int(jobs) < 2:
            return []
        size = "(c.relpages + COALESCE(t.relpages, 0))::bigint * current_setting('block_size')::bigint"
        rows = query(
            "SELECT c.oid, format('%I.%I', n.nspname, c.relname) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace LEFT JOIN pg_class t ON t.oid = c.reltoastrelid "
            "WHERE c.relkind = 'r' AND n.nspname <> 'information_schema' AND n.nspname !~ '^pg_' "
            "AND n.nspname !~ '[\\t\\n\\r]' AND c.relname !~ '[\\t\\n\\r]' "
            "AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass "
            "AND d.objid = c.oid AND d.deptype = 'e') "
            f"AND {size} >= {int(PART_MIN_BYTES)} ORDER BY {size} DESC, 2 LIMIT {int(jobs)}")
        indexes = {oid: [] for oid, _ in rows}
        if rows:
            oids = ",".join(str(int(oid)) for oid in indexes)
            for relid, catalog, objid in query(
                    "SELECT indrelid, 'pg_class'::regclass::oid, indexrelid FROM pg_index "
                    f"WHERE indrelid IN ({oids}) UNION ALL "
                    "SELECT conrelid, 'pg_constraint'::regclass::oid, oid FROM pg_constraint "
                    f"WHERE conrelid IN ({oids}) AND contype IN ('p', 'u', 'x') ORDER BY 1, 2, 3"):
                indexes[relid].append([int(catalog), int(objid)])
        return [{"table": table, "path": f"database.part{n}.sql.zst", "indexes": indexes[oid]}
                for n, (oid, table) in enumerate(rows, 1)]

    def _dump_direct(self, cmd):
        rc, out, err = self.db.run(cmd)
        if rc != 0:
            raise BackupError(f"pg_dump of database {self.name} failed (rc={rc}): {_tail(err or out)}")

    def _pipelines(self, pipelines, what):
        """Run pipelines side by side and wait for all of them. Each is (commands, target) or
        (commands, target, then): every command feeds the next one's stdin; the last writes into
        target (created 0600, fsynced) or, with None, nowhere; the `then` commands run one after the
        other once the pipeline has succeeded. When a command fails the others are stopped, and
        BackupError names the first one that failed of its own accord (not of a pipe its reader
        closed) with its stderr."""
        running = []  # (argv, process, stderr file)
        waiting = []  # [the processes a pipeline waits for, the commands to run after them]
        outputs = []

        def start(argv, stdin, stdout):
            err = tempfile.TemporaryFile()
            proc = subprocess.Popen(argv, env=self.db.env(), stdin=stdin, stderr=err, stdout=stdout)
            running.append((argv, proc, err))
            return proc

        try:
            for commands, target, *then in pipelines:
                out = subprocess.DEVNULL
                if target:
                    out = open(target, "wb")
                    os.fchmod(out.fileno(), 0o600)
                    outputs.append(out)
                stdin, procs = None, []
                for n, argv in enumerate(commands):
                    last = n == len(commands) - 1
                    procs.append(start(argv, stdin, out if last else subprocess.PIPE))
                    if stdin is not None:
                        stdin.close()  # the reader holds it now: a writer sees its end when it exits
                    stdin = procs[-1].stdout
                waiting.append([procs, list(then[0]) if then else []])
            while True:
                codes = [proc.poll() for _, proc, _ in running]
                if any(code not in (None, 0) for code in codes):
                    break
                for step in waiting:
                    if step[1] and all(proc.returncode == 0 for proc in step[0]):
                        step[0] = [start(step[1].pop(0), subprocess.DEVNULL, subprocess.DEVNULL)]
                if all(proc.returncode == 0 for _, proc, _ in running) and not any(s[1] for s in waiting):
                    break
                time.sleep(0.05)
            stopped = set()
            if any(code not in (None, 0) for code in codes):
                for _, proc, _ in running:
                    if proc.poll() is None:
                        proc.terminate()
                        stopped.add(proc.pid)
            for _, proc, _ in running:
                proc.wait()
            causes = [r for r in running if r[1].returncode != 0 and r[1].pid not in stopped]
            if causes:
                argv, proc, err = next((r for r in causes if r[1].returncode != -signal.SIGPIPE), causes[0])
                err.seek(0)
                raise BackupError(f"{os.path.basename(argv[0])} ({what}) failed (rc={proc.returncode}): "
                                  f"{_tail(err.read().decode(errors='replace'))}")
            for out in outputs:
                out.flush()
                os.fsync(out.fileno())
        finally:
            for _, proc, err in running:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                err.close()
            for out in outputs:
                out.close()

    # ---- scratch databases and restore
    def create_like(self, scratch, like=None):
        """Create an empty database with the encoding and locale of `like` (when it exists)."""
        opts = ""
        if like:
            rows = self.query("SELECT pg_encoding_to_char(encoding), datcollate, datctype FROM pg_database "
                              f"WHERE datname = {quote_literal(like)}", self.maintenance_db)
            if rows:
                enc, coll, ctype = rows[0]
                opts = f" ENCODING {quote_literal(enc)} LC_COLLATE {quote_literal(coll)} LC_CTYPE {quote_literal(ctype)}"
        self.query(f"CREATE DATABASE {quote_ident(scratch)} TEMPLATE template0{opts}", self.maintenance_db)

    def drop(self, dbname, attempts=5):
        """Drop the database after ending the sessions this role may end (see terminate()).

        Not WITH (FORCE): that fails outright on a session this role may not end, and autovacuum
        is one (it analyzes a freshly restored database within a minute); a plain DROP DATABASE
        stops autovacuum itself and waits a few seconds for other sessions to go."""
        self._while_busy(f"drop database {dbname}", [dbname],
                         f"DROP DATABASE IF EXISTS {quote_ident(dbname)}", attempts)

    def restore_into(self, set_dir, dbinfo, scratch, jobs=2):
        """pg_restore the set's dump into the (empty) scratch database; every SQL error is fatal."""
        fmt = dbinfo.get("format")
        if fmt not in FORMATS:
            raise BackupError(f"unknown dump format {fmt!r} in the manifest")
        source = os.path.join(set_dir, FORMATS[fmt])
        single = [find_bin("pg_restore"), "--exit-on-error", "--no-owner", *self.db.conn_args(scratch)]
        cmd = single + (["-j", str(int(jobs))] if int(jobs) > 1 else [])
        if fmt != "custom_zstd":
            self._restore(cmd, source, scratch)
            return
        parts = dbinfo.get("parts") or []
        for part in parts:
            if not isinstance(part, dict) or not PART_FILE_RE.fullmatch(str(part.get("path"))) or not all(
                    isinstance(pair, list) and len(pair) == 2 and all(type(n) is int for n in pair)
                    for pair in part.get("indexes") or []):
                raise BackupError(f"the manifest names a database part that is not one: {part!r}")
        zstd = find_bin("zstd")
        # pg_restore -j needs a file it can seek in: the main dump is decompressed beside the sets
        # (the callers hold the store's lock, so no writer takes the directory for a killed run's),
        # and removed after the restore whatever happens.
        workdir = tempfile.mkdtemp(prefix=f"{TMP_PREFIX}restore-", dir=os.path.dirname(os.path.abspath(set_dir)))
        try:
            plain = os.path.join(workdir, "db.dump")
            rc, out, err = run([zstd, "-q", "-d", source, "-o", plain])
            if rc != 0:
                raise BackupError(f"zstd -d of {FORMATS[fmt]} failed (rc={rc}): {_tail(err or out)}")
            if not parts:
                self._restore(cmd, plain, scratch)
                return
            # What pg_restore -j does, in its order: the tables; then every table's rows side by side
            # (each part streams through zstd into psql), a part's indexes built as soon as its rows
            # are in while the other tables still load; then the rest of the indexes and the
            # constraints with -j.
            self._restore(single + ["--section=pre-data"], plain, scratch)
            rc, out, err = run([find_bin("pg_restore"), "-l", plain])
            if rc != 0:
                raise BackupError(f"pg_restore -l of {FORMATS[fmt]} failed (rc={rc}): {_tail(err or out)}")
            contents, early = out.splitlines(keepends=True), []
            for n, part in enumerate(parts, 1):
                listed = {tuple(pair) for pair in part.get("indexes") or []}
                mine = [line for line in contents if _toc_object(line) in listed]
                contents = [line for line in contents if _toc_object(line) not in listed]
                path = os.path.join(workdir, f"part{n}.list")
                with open(path, "w") as f:
                    f.writelines(mine)
                early.append([single + ["--section=post-data", "-L", path, plain]] if mine else [])
            # A part is pg_dump's plain COPY (pg_dump 15.14 and later open it with \restrict: no psql
            # meta-command runs from it), which psql sends in large messages; pg_restore sends an
            # uncompressed archive's rows a message each, which the server loaded about 15% slower.
            psql = [find_bin("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", *self.db.conn_args(scratch)]
            what = f"restore into {scratch}"
            self._pipelines([([single + ["--section=data", plain]], None)]
                            + [([[zstd, "-q", "-d", "-c", os.path.join(set_dir, p["path"])],
                                 psql if p["path"].endswith(".sql.zst") else single], None, then)
                               for p, then in zip(parts, early)], what)
            rest = os.path.join(workdir, "rest.list")
            with open(rest, "w") as f:
                f.writelines(contents)
            self._restore(cmd + ["--section=post-data", "-L", rest], plain, scratch)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def _restore(self, cmd, path, scratch):
        rc, out, err = self.db.run(cmd + [path])
        if rc != 0:
            raise BackupError(f"pg_restore into {scratch} failed (rc={rc}): {_tail(err or out)}")

    def terminate(self, dbnames):
        """End the client sessions on these databases that this role may end (its own roles', or any
        non-superuser's with pg_signal_backend; all of them as a superuser). Ending one it may not
        (autovacuum, another role's session) would fail the whole statement; DROP and RENAME
        stop autovacuum themselves and wait a few seconds for the rest."""
        names = ",".join(quote_literal(n) for n in dbnames)
        self.query(
            "SELECT count(pg_terminate_backend(a.pid)) FROM pg_stat_activity a "
            "JOIN pg_roles r ON r.oid = a.usesysid "
            f"WHERE a.datname IN ({names}) AND a.pid <> pg_backend_pid() AND a.backend_type = 'client backend' "
            "AND ((SELECT rolsuper FROM pg_roles WHERE rolname = current_user) "
            "OR (NOT r.rolsuper AND (pg_has_role(a.usesysid, 'USAGE') OR pg_has_role('pg_signal_backend', 'USAGE'))))",
            self.maintenance_db)

    def _while_busy(self, what, dbnames, sql, attempts):
        """Run sql after terminate(dbnames), again while another session still holds a database."""
        last = None
        for attempt in range(max(1, attempts)):
            if attempt:
                time.sleep(0.5)
            try:
                self.terminate(dbnames)
                self.query(sql, self.maintenance_db)
                return
            except PgError as exc:
                last = exc
                if "being accessed by other users" not in str(exc):
                    break
        raise BackupError(f"{what}: {last}")

    def swap(self, scratch, previous, live_exists=True, attempts=5):
        """Make scratch the live database in one transaction; the old live one becomes `previous`."""
        statements = []
        if live_exists:
            statements.append(f"ALTER DATABASE {quote_ident(self.name)} RENAME TO {quote_ident(previous)}")
        statements.append(f"ALTER DATABASE {quote_ident(scratch)} RENAME TO {quote_ident(self.name)}")
        sql = "BEGIN; " + "; ".join(statements) + "; COMMIT;"
        self._while_busy(f"swap databases {scratch} -> {self.name}", [self.name, scratch], sql, attempts)
        return statements


# --------------------------------------------------------------------------- SQLite
# What SQLite keeps beside a database file while it is open: the WAL and its index (journal_mode WAL),
# the rollback journal (the other modes). botops leaves none of them beside a file it made or copied.
SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")
SQLITE_TIMEOUT = 30.0


def sqlite_uri(path, immutable=False):
    """The URI of an existing SQLite file: read-write (mode=rw never creates one), or immutable."""
    return "file:" + urllib.parse.quote(path, safe="/") + ("?immutable=1" if immutable else "?mode=rw")


def sqlite_connect(path, write=False, immutable=False):
    """A connection to the existing SQLite file `path` that leaves nothing beside it once closed.

    A read-only connection (mode=ro) to a WAL database makes its -wal and -shm but cannot remove them
    when it closes: only a connection that may write checkpoints the WAL and deletes both, as the last
    one to close. So every connection here opens the file read-write (mode=rw: never creates it), and
    one that only reads runs with query_only, so it changes no row. `immutable`: a copy of botops' own
    that nobody writes (a set's database.sqlite3): read without locks and without any file beside it."""
    conn = sqlite3.connect(sqlite_uri(path, immutable), uri=True, timeout=SQLITE_TIMEOUT)
    if not write and not immutable:
        try:
            conn.execute("PRAGMA query_only = 1")
        except sqlite3.Error:
            conn.close()
            raise
    return conn


def sqlite_companions(path):
    """The -wal, -shm and -journal files beside `path`."""
    return [path + suffix for suffix in SQLITE_COMPANIONS if os.path.lexists(path + suffix)]


def sqlite_alone(path, what):
    """Fail `what` when anything is still beside `path`: a copy whose connection did not close cleanly
    may hold committed rows in its -wal, and a -wal or -shm renamed away from its file is stray."""
    stray = sqlite_companions(path)
    if stray:
        raise BackupError(f"{what}: {', '.join(os.path.basename(p) for p in stray)} left beside {path} (a "
                          "connection to it did not close cleanly); nothing was renamed")


class SqliteEngine:
    """A bot whose database is one SQLite file (profile database.path, relative to the bot root).

    Nothing botops does leaves a -wal, -shm or -journal beside the live file, the set's copy, a scratch
    copy or a kept one: every connection closes cleanly (sqlite_connect)."""

    engine = "sqlite"

    def __init__(self, path, tables=(), ledger=None):
        self.path = path
        self.name = os.path.basename(path)
        self.tables = list(tables or [])
        self.ledger = ledger or None

    def close(self):
        pass

    def _connect(self, path, write=False, immutable=False):
        return sqlite_connect(path, write=write, immutable=immutable)

    def counts(self, path=None, immutable=False):
        """(row counts of the profile's tables, ledger max id, Alembic revision) of the live file or
        `path`; `immutable` for a set's copy (see sqlite_connect)."""
        path = path or self.path
        try:
            conn = self._connect(path, immutable=immutable)
        except sqlite3.Error as exc:
            raise BackupError(f"open {path}: {exc}") from None
        try:
            existing = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            counts = {t: (conn.execute(f"SELECT count(*) FROM {quote_ident(t)}").fetchone()[0]
                          if t in existing else None) for t in self.tables}
            ledger_max = None
            if self.ledger and self.ledger["table"] in existing:
                ledger_max = conn.execute(f"SELECT max({quote_ident(self.ledger['id'])}) "
                                          f"FROM {quote_ident(self.ledger['table'])}").fetchone()[0]
            revision = None
            if "alembic_version" in existing:
                revision = ",".join(sorted(r[0] for r in conn.execute("SELECT version_num FROM alembic_version"))) or None
            return counts, ledger_max, revision
        except sqlite3.Error as exc:
            raise BackupError(f"count rows in {path}: {exc}") from None
        finally:
            conn.close()

    def columns(self, path=None, immutable=False):
        """{table: [[column, not_null, has_default], ...]} of the ledger's tables (see PostgresEngine)."""
        found = {}
        try:
            with contextlib.closing(self._connect(path or self.path, immutable=immutable)) as conn:
                for table in ledger_tables(self.ledger):
                    rows = conn.execute(f"PRAGMA table_xinfo({quote_ident(table)})").fetchall()
                    # (cid, name, type, notnull, dflt_value, pk, hidden): an INTEGER PRIMARY KEY numbers itself
                    cols = [[r[1], bool(r[3] or r[5]), r[4] is not None or (r[5] == 1 and str(r[2]).upper() == "INTEGER")]
                            for r in rows if not r[6]]
                    if cols:
                        found[table] = cols
        except sqlite3.Error as exc:
            raise BackupError(f"read the columns of {path or self.path}: {exc}") from None
        return found

    def exists(self, path=None):
        return os.path.isfile(path or self.path)

    def dump(self, workdir, fmt=None, level=None, jobs=None):
        """Copy the live file into the set with SQLite's online backup API, in one step: one consistent
        snapshot of what was committed, even while the bot writes (in WAL mode it is not held up).

        The copy is switched to the rollback journal (journal_mode DELETE), so that opening it never
        makes a -wal or -shm beside it; the live file's mode is recorded (journal_mode) and put back by
        restore_into. Row counts are taken from the copy, read immutable: exactly what it holds."""
        if not os.path.isfile(self.path):
            raise BackupError(f"database file {self.path} does not exist")
        target = os.path.join(workdir, SQLITE_FILE)
        started = time.monotonic()
        try:
            with contextlib.closing(self._connect(self.path)) as src, \
                    contextlib.closing(sqlite3.connect(target, timeout=SQLITE_TIMEOUT)) as dst:
                journal_mode = str(src.execute("PRAGMA journal_mode").fetchone()[0]).lower()
                src.backup(dst, pages=-1)  # every page in one step: a consistent copy, even while the bot writes
                copy_mode = dst.execute("PRAGMA journal_mode = DELETE").fetchone()[0]
            if copy_mode != "delete":
                raise BackupError(f"copy {self.path}: the copy kept journal mode {copy_mode}, not delete")
        except sqlite3.Error as exc:
            raise BackupError(f"copy {self.path}: {exc}") from None
        sqlite_alone(target, f"copy {self.path}")
        os.chmod(target, 0o600)
        counts, ledger_max, revision = self.counts(target, immutable=True)  # counted from the copy
        columns = self.columns(target, immutable=True)
        return {
            "engine": self.engine,
            "name": self.name,
            "format": "sqlite",
            "compression": None,
            "path": SQLITE_FILE,
            "sqlite_version": sqlite3.sqlite_version,
            "journal_mode": journal_mode,
            "alembic_revision": revision,
            "tables": self.tables,
            "row_counts": counts,
            "ledger": self.ledger,
            "ledger_max_id": ledger_max,
            "columns": columns,
            "dump_seconds": round(time.monotonic() - started, 3),
        }

    def restore_into(self, set_dir, dbinfo, scratch, jobs=None):
        """Copy the set's file to `scratch` through `<scratch>.part`: integrity_check, then the journal
        mode the live file had when it was backed up (dbinfo journal_mode: WAL, or the rollback journal)
        set back with a read-write connection. A set whose manifest does not record it (taken before
        it was) is copied as it is. Nothing is left beside the .part file or the scratch copy."""
        source = os.path.join(set_dir, SQLITE_FILE)
        tmp = scratch + ".part"
        recorded = (dbinfo or {}).get("journal_mode")
        try:
            shutil.copyfile(source, tmp)
            os.chmod(tmp, 0o600)
            with contextlib.closing(self._connect(tmp, write=True)) as conn:
                check = conn.execute("PRAGMA integrity_check").fetchone()[0]
                if check != "ok":
                    raise BackupError(f"integrity_check of the restored copy: {check}")
                if recorded:
                    want = "wal" if str(recorded).lower() == "wal" else "delete"
                    got = conn.execute(f"PRAGMA journal_mode = {want}").fetchone()[0]
                    if got != want:
                        raise BackupError(f"set journal mode {want} (the backed-up file's) on {tmp}: it stayed {got}")
            sqlite_alone(tmp, f"copy {source} to {scratch}")
            self._remove_companions(scratch)  # a killed run's: they would pair with the new copy
            os.replace(tmp, scratch)
        except (OSError, sqlite3.Error) as exc:
            raise BackupError(f"copy {source} to {scratch}: {exc}") from None
        finally:
            self.drop(tmp)

    def kept(self):
        """[(path, epoch seconds)], newest first: this file's replaced and kept copies (<file>.pre-restore-<time>)."""
        prefix = f"{os.path.basename(self.path)}.{KEPT_KIND.replace('_', '-')}-"
        found = []
        with contextlib.suppress(FileNotFoundError):
            for entry in os.listdir(os.path.dirname(self.path) or "."):
                tag = entry[len(prefix):]
                created = kept_tag_time(tag) if entry.startswith(prefix) and _KEPT_TAG.fullmatch(tag) else None
                if created is not None:
                    found.append((os.path.join(os.path.dirname(self.path), entry), created))
        return sorted(found, key=lambda item: (item[1], item[0]), reverse=True)

    @staticmethod
    def _remove_companions(path):
        for p in sqlite_companions(path):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(p)

    def drop(self, path):
        """Remove a scratch or kept copy with whatever is beside it, and a killed restore's <path>.part."""
        for p in (path, path + ".part"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(p)
            self._remove_companions(p)

    def swap(self, scratch, previous, live_exists=True):
        """Keep the live file as `previous` (a hard link), then replace it atomically with `scratch`.

        The scratch copy must stand alone (sqlite_alone). The live file is checkpointed first, so the
        kept copy holds every committed row in itself and needs nothing beside it; the -wal, -shm or
        -journal the replaced file leaves are removed once the new one is in place."""
        actions = []
        sqlite_alone(scratch, f"swap {scratch} in as {self.path}")
        if live_exists:
            try:
                with contextlib.closing(self._connect(self.path, write=True)) as conn:
                    conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # rolls a hot journal back
                    busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
            except sqlite3.Error as exc:
                raise BackupError(f"checkpoint {self.path} before the swap: {exc}") from None
            if busy:
                raise BackupError(f"checkpoint {self.path} before the swap: another process holds it open; "
                                  "nothing was renamed")
            os.link(self.path, previous)
            actions.append(f"link {self.path} -> {previous}")
        os.replace(scratch, self.path)
        self._remove_companions(self.path)  # the replaced file's: they would pair with the new one
        actions.append(f"rename {scratch} -> {self.path}")
        return actions


def engine_for(profile, bot, secrets=None, maintenance_db="postgres"):
    """The database engine of this bot, or None when its backups hold no database."""
    pdb = profile.get("database") or {}
    backup_conf = profile.get("backup") or {}
    engine = pdb.get("engine", "none")
    if engine == "none" or backup_conf.get("database", True) is False:
        return None
    tables, ledger = pdb.get("tables") or [], pdb.get("ledger")
    if engine == "sqlite":
        path = pdb["path"]
        return SqliteEngine(path if os.path.isabs(path) else os.path.join(bot["root"], path), tables, ledger)
    if engine == "postgresql":
        try:
            database = Database(bot.get("database") or {}, (secrets or {}).get("database_password"), pdb)
        except PgError as exc:
            raise BackupError(str(exc)) from None
        return PostgresEngine(database, tables, ledger, maintenance_db)
    raise BackupError(f"unknown database engine {engine!r}")


# --------------------------------------------------------------------------- files (config, data)
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
    wanted = {name for name, _, _ in plan}
    written = []
    with tarfile.open(tar_path, "r:gz") as tar:
        for member in tar.getmembers():
            if member.name not in wanted or not member.isfile():
                continue
            target = _safe_member(root, member, None)
            if target is None:
                continue
            os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
            tmp = f"{target}.botops-restore"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                shutil.copyfileobj(tar.extractfile(member), f)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, member.mode & 0o7777)
            os.replace(tmp, target)
            written.append(member.name)
    return written


# --------------------------------------------------------------------------- taking a backup
def create_backup(store, engine, bot, profile, backup_id=None, fmt=DEFAULT_FORMAT, level=None, jobs=2,
                  label=None, reason=None, linked_release=None, safety_for=None, paths=None):
    """Take one complete backup set; returns its manifest. The caller holds store.lock().

    Everything is written into <backups>/.tmp-<id> and renamed into place at the end; on any
    failure the temp directory is removed and no set appears."""
    started = time.time()
    t0 = time.monotonic()
    backup_id = validate_backup_id(backup_id) if backup_id else new_backup_id(started)
    final = store.path(backup_id)
    if os.path.exists(final):
        raise BackupError(f"backup {backup_id} already exists")
    backup_paths = list(profile.get("backup", {}).get("paths") or []) if paths is None else list(paths)
    if engine is None and not backup_paths:
        raise BackupError("nothing to back up: the profile backs up no database and no paths")
    store.ensure()
    for stale in store.temp_dirs():  # left by a killed run (see BackupStore.temp_dirs)
        shutil.rmtree(stale, ignore_errors=True)
    tmp = store.temp_path(backup_id)
    os.mkdir(tmp, 0o700)
    try:
        manifest = {
            "manifest_version": MANIFEST_VERSION,
            "backup_id": backup_id,
            "bot": bot["name"],
            "family": profile.get("family"),
            "release": current_release(bot["root"]),
            "created_at": utc_iso(started),
            "label": label,
            "reason": reason,
            "linked_release": linked_release,
            "safety_for": safety_for,
            "database": None,
        }
        if engine is not None:
            manifest["database"] = engine.dump(tmp, fmt, level, jobs)
        if backup_paths:
            archived, missing = archive_paths(bot["root"], backup_paths, os.path.join(tmp, FILES_TAR))
            manifest["paths"] = archived
            manifest["missing_paths"] = missing
        else:
            manifest["paths"] = []
        _secure_tree(tmp)
        manifest["files"] = _file_entries(tmp)
        manifest["size"] = sum(f["size"] for f in manifest["files"].values())
        manifest["duration"] = round(time.monotonic() - t0, 3)
        write_json(os.path.join(tmp, MANIFEST), manifest)
        _fsync_path(tmp)
        os.rename(tmp, final)
        _fsync_path(store.directory)
        return manifest
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# --------------------------------------------------------------------------- verification
def compare_counts(manifest_db, counts, ledger_max, revision=None):
    """Differences between what the manifest recorded and what a restored copy holds."""
    problems = []
    expected = manifest_db.get("row_counts") or {}
    for table, want in sorted(expected.items()):
        got = counts.get(table)
        if got != want:
            problems.append(f"{table}: {got} rows, manifest says {want}")
    if manifest_db.get("ledger_max_id") != ledger_max:
        problems.append(f"ledger max id {ledger_max}, manifest says {manifest_db.get('ledger_max_id')}")
    if revision is not None and manifest_db.get("alembic_revision") not in (None, revision):
        problems.append(f"alembic revision {revision}, manifest says {manifest_db.get('alembic_revision')}")
    return problems


def scratch_name(engine, kind, backup_id):
    if isinstance(engine, SqliteEngine):
        return f"{engine.path}.{kind}-{backup_id}"
    return derived_db_name(engine.name, kind, backup_id)


def test_restore(engine, set_dir, manifest, jobs=2):
    """Restore into a scratch database (created and dropped), compare row counts to the manifest.

    Returns (problems, observed counts dict, scratch name)."""
    dbinfo = manifest.get("database")
    if not dbinfo:
        return [], None, None
    scratch = scratch_name(engine, "verify", manifest["backup_id"])
    try:
        engine.drop(scratch)
        if isinstance(engine, PostgresEngine):
            engine.create_like(scratch, engine.name if engine.exists(engine.name) else None)
        engine.restore_into(set_dir, dbinfo, scratch, jobs)
        counts, ledger_max, revision = engine.counts(scratch)
        problems = compare_counts(dbinfo, counts, ledger_max, revision)
        return problems, {"row_counts": counts, "ledger_max_id": ledger_max, "alembic_revision": revision}, scratch
    except PgError as exc:
        raise BackupError(f"test restore into {scratch}: {exc}") from None
    finally:
        with contextlib.suppress(PgError, BackupError, OSError):
            engine.drop(scratch)


# --------------------------------------------------------------------------- retention
def protected_releases(root):
    """What the release ledger (<bot_root>/releases/ledger.json, written by bot_release) protects.

    Returns (releases, backup_ids): the current release (the `current` symlink) and every release
    the ledger lists as current or good, and the backups its entries for those releases name
    (bot_release records the backup taken before activating a release: the way back from it).
    An absent or unreadable ledger protects the current release only. Tolerant of the ledger's
    shape: {"releases": {version: entry}}, {"releases": [entry]} or a list of entries."""
    releases, backup_ids = set(), set()
    release = current_release(root)
    if release:
        releases.add(release)
    try:
        ledger = read_json(os.path.join(root, "releases", "ledger.json"))
    except (OSError, ValueError):
        return releases, backup_ids
    entries = ledger.get("releases") if isinstance(ledger, dict) else ledger
    if isinstance(entries, dict):
        entries = [dict(v, version=v.get("version") or k) for k, v in entries.items() if isinstance(v, dict)]
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict):
            continue
        version = str(entry.get("version") or "")
        status = str(entry.get("status") or "").lower()
        if version and (status in SAFE_LEDGER_STATES or version == release):
            releases.add(version)
            if entry.get("backup_id"):
                backup_ids.add(str(entry["backup_id"]))
    return releases, backup_ids


def kept_name(engine, check_mode=False, kind=KEPT_KIND):
    """The name the live database (or file) a restore replaces is kept under: <db>_pre_restore_<time>
    (<file>.pre-restore-<time>), with a counter when that name is taken; what kept() lists. Another
    `kind` names another keeper (a reverted rollout keeps the copy it restored as failed_rollout)."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    for n in range(1, 100):
        tag = stamp if n == 1 else f"{stamp}_{n}"
        if isinstance(engine, SqliteEngine):
            name = f"{engine.path}.{kind.replace('_', '-')}-{tag}"
            if not os.path.lexists(name):
                return name
        else:
            name = derived_db_name(engine.name, kind, tag)
            if check_mode or not engine.exists(name):
                return name
    raise BackupError(f"no free name for the {kind} database")


def plan_kept_retention(kept, keep_last=None, max_age_days=None, now=None):
    """Which kept databases ([(name, epoch)], newest first) to drop: the sets' rules (plan_retention),
    one of the newest keep_last or younger than max_age_days. Returns (drop, keep): [(name, why)]."""
    entries = [{"backup_id": name, "manifest": {"created_at": utc_iso(created)}} for name, created in kept]
    return plan_retention(entries, keep_last, max_age_days, now=now)


def plan_retention(sets, keep_last=None, max_age_days=None, protected=(), now=None, protected_ids=()):
    """Decide which sets to delete; sets are newest first (BackupStore.list()).

    A set is kept when any rule keeps it (as restic's `forget`): it is one of the newest
    keep_last, or younger than max_age_days, or the newest verified set, or linked to a release
    in `protected`, or named in `protected_ids` (the release ledger's backups of current and
    good releases). With neither rule given nothing is deleted.
    A damaged set (its manifest unreadable) is always kept, its reason saying why: whether it was
    worth keeping cannot be known without its manifest, and deleting it would hide the damage, so an
    operator looks at it and removes it by hand. It does not count among the newest keep_last, which
    are the readable sets a restore could use.
    Returns (delete: [(backup_id, why)], keep: [(backup_id, why)])."""
    now = time.time() if now is None else now
    delete, keep = [], []
    newest_verified = next((s["backup_id"] for s in sets
                            if not s.get("damaged") and (s.get("verification") or {}).get("ok")), None)
    readable = 0
    for entry in sets:
        if entry.get("damaged"):
            keep.append((entry["backup_id"], f"damaged ({entry['damaged']}): retention never deletes a damaged "
                                             "set; look at it, then repair or remove it by hand"))
            continue
        if keep_last is None and max_age_days is None:
            keep.append((entry["backup_id"], "no retention rule"))
            continue
        index, readable = readable, readable + 1
        m = entry["manifest"]
        created = parse_iso(m.get("created_at"))
        age_days = (now - created) / 86400.0 if created is not None else None
        if keep_last is not None and index < keep_last:
            keep.append((entry["backup_id"], f"one of the newest {keep_last}"))
        elif max_age_days is not None and (age_days is None or age_days <= max_age_days):
            keep.append((entry["backup_id"], f"younger than {max_age_days} days"))
        elif entry["backup_id"] == newest_verified:
            keep.append((entry["backup_id"], "newest verified backup"))
        elif m.get("linked_release") and m["linked_release"] in protected:
            keep.append((entry["backup_id"], f"linked to release {m['linked_release']} (still current or good)"))
        elif entry["backup_id"] in protected_ids:
            keep.append((entry["backup_id"], "named by the release ledger for a current or good release"))
        else:
            why = []
            if keep_last is not None:
                why.append(f"not one of the newest {keep_last}")
            if max_age_days is not None:
                why.append(f"{age_days:.1f} days old (> {max_age_days})")
            delete.append((entry["backup_id"], ", ".join(why)))
    return delete, keep
