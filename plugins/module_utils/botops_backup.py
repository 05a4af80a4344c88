# Copyright: botops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Backup sets of one bot: take one, restore one into a scratch database to test it, and the names a
restore gives the databases (or files) it fills and keeps.

Used by bot_backup, botops_restore, bot_leftovers, botops_deploy_data and botops_deploy_revert. Stdlib
only (plus the PostgreSQL client binaries and zstd), so it runs on any managed host with Python 3. The
backup code is split by concern, each file importing only the ones below it (a module is shipped with
what it imports):

- botops_backup_store: what a set is (its files, id and manifest), checksums, the store of sets;
- botops_backup_postgres, botops_backup_sqlite: the database engines (dump, count, restore, swap);
- botops_backup_paths: the profile's backup.paths archived into the set and put back;
- botops_retention: which sets and kept databases to delete;
- this file: the engine of a bot (engine_for), taking a set (create_backup), testing one
  (test_restore), and the scratch and kept names.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time

from ansible_collections.botops.fleet.plugins.module_utils.botops_backup_paths import archive_paths
from ansible_collections.botops.fleet.plugins.module_utils.botops_backup_postgres import PostgresEngine
from ansible_collections.botops.fleet.plugins.module_utils.botops_backup_sqlite import SqliteEngine
from ansible_collections.botops.fleet.plugins.module_utils.botops_backup_store import (
    DEFAULT_FORMAT, FILES_TAR, KEPT_KIND, MANIFEST, MANIFEST_VERSION, BackupError, current_release, derived_db_name,
    file_entries, new_backup_id, secure_tree, utc_iso, validate_backup_id)
from ansible_collections.botops.fleet.plugins.module_utils.botops_files import fsync_path, write_json
from ansible_collections.botops.fleet.plugins.module_utils.botops_pg import Database, PgError


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
        secure_tree(tmp)
        manifest["files"] = file_entries(tmp)
        manifest["size"] = sum(f["size"] for f in manifest["files"].values())
        manifest["duration"] = round(time.monotonic() - t0, 3)
        write_json(os.path.join(tmp, MANIFEST), manifest)
        fsync_path(tmp)
        os.rename(tmp, final)
        fsync_path(store.directory)
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


# --------------------------------------------------------------------------- scratch and kept names
def scratch_name(engine, kind, backup_id):
    if isinstance(engine, SqliteEngine):
        return f"{engine.path}.{kind}-{backup_id}"
    return derived_db_name(engine.name, kind, backup_id)


def kept_name(engine, check_mode=False, kind=KEPT_KIND):
    """The name the live database (or file) a restore replaces is kept under: <db>_pre_restore_<time>
    (<file>.pre-restore-<time>), with a counter when that name is taken; what kept() lists. Another
    `kind` names another keeper (a reverted deploy keeps the copy it restored as failed_deploy)."""
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
