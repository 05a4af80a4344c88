"""Integration fixtures: one sandbox fleet shared by the whole session.

The fleet is isolated from the developer's own sandbox: its state directory is a fresh
directory under /tmp (reachable by the ``postgres`` OS user when the tests run as root), its
inventory is a temporary directory and its bots listen in a port block unlikely to clash
(from ``BOTOPS_TEST_BASE_PORT``, default 28000). It is brought down and purged at session end.

Test sessions may run side by side on one machine: a fleet is brought up while holding a
machine-wide lock, in the first port block that is free, so two sessions never race for ports.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from botops.sandbox.fleet import PORT_BLOCK, Fleet, port_in_use

FLEET_BOTS = 6
FLEET_TRADE_INTERVAL = 0.1
FLEET_BASE_PORT = int(os.environ.get("BOTOPS_TEST_BASE_PORT", "28000"))
PORT_LOCK = Path(tempfile.gettempdir()) / "botops-test-sandbox-ports.lock"


def make_sandbox_dir(prefix: str) -> Path:
    """A fresh directory under /tmp that other users (the postgres OS user) can traverse."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)  # mkdtemp makes it 0700
    return path


@contextlib.contextmanager
def port_block(bots: int, start: int):
    """Yield a base port whose bot ports are all free, holding the lock until the body has bound them."""
    with open(PORT_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for base in range(start, 60000, 500):
            ports = range(base + PORT_BLOCK, base + PORT_BLOCK * (bots + 1))
            if not any(port_in_use(p) for p in ports):
                yield base
                return
        raise RuntimeError(f"no free block of {bots} bot port ranges from port {start}")


@pytest.fixture(scope="session")
def _fleet_session():
    workdir = make_sandbox_dir("botops-fleet-")
    fleet = None
    try:
        with port_block(FLEET_BOTS, FLEET_BASE_PORT) as base:
            fleet = Fleet(workdir / "state", workdir / "inventory", base_port=base)
            report = fleet.up(bots=FLEET_BOTS, trade_interval=FLEET_TRADE_INTERVAL)
        yield fleet, report
    finally:
        if fleet is not None:
            fleet.down(purge=True)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def fleet(_fleet_session) -> Fleet:
    """The shared sandbox fleet: 6 bots (every family), trade_interval 0.1, up for the whole session."""
    return _fleet_session[0]


@pytest.fixture(scope="session")
def fleet_up_report(_fleet_session) -> dict:
    """What the first ``up`` of the shared fleet reported."""
    return _fleet_session[1]


@pytest.fixture(scope="session")
def fleet_settings(_fleet_session) -> dict:
    """The arguments the shared fleet was brought up with."""
    return {"bots": FLEET_BOTS, "trade_interval": FLEET_TRADE_INTERVAL,
            "base_port": _fleet_session[0].bot("bot01")["ports"]["api"] - PORT_BLOCK}


@pytest.fixture
def sandbox_dir():
    """A fresh /tmp directory for a separate sandbox; its fleet is brought down and purged afterwards."""
    workdir = make_sandbox_dir("botops-sbx-")
    yield workdir
    Fleet(workdir / "state", workdir / "inventory").down(purge=True)
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def free_port_block():
    """``with free_port_block(bots, start) as base:`` a base port whose bot ports are free (see port_block)."""
    return port_block


@pytest.fixture(scope="module")
def webhook():
    """A local webhook that keeps what it is posted (JSON bodies, in order): server.received."""
    received = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    server.received = received
    yield server
    server.shutdown()
    server.server_close()
