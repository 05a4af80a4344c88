# Copyright: botops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The PostgreSQL engine of backup sets: dump the bot's database in one snapshot (pg_dump, with the
largest tables' rows in parts of their own), count its rows, restore a set into a scratch database,
swap it in as the live one, keep the replaced one. Stdlib only, plus the PostgreSQL client binaries
and zstd. Every psql it runs comes from botops_pg (Database.psql, PsqlSession).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

from ansible_collections.botops.fleet.plugins.module_utils.botops_backup_store import (
    DEFAULT_FORMAT, DEFAULT_LEVELS, FORMATS, KEPT_KIND, KEPT_TAG_RE, TMP_PREFIX, BackupError, derived_db_name,
    find_bin, kept_tag_time, ledger_tables, manifest_database, quote_ident, quote_literal)
from ansible_collections.botops.fleet.plugins.module_utils.botops_pg import Database, PgError, tail

# custom_zstd: each of the `jobs` largest tables of at least this size gets a dump of its own rows
# (database.part<N>.sql.zst, plain COPY), taken beside the main one in the same snapshot; a single
# pg_dump reads one table at a time on one server core. Sets of an earlier version hold custom
# archives instead (database.part<N>.dump.zst); both restore.
PART_MIN_BYTES = 64 * 1024 * 1024
PART_FILE_RE = re.compile(r"database\.part[0-9]{1,3}\.(sql|dump)\.zst")
MARKER_KEY = "botops_restore"


def _run(cmd):
    """A tool that needs no connection (zstd, pg_dump --version, pg_restore -l): (rc, stdout, stderr)."""
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    return proc.returncode, proc.stdout, proc.stderr


def _toc_object(line):
    """(catalog oid, object oid) of a line of `pg_restore -l` ("12; 2606 16390 CONSTRAINT ..."), or None."""
    match = re.match(r"\d+; (\d+) (\d+) ", line)
    return (int(match.group(1)), int(match.group(2))) if match else None


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
            self._admin = self.db.session(self.maintenance_db, find_bin("psql"))
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
            m = KEPT_TAG_RE.search(name)
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
        rc, out, err = _run([find_bin("pg_dump"), "--version"])
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
        session = self.db.session(binary=find_bin("psql"))
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
        part = manifest_database(
            self, (counts, ledger_max, revision), columns, dump_seconds,
            format=fmt,
            compression={"custom_zstd": f"zstd:{level}", "custom": f"gzip:{6 if level is None else level}",
                         "directory": f"gzip:{level}"}[fmt],
            path=FORMATS[fmt],
            pg_dump_version=self.pg_dump_version(),
            server_version=server_version,
            snapshot=snapshot,
        )
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
        indexes = {oid: [] for oid, table in rows}
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
            raise BackupError(f"pg_dump of database {self.name} failed (rc={rc}): {tail(err or out)}")

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
                codes = [proc.poll() for argv, proc, err in running]
                if any(code not in (None, 0) for code in codes):
                    break
                for step in waiting:
                    if step[1] and all(proc.returncode == 0 for proc in step[0]):
                        step[0] = [start(step[1].pop(0), subprocess.DEVNULL, subprocess.DEVNULL)]
                if all(proc.returncode == 0 for argv, proc, err in running) and not any(s[1] for s in waiting):
                    break
                time.sleep(0.05)
            stopped = set()
            if any(code not in (None, 0) for code in codes):
                for argv, proc, err in running:
                    if proc.poll() is None:
                        proc.terminate()
                        stopped.add(proc.pid)
            for argv, proc, err in running:
                proc.wait()
            causes = [r for r in running if r[1].returncode != 0 and r[1].pid not in stopped]
            if causes:
                argv, proc, err = next((r for r in causes if r[1].returncode != -signal.SIGPIPE), causes[0])
                err.seek(0)
                raise BackupError(f"{os.path.basename(argv[0])} ({what}) failed (rc={proc.returncode}): "
                                  f"{tail(err.read().decode(errors='replace'))}")
            for out in outputs:
                out.flush()
                os.fsync(out.fileno())
        finally:
            for argv, proc, err in running:
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
                    isinstance(pair, list) and len(pair) == 2 and all(isinstance(n, int) and not isinstance(n, bool) for n in pair)
                    for pair in part.get("indexes") or []):
                raise BackupError(f"the manifest names a database part that is not one: {part!r}")
        zstd = find_bin("zstd")
        # pg_restore -j needs a file it can seek in: the main dump is decompressed beside the sets
        # (the callers hold the store's lock, so no writer takes the directory for a killed run's),
        # and removed after the restore whatever happens.
        workdir = tempfile.mkdtemp(prefix=f"{TMP_PREFIX}restore-", dir=os.path.dirname(os.path.abspath(set_dir)))
        try:
            plain = os.path.join(workdir, "db.dump")
            rc, out, err = _run([zstd, "-q", "-d", source, "-o", plain])
            if rc != 0:
                raise BackupError(f"zstd -d of {FORMATS[fmt]} failed (rc={rc}): {tail(err or out)}")
            if not parts:
                self._restore(cmd, plain, scratch)
                return
            # What pg_restore -j does, in its order: the tables; then every table's rows side by side
            # (each part streams through zstd into psql), a part's indexes built as soon as its rows
            # are in while the other tables still load; then the rest of the indexes and the
            # constraints with -j.
            self._restore(single + ["--section=pre-data"], plain, scratch)
            rc, out, err = _run([find_bin("pg_restore"), "-l", plain])
            if rc != 0:
                raise BackupError(f"pg_restore -l of {FORMATS[fmt]} failed (rc={rc}): {tail(err or out)}")
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
            psql = self.db.psql(scratch, binary=find_bin("psql"))
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
            raise BackupError(f"pg_restore into {scratch} failed (rc={rc}): {tail(err or out)}")

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
