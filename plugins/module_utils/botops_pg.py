# Copyright: botops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PostgreSQL access for the bot modules through the client binaries (psql, pg_dump, pg_restore).

Every psql botops runs is built here (Database.psql) and runs with Database.env(): one statement
(Database.query), a script or a COPY (Database.run), or a session held open (PsqlSession).
The password travels in PGPASSWORD in the child's environment only: never on a command line,
never in a result.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile

PG_BIN_DIRS = ("/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/17/bin")


class PgError(Exception):
    pass


def pg_bin(name):
    """Path of a PostgreSQL client binary: PATH first, then Debian's versioned directories."""
    found = shutil.which(name)
    if found:
        return found
    for directory in PG_BIN_DIRS:
        path = os.path.join(directory, name)
        if os.access(path, os.X_OK):
            return path
    raise PgError(f"{name} not found: install the PostgreSQL client (apt-get install postgresql-client-15)")


def tail(text, limit=600):
    """The end of a tool's output, for an error message."""
    text = (text or "").strip()
    return text if len(text) <= limit else "..." + text[-limit:]


class Database:
    """The bot's database: connection facts from the inventory, password from the secrets."""

    def __init__(self, database, password=None, profile_database=None):
        profile_database = profile_database or {}
        self.host = database.get("host") or "127.0.0.1"
        self.port = int(database.get("port") or 5432)
        self.name = database.get("name") or profile_database.get("name")
        self.user = database.get("user") or profile_database.get("user") or self.name
        self.password = password
        if not self.name:
            raise PgError("no database name: set bot_database.name in the inventory or database.name in the profile")

    def env(self):
        env = dict(os.environ, PGHOST=self.host, PGPORT=str(self.port), PGUSER=self.user, PGCONNECT_TIMEOUT="5")
        env.pop("PGPASSWORD", None)
        if self.password:
            env["PGPASSWORD"] = self.password
        return env

    def conn_args(self, dbname=None):
        return ["-h", self.host, "-p", str(self.port), "-U", self.user, "-d", dbname or self.name]

    def psql(self, dbname=None, rows=False, binary=None):
        """The psql command line on `dbname` (the bot's database by default): no psqlrc, quiet, every
        error fatal; with rows, output as unaligned, tab-separated tuples (what query() and
        PsqlSession read). `binary`: the psql to run (pg_bin's by default)."""
        rows_format = ["-A", "-t", "-F", "\t"] if rows else []
        return [binary or pg_bin("psql"), "-X", "-q", *rows_format, "-v", "ON_ERROR_STOP=1", *self.conn_args(dbname)]

    def run(self, cmd, input_text=None, timeout=None, stdout=None):
        """Run a client binary with env(): (rc, stdout, stderr) as text; with `stdout` (a binary file)
        the output goes there and is returned as None."""
        if stdout is not None:
            proc = subprocess.run(cmd, env=self.env(), stdout=stdout, stderr=subprocess.PIPE, timeout=timeout,
                                  check=False)
            return proc.returncode, None, proc.stderr.decode(errors="replace")
        proc = subprocess.run(cmd, env=self.env(), capture_output=True, text=True, input=input_text, timeout=timeout,
                              check=False)
        return proc.returncode, proc.stdout, proc.stderr

    def session(self, dbname=None, binary=None):
        """A psql session held open on `dbname` (see PsqlSession)."""
        return PsqlSession(self, dbname, binary)

    def query(self, sql, dbname=None):
        """Run one SQL statement with psql; rows as lists of strings. Raises PgError on any error."""
        rc, out, err = self.run(self.psql(dbname, rows=True) + ["-c", sql])
        if rc != 0:
            raise PgError(f"query on database {dbname or self.name} failed: {err.strip() or out.strip()}")
        return [line.split("\t") for line in out.splitlines() if line]

    def scalar(self, sql, dbname=None):
        rows = self.query(sql, dbname)
        return rows[0][0] if rows and rows[0] else None

    def alembic_revision(self):
        """The revision in alembic_version, or None when the table does not exist."""
        exists = self.scalar("SELECT to_regclass('public.alembic_version') IS NOT NULL")
        if exists != "t":
            return None
        return self.scalar("SELECT version_num FROM alembic_version")


class PsqlSession:
    """One psql process held open: statements are sent one by one, results read back.

    Holds the exporting transaction of pg_export_snapshot() open while pg_dump runs, and serves the
    many statements of creating, renaming and dropping databases on the maintenance database."""

    END = "__botops_end__"

    def __init__(self, database, dbname=None, binary=None):
        self._err = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(database.psql(dbname, rows=True, binary=binary), env=database.env(),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._err, text=True,
                                     bufsize=1)

    def _error(self):
        self._err.seek(0)
        return tail(self._err.read())

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


def module_database(module):
    """A Database for a module built with bot_argument_spec()."""
    p = module.params
    return Database(p["bot"].get("database") or {}, (p.get("secrets") or {}).get("database_password"),
                    p["profile"].get("database"))
