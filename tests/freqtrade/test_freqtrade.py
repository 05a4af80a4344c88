"""Every botops capability on real Freqtrade bots, by the shipped profile and an inventory alone.

The bots are `freqtrade trade` 2026.9 in dry-run under supervisord (botops/sandbox/freqtrade.py), each
with its SQLite trade database, trading against the loopback exchange stand-in. What is asserted
is read from the bots themselves: their REST API, their database file, their processes and their
config, never from botops' report. The tests run in file order on one fleet (module scope).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from tests.freqtrade.conftest import BOTOPS, REPO

pytestmark = [pytest.mark.freqtrade]
OUTPUTS: list[str] = []


def invoke(fleet, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    cmd = [str(BOTOPS), *args, f"--inventory={fleet.inventory}"]
    proc = subprocess.run(cmd, env=fleet.env, capture_output=True, text=True, timeout=timeout)
    OUTPUTS.append(proc.stdout + proc.stderr)
    return proc


def output(proc) -> str:
    return proc.stdout + proc.stderr


def api(fleet, name, path, method="GET", body=None):
    status, doc = fleet.api(name, method, path, body)
    assert status == 200, f"{name}: {method} {path} answered HTTP {status}: {doc}"
    return doc


def state(fleet, name) -> str:
    return api(fleet, name, "/api/v1/show_config")["state"]


def wait(predicate, what: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError, ValueError, KeyError, AssertionError):
            value = predicate()
            if value:
                return value
        assert time.monotonic() < deadline, f"{what}: not within {timeout:.0f}s"
        time.sleep(0.25)


def db_rows(fleet, name, sql="SELECT count(*) FROM trades") -> int:
    """From the bot's own SQLite file (a read-write connection: a read-only one leaves -wal/-shm behind)."""
    with contextlib.closing(sqlite3.connect(fleet.database(name), timeout=10)) as conn:
        return conn.execute(sql).fetchone()[0]


def open_trades(fleet, name) -> int:
    return len(api(fleet, name, "/api/v1/status"))


def bot_config(fleet, name) -> dict:
    return json.loads((fleet.root(name) / "shared" / "config.json").read_text())


def pids(fleet, name) -> list[int]:
    pattern = re.compile(fleet.process_match(name))
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                if pattern.search(cmdline):
                    found.append(int(entry))
    return found


def supervisor_log(fleet) -> str:
    return (fleet.dir / "supervisor" / "supervisord.log").read_text()


def test_status_reads_every_fact_from_each_bot(ft_fleet):
    for name in ft_fleet.names:  # the bots trade: the probe strategy opens a trade per pair
        wait(lambda n=name: open_trades(ft_fleet, n) > 0, f"{name} opens trades")
    proc = invoke(ft_fleet, "status")
    assert proc.returncode == 0, output(proc)
    for name in ft_fleet.names:
        line = next(ln for ln in proc.stdout.splitlines() if re.match(rf"\s*{name}\s", ln))
        config = api(ft_fleet, name, "/api/v1/show_config")
        assert config["strategy_version"] == "1.0.0" and config["dry_run"] is True
        assert "1.0.0" in line and "DRY" in line, line
        assert re.search(rf"\b{open_trades(ft_fleet, name)}\b", line), line
    stats = json.loads(subprocess.run(["curl", "-s", f"http://127.0.0.1:{ft_fleet.exchange_port}/_stats"],
                                      capture_output=True, text=True).stdout or "{}")
    assert stats.get("/api/v3/klines", 0) > 0, f"the bots never asked the exchange stand-in for candles: {stats}"


def test_pause_persists_across_a_restart_behind_botops_back_and_releases(ft_fleet):
    proc = invoke(ft_fleet, "kill-switch", "--level=pause", "--reason=freqtrade tier: pause", "--limit=ft1")
    assert proc.returncode == 0, output(proc)
    assert state(ft_fleet, "ft1") == "paused"
    assert bot_config(ft_fleet, "ft1")["initial_state"] == "paused"
    before = pids(ft_fleet, "ft1")
    ft_fleet.ctl("restart", "ft1", check=True)  # a crash, an operator's supervisorctl: not botops
    wait(lambda: pids(ft_fleet, "ft1") and pids(ft_fleet, "ft1") != before and ft_fleet.ready("ft1"),
         "ft1 back after its restart", timeout=120)
    assert state(ft_fleet, "ft1") == "paused", "the pause did not survive the restart"

    proc = invoke(ft_fleet, "kill-switch", "--release", "--level=pause", "--limit=ft1")
    assert proc.returncode == 0, output(proc)
    assert state(ft_fleet, "ft1") == "running"
    assert bot_config(ft_fleet, "ft1")["initial_state"] == "running"


def test_halt_stops_trading_and_flatten_exits_every_trade(ft_fleet):
    proc = invoke(ft_fleet, "kill-switch", "--level=halt", "--reason=freqtrade tier: halt", "--limit=ft2")
    assert proc.returncode == 0, output(proc)
    assert state(ft_fleet, "ft2") == "stopped"

    assert open_trades(ft_fleet, "ft3") > 0
    proc = invoke(ft_fleet, "kill-switch", "--level=flatten", "--reason=freqtrade tier: flatten", "--limit=ft3")
    assert proc.returncode == 0, output(proc)
    assert state(ft_fleet, "ft3") == "stopped"
    assert open_trades(ft_fleet, "ft3") == 0
    assert db_rows(ft_fleet, "ft3", "SELECT count(*) FROM trades WHERE is_open = 1") == 0
    assert db_rows(ft_fleet, "ft3", "SELECT count(*) FROM trades WHERE is_open = 0") > 0, "no trade was exited"

    proc = invoke(ft_fleet, "status", "--limit=ft2,ft3")
    assert proc.returncode == 0, output(proc)
    assert re.search(r"ft2\s.*\bhalt\b", proc.stdout) and re.search(r"ft3\s.*\bflatten\b", proc.stdout), proc.stdout

    for name, level in (("ft2", "halt"), ("ft3", "flatten")):
        proc = invoke(ft_fleet, "kill-switch", "--release", f"--level={level}", f"--limit={name}")
        assert proc.returncode == 0, output(proc)
    for name in ("ft2", "ft3"):
        assert state(ft_fleet, name) == "running"
    wait(lambda: open_trades(ft_fleet, "ft3") > 0, "ft3 trades again after the release")


def test_a_frozen_bot_is_thawed_before_sigterm_and_exits_cleanly(ft_fleet):
    frozen = pids(ft_fleet, "ft1")
    assert frozen
    for pid in frozen:
        os.kill(pid, signal.SIGSTOP)
    try:
        proc = invoke(ft_fleet, "kill-switch", "--level=halt", "--reason=freqtrade tier: frozen", "--limit=ft1")
    finally:
        for pid in frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    assert proc.returncode == 0, output(proc)
    assert not pids(ft_fleet, "ft1"), "the frozen bot is still there"
    # thawed first, it exited on the service manager's SIGTERM, not on SIGKILL at the stop timeout
    assert re.search(r"stopped: ft1 \(", supervisor_log(ft_fleet)), supervisor_log(ft_fleet)[-2000:]
    assert not re.search(r"ft1 .*terminated by SIGKILL", supervisor_log(ft_fleet)), "it took SIGKILL"

    proc = invoke(ft_fleet, "kill-switch", "--release", "--level=halt", "--limit=ft1")
    assert proc.returncode == 0, output(proc)
    wait(lambda: ft_fleet.ready("ft1"), "ft1 started again by the release", timeout=120)
    assert state(ft_fleet, "ft1") == "running"


def test_emergency_stop_halts_and_writes_the_incident_bundle(ft_fleet):
    proc = invoke(ft_fleet, "emergency-stop", "--reason=freqtrade tier: emergency", "--limit=ft2")
    assert proc.returncode == 0, output(proc)
    assert state(ft_fleet, "ft2") == "stopped"
    bundle = next(Path(m) for m in re.findall(r"(/\S+\.tar\.gz)", output(proc)) if Path(m).exists())
    import tarfile
    with tarfile.open(bundle) as tar:
        names = tar.getnames()
    assert any("ft2" in n for n in names), names
    proc = invoke(ft_fleet, "kill-switch", "--release", "--limit=ft2")
    assert proc.returncode == 0, output(proc)
    assert state(ft_fleet, "ft2") == "running"


def _stray(directory: Path) -> list[str]:
    return sorted(str(p) for p in directory.rglob("*") if re.search(r"(-wal|-shm|-journal|\.part|\.restore-.*)$", p.name))


def test_backup_verify_test_restore_and_restore_keep_every_row(ft_fleet):
    proc = invoke(ft_fleet, "kill-switch", "--level=halt", "--reason=freqtrade tier: freeze for a restore",
                  "--limit=ft2")
    assert proc.returncode == 0, output(proc)
    proc = invoke(ft_fleet, "backup", "--limit=ft2", "--label=tier")
    assert proc.returncode == 0, output(proc)
    backups = ft_fleet.root("ft2") / "backups"
    manifest = json.loads(sorted(backups.glob("*/manifest.json"))[-1].read_text())
    counts = manifest["database"]["row_counts"]
    assert counts["trades"] == db_rows(ft_fleet, "ft2") > 0
    assert _stray(backups) == [], "the backup set holds SQLite's stray files"

    for extra in ("--verify", "--test-restore"):
        proc = invoke(ft_fleet, "backups", extra, "--limit=ft2")
        assert proc.returncode == 0, output(proc)
    assert _stray(backups) == []

    proc = invoke(ft_fleet, "restore", "--backup=latest", "--limit=ft2", "--override-kill-switch")
    assert proc.returncode == 0, output(proc)
    for table, count in counts.items():
        assert db_rows(ft_fleet, "ft2", f"SELECT count(*) FROM {table}") == count, table
    assert state(ft_fleet, "ft2") == "stopped", "the restore lifted the operator's halt"
    # the running bot's own -wal / -shm are its SQLite's; botops' scratch copies and their companions are not
    left = [p.name for p in (ft_fleet.root("ft2") / "shared").iterdir()
            if re.search(r"\.restore-|\.part|\.pre-restore-.*-(wal|shm|journal)$", p.name)]
    assert left == [], f"the restore left files beside the database: {left}"
    with contextlib.closing(sqlite3.connect(ft_fleet.database("ft2"))) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    proc = invoke(ft_fleet, "kill-switch", "--release", "--limit=ft2")
    assert proc.returncode == 0, output(proc)


def test_restart_keeps_a_dry_run_bot_dry_and_says_how(ft_fleet):
    before = pids(ft_fleet, "ft3")
    proc = invoke(ft_fleet, "restart", "--limit=ft3")
    assert proc.returncode == 0, output(proc)
    assert pids(ft_fleet, "ft3") and pids(ft_fleet, "ft3") != before
    config = api(ft_fleet, "ft3", "/api/v1/show_config")
    assert config["dry_run"] is True and config["runmode"] == "dry_run" and config["state"] == "running"


def test_deploy_rollback_and_a_canary_that_catches_a_broken_strategy(ft_fleet):
    proc = invoke(ft_fleet, "deploy", "--version=1.1.0", f"--artifacts={ft_fleet.artifacts}")
    assert proc.returncode == 0, output(proc)
    for name in ft_fleet.names:
        assert api(ft_fleet, name, "/api/v1/show_config")["strategy_version"] == "1.1.0"
        assert os.readlink(ft_fleet.root(name) / "current").endswith("1.1.0")

    proc = invoke(ft_fleet, "rollback", "--target=latest")
    assert proc.returncode == 0, output(proc)
    for name in ft_fleet.names:
        assert api(ft_fleet, name, "/api/v1/show_config")["strategy_version"] == "1.0.0"

    proc = invoke(ft_fleet, "deploy", "--version=1.2.0", f"--artifacts={ft_fleet.artifacts}")
    assert proc.returncode != 0, output(proc)
    for name in ft_fleet.names:  # the canary failed and was reverted; the others never got it
        wait(lambda n=name: ft_fleet.ready(n), f"{name} ready after the failed deploy", timeout=120)
        assert api(ft_fleet, name, "/api/v1/show_config")["strategy_version"] == "1.0.0"
        assert os.readlink(ft_fleet.root(name) / "current").endswith("1.0.0")


def test_a_maintenance_window_backs_up_and_restarts(ft_fleet):
    backups = ft_fleet.root("ft1") / "backups"
    sets = len(list(backups.glob("*/manifest.json")))
    before = pids(ft_fleet, "ft1")
    proc = invoke(ft_fleet, "maintenance", "--window=weekly", "--force", "--limit=ft1")
    assert proc.returncode == 0, output(proc)
    assert len(list(backups.glob("*/manifest.json"))) == sets + 1
    assert pids(ft_fleet, "ft1") != before
    wait(lambda: ft_fleet.ready("ft1"), "ft1 ready after the window")
    assert state(ft_fleet, "ft1") == "running"


def test_promote_to_live_is_refused_for_a_dry_run_bot(ft_fleet):
    proc = invoke(ft_fleet, "promote", "--to=live", "--limit=ft1")
    assert proc.returncode != 0, output(proc)
    config = api(ft_fleet, "ft1", "/api/v1/show_config")
    assert config["dry_run"] is True and bot_config(ft_fleet, "ft1")["dry_run"] is True


def test_no_secret_reaches_output_or_artifacts(ft_fleet):
    secrets = [p["password"] for p in ft_fleet.passwords.values()] + [p["jwt"] for p in ft_fleet.passwords.values()]
    for text in OUTPUTS:
        for secret in secrets:
            assert secret not in text
    runs = Path(ft_fleet.env["BOTOPS_ARTIFACTS_DIR"])
    for path in [p for p in runs.rglob("*") if p.is_file()]:
        raw = path.read_bytes()
        for secret in secrets:
            assert secret.encode() not in raw, f"a secret in {path}"
    for name in ft_fleet.names:  # and not in the backup sets (the password lives in the environment)
        for path in [p for p in (ft_fleet.root(name) / "backups").rglob("*") if p.is_file()]:
            raw = path.read_bytes()
            assert all(s.encode() not in raw for s in secrets), f"a secret in {path}"
