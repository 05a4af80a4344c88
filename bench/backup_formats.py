"""Dump throughput and size of bot_backup's database formats against plain `pg_dump -Fc`.

    .venv/bin/python bench/backup_formats.py [--rows 2000000] [--rounds 2]

Brings up a throwaway PostgreSQL cluster, fills a trades-shaped table (and an orders table of
half its size), then times PostgresEngine.dump() (the code bot_backup runs: snapshot session,
row counts, pg_dump) for each format and prints seconds, MB and the speed-up over `custom`.

Recorded on the 2-core development machine (PostgreSQL 15.18, zstd 1.5.4, 339 MB database,
2M + 1M rows), under heavy load from other work, two rounds each:

    format        level  seconds       MB   speed-up
    custom        gzip6  37.1-47.8    59.4   1.0x
    custom_zstd   1      10.6-14.5    54.6   3.3-3.5x   (the default: faster and smaller)
    custom_zstd   3       8.2         60.9
    directory     gzip1   6.2         69.7   (fastest, but larger than custom)

On the same machine idle, the plain shell pipelines took 6.5 s (`pg_dump -Fc`) and 2.0 s
(`pg_dump -Fc -Z0 | zstd -1 -T0`): 3.2x, 54.6 MB against 59.4 MB.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

import conftest  # noqa: E402,F401  (the checkout as the botops.fleet collection, importable)
import psycopg  # noqa: E402
from ansible_collections.botops.fleet.plugins.module_utils.botops_backup_postgres import PostgresEngine  # noqa: E402
from ansible_collections.botops.fleet.plugins.module_utils.botops_pg import Database  # noqa: E402
from tests.integration.pgredis import PostgresCluster  # noqa: E402

FORMATS = [("custom", None), ("custom_zstd", 1), ("custom_zstd", 3), ("directory", 1)]


def fill(url, rows):
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("""
            CREATE TABLE trades (id bigint PRIMARY KEY, ts timestamptz NOT NULL DEFAULT now(), symbol text NOT NULL,
                side text NOT NULL, qty numeric NOT NULL, price numeric NOT NULL, position_id bigint NULL,
                order_id bigint NULL, mode text NOT NULL, paper boolean NOT NULL)""")
        conn.execute("""
            INSERT INTO trades SELECT g, now() - (g || ' seconds')::interval,
                (ARRAY['BTC-USD','ETH-USD','SOL-USD','DOGE-USD'])[1 + g %% 4],
                CASE WHEN g %% 2 = 0 THEN 'buy' ELSE 'sell' END, round((random() * 10)::numeric, 4),
                round((random() * 50000)::numeric, 2), g / 2, g, 'DRY', true
            FROM generate_series(1, %s) g""", (rows,))
        conn.execute("CREATE TABLE orders AS SELECT * FROM trades WHERE id % 2 = 0")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000, help="rows in the trades table")
    parser.add_argument("--rounds", type=int, default=1, help="dumps per format")
    args = parser.parse_args()
    cluster = PostgresCluster()
    try:
        cluster.init()
        cluster.start()
        url = cluster.create_database("bench", password="bench")
        fill(url, args.rows)
        db = Database({"host": "127.0.0.1", "port": cluster.port, "name": "bench", "user": "bench"}, "bench")
        engine = PostgresEngine(db, ["trades", "orders"], {"table": "trades", "id": "id"})
        base = None
        print(f"{'format':13} {'level':>5} {'seconds':>8} {'MB':>8} {'speed-up':>9}")
        for _ in range(args.rounds):
            for fmt, level in FORMATS:
                out = tempfile.mkdtemp(prefix="bench-dump-")
                started = time.monotonic()
                engine.dump(out, fmt, level, jobs=2)
                seconds = time.monotonic() - started
                size = sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(out) for f in files)
                shutil.rmtree(out)
                if fmt == "custom":
                    base = seconds
                print(f"{fmt:13} {str(level or 'gzip'):>5} {seconds:8.2f} {size / 1e6:8.1f} {base / seconds:8.1f}x",
                      flush=True)
        engine.close()
    finally:
        cluster.destroy()


if __name__ == "__main__":
    main()
