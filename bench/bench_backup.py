"""Backup and restore of one bot's 1 GB PostgreSQL database: bot_backup's and bot_restore's code
against plain `pg_dump -Fc` (what community.postgresql's postgresql_db does) and `pg_restore -j2`.

    botops bench --only=backup [--args='--size-mb 1024 --rounds 2 --no-write']
    .venv/bin/python bench/bench_backup.py [--size-mb 1024] [--rounds 2]

A throwaway PostgreSQL 15 cluster (initdb/pg_ctl as an unprivileged user, fsync off for both sides)
gets a trades-shaped database of --size-mb (a trades table and an orders table half its size, as
the reference bot's, with their primary keys), then each round times, on the same database:

- baseline backup: `pg_dump -Fc -f FILE` (default gzip compression);
- botops backup: `create_backup()`, what bot_backup state=present runs: a snapshot session that
  counts the rows, `pg_dump --snapshot -Fc -Z0 | zstd -1 -T0` for the schema and small tables and
  one more such pipeline per large table (trades, orders) side by side, sha256 of every file, the
  manifest, fsync and the atomic rename;
- verification: `verify_files()`, what bot_backup state=verified runs on every set (every file's
  size and sha256 against the manifest), as a share of the backup's time;
- baseline restore: `pg_restore -j2 --no-owner` of the plain dump into an empty database;
- botops restore: `restore_into()`, what bot_restore runs into its scratch database, from the set.

Results go to bench/RESULTS.md (its "backup" section) unless --no-write.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [p for p in (str(REPO), str(REPO / "tests")) if p not in sys.path]

import conftest  # noqa: E402,F401  (the checkout as the botops.fleet collection, importable)
from ansible_collections.botops.fleet.plugins.module_utils import botops_backup as bb  # noqa: E402
from ansible_collections.botops.fleet.plugins.module_utils import botops_backup_store as backup_store  # noqa: E402
from ansible_collections.botops.fleet.plugins.module_utils.botops_backup_postgres import PostgresEngine  # noqa: E402
from ansible_collections.botops.fleet.plugins.module_utils.botops_pg import Database  # noqa: E402

from bench.results import machine, publish  # noqa: E402
from tests.integration.pgredis import PostgresCluster  # noqa: E402

SECTION = "backup"
TARGETS = {"backup_speedup": 3.0, "restore_ratio": 1.0, "verify_share": 0.10}
ROWS_PER_BATCH = 1_000_000


def log(message: str) -> None:
    print(f"  {message}", flush=True)


def fill(cluster: PostgresCluster, size_mb: int) -> tuple[int, int]:
    """Fill the bench database with trades (and orders, half as many) until it holds size_mb; (rows, bytes)."""
    import psycopg

    with psycopg.connect(cluster.url("bench", "bench", "bench"), autocommit=True) as conn:
        conn.execute("""
            CREATE TABLE trades (id bigint PRIMARY KEY, ts timestamptz NOT NULL DEFAULT now(), symbol text NOT NULL,
                side text NOT NULL, qty numeric NOT NULL, price numeric NOT NULL, position_id bigint NULL,
                order_id bigint NULL, mode text NOT NULL, paper boolean NOT NULL)""")
        conn.execute("CREATE TABLE orders (LIKE trades INCLUDING ALL)")
        rows = 0
        while True:
            size = conn.execute("SELECT pg_database_size('bench')").fetchone()[0]
            if size >= size_mb * 1024 * 1024:
                return rows, size
            conn.execute("""
                INSERT INTO trades SELECT g, now() - (g || ' seconds')::interval,
                    (ARRAY['BTC-USD','ETH-USD','SOL-USD','DOGE-USD'])[1 + g %% 4],
                    CASE WHEN g %% 2 = 0 THEN 'buy' ELSE 'sell' END, round((random() * 10)::numeric, 4),
                    round((random() * 50000)::numeric, 2), g / 2, g, 'DRY', true
                FROM generate_series(%s, %s) g""", (rows + 1, rows + ROWS_PER_BATCH))
            conn.execute("INSERT INTO orders SELECT * FROM trades WHERE id > %s AND id %% 2 = 0", (rows,))
            rows += ROWS_PER_BATCH
            log(f"filled {rows:,} trades, database {size / 2**20:,.0f} MB")


def timed(fn):
    t0 = time.monotonic()
    value = fn()
    return time.monotonic() - t0, value


def run_checked(cmd: list[str], db: Database) -> None:
    proc = subprocess.run(cmd, env=db.env(), capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:1])} failed (rc={proc.returncode}): {proc.stderr[-600:]}")


def one_round(engine: PostgresEngine, db: Database, work: Path, n: int) -> dict:
    pg_dump, pg_restore = backup_store.find_bin("pg_dump"), backup_store.find_bin("pg_restore")
    plain = work / f"plain-{n}.dump"
    base_s, _ = timed(lambda: run_checked([pg_dump, "-Fc", *db.conn_args(), "-f", str(plain)], db))
    log(f"round {n}: pg_dump -Fc {base_s:.1f} s, {plain.stat().st_size / 1e6:.0f} MB")

    store = backup_store.BackupStore(str(work / f"backups-{n}"))
    bot = {"name": "bench", "root": str(work)}
    profile = {"family": "bench", "backup": {"paths": []}}
    with store.lock():
        ours_s, manifest = timed(lambda: bb.create_backup(store, engine, bot, profile))
    set_dir = store.path(manifest["backup_id"])
    log(f"round {n}: bot_backup {ours_s:.1f} s, {manifest['size'] / 1e6:.0f} MB ({manifest['database']['compression']})")
    verify_s, problems = timed(lambda: backup_store.verify_files(set_dir, manifest))
    if problems:
        raise RuntimeError(f"verification failed: {problems}")

    engine.drop("bench_plain")
    engine.create_like("bench_plain", "bench")
    base_r, _ = timed(lambda: run_checked([pg_restore, "-j2", "--exit-on-error", "--no-owner",
                                           *db.conn_args("bench_plain"), str(plain)], db))
    engine.drop("bench_plain")
    log(f"round {n}: pg_restore -j2 {base_r:.1f} s")
    engine.drop("bench_scratch")
    engine.create_like("bench_scratch", "bench")
    ours_r, _ = timed(lambda: engine.restore_into(set_dir, manifest["database"], "bench_scratch", jobs=2))
    counts, ledger_max, _ = engine.counts("bench_scratch")
    problems = bb.compare_counts(manifest["database"], counts, ledger_max)
    engine.drop("bench_scratch")
    if problems:
        raise RuntimeError(f"restored copy differs from the manifest: {problems}")
    log(f"round {n}: bot_restore {ours_r:.1f} s, verify {verify_s:.2f} s")
    result = {"pg_dump_s": base_s, "pg_dump_mb": plain.stat().st_size / 1e6, "backup_s": ours_s,
              "backup_mb": manifest["size"] / 1e6, "verify_s": verify_s, "pg_restore_s": base_r, "restore_s": ours_r}
    plain.unlink()
    shutil.rmtree(store.directory)
    return result


def section(info: dict, size: int, rows: int, rounds: list[dict], note: str) -> str:
    med = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
    speedup = med["pg_dump_s"] / med["backup_s"]
    restore_ratio = med["restore_s"] / med["pg_restore_s"]
    verify_share = med["verify_s"] / med["backup_s"]

    def verdict(ok):
        return "met" if ok else "**missed**"

    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"<!-- bench:{SECTION}:start -->",
        "## Backup and restore (1 GB database)",
        "",
        f"{when}; {info['nproc']} CPUs ({info['cpu']}), {info['memory']}, load average at start "
        f"{info['load_at_start'][0]:.2f}; Python {info['python']}, ansible-core {info['ansible_core']}. "
        f"Database {size / 2**20:,.0f} MB ({rows:,} trades, {rows // 2:,} orders); medians of {len(rounds)} rounds.",
        "",
        "| measure | baseline | botops | ratio | target | verdict |",
        "|---|---|---|---|---|---|",
        f"| backup, seconds | `pg_dump -Fc` {med['pg_dump_s']:.1f} | {med['backup_s']:.1f} | {speedup:.2f}x faster "
        f"| at least {TARGETS['backup_speedup']:g}x | {verdict(speedup >= TARGETS['backup_speedup'])} |",
        f"| backup, MB written | {med['pg_dump_mb']:.0f} | {med['backup_mb']:.0f} | "
        f"{med['backup_mb'] / med['pg_dump_mb']:.2f} | no larger | {verdict(med['backup_mb'] <= med['pg_dump_mb'])} |",
        f"| restore, seconds | `pg_restore -j2` {med['pg_restore_s']:.1f} | {med['restore_s']:.1f} | "
        f"{restore_ratio:.3f} of the baseline | no slower | {verdict(restore_ratio <= TARGETS['restore_ratio'])} |",
        f"| verification (every file's sha256), seconds | - | {med['verify_s']:.2f} | {verify_share:.1%} of the backup "
        f"| at most {TARGETS['verify_share']:.0%} | {verdict(verify_share <= TARGETS['verify_share'])} |",
        "",
        "Every round: " + "; ".join(
            f"dump {r['pg_dump_s']:.1f}/{r['backup_s']:.1f} s, restore {r['pg_restore_s']:.1f}/{r['restore_s']:.1f} s"
            for r in rounds) + " (baseline/botops).",
        "",
        note.strip(),
        f"<!-- bench:{SECTION}:end -->",
        "",
    ]
    return "\n".join(lines)


NOTE = """Notes: the baseline dump is bound by gzip (one core, level 6) and by one pg_dump reading one
table at a time. botops dumps without compression into `zstd -1 -T0`, the two largest tables
(trades, orders) each as a `pg_dump --data-only` of its own in the same snapshot, so the server
reads them on both cores; the output is smaller than the baseline's. The restore creates the tables
from the main dump, loads every table's rows side by side (each part streams through `zstd -d`
into psql, which sends COPY data in larger messages than pg_restore does from an uncompressed
archive), builds a table's indexes as soon as its rows are in while the larger one still loads
(the order `pg_restore -j2` follows), then the rest with `pg_restore -j2`. Both restores are bound
by the server loading the largest table in one COPY: at this size they end within a few percent of
each other, and a round's verdict can go either way. Beyond the raw pipelines, the backup's time is
counting the rows in the snapshot, the checksums and the fsync. Both restores go into an empty
database of the same cluster, with fsync off for both (a test cluster): the ratio, not the absolute
time, is what carries over. Verification is what `bot_backup state=verified` does on every set; the
test restore (`--test-restore`) is a restore and costs what the restore row shows."""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024, help="database size to fill (default 1024)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds (default 2)")
    parser.add_argument("--note", default="", help="text added under the numbers")
    parser.add_argument("--no-write", action="store_true", help="print only; leave bench/RESULTS.md alone")
    args = parser.parse_args(argv)
    if args.size_mb < 1 or args.rounds < 1:
        parser.error("--size-mb and --rounds must be 1 or more")

    load = os.getloadavg()
    info = machine(load)
    print(f"machine: {info['nproc']} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="botops-bench-backup-", dir="/tmp"))
    work.chmod(0o755)
    cluster = PostgresCluster(work / "pg")
    try:
        cluster.init()
        cluster.start()
        cluster.create_database("bench", password="bench")
        rows, size = fill(cluster, args.size_mb)
        cluster.execute("VACUUM ANALYZE", "bench")
        db = Database({"host": "127.0.0.1", "port": cluster.port, "name": "bench", "user": "bench"}, "bench")
        engine = PostgresEngine(db, ["trades", "orders"], {"table": "trades", "id": "id"})
        cluster.execute('ALTER ROLE "bench" CREATEDB')
        try:
            rounds = [one_round(engine, db, work, n) for n in range(1, args.rounds + 1)]
        finally:
            engine.close()
    finally:
        cluster.destroy()
        shutil.rmtree(work, ignore_errors=True)
    text = section(info, size, rows, rounds, args.note or NOTE)
    publish(SECTION, text, write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
