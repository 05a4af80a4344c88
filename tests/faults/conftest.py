"""The fault suite's fleet: one bot per family, its own state, artifacts, locks and ports.

Each fault test leaves the fleet running, ready and released. When one fails half-way (a fault
left in place), the fleet is put back before the next test, so one failure does not cascade.
"""

from __future__ import annotations

import contextlib
import os
import signal

import pytest

from botops.sandbox.fleet import FleetError
from tests.integration.fleet_tasks import invoke, ops_fleet, root

BOTS = ["bot01", "bot02", "bot03", "bot04", "bot05"]  # mojorust, papertrader, solana-cli, hyperliquid, vanta
# below the kernel's ephemeral ports (32768-60999), which client connections may hold at any time
BASE_PORT = int(os.environ.get("BOTOPS_FAULTS_BASE_PORT", "30000"))


@pytest.fixture(scope="module")
def ops():
    """A fleet of five bots (one per family, trade_interval 0.1) that only the fault tests touch."""
    with ops_fleet("botops-faults-", len(BOTS), BASE_PORT) as fleet_ops:
        yield fleet_ops


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture(autouse=True)
def fleet_put_back(request, ops):
    """After a failed fault test: PostgreSQL up, no frozen bot, no lock (every run of the test has
    ended), every kill switch level released, every bot started and ready."""
    yield
    report = getattr(request.node, "report_call", None)
    if report is not None and not report.failed:
        return
    fleet = ops["fleet"]
    fleet.pg_start()
    for pid in fleet.pids().values():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
    locks = [*(ops["dir"] / "locks").glob("*.lock"), *(root(ops, b) / "shared" / "data" / "botops.lock" for b in BOTS)]
    for lock in locks:
        lock.unlink(missing_ok=True)
    invoke(ops, "kill-switch", "--release", "--level=flatten", "--force")
    fleet.supervisorctl("start", "all")
    with contextlib.suppress(FleetError):
        fleet.wait_ready(BOTS, timeout=120)
