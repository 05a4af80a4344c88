#!/usr/bin/python
# Copyright: botops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: bot_db_maintenance
short_description: VACUUM ANALYZE and REINDEX the tables of one bot's PostgreSQL database
description:
  - The database part of the runbooks' maintenance windows, table by table as the bot's own database user, so it
    needs no superuser and touches only the tables that user owns.
  - Runs all statements in one C(psql) call, each in its own transaction (VACUUM cannot run inside one).
  - With O(min_interval), tables vacuumed, analyzed or reindexed more recently are skipped, so running the same
    window twice does the work once.
  - Bots whose profile has no PostgreSQL database are left alone (C(changed=false), C(msg) says why).
version_added: "0.1.0"
extends_documentation_fragment: [ansible.builtin.action_common_attributes, botops.fleet.botops_bot]
options:
  vacuum_analyze:
    description: Run C(VACUUM (ANALYZE)) on the tables.
    type: bool
    default: false
  reindex:
    description: Run C(REINDEX TABLE) on each table (rebuilds its indexes; locks the table meanwhile).
    type: bool
    default: false
  concurrently:
    description:
      - Rebuild with C(REINDEX TABLE CONCURRENTLY), which does not block the bot's reads and writes (slower;
        PostgreSQL 12 or later). Use it when the bot is running; a plain C(REINDEX) can deadlock with its transactions.
    type: bool
    default: false
  tables:
    description:
      - Only these tables (names as C(regclass) shows them, e.g. C(trades) or C(audit.events)). Default every table,
        partitioned table and materialized view the bot's database user owns.
    type: list
    elements: str
  min_interval:
    description: Skip a table whose last vacuum+analyze (or reindex) is younger than this many seconds; V(0) never skips.
    type: int
    default: 0
  timeout:
    description: Seconds the statements may take together before the module gives up.
    type: int
    default: 1800
attributes:
  check_mode:
    support: full
    details: Finds the tables and reports what would be done; runs no statement.
  diff_mode:
    support: none
  platform:
    platforms: posix
notes:
  - Vacuums and analyzes are read from C(pg_stat_user_tables) (autovacuum's included); reindexes this module ran are
    recorded in C(<bot_root>/shared/data/botops-db-maintenance.json).
  - The maintenance role stops the bot before a plain C(REINDEX), which locks each table against writes and each index against reads.
author: botops contributors (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Vacuum, analyze and reindex the bot's tables
  botops.fleet.bot_db_maintenance:
    profile: "{{ botops_profile }}"
    bot: "{{ botops_bot }}"
    secrets: "{{ botops_secrets }}"
    vacuum_analyze: true
    reindex: true
    min_interval: 3600
  register: db

- name: Show the tables done
  ansible.builtin.debug:
    var: db.tables_done
"""

RETURN = r"""
tables_done:
  description: Tables done (or, in check mode, that would be done), per operation.
  returned: always
  type: dict
  sample: {vacuum_analyze: [orders, positions, trades], reindex: [orders, positions, trades]}
tables_skipped:
  description: Tables skipped because they were done less than O(min_interval) seconds ago, per operation.
  returned: always
  type: dict
queries:
  description: The statements run (or that would be run), in order.
  returned: always
  type: list
  elements: str
actions:
  description: Same as C(queries), for the idempotency checks every botops module supports.
  returned: always
  type: list
  elements: str
duration:
  description: Seconds the statements took.
  returned: always
  type: float
"""

import json
import os
import time
from datetime import datetime, timezone

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.botops.fleet.plugins.module_utils.botops_bot import bot_argument_spec
from ansible_collections.botops.fleet.plugins.module_utils.botops_files import write_json
from ansible_collections.botops.fleet.plugins.module_utils.botops_pg import PgError, module_database
from ansible_collections.botops.fleet.plugins.module_utils.botops_priority import yield_cpu

RECORD = os.path.join("shared", "data", "botops-db-maintenance.json")

TABLES_SQL = """
SELECT c.oid::regclass::text,
       coalesce(extract(epoch FROM now() - greatest(s.last_vacuum, s.last_autovacuum))::bigint, -1),
       coalesce(extract(epoch FROM now() - greatest(s.last_analyze, s.last_autoanalyze))::bigint, -1)
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
WHERE c.relkind IN ('r', 'p', 'm')
  AND pg_has_role(c.relowner, 'USAGE')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg_toast%'
ORDER BY 1
"""


def quote_table(name):
    """A regclass text as SQL: 'trades' -> "trades", 'audit.events' -> "audit"."events"."""
    parts = []
    for part in name.split("."):
        if part.startswith('"') and part.endswith('"'):
            parts.append(part)
        else:
            parts.append('"' + part.replace('"', '""') + '"')
    return ".".join(parts)


def read_record(path):
    try:
        with open(path) as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def write_record(path, record):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_json(path, record, mode=0o644)


def age_of(stamp, now):
    try:
        return (now - datetime.fromisoformat(stamp)).total_seconds()
    except (TypeError, ValueError):
        return None


def plan(found, wanted, record, p, now):
    """Which tables to vacuum and reindex, and which to skip as done recently."""
    done = {"vacuum_analyze": [], "reindex": []}
    skipped = {"vacuum_analyze": [], "reindex": []}
    interval = p["min_interval"]
    for table in wanted:
        vacuum_age, analyze_age = found[table]
        if p["vacuum_analyze"]:
            fresh = interval > 0 and 0 <= vacuum_age < interval and 0 <= analyze_age < interval
            (skipped if fresh else done)["vacuum_analyze"].append(table)
        if p["reindex"]:
            age = age_of((record.get("reindex") or {}).get(table), now)
            fresh = interval > 0 and age is not None and 0 <= age < interval
            (skipped if fresh else done)["reindex"].append(table)
    return done, skipped


def main():
    argument_spec = bot_argument_spec()
    argument_spec.update(
        vacuum_analyze=dict(type="bool", default=False),
        reindex=dict(type="bool", default=False),
        concurrently=dict(type="bool", default=False),
        tables=dict(type="list", elements="str"),
        min_interval=dict(type="int", default=0),
        timeout=dict(type="int", default=1800),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    yield_cpu(module)
    p = module.params
    name = p["bot"]["name"]
    result = dict(changed=False, tables_done={"vacuum_analyze": [], "reindex": []},
                  tables_skipped={"vacuum_analyze": [], "reindex": []}, queries=[], actions=[], duration=0.0)
    if not (p["vacuum_analyze"] or p["reindex"]):
        module.fail_json(msg=f"Failed to maintain the database of bot '{name}': nothing asked "
                             "(set vacuum_analyze and/or reindex)", **result)
    if p["min_interval"] < 0 or p["timeout"] <= 0:
        module.fail_json(msg=f"Failed to maintain the database of bot '{name}': min_interval must be >= 0 "
                             "and timeout > 0", **result)
    if (p["profile"].get("database") or {}).get("engine") != "postgresql":
        result["msg"] = f"bot '{name}' has no PostgreSQL database: nothing to maintain"
        module.exit_json(**result)

    try:
        database = module_database(module)
        rows = database.query(TABLES_SQL)
    except PgError as exc:
        module.fail_json(msg=f"Failed to list the tables of bot '{name}': {exc}", **result)
    found = {row[0]: (int(row[1]), int(row[2])) for row in rows}
    wanted = p["tables"] if p["tables"] is not None else sorted(found)
    missing = [t for t in wanted if t not in found]
    if missing:
        module.fail_json(msg=f"Failed to maintain the database of bot '{name}': no table "
                             f"{', '.join(map(repr, missing))} owned by user {database.user} in database "
                             f"{database.name} (tables: {', '.join(sorted(found)) or 'none'})", **result)

    record_path = os.path.join(p["bot"]["root"], RECORD)
    record = read_record(record_path)
    now = datetime.now(timezone.utc)
    done, skipped = plan(found, wanted, record, p, now)
    queries = []
    if done["vacuum_analyze"]:
        queries.append("VACUUM (ANALYZE) " + ", ".join(quote_table(t) for t in done["vacuum_analyze"]))
    reindex = "REINDEX TABLE CONCURRENTLY" if p["concurrently"] else "REINDEX TABLE"
    queries += [f"{reindex} {quote_table(t)}" for t in done["reindex"]]
    result.update(tables_done=done, tables_skipped=skipped, queries=queries, actions=list(queries),
                  changed=bool(queries))
    if not queries or module.check_mode:
        module.exit_json(**result)

    what = " and ".join(w for w, key in (("VACUUM ANALYZE", "vacuum_analyze"), ("REINDEX", "reindex")) if done[key])
    cmd = database.psql()
    for query in queries:
        cmd += ["-c", query]
    started = time.monotonic()
    try:
        rc, out, err = database.run(cmd, timeout=p["timeout"])
    except Exception as exc:  # subprocess.TimeoutExpired, OSError
        module.fail_json(msg=f"Failed to run {what} on bot '{name}': {exc.__class__.__name__}: {exc}", **result)
    result["duration"] = round(time.monotonic() - started, 3)
    if rc != 0:
        module.fail_json(msg=f"Failed to run {what} on bot '{name}': psql: {(err or out).strip()}", **result)
    if done["reindex"]:
        stamp = now.isoformat()
        record.setdefault("reindex", {}).update({t: stamp for t in done["reindex"]})
        try:
            write_record(record_path, record)
        except OSError as exc:
            module.fail_json(msg=f"Failed to record the reindex of bot '{name}' in {record_path}: {exc}", **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
