"""The fault suite's fleet: one bot per family, its own state, artifacts, locks and ports."""

from __future__ import annotations

import os

import pytest

from tests.integration.fleet_tasks import ops_fleet

BOTS = ["bot01", "bot02", "bot03", "bot04", "bot05"]  # mojorust, papertrader, solana-cli, hyperliquid, vanta
# below the kernel's ephemeral ports (32768-60999), which client connections may hold at any time
BASE_PORT = int(os.environ.get("BOTOPS_FAULTS_BASE_PORT", "30000"))


@pytest.fixture(scope="module")
def ops():
    """A fleet of five bots (one per family, trade_interval 0.1) that only the fault tests touch."""
    with ops_fleet("botops-faults-", len(BOTS), BASE_PORT) as fleet_ops:
        yield fleet_ops
