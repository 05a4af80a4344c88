"""What the operations tests look at on the shared fleet, and how they put it back.

`trade_counts` / `assert_not_trading` / `wait_trading` read the bots' own ledgers (the `trades`
table) through the fleet fixture. `restore_fleet` is the safety net of every test that engages a
kill switch, stops a bot or changes a mode: it works without the modules under test (direct API
calls, supervisorctl, Redis), so a failing module cannot leave the shared fleet halted.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from botops.sandbox.fleet import wait_until

AUDIT_LOG = Path("shared") / "data" / "botops-kill-switch.log"
ENGAGEMENTS = Path("shared") / "data" / "botops-kill-switch.json"  # what an operator engaged, on the bot's host


@pytest.fixture
def venv_on_path(monkeypatch):
    """ansible-runner starts `ansible-playbook` from PATH: the one beside this Python."""
    bindir = os.path.dirname(sys.executable)
    if os.environ.get("PATH", "").split(os.pathsep)[0] != bindir:
        monkeypatch.setenv("PATH", bindir + os.pathsep + os.environ.get("PATH", ""))


def trade_counts(fleet, names):
    return {n: fleet.db_query(n, "SELECT count(*) FROM trades")[0][0] for n in names}


def assert_not_trading(fleet, names, window=1.0):
    """No bot writes a trade for `window` seconds (10 ticks of the shared fleet's 0.1 s)."""
    before = trade_counts(fleet, names)
    deadline = time.monotonic() + window
    while time.monotonic() < deadline:
        now = trade_counts(fleet, names)
        moved = {n: now[n] - before[n] for n in names if now[n] != before[n]}
        assert not moved, f"trades still written while halted: {moved}"
        time.sleep(0.1)


def wait_trading(fleet, names, timeout=30.0):
    """Every bot writes new trades again (polled)."""
    before = trade_counts(fleet, names)
    pending = set(names)

    def grew():
        now = trade_counts(fleet, pending)
        pending.difference_update(n for n in list(pending) if now[n] > before[n])
        return not pending

    assert wait_until(grew, timeout), f"no new trades within {timeout:.0f}s: {sorted(pending)}"


def _http(port, method, path, body=None, token=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=3)
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
        return resp.status, (json.loads(raw) if raw else None)
    except (OSError, http.client.HTTPException, ValueError):
        return None, None
    finally:
        conn.close()


def _redis(url, *args):
    return subprocess.run(["redis-cli", "-u", url, "--no-auth-warning", *args], capture_output=True, text=True,
                          timeout=10).stdout.strip()


def restore_fleet(fleet, names=None):
    """Every bot running, no kill switch engaged, DRY and paper; waits until all are ready.

    Also removes the kill-switch audit logs and engagement records the tests wrote in the bots' roots."""
    names = list(names or fleet.bot_names())
    stopped = [n for n in names if fleet.processes().get(n, {}).get("statename") != "RUNNING"]
    if stopped:
        fleet.supervisorctl("start", *stopped)
    fleet.wait_ready(names, timeout=60)
    restart = []
    for name in names:
        b = fleet.bot(name)
        api = b["ports"]["api"]
        if b["family"] == "hyperliquid":
            _, doc = _http(api, "GET", "/api/health")
            if doc and doc.get("circuit_breaker") == "open":
                _http(api, "POST", "/api/emergency/circuit-breaker/reset", {}, b["api_token"])
        elif b["family"] == "vanta":
            raw = _redis(b["redis_url"], "GET", "exec_mode")
            value = json.loads(raw) if raw else {}
            want = dict(value, mode="DRY", paper=True, emergency_stop=False)
            if value != want:
                _redis(b["redis_url"], "SET", "exec_mode", json.dumps(want))
        elif b["family"] == "papertrader":
            _, doc = _http(api, "GET", "/api/health/detailed")
            trading = (doc or {}).get("trading") or {}
            if trading.get("maintenance"):
                _http(api, "POST", "/api/maintenance/disable", {})
            if trading.get("emergencyStop"):
                restart.append(name)
        elif b["family"] == "solana-cli":
            _, doc = _http(api, "GET", "/api/status")
            if ((doc or {}).get("risk") or {}).get("killSwitchActive"):
                restart.append(name)
        (Path(b["root"]) / AUDIT_LOG).unlink(missing_ok=True)
        (Path(b["root"]) / ENGAGEMENTS).unlink(missing_ok=True)
    if restart:
        fleet.supervisorctl("restart", *restart)
    fleet.wait_ready(names, timeout=60)
