# Copyright: botops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What replacing a bot's database with a backup would take out of its ledger.

A restore (and a rollback that brings the data back from a backup) replaces the live database
with the backup's copy: every ledger row written since the backup (id above the backup's
`ledger_max_id`) would leave the live ledger, and a bot that numbers its rows max(id)+1 would
hand those ids out again. `ledger_loss()` measures it on the live database before anything
changes - rows, id range, time range - so the callers refuse unless the operator accepts it
(`describe_loss()` says exactly what would be lost). Stdlib only.
"""

from __future__ import annotations

import os
import sqlite3

from ansible.module_utils.botops_backup import BackupError, PostgresEngine, SqliteEngine, quote_ident
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
    try:
        if isinstance(engine, PostgresEngine):
            row = engine.query(sql, dbname or engine.name)[0]
        elif isinstance(engine, SqliteEngine):
            path = dbname or engine.path  # a kept copy is a file beside the live one
            if not os.path.exists(path):
                return {"table": table, "rows": 0, "backup_max_id": floor}
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
                row = conn.execute(sql.replace("::text", "")).fetchone()
        else:
            return None
    except (PgError, sqlite3.Error, IndexError) as exc:
        raise BackupError(f"cannot read what the live ledger holds since the backup ({table}): {exc}") from None
    count = int(row[0] or 0)
    loss = {"table": table, "rows": count, "backup_max_id": floor}
    if count:
        loss.update(first_id=int(row[1]), last_id=int(row[2]), first_time=row[3] or None, last_time=row[4] or None)
    return loss


def describe_loss(loss):
    """'1,380 trades (ids 2623-4002, 22:45:01 .. 22:50:20) written since the backup' or ''."""
    if not loss or not loss.get("rows"):
        return ""
    text = f"{loss['rows']} {loss['table']} row(s) (ids {loss['first_id']}-{loss['last_id']}"
    if loss.get("first_time"):
        text += f", {loss['first_time']} .. {loss['last_time']}"
    return text + ") written since the backup"


