"""The Freqtrade tier: real, unmodified Freqtrade bots in dry-run, operated by botops with the shipped
`profiles/freqtrade.yml` and an inventory alone (botops/sandbox/freqtrade.py builds them).

Freqtrade comes from PyPI into a cached virtualenv of its own (about 770 MB, once); the bots trade
against the loopback exchange stand-in (botops/sandbox/exchange.py). Run with `-m freqtrade`. The tier is
skipped, saying why, when Freqtrade cannot be installed (no PyPI) or its ports are taken.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

from botops.sandbox.fleet import port_in_use
from botops.sandbox.freqtrade import FreqtradeError, FreqtradeFleet, ensure_venv

REPO = Path(__file__).resolve().parents[2]
BOTOPS = Path(sys.executable).with_name("botops")
BASE_PORT = int(os.environ.get("BOTOPS_FREQTRADE_BASE_PORT", "25000"))
BOTS = 3


@pytest.fixture(scope="session")
def freqtrade_program() -> Path:
    try:
        return ensure_venv()
    except FreqtradeError as exc:
        pytest.skip(f"the Freqtrade tier needs freqtrade from PyPI, which could not be installed: {exc}")


@pytest.fixture(scope="module")
def ft_fleet(freqtrade_program):
    taken = [p for p in range(BASE_PORT, BASE_PORT + BOTS + 1) if port_in_use(p)]
    if taken:
        pytest.skip(f"the Freqtrade tier's ports are taken: {taken} (set BOTOPS_FREQTRADE_BASE_PORT)")
    workdir = Path(tempfile.mkdtemp(prefix="botops-freqtrade-"))
    fleet = FreqtradeFleet(workdir / "fleet", bots=BOTS, base_port=BASE_PORT, freqtrade=freqtrade_program)
    try:
        fleet.up(log=lambda _msg: None)
        fleet.env = dict(os.environ, BOTOPS_ARTIFACTS_DIR=str(workdir / "runs"), BOTOPS_LOCK_DIR=str(workdir / "locks"),
                         BOTOPS_INVENTORY=str(fleet.inventory))
        fleet.env.pop("BOTOPS_PROFILES_DIR", None)
        yield fleet
    finally:
        fleet.down()
        shutil.rmtree(workdir, ignore_errors=True)
