"""The sandbox fleet as its users rely on it: `botops sandbox.up|status|down` and botops.sandbox.fleet.Fleet.

Most tests share the session fleet (conftest.py). Tests that stop everything or must find
nothing running use their own state directory and base port.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml

from botops.sandbox.fleet import FAMILIES, Fleet, FleetError, process_alive, wait_until

REPO = Path(__file__).resolve().parents[2]
BOTOPS = [str(Path(sys.executable).parent / "botops")]


def invoke(*args: str, state_dir: Path, inventory_dir: Path, env: dict | None = None,
           timeout: float = 180) -> subprocess.CompletedProcess:
    """Run the real CLI against an isolated sandbox."""
    env = {**os.environ, "BOTOPS_SANDBOX_DIR": str(state_dir), "BOTOPS_SANDBOX_INVENTORY": str(inventory_dir),
           **(env or {})}
    return subprocess.run([*BOTOPS, *args], env=env, capture_output=True, text=True, timeout=timeout)


def trade_count(fleet: Fleet, name: str) -> int:
    return fleet.db_query(name, "SELECT count(*) FROM trades")[0][0]


# ----------------------------------------------------------------------------- the shared fleet
def test_fleet_covers_every_family_and_every_bot_is_ready(fleet, fleet_settings):
    bots = fleet.bots()
    assert [b["name"] for b in bots] == [f"bot{i:02d}" for i in range(1, fleet_settings["bots"] + 1)]
    assert {b["family"] for b in bots} == set(FAMILIES)
    fleet.wait_ready(timeout=60)
    for b in bots:
        with urllib.request.urlopen(b["readiness_url"], timeout=5) as response:
            assert response.status == 200, b["name"]


def test_every_bot_trades_into_its_own_database(fleet):
    names = fleet.bot_names()
    before = {n: trade_count(fleet, n) for n in names}
    grew = wait_until(lambda: all(trade_count(fleet, n) > before[n] for n in names), timeout=20)
    assert grew, {n: (before[n], trade_count(fleet, n)) for n in names}
    databases = {fleet.bot(n)["database"]["name"] for n in names}
    assert len(databases) == len(names)


def test_bot_roots_follow_the_host_layout(fleet, fleet_settings):
    for b in fleet.bots():
        root = b["root"]
        for sub in ("releases", "shared/config", "shared/logs", "shared/data", "backups"):
            assert (root / sub).is_dir(), f"{b['name']}: {sub} missing"
        assert os.readlink(root / "current") == "releases/1.0.0"
        assert json.loads((root / "current" / "release.json").read_text())["version"] == "1.0.0"
        config_path = root / "shared" / "config" / "bot.json"
        assert stat.S_IMODE(config_path.stat().st_mode) == 0o600
        config = json.loads(config_path.read_text())
        assert config["name"] == b["name"] and config["family"] == b["family"]
        assert config["ports"] == b["ports"] and config["listen"] == "127.0.0.1"
        assert config["database_url"] == b["database_url"]
        assert config["execution_mode"] == "DRY" and config["paper_trading"] is True
        assert config["trade_interval"] == fleet_settings["trade_interval"]
        family = FAMILIES[b["family"]]
        assert config["paper_only"] is (b["family"] == "papertrader")
        assert (config["api_token"] is not None) is (b["family"] == "hyperliquid")
        assert (config["redis_url"] is not None) is family.redis
        assert config["redis_url"] is None or config["redis_url"].endswith(f"/{b['index']}")


def test_ports_are_deterministic_blocks_from_the_base_port(fleet):
    base = fleet.bot("bot01")["ports"]["api"] - 10
    for b in fleet.bots():
        first = base + 10 * b["index"]
        expected = {"api": first, "health": first + 1} if b["family"] == "mojorust" else {"api": first}
        assert b["ports"] == expected, b["name"]


def test_inventory_describes_the_fleet_for_ansible(fleet):
    hosts = yaml.safe_load(fleet.hosts_file.read_text())
    sandbox = hosts["sandbox"]
    assert sandbox["vars"] == {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                               "botops_sandbox_dir": str(fleet.state_dir),
                               # the reference bot's artifacts: no shipped profile names them
                               "bot_release_artifact": "refbot"}
    assert set(sandbox["children"]) == {"mojorust", "papertrader", "solana_cli", "hyperliquid", "vanta"}
    for b in fleet.bots():
        hv = sandbox["children"][b["group"]]["hosts"][b["name"]]
        assert hv["bot_family"] == b["family"]
        assert hv["bot_root"] == str(b["root"])
        assert hv["bot_listen"] == "127.0.0.1"
        assert hv["bot_ports"] == b["ports"]
        assert hv["bot_database"] == {k: b["database"][k] for k in ("host", "port", "name", "user")}
        assert hv["bot_redis_url"] == b["redis_url"]
        assert hv["bot_service"]["manager"] == "supervisor" and hv["bot_service"]["name"] == b["name"]
        assert hv["bot_service"]["config"] == str(fleet.supervisor_conf)
        assert hv["bot_paper_only"] is b["paper_only"]
        secrets_file = fleet.inventory_dir / "host_vars" / b["name"] / "secrets.yml"
        assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
        secrets = yaml.safe_load(secrets_file.read_text())
        assert secrets["bot_database_password"] == b["database"]["password"]
        assert secrets.get("bot_api_token") == b["api_token"]
    assert b["database"]["password"] not in fleet.hosts_file.read_text()

    # Ansible reads it as the playbooks will: host vars merged with the secrets
    out = subprocess.run([str(Path(sys.executable).parent / "ansible-inventory"), "-i", str(fleet.hosts_file),
                          "--list"], capture_output=True, text=True, check=True, timeout=60)
    hostvars = json.loads(out.stdout)["_meta"]["hostvars"]
    hyper = next(b for b in fleet.bots() if b["family"] == "hyperliquid")
    assert hostvars[hyper["name"]]["bot_api_token"] == hyper["api_token"]
    assert set(hostvars) == set(fleet.bot_names())


def test_second_up_changes_nothing_and_restarts_nothing(fleet, fleet_up_report, fleet_settings):
    assert fleet_up_report["changed"] and fleet_up_report["created"] == fleet.bot_names()
    pids = fleet.pids()
    assert set(pids) == {*fleet.bot_names(), "redis"}
    report = fleet.up(bots=fleet_settings["bots"], trade_interval=fleet_settings["trade_interval"])
    assert report["changed"] is False, report["actions"]
    assert report["started"] == [] and report["restarted"] == [] and report["created"] == []
    assert "nothing to change" in report["summary"]
    assert fleet.pids() == pids


def test_up_starts_a_stopped_bot_and_only_that_one(fleet, fleet_settings):
    fleet.supervisorctl("stop", "bot02", check=True)
    others = {n: p for n, p in fleet.pids().items() if n != "bot02"}
    report = fleet.up(bots=fleet_settings["bots"], trade_interval=fleet_settings["trade_interval"])
    assert report["started"] == ["bot02"] and report["restarted"] == []
    assert any("bot02" in a and "started" in a for a in report["actions"])
    assert fleet.processes()["bot02"]["statename"] == "RUNNING"
    assert fleet.is_live("bot02")
    assert {n: p for n, p in fleet.pids().items() if n != "bot02"} == others


def test_up_refuses_fewer_bots_than_exist(fleet):
    pids = fleet.pids()
    with pytest.raises(FleetError) as err:
        fleet.up(bots=3)
    assert err.value.exit_code == 2
    assert "--bots 3" in str(err.value) and "sandbox.down --purge" in str(err.value)
    assert fleet.pids() == pids


def test_status_has_one_row_per_bot_with_release_state_and_trades(fleet):
    rows = fleet.status()
    assert [r["bot"] for r in rows] == fleet.bot_names()
    for row in rows:
        assert row["family"] == fleet.bot(row["bot"])["family"]
        assert row["release"] == "1.0.0"
        assert row["state"] == "RUNNING"
        assert isinstance(row["trades"], int) and row["trades"] > 0
        assert isinstance(row["open_positions"], int) and row["open_positions"] >= 0

    cli = invoke("sandbox.status", state_dir=fleet.state_dir, inventory_dir=fleet.inventory_dir)
    assert cli.returncode == 0, cli.stderr
    lines = cli.stdout.splitlines()
    assert lines[0].split() == ["bot", "family", "release", "state", "trades", "open", "positions", "kill", "switch"]
    for name, line in zip(fleet.bot_names(), lines[1:]):
        cells = line.split()
        assert cells[0] == name and cells[2] == "1.0.0" and cells[3] == "RUNNING"
        assert int(cells[4]) > 0 and int(cells[5]) >= 0
        assert cells[6] == "-"  # no level engaged


# ----------------------------------------------------------------------------- separate sandboxes
BAD_INPUT = [
    (["--bots", "0"], {}, "--bots must be 1 or more"),
    (["--bots", "-2"], {}, "--bots must be 1 or more"),
    (["--bots", "many"], {}, "--bots must be a whole number"),
    (["--families", "mojorust,dogecoin"], {}, "unknown family 'dogecoin': valid families are mojorust, "
                                              "papertrader, solana-cli, hyperliquid, vanta"),
    (["--trade-interval", "0"], {}, "--trade-interval must be more than 0"),
    (["--base-port", "80"], {}, "--base-port must be between 1024"),
    (["--bots", "2"], {"BOTOPS_PG_BINDIR": "/nonexistent/postgresql/15/bin"},
     "install them with `apt-get install postgresql-15` or run ./scripts/bootstrap"),
]


@pytest.mark.parametrize("args,env,message", BAD_INPUT,
                         ids=[" ".join(a) + (" (no PostgreSQL)" if e else "") for a, e, _ in BAD_INPUT])
def test_bad_input_exits_2_with_a_message_and_starts_nothing(tmp_path, args, env, message):
    state_dir, inventory_dir = tmp_path / "state", tmp_path / "inventory"
    result = invoke("sandbox.up", *args, state_dir=state_dir, inventory_dir=inventory_dir, env=env)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert message in result.stderr
    assert not state_dir.exists() and not inventory_dir.exists()
    assert Fleet(state_dir, inventory_dir).leftover_processes() == {}


def test_a_taken_port_is_named_and_nothing_starts(sandbox_dir, free_port_block):
    state_dir, inventory_dir = sandbox_dir / "state", sandbox_dir / "inventory"
    with free_port_block(2, 28500) as base, socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", base + 20))  # bot02's api port
        squatter.listen()
        result = invoke("sandbox.up", "--bots", "2", "--base-port", str(base),
                        state_dir=state_dir, inventory_dir=inventory_dir)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert f"port {base + 20} (bot02 api) is already in use" in result.stderr
    assert not (state_dir / "state.json").exists()
    assert Fleet(state_dir, inventory_dir).leftover_processes() == {}
    assert not (inventory_dir / "hosts.yml").exists()


def test_down_stops_everything_up_started_and_leaves_no_process(sandbox_dir, free_port_block):
    state_dir, inventory_dir = sandbox_dir / "state", sandbox_dir / "inventory"
    inventory_dir.mkdir()
    (inventory_dir / "README.md").write_text("committed, not generated\n")
    fleet = Fleet(state_dir, inventory_dir)
    with free_port_block(2, 28700) as base:
        up = invoke("sandbox.up", "--bots", "2", "--families", "vanta,mojorust", "--base-port", str(base),
                    state_dir=state_dir, inventory_dir=inventory_dir)
    assert up.returncode == 0, up.stderr
    assert "sandbox is up" in up.stdout
    for b in fleet.bots():  # progress output never shows a secret
        assert b["database"]["password"] not in up.stdout + up.stderr
    assert [b["family"] for b in fleet.bots()] == ["vanta", "mojorust"]

    pids = fleet.service_pids()
    assert set(pids) == {"supervisord", "postgresql", "redis", "bot01", "bot02"}
    assert fleet.leftover_processes()

    down = invoke("sandbox.down", state_dir=state_dir, inventory_dir=inventory_dir)
    assert down.returncode == 0, down.stderr
    assert "no process of it is left" in down.stdout
    assert [name for name, pid in pids.items() if process_alive(pid)] == []
    assert fleet.leftover_processes() == {}
    assert not fleet.pg_running() and not fleet.supervisor_running()
    last = json.loads((fleet.bot_root("bot01") / "shared" / "data" / "last_shutdown.json").read_text())
    assert last["signal"] == "SIGTERM"

    again = invoke("sandbox.down", state_dir=state_dir, inventory_dir=inventory_dir)
    assert again.returncode == 0 and "not up" in again.stdout

    purge = invoke("sandbox.down", "--purge", state_dir=state_dir, inventory_dir=inventory_dir)
    assert purge.returncode == 0, purge.stderr
    assert not state_dir.exists()
    assert sorted(p.name for p in inventory_dir.iterdir()) == ["README.md"]
