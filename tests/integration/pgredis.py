"""Throwaway PostgreSQL clusters and Redis servers for integration tests.

    from pgredis import pg_cluster, redis_server   # pytest fixtures (module scope)
    from pgredis import PostgresCluster, RedisServer, free_port, wait_until

PostgreSQL refuses to run as root: when the tests run as root, initdb/pg_ctl run as the
``postgres`` OS user and the cluster lives in a directory that user owns (outside
pytest's 0700 tmp tree, which it cannot enter).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable

import pytest

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def free_port() -> int:
    """A loopback TCP port that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.05):
    """Poll ``predicate`` until it returns something truthy; fail naming ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
            last_error = None
        except Exception as exc:  # noqa: BLE001 - keep polling, report the last one
            last_error = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what}{detail}")
        time.sleep(interval)


def pg_bindir() -> Path:
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl:
        return Path(pg_ctl).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
                        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if not candidates:
        raise RuntimeError("PostgreSQL server binaries (pg_ctl) not found")
    return Path(candidates[-1]).parent


class PostgresCluster:
    """A PostgreSQL cluster on a loopback port, superuser ``postgres`` with trust auth."""

    def __init__(self, base_dir: Path | None = None, port: int | None = None):
        self.bindir = pg_bindir()
        self.port = port or free_port()
        self._as_postgres = os.geteuid() == 0
        self.base = Path(base_dir or tempfile.mkdtemp(prefix="pgtest-"))
        self.datadir = self.base / "data"
        self.sockdir = self.base / "sock"
        self.logfile = self.base / "postgres.log"
        self.sockdir.mkdir(parents=True, exist_ok=True)
        if self._as_postgres:
            pw = pwd.getpwnam("postgres")
            for path in (self.base, self.sockdir):
                os.chown(path, pw.pw_uid, pw.pw_gid)
            os.chmod(self.base, 0o755)

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        kwargs = {"user": "postgres", "group": "postgres"} if self._as_postgres else {}
        return subprocess.run(args, check=check, capture_output=True, text=True, cwd=self.base, **kwargs)

    def init(self) -> None:
        self._run(str(self.bindir / "initdb"), "-D", str(self.datadir), "-U", "postgres",
                  "--auth=trust", "-E", "UTF8", "--no-sync", "--no-instructions")

    def start(self) -> None:
        options = (f"-p {self.port} -k {self.sockdir} -c listen_addresses=127.0.0.1 "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
        result = self._run(str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-l", str(self.logfile),
                           "-w", "-t", "30", "-o", options, "start", check=False)
        if result.returncode != 0:
            log = self.logfile.read_text() if self.logfile.exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {result.stderr}\n{log[-2000:]}")

    def stop(self, mode: str = "fast") -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", mode, "-w", "stop", check=False)

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)

    def url(self, dbname: str = "postgres", user: str = "postgres", password: str | None = None) -> str:
        auth = f"{user}:{password}" if password else user
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{dbname}"

    def execute(self, statement: str, dbname: str = "postgres") -> None:
        import psycopg

        with psycopg.connect(self.url(dbname), autocommit=True, connect_timeout=5) as conn:
            conn.execute(statement)

    def create_database(self, name: str, owner: str | None = None, password: str | None = None) -> str:
        """Create a database (and its owning role); return its postgresql:// URL."""
        owner = owner or name
        self.execute(f"CREATE ROLE \"{owner}\" LOGIN PASSWORD '{password or owner}'")
        self.execute(f'CREATE DATABASE "{name}" OWNER "{owner}"')
        return self.url(name, owner, password or owner)


class RedisServer:
    """redis-server on a loopback port, no persistence, 64 databases."""

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--databases", "64", "--daemonize", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        import redis

        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        wait_until(lambda: client.ping(), 10, f"redis-server on port {self.port}")
        client.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def client(self, db: int = 0):
        import redis

        return redis.Redis(port=self.port, db=db, decode_responses=True)


@pytest.fixture(scope="module")
def pg_cluster():
    cluster = PostgresCluster()
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture(scope="module")
def redis_server():
    server = RedisServer()
    try:
        server.start()
        yield server
    finally:
        server.stop()
