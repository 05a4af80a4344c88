"""The packed bench fleet (bench/fleet.py): many reference bots per process, each one a whole bot.

A small packed fleet of its own (10 bots, 2 per process, one family per process, in-memory
ledger) checks that a packed bot is a bot like any other - its own ports, kill switches, log and
last_shutdown.json - and that `botops kill-switch`'s playbook halts and releases it through the
same profiles: the mojorust processes are stopped once for both of their bots, the papertrader
and solana-cli processes restarted once on release (bots behind one service share one operation).
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

# slow tier: the packed fleet exists for the benchmarks
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bench.fleet import PackedFleet  # noqa: E402
from botops.runner import PlaybookRun  # noqa: E402

try:  # tests/integration as a package or as a plain directory on sys.path
    from .conftest import make_sandbox_dir
except ImportError:
    from conftest import make_sandbox_dir

BASE_PORTS = (15000, 16000, 17000, 13000)


def http(port, path, method="GET", token=None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method, data=b"{}" if method == "POST" else None)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=3) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


@pytest.fixture(scope="module")
def packed():
    work = make_sandbox_dir("botops-packed-")
    fleet = PackedFleet(work / "state", work / "inventory")
    try:
        fleet.up(bots=10, per_process=2, trade_interval=0.1, base_ports=BASE_PORTS)
        yield fleet
    finally:
        fleet.down(purge=True)


def state(fleet):
    return json.loads(fleet.state_file.read_text())


def test_one_family_per_process_each_bot_its_own_ports_kill_switch_and_log(packed):
    st = state(packed)
    assert len(st["packs"]) == 5
    for names in st["packs"].values():
        assert len(names) == 2 and len({st["bots"][n]["family"] for n in names}) == 1
    pids = packed.pack_pids()
    assert len(set(pids.values())) == 5
    pack = next(p for p, names in st["packs"].items() if st["bots"][names[0]]["family"] == "papertrader")
    one, other = (st["bots"][n] for n in st["packs"][pack])
    status, body = http(one["ports"]["api"], "/api/emergency/stop-all-trading", "POST")
    assert status == 200 and body["emergencyStop"] is True
    assert http(one["ports"]["api"], "/api/health/detailed")[1]["trading"]["state"] == "stopped"
    assert http(other["ports"]["api"], "/api/health/detailed")[1]["trading"]["state"] == "active"
    first, second = st["packs"][pack]
    log = (packed.bot_root(first) / "shared" / "logs" / "bot.log").read_text()
    assert "stop-all-trading via API" in log and f"for bot {first} " in log and f"for bot {second} " not in log
    assert "stop-all-trading" not in (packed.bot_root(second) / "shared" / "logs" / "bot.log").read_text()

    # SIGTERM: every bot of the process shuts down gracefully and writes its own last_shutdown.json
    before = time.time()
    os.kill(pids[pack], signal.SIGTERM)
    deadline = time.monotonic() + 30
    while packed.processes()[pack]["statename"] == "RUNNING" and time.monotonic() < deadline:
        time.sleep(0.1)
    for name in st["packs"][pack]:
        shutdown = json.loads((packed.bot_root(name) / "shared" / "data" / "last_shutdown.json").read_text())
        assert shutdown["name"] == name and shutdown["signal"] == "SIGTERM" and shutdown["clean"] is True
        assert os.path.getmtime(packed.bot_root(name) / "shared" / "data" / "last_shutdown.json") >= before
    assert packed.processes()[pack]["statename"] == "EXITED"
    assert packed.start_stopped_packs() == [pack]


def run_kill_switch(packed, tmp_path, limit=None, **extravars):
    os.environ["BOTOPS_ARTIFACTS_DIR"] = str(tmp_path / "artifacts")
    try:
        run = PlaybookRun("kill_switch.yml", inventory=str(packed.hosts_file), progress=lambda *a: None,
                          limit=limit, extravars={"botops_who": "tester", **extravars})
        return run.run()
    finally:
        del os.environ["BOTOPS_ARTIFACTS_DIR"]


def supervisor_log_count(packed, pattern):
    return len(re.findall(pattern, (packed.supervisor_dir / "supervisord.log").read_text()))


def test_kill_switch_playbook_halts_and_releases_packed_bots(packed, tmp_path):
    st = state(packed)
    families = {p: st["bots"][names[0]]["family"] for p, names in st["packs"].items()}
    mojorust = next(p for p, f in families.items() if f == "mojorust")
    papertrader = next(p for p, f in families.items() if f == "papertrader")

    halted = run_kill_switch(packed, tmp_path, botops_kill_state="engaged", botops_kill_level="halt",
                             botops_reason="packed fleet test")
    assert halted.exit_code == 0, halted.error
    report = halted.report
    assert sorted(report) == sorted(st["bots"])
    # a bot of a process another bot's ladder already stopped may find itself halted: ok, not changed
    assert all(r["result"] in ("changed", "ok") and r["level"] == "halt" for r in report.values()), report
    assert all(any(report[n]["result"] == "changed" for n in names) for names in st["packs"].values())
    assert {report[n]["rung"] for n in st["packs"][mojorust]} <= {"service stop", None}
    assert packed.processes()[mojorust]["statename"] == "STOPPED"
    assert supervisor_log_count(packed, rf"stopped: {mojorust} ") == 1, "one stop for both bots of the process"
    for name in st["packs"][papertrader]:
        assert http(st["bots"][name]["ports"]["api"], "/api/health/detailed")[1]["trading"]["emergencyStop"] is True

    again = run_kill_switch(packed, tmp_path, botops_kill_state="engaged", botops_kill_level="halt",
                            botops_reason="packed fleet test")
    assert again.exit_code == 0 and all(r["result"] == "ok" for r in again.report.values()), again.report

    restarts = supervisor_log_count(packed, rf"stopped: {papertrader} ")
    released = run_kill_switch(packed, tmp_path, botops_kill_state="released", botops_kill_level="halt")
    assert released.exit_code == 0, released.error
    report = released.report
    assert all(r["result"] in ("changed", "ok") and r["level"] is None for r in report.values()), report
    assert all(any(report[n]["result"] == "changed" for n in names) for names in st["packs"].values())
    assert supervisor_log_count(packed, rf"stopped: {papertrader} ") == restarts + 1, "one restart for both bots"
    assert packed.processes()[mojorust]["statename"] == "RUNNING"
    packed.wait_ready(timeout=30)
    for name in st["packs"][papertrader]:
        assert http(st["bots"][name]["ports"]["api"], "/api/health/detailed")[1]["trading"]["state"] == "active"


def test_a_failed_bot_is_the_only_one_failed(packed, tmp_path):
    """A release refused on one bot fails that bot alone; the others end as done (no per-host work)."""
    st = state(packed)
    pack = next(p for p, names in st["packs"].items() if st["bots"][names[0]]["family"] == "papertrader")
    flattened, sibling = st["packs"][pack]
    try:
        # halt, not flatten: a packed bot's ledger is in memory, so a flatten that stops it cannot be
        # verified flat afterwards (no database to read), and is rightly reported failed
        flat = run_kill_switch(packed, tmp_path, limit=flattened, botops_kill_state="engaged",
                               botops_kill_level="halt", botops_reason="packed fleet failure test")
        assert flat.exit_code == 0 and flat.report[flattened]["level"] == "halt", flat.report

        released = run_kill_switch(packed, tmp_path, botops_kill_state="released", botops_kill_level="pause")
        assert released.exit_code == 1
        assert released.failed_hosts == [flattened], released.failed_hosts
        report = released.report
        assert report[flattened]["result"] == "failed" and "Refused to release" in report[flattened]["message"]
        assert all(r["result"] in ("ok", "changed") for n, r in report.items() if n != flattened), report
    finally:
        cleanup = run_kill_switch(packed, tmp_path, botops_kill_state="released", botops_kill_level="flatten",
                                  botops_force=True)
        assert all(r["result"] in ("ok", "changed") for r in cleanup.report.values()), cleanup.report
        assert cleanup.exit_code == 0, cleanup.report
        packed.start_stopped_packs()
        packed.wait_ready(timeout=60)
