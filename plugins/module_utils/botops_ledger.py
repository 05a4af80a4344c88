# Copyright: botops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What replacing a bot's database with a backup would take out of its ledger, and carrying it forward.

A restore (and a rollback that brings the data back from a backup) replaces the live database
with the backup's copy. The profile names the ledger (`database.ledger`): the trade table, whose
rows written since the backup have ids above the backup's `ledger_max_id`, and its holdings
(positions, orders: what the bot holds now). Without care the swap takes those rows out of the
live ledger and a bot that numbers its rows max(id)+1 hands their ids out again.

- `ledger_loss()` measures the rows since the backup on the live database (rows, id range, time
  range) before anything changes; `describe_loss()` says it in one line.
- `plan_carry()` maps those rows onto the backup's schema: columns present in both by name,
  renamed or transformed ones through the `botops_ledger_map` the crossed revisions declare
  (botops_alembic); whatever cannot be mapped is named, never dropped silently.
- `carry_forward()` copies them into the restored copy (the scratch database, before the swap, the
  bot stopped) in one transaction: trades above the backup's max id, holdings whole, so they match
  what the bot holds. A crash leaves the scratch copy half-built at worst, never the live database.
- `raise_id_floor()` keeps the restored copy from handing out any id the replaced database held.

Stdlib only.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import tempfile

from ansible_collections.botops.fleet.plugins.module_utils.botops_alembic import MigrationError, RevisionGraph
from ansible_collections.botops.fleet.plugins.module_utils.botops_backup_postgres import PostgresEngine
from ansible_collections.botops.fleet.plugins.module_utils.botops_backup_sqlite import SqliteEngine, sqlite_connect, sqlite_uri
from ansible_collections.botops.fleet.plugins.module_utils.botops_backup_store import TMP_PREFIX, BackupError, quote_ident, quote_literal
from ansible_collections.botops.fleet.plugins.module_utils.botops_pg import PgError

IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class CarryError(Exception):
    """The rows since the backup cannot be mapped onto the backup's schema."""


def ledger_conf(profile):
    """The ledger table, its id and time columns, its holdings and id floor (None when the profile
    names no ledger)."""
    conf = (profile.get("database") or {}).get("ledger") or {}
    if not conf.get("table"):
        return None
    return {"table": conf["table"], "id": conf.get("id"), "time": conf.get("time"),
            "holdings": [{"table": h["table"], "id": h.get("id")} for h in conf.get("holdings") or [] if h.get("table")],
            "id_floor": conf.get("id_floor")}


def ledger_specs(conf):
    """[{table, id, time, holdings}]: the trade ledger first, then its holdings."""
    return ([{"table": conf["table"], "id": conf["id"], "time": conf["time"], "holdings": False}]
            + [{"table": h["table"], "id": h["id"], "time": None, "holdings": True} for h in conf["holdings"]])


def ledger_loss(engine, profile, backup_max_id, dbname=None):
    """Rows of the live ledger (or of `dbname`: a kept database, a SQLite file) above the backup's max
    id: {table, rows, first_id, last_id, first_time, last_time, backup_max_id}; rows 0 when nothing
    would be lost, None when the profile names no ledger."""
    conf = ledger_conf(profile)
    if conf is None or engine is None:
        return None
    table, id_col, time_col = conf["table"], conf["id"], conf["time"]
    floor = int(backup_max_id or 0)
    times = (f"min({quote_ident(time_col)})::text, max({quote_ident(time_col)})::text" if time_col
             else "NULL, NULL")
    sql = (f"SELECT count(*), min({quote_ident(id_col)}), max({quote_ident(id_col)}), {times} "
           f"FROM {quote_ident(table)} WHERE {quote_ident(id_col)} > {floor}")
    row = one_row(engine, sql, dbname, f"cannot read what the live ledger holds since the backup ({table})")
    if row is None:
        return {"table": table, "rows": 0, "backup_max_id": floor} if isinstance(engine, SqliteEngine) else None
    count = int(row[0] or 0)
    loss = {"table": table, "rows": count, "backup_max_id": floor}
    if count:
        loss.update(first_id=int(row[1]), last_id=int(row[2]), first_time=row[3] or None, last_time=row[4] or None)
    return loss


def one_row(engine, sql, dbname, what):
    """The first row of one query on the live database, or `dbname` (a kept database; for SQLite a
    file beside the live one); None for an engine without SQL or a SQLite file that does not exist."""
    try:
        if isinstance(engine, PostgresEngine):
            return engine.query(sql, dbname or engine.name)[0]
        if isinstance(engine, SqliteEngine):
            path = dbname or engine.path
            if not os.path.exists(path):
                return None
            with contextlib.closing(sqlite_connect(path)) as conn:  # leaves no -wal or -shm beside it
                return conn.execute(sql.replace("::text", "")).fetchone()
    except (PgError, sqlite3.Error, IndexError) as exc:
        raise BackupError(f"{what}: {exc}") from None
    return None


def describe_loss(loss):
    """'1,380 trades (ids 2623-4002, 22:45:01 .. 22:50:20) written since the backup' or ''."""
    if not loss or not loss.get("rows"):
        return ""
    text = f"{loss['rows']} {loss['table']} row(s) (ids {loss['first_id']}-{loss['last_id']}"
    if loss.get("first_time"):
        text += f", {loss['first_time']} .. {loss['last_time']}"
    return text + ") written since the backup"


def live_max_ids(engine, profile, dbname=None):
    """{table: highest id} of every ledger table with an id column, in the live database (or `dbname`)."""
    conf = ledger_conf(profile)
    if conf is None or engine is None:
        return {}
    highs = {}
    for spec in ledger_specs(conf):
        if not spec["id"]:
            continue
        sql = f"SELECT max({quote_ident(spec['id'])}) FROM {quote_ident(spec['table'])}"
        try:
            row = one_row(engine, sql, dbname, f"cannot read the highest id of {spec['table']}")
        except BackupError:
            if spec["holdings"]:
                continue  # a holdings table this schema does not have
            raise
        if row is not None and row[0] not in (None, ""):
            highs[spec["table"]] = int(row[0])
    return highs


def raise_id_floor(engine, profile, scratch, highs):
    """Ids are never reused: before the swap, make the restored copy (`scratch`) hand out ids above
    `highs` ({table: the highest id the replaced database held}). A sequence behind an id column is
    moved with setval (SQLite: sqlite_sequence); a bot that numbers max(id)+1 reads a floor the
    profile names (database.ledger.id_floor: a key of a key/value table, JSON {"<table>": high}).
    Returns what was done."""
    conf = ledger_conf(profile)
    if conf is None or not highs:
        return []
    floor = conf["id_floor"]
    specs = [s for s in ledger_specs(conf) if s["id"] and highs.get(s["table"]) is not None]
    try:
        if isinstance(engine, PostgresEngine):
            return _raise_pg(engine, scratch, specs, highs, floor)
        if isinstance(engine, SqliteEngine):
            return _raise_sqlite(scratch, specs, highs, floor)
    except (PgError, sqlite3.Error) as exc:
        raise BackupError(f"cannot keep the ledger's ids above {highs} in the restored database: {exc}") from None
    return []


def _raise_pg(engine, scratch, specs, highs, floor):
    done = []
    for spec in specs:
        table, id_col, high = spec["table"], spec["id"], int(highs[spec["table"]])
        seq = engine.query(f"SELECT pg_get_serial_sequence({quote_literal(quote_ident(table))}, "
                           f"{quote_literal(id_col)})", scratch)
        if seq and seq[0] and seq[0][0]:
            engine.query(f"SELECT setval({quote_literal(seq[0][0])}, greatest({high}, "
                         f"(SELECT coalesce(max({quote_ident(id_col)}), 0) FROM {quote_ident(table)})))", scratch)
            done.append(f"sequence {seq[0][0]} set above {high}")
        if floor:
            ft = quote_ident(floor["table"])
            engine.query(f"INSERT INTO {ft} (key, value) VALUES ({quote_literal(floor['key'])}, "
                         f"{quote_literal(json.dumps({table: high}))}::jsonb) ON CONFLICT (key) DO UPDATE SET "
                         f"value = {ft}.value || EXCLUDED.value "
                         f"WHERE coalesce(({ft}.value->>{quote_literal(table)})::bigint, 0) < {high}", scratch)
            done.append(f"{table} ids start above {high} ({floor['table']}.{floor['key']})")
    return done


def _raise_sqlite(scratch, specs, highs, floor):
    done = []
    with contextlib.closing(sqlite_connect(scratch, write=True)) as conn:
        with conn:  # one transaction
            names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            for spec in specs:
                table, high = spec["table"], int(highs[spec["table"]])
                if "sqlite_sequence" in names:
                    # AUTOINCREMENT hands out ids above sqlite_sequence.seq (a plain rowid above max(rowid))
                    if conn.execute("UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name = ?", (high, table)).rowcount:
                        done.append(f"sqlite_sequence of {table} set above {high}")
                if floor and floor["table"] in names:
                    row = conn.execute(f"SELECT value FROM {quote_ident(floor['table'])} WHERE key = ?",
                                       (floor["key"],)).fetchone()
                    value = json.loads(row[0]) if row and row[0] else {}
                    if int(value.get(table) or 0) < high:
                        value[table] = high
                        conn.execute(f"INSERT INTO {quote_ident(floor['table'])} (key, value) VALUES (?, ?) "
                                     "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (floor["key"], json.dumps(value)))
                        done.append(f"{table} ids start above {high} ({floor['table']}.{floor['key']})")
    return done


# --------------------------------------------------------------------------- carry forward
def revision_chain(root, profile, newer, older):
    """The revisions between the live database's (`newer`) and the backup's (`older`), newest first:
    the ones whose downgrade a row written on the live schema crosses to reach the backup's. Read
    from the migrations of every release installed on the bot (the newest knows the newest ones)."""
    if newer == older:
        return []
    if not newer or not older:
        raise CarryError(f"the live database is at revision {newer or 'none'} and the backup at {older or 'none'}: "
                         "there is no migration path between them")
    config = ((profile.get("database") or {}).get("migrations") or {}).get("config") or "alembic.ini"
    releases = os.path.join(root, "releases")
    revisions = {}
    with contextlib.suppress(FileNotFoundError):
        for version in sorted(os.listdir(releases)):
            path = os.path.join(releases, version)
            if not os.path.isfile(os.path.join(path, config)):
                continue
            with contextlib.suppress(MigrationError):
                revisions.update(RevisionGraph.from_config(os.path.join(path, config), cwd=path).revisions)
    chain, revision = [], newer
    while revision != older:
        entry = revisions.get(revision)
        if entry is None:
            raise CarryError(f"no release installed on the bot knows revision {revision}, so the rows written on it "
                             f"cannot be mapped onto the backup's revision {older}")
        chain.append(entry)
        if len(entry["down_revisions"]) != 1:
            raise CarryError(f"the backup's revision {older} is not before the live database's {newer}: rows "
                             "written on the live schema are carried only onto an older one")
        revision = entry["down_revisions"][0]
    return chain


def compose_map(chain, table, live_columns):
    """{older column: SQL over the live columns} for `table`: every live column by name, then each
    crossed revision's botops_ledger_map (newest first). A renamed column leaves its newer name."""
    exprs = {c: quote_ident(c) for c in live_columns}
    for entry in chain:
        declared = (entry.get("ledger_map") or {}).get(table) or {}
        if not declared:
            continue
        mapped = {k: v for k, v in exprs.items()
                  if k in declared or not any(src == k for src in declared.values())}
        for older, src in declared.items():
            if IDENT_RE.fullmatch(src):
                if src in exprs:
                    mapped[older] = exprs[src]
                else:
                    mapped.pop(older, None)
            else:
                mapped[older] = f"({src})"
        exprs = mapped
    return exprs


def _live_rows(engine, spec, floor):
    """(rows, first_id, last_id, first_time, last_time) the live table would carry."""
    id_col, time_col = quote_ident(spec["id"]), spec["time"]
    times = f"min({quote_ident(time_col)})::text, max({quote_ident(time_col)})::text" if time_col else "NULL, NULL"
    where = "" if spec["holdings"] else f" WHERE {id_col} > {int(floor)}"
    row = one_row(engine, f"SELECT count(*), min({id_col}), max({id_col}), {times} FROM {quote_ident(spec['table'])}"
                          f"{where}", None, f"cannot read {spec['table']} on the live database") or (0, None, None, None, None)
    ids = tuple(None if v in (None, "") else int(v) for v in row[1:3])
    times = tuple(None if v in (None, "") else str(v) for v in row[3:5])
    return (int(row[0] or 0),) + ids + times


def _where(spec, floor):
    return "" if spec["holdings"] else f" WHERE {quote_ident(spec['id'])} > {int(floor)}"


def plan_carry(engine, profile, root, backup, older_columns=None, carry=True):
    """What carrying the live ledger forward onto `backup` (the manifest's database part) takes:
    {from_revision, to_revision, backup_max_id, tables: [{table, holdings, rows, first_id, last_id,
    first_time, last_time, columns: [[older column, SQL]], carry, problems, lost_values}]}.
    `older_columns` ({table: [[column, not_null, has_default]]}, measured in the restored copy) wins
    over the manifest's record. With carry=False nothing is mapped: the rows are what would be kept
    aside. None when the profile names no ledger."""
    conf = ledger_conf(profile)
    if conf is None or engine is None:
        return None
    floor = int(backup.get("ledger_max_id") or 0)
    live_columns = engine.columns()
    newer = engine.counts()[2]
    older_rev = backup.get("alembic_revision")
    older = older_columns if older_columns is not None else backup.get("columns")
    chain, chain_problem = None, None
    if carry:
        try:
            chain = revision_chain(root, profile, newer, older_rev)
        except CarryError as exc:
            chain_problem = str(exc)
    plan = {"from_revision": newer, "to_revision": older_rev, "backup_max_id": floor, "tables": []}
    for spec in ledger_specs(conf):
        table = spec["table"]
        if table not in live_columns or not spec["id"]:
            continue
        rows, first_id, last_id, first_time, last_time = _live_rows(engine, spec, floor)
        entry = {"table": table, "holdings": spec["holdings"], "id": spec["id"], "rows": rows, "first_id": first_id,
                 "last_id": last_id, "first_time": first_time, "last_time": last_time, "columns": [],
                 "problems": [], "lost_values": {}}
        plan["tables"].append(entry)
        if not carry:
            entry["carry"] = False
            continue
        if chain is None:
            entry["problems"].append(chain_problem)
        else:
            names = [c[0] for c in live_columns[table]]
            exprs = compose_map(chain, table, names)
            if older is not None:
                target = older.get(table)
            elif newer == older_rev:
                target = live_columns[table]  # the same revision: the same schema
            else:
                target = [[name, False, False] for name in exprs]  # measured again in the restored copy
            if target is None:
                entry["problems"].append(f"the backup's schema has no table {table}")
                target = []
            crossed = ", ".join(e["revision"] for e in chain) or "none"
            for name, not_null, has_default in target:
                if name in exprs:
                    entry["columns"].append([name, exprs[name]])
                elif not_null and not has_default:
                    entry["problems"].append(
                        f"{table}.{name} has no value on the backup's revision {older_rev}: the revisions crossed "
                        f"({crossed}) declare no botops_ledger_map for it")
            used = set()
            for name, expr in entry["columns"]:
                used.update(IDENT_RE.findall(expr))
            unused = [c for c in names if c not in used]
            if unused and rows:
                counts = one_row(engine, "SELECT " + ", ".join(f"count({quote_ident(c)})" for c in unused)
                                 + f" FROM {quote_ident(table)}{_where(spec, floor)}", None,
                                 f"cannot read {table} on the live database")
                entry["lost_values"] = {c: int(n) for c, n in zip(unused, counts or ()) if int(n or 0)}
        entry["carry"] = not entry["problems"]
    return plan


def carry_loss(plan):
    """What the live ledger would lose with this plan, one text per table ([] when nothing)."""
    lost = []
    for e in (plan or {}).get("tables", []):
        if e["holdings"] and not e["carry"] and not e["problems"]:
            continue  # not carried (an explicit restore): the backup's holdings come back with its trades
        if not e["carry"] and (e["rows"] or e["holdings"]):
            what = (f"the {e['rows']} {e['table']} row(s) the bot holds now" if e["holdings"] else
                    describe_loss({"table": e["table"], "rows": e["rows"], "first_id": e["first_id"],
                                   "last_id": e["last_id"], "first_time": e["first_time"], "last_time": e["last_time"]}))
            if what:
                lost.append(what + (f" ({'; '.join(e['problems'])})" if e["problems"] else ""))
        elif e["carry"]:
            for column, count in e["lost_values"].items():
                lost.append(f"{count} value(s) of {e['table']}.{column} in the rows carried forward: the backup's "
                            f"revision {plan['to_revision']} has no column for them")
    return lost


def describe_carry(carried):
    """'80 trades, 4 positions, 7 orders' from {table: rows} ('' when nothing)."""
    return ", ".join(f"{n} {t}" for t, n in (carried or {}).items())


def carry_forward(engine, plan, scratch, tmpdir=None):
    """Copy the rows of `plan` (plan_carry, on the restored copy's schema) from the live database into
    `scratch`, in one transaction: the trade ledger's rows above the backup's max id, each holdings
    table whole (its restored rows replaced). The bot must be stopped. Returns {table: rows carried};
    checks that the restored copy holds exactly what the live database does. The rows pass through
    files in a `.tmp-carry-*` directory of `tmpdir` (the backup store, under its lock: a killed run's
    is removed by the next backup, see BackupStore.temp_dirs)."""
    todo = [e for e in plan["tables"] if e["carry"] and e["columns"] and (e["rows"] or e["holdings"])]
    if not todo:
        return {}
    try:
        if isinstance(engine, PostgresEngine):
            _carry_pg(engine, todo, plan["backup_max_id"], scratch, tmpdir)
        elif isinstance(engine, SqliteEngine):
            _carry_sqlite(engine, todo, plan["backup_max_id"], scratch)
        else:
            return {}
    except (PgError, sqlite3.Error, OSError, subprocess.SubprocessError) as exc:
        raise BackupError(f"carry the ledger forward into {scratch}: {exc}") from None
    carried = {}
    for e in todo:
        spec = {"table": e["table"], "id": e["id"], "holdings": e["holdings"]}
        sql = f"SELECT count(*) FROM {quote_ident(e['table'])}{_where(spec, plan['backup_max_id'])}"
        live = int((one_row(engine, sql, None, f"count {e['table']} on the live database") or (0,))[0])
        got = int((one_row(engine, sql, scratch, f"count {e['table']} in {scratch}") or (0,))[0])
        if got != live:
            raise BackupError(f"carried {e['table']} into {scratch} but it holds {got} row(s) where the live database "
                              f"holds {live}")
        carried[e["table"]] = live
    return carried


def _select(e, floor):
    spec = {"table": e["table"], "id": e["id"], "holdings": e["holdings"]}
    columns = ", ".join(f"{expr} AS {quote_ident(name)}" for name, expr in e["columns"])
    return f"SELECT {columns} FROM {quote_ident(e['table'])}{_where(spec, floor)} ORDER BY {quote_ident(e['id'])}"


def _carry_pg(engine, todo, floor, scratch, tmpdir=None):
    db = engine.db
    workdir = tempfile.mkdtemp(prefix=f"{TMP_PREFIX}carry-", dir=tmpdir)  # mode 0700: no one else reads the rows
    try:
        script = ["BEGIN;"]
        for i, e in enumerate(todo):
            path = os.path.join(workdir, f"{i}.csv")
            with open(path, "wb") as out:
                rc, out_text, err = db.run(db.psql(engine.name) + [
                    "-c", f"COPY ({_select(e, floor)}) TO STDOUT WITH (FORMAT csv)"], stdout=out)
            if rc:
                raise PgError(f"read {e['table']} on {engine.name}: {err.strip()}")
            if e["holdings"]:
                script.append(f"DELETE FROM {quote_ident(e['table'])};")
            names = ", ".join(quote_ident(name) for name, expr in e["columns"])
            script.append(f"\\copy {quote_ident(e['table'])} ({names}) FROM {quote_literal(path)} WITH (FORMAT csv)")
        script.append("COMMIT;")
        with open(os.path.join(workdir, "carry.sql"), "w", encoding="utf-8") as f:
            f.write("\n".join(script) + "\n")
        rc, out, err = db.run(db.psql(scratch) + ["-f", os.path.join(workdir, "carry.sql")])
        if rc:
            raise PgError(f"write into {scratch}: {err.strip() or out.strip()}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _carry_sqlite(engine, todo, floor, scratch):
    # the live file is attached read-write but only read: a connection that may write removes the -wal
    # and -shm it made beside the live file when it closes (see sqlite_connect), a read-only one cannot
    with contextlib.closing(sqlite_connect(scratch, write=True)) as conn:
        conn.execute("ATTACH DATABASE ? AS live", (sqlite_uri(engine.path),))
        with conn:
            for e in todo:
                names = ", ".join(quote_ident(name) for name, expr in e["columns"])
                if e["holdings"]:
                    conn.execute(f"DELETE FROM main.{quote_ident(e['table'])}")
                select = _select(e, floor).replace(f"FROM {quote_ident(e['table'])}",
                                                   f"FROM live.{quote_ident(e['table'])}", 1)
                conn.execute(f"INSERT INTO main.{quote_ident(e['table'])} ({names}) {select}")
        conn.execute("DETACH DATABASE live")


def ledger_report(plan, carried=None, previous=None, applied=True):
    """The modules' `ledger` result: where the rows went (or would go, applied=False), per table
    with the id and time range of what the live database held since the backup."""
    if plan is None:
        return None
    if not applied:
        carried = {e["table"]: e["rows"] for e in plan["tables"] if e["carry"] and e["columns"]}
    carried = carried or {}
    kept = carry_loss(plan)
    where = f" in {previous}" if previous else (" in the replaced database, kept" if not applied else "")
    parts = []
    for e in plan["tables"]:
        if e["table"] not in carried:
            continue
        text = f"{carried[e['table']]} {e['table']}"
        if not e["holdings"] and e["rows"] and e["first_id"] is not None:
            text += f" (ids {e['first_id']}-{e['last_id']})"
        parts.append(text)
    return {"backup_max_id": plan["backup_max_id"], "from_revision": plan["from_revision"],
            "to_revision": plan["to_revision"], "carried": carried, "kept_aside": kept,
            "tables": [{k: e[k] for k in ("table", "rows", "first_id", "last_id", "first_time", "last_time",
                                          "carry", "problems", "lost_values")} for e in plan["tables"]],
            "summary": {"carried": ", ".join(parts) or "none",
                        "kept_aside": "; ".join(kept) + where if kept else "none"}}
