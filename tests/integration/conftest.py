"""Integration fixtures: one sandbox fleet shared by the whole session.

The fleet is isolated from the developer's own sandbox: its state directory is a fresh
directory under /tmp (reachable by the ``postgres`` OS user when the tests run as root), its
inventory is a temporary directory and its bots listen from a base port unlikely to clash
(``BOTOPS_TEST_BASE_PORT``, default 28000). It is brought down and purged at session end.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from sandbox.fleet import Fleet

FLEET_BOTS = 6
FLEET_TRADE_INTERVAL = 0.1
FLEET_BASE_PORT = int(os.environ.get("BOTOPS_TEST_BASE_PORT", "28000"))


def make_sandbox_dir(prefix: str) -> Path:
    """A fresh directory under /tmp that other users (the postgres OS user) can traverse."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)  # mkdtemp makes it 0700
    return path


@pytest.fixture(scope="session")
def _fleet_session():
    workdir = make_sandbox_dir("botops-fleet-")
    fleet = Fleet(workdir / "state", workdir / "inventory", base_port=FLEET_BASE_PORT)
    try:
        report = fleet.up(bots=FLEET_BOTS, trade_interval=FLEET_TRADE_INTERVAL)
        yield fleet, report
    finally:
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
def fleet_settings() -> dict:
    """The arguments the shared fleet was brought up with."""
    return {"bots": FLEET_BOTS, "trade_interval": FLEET_TRADE_INTERVAL, "base_port": FLEET_BASE_PORT}


@pytest.fixture
def sandbox_dir():
    """A fresh /tmp directory for a separate sandbox; its fleet is brought down and purged afterwards."""
    workdir = make_sandbox_dir("botops-sbx-")
    yield workdir
    Fleet(workdir / "state", workdir / "inventory").down(purge=True)
    shutil.rmtree(workdir, ignore_errors=True)
