# Copyright: botops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PostgreSQL access for the bot modules through the client binaries (psql, pg_dump, pg_restore).

The password travels in PGPASSWORD in the child's environment only: never on a command line,
never in a result.
"""

from __future__ import annotations

import os
import shutil
import subprocess

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

    def run(self, cmd, input_text=None, timeout=None):
        proc = subprocess.run(cmd, env=self.env(), capture_output=True, text=True, input=input_text, timeout=timeout)
        return proc.returncode, proc.stdout, proc.stderr

    def query(self, sql, dbname=None):
        """Run one SQL statement with psql; rows as lists of strings. Raises PgError on any error."""
        cmd = [pg_bin("psql"), "-X", "-q", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1", *self.conn_args(dbname)]
        rc, out, err = self.run(cmd + ["-c", sql])
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


def module_database(module):
    """A Database for a module built with bot_argument_spec()."""
    p = module.params
    return Database(p["bot"].get("database") or {}, (p.get("secrets") or {}).get("database_password"),
                    p["profile"].get("database"))
