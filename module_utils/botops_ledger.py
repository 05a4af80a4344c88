# Copyright: botops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What replacing a bot's database with a backup would take out of its ledger.

A restore (and a rollback that brings the data back from a backup) replaces the live database
with the backup's copy: every ledger row written since the backup (id above the backup's
`ledger_max_id`) would leave the live ledger, and a bot that numbers its rows max(id)+1 would
hand those ids out again. `ledger_loss()` measures it on the live database before anything
changes - rows, id range, time range - so the callers refuse unless the operator accepts it
(`describe_loss()` says exactly what would be lost); `raise_id_floor()` then keeps the restored
copy from handing the lost ids out again. Stdlib only.
"""

from __future__ import annotations

import json
import os
import sqlite3

from ansible.module_utils.botops_backup import BackupError, PostgresEngine, SqliteEngine, quote_ident, quote_literal
from ansible.module_utils.botops_pg import PgError


def ledger_conf(profile):
    """The ledger table, its id column and its time column (None when the profile names none)."""
    conf = (profile.get("database") or {}).get("ledger") or {}
    return {"table": conf.get("table"), "id": conf.get("id"), "time": conf.get("time")} if conf.get("table") else None


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
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
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


def live_max_id(engine, profile, dbname=None):
    """The highest ledger id the live database (or `dbname`) holds now, or None."""
    conf = ledger_conf(profile)
    if conf is None or engine is None:
        return None
    sql = f"SELECT max({quote_ident(conf['id'])}) FROM {quote_ident(conf['table'])}"
    row = one_row(engine, sql, dbname, f"cannot read the ledger's highest id ({conf['table']})")
    return int(row[0]) if row is not None and row[0] not in (None, "") else None


def raise_id_floor(engine, profile, scratch, high):
    """Ids are never reused: before the swap, make the restored copy (`scratch`) hand out ids above
    `high`, the highest id the replaced database held. A sequence behind the id column is moved with
    setval; a bot that numbers max(id)+1 reads a floor the profile names (database.ledger.id_floor:
    a key of a key/value table, JSON {"<table>": high}). Returns what was done, or None."""
    conf = ledger_conf(profile)
    if conf is None or high is None or not isinstance(engine, PostgresEngine):
        return None
    table, id_col = conf["table"], conf["id"]
    floor = ((profile.get("database") or {}).get("ledger") or {}).get("id_floor")
    done = []
    try:
        seq = engine.query(f"SELECT pg_get_serial_sequence({quote_literal(quote_ident(table))}, "
                           f"{quote_literal(id_col)})", scratch)
        if seq and seq[0] and seq[0][0]:
            engine.query(f"SELECT setval({quote_literal(seq[0][0])}, greatest({int(high)}, "
                         f"(SELECT coalesce(max({quote_ident(id_col)}), 0) FROM {quote_ident(table)})))", scratch)
            done.append(f"sequence {seq[0][0]} set above {high}")
        if floor:
            value = quote_literal(json.dumps({table: int(high)}))
            engine.query(f"INSERT INTO {quote_ident(floor['table'])} (key, value) VALUES "
                         f"({quote_literal(floor['key'])}, {value}::jsonb) ON CONFLICT (key) DO UPDATE SET "
                         f"value = {quote_ident(floor['table'])}.value || EXCLUDED.value "
                         f"WHERE coalesce(({quote_ident(floor['table'])}.value->>{quote_literal(table)})::bigint, 0) "
                         f"< {int(high)}", scratch)
            done.append(f"{table} ids start above {high} ({floor['table']}.{floor['key']})")
    except PgError as exc:
        raise BackupError(f"cannot keep the ledger's ids above {high} in the restored database: {exc}") from None
    return done
