# Copyright: botops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The SQLite engine of backup sets: a bot whose database is one SQLite file. Copy it into a set with
SQLite's online backup API, count its rows, copy a set's file back beside the live one and swap it
in, keep the replaced file. Stdlib only.

sqlite_connect opens a SQLite file so that nothing is left beside it once closed (botops_ledger
uses it too).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import time
import urllib.parse

from ansible_collections.botops.fleet.plugins.module_utils.botops_backup_store import (
    KEPT_KIND, KEPT_TAG_RE, SQLITE_FILE, BackupError, kept_tag_time, ledger_tables, manifest_database, quote_ident)

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
        counted = self.counts(target, immutable=True)  # counted from the copy
        columns = self.columns(target, immutable=True)
        return manifest_database(self, counted, columns, round(time.monotonic() - started, 3),
                                 format="sqlite", compression=None, path=SQLITE_FILE,
                                 sqlite_version=sqlite3.sqlite_version, journal_mode=journal_mode)

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
                created = kept_tag_time(tag) if entry.startswith(prefix) and KEPT_TAG_RE.fullmatch(tag) else None
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
