"""The bots of one remote bench host, run by that host's unprivileged user (bench/remote_fleet.py).

    python remote_host.py packed STATE_DIR ADDRESS BASE_PORT FAMILY BOTS TRADE_INTERVAL  -> facts as JSON
    python remote_host.py real STATE_DIR ADDRESS BASE_PORT FAMILY BOTS TRADE_INTERVAL    -> facts as JSON
    python remote_host.py down STATE_DIR

``packed``: one reference bot process serves all the host's bots (bench/fleet.py's PackedFleet:
in-memory ledger, no PostgreSQL), under the host user's own supervisord, with the host's own Redis;
the bots' APIs and the Redis listen on the host's address, on the same ports on every host.

``real``: one process and one PostgreSQL database per bot (botops.sandbox.fleet.Fleet, the host's
own PostgreSQL cluster, Redis and supervisord), for the deploy: a packed bot shares its process and
release with its host's other bots, so it cannot be deployed alone. The fleet comes up on
127.0.0.1 (where Fleet checks readiness) on ports of its own, then each bot moves to the host's
address, as tests/ssh/host_fleet.py does.

Runs with the hosts' Python (a virtualenv of the system interpreter, tests/ssh/conftest.py's).
"""

from __future__ import annotations

import http.client
import json
import sys
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

if not hasattr(tarfile, "data_filter"):  # Python < 3.11.4 (Debian 12's 3.11.2): no extraction filters
    _extractall = tarfile.TarFile.extractall

    def _extractall_without_filter(self, path=".", members=None, *, numeric_owner=False, filter=None):
        return _extractall(self, path, members, numeric_owner=numeric_owner)  # our own artifacts only

    tarfile.TarFile.extractall = _extractall_without_filter

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.fleet import PackedFleet  # noqa: E402
from botops.sandbox.fleet import FAMILIES, LISTEN, Fleet, FleetError  # noqa: E402


def http_status(address: str, port: int, path: str, timeout: float = 1.0) -> int | None:
    conn = http.client.HTTPConnection(address, port, timeout=timeout)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


class HostPackedFleet(PackedFleet):
    """A PackedFleet whose bots and Redis listen on the host's address (fixed ports: one host each)."""

    def __init__(self, *args, address: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.address = address

    def _plan_packed(self, count, per_process, rotation, interval, base_ports=()):
        state = super()._plan_packed(count, per_process, rotation, interval, base_ports)
        state["redis"]["port"] = state["base_port"] + 2 * count + 1  # in the block, on the host's address
        state["address"] = self.address
        return state

    def _write_bots(self, state: dict) -> None:
        super()._write_bots(state)
        for name, spec in state["bots"].items():
            path = self.bot_root(name) / "shared" / "config" / "bot.json"
            config = json.loads(path.read_text())
            config["listen"] = self.address
            if config.get("redis_url"):
                config["redis_url"] = self.redis_url(state, spec)
            path.write_text(json.dumps(config, indent=2) + "\n")

    def redis_url(self, state: dict, spec: dict) -> str | None:
        if spec.get("redis_db") is None or not FAMILIES[spec["family"]].redis:
            return None
        return f"redis://{self.address}:{state['redis']['port']}/{spec['redis_db']}"

    def _redis_conf(self, state: dict) -> str:
        return super()._redis_conf(state).replace(f"bind {LISTEN}\n", f"bind {self.address}\n")

    def _wait_redis(self, state: dict, timeout: float = 30) -> None:
        import redis

        client = redis.Redis(host=self.address, port=state["redis"]["port"], socket_timeout=1,
                             socket_connect_timeout=1)
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    if client.ping():
                        return
                except redis.RedisError:
                    pass
                if time.monotonic() >= deadline:
                    raise FleetError(f"redis did not answer PING on {self.address}:{state['redis']['port']} "
                                     f"within {timeout:.0f}s")
                time.sleep(0.05)
        finally:
            client.close()

    def _wait_packed(self, state: dict, timeout: float) -> None:
        pending = dict(state["bots"])
        deadline = time.monotonic() + timeout
        while True:
            procs = self.processes()
            dead = [p for p in state["packs"] if procs.get(p, {}).get("statename") in ("FATAL", "EXITED")]
            if dead:
                raise FleetError(f"packs exited: {', '.join(dead)}; see {self.packs_dir}/<pack>.err.log")
            for name, spec in list(pending.items()):
                port, path = self._readiness_url(spec)
                if http_status(self.address, port, path, timeout=2) == 200:
                    pending.pop(name)
            starting = [p for p in state["packs"] if procs.get(p, {}).get("statename") != "RUNNING"]
            if not pending and not starting:
                return
            if time.monotonic() >= deadline:
                raise FleetError(f"{len(pending)} bots not ready after {timeout:.0f}s on {self.address}; "
                                 f"packs not RUNNING: {', '.join(starting) or 'none'}")
            time.sleep(0.2)


def packed(state_dir: str, address: str, base_port: str, family: str, bots: str, interval: str) -> dict:
    fleet = HostPackedFleet(state_dir, Path(state_dir).parent / "inventory", address=address)
    fleet.up(bots=int(bots), per_process=int(bots), families=[family], trade_interval=float(interval),
             base_ports=(int(base_port),))
    state = fleet._state()
    pack, = state["packs"]
    return {
        "kind": "packed",
        "bots": {name: {"family": spec["family"], "ports": spec["ports"], "root": str(fleet.bot_root(name)),
                        "api_token": spec["api_token"], "redis_url": fleet.redis_url(state, spec),
                        "database_password": spec["database_password"]}
                 for name, spec in state["bots"].items()},
        "service": pack,
        "pack_file": str(fleet.pack_file(pack)),
        "pid": fleet.pack_pids()[pack],
        "supervisor_conf": str(fleet.supervisor_conf),
        "supervisorctl": str(fleet.bindir / "supervisorctl"),
        "supervisord_pid": (fleet._supervisord_pid() or (None,))[0],
    }


def real(state_dir: str, address: str, base_port: str, family: str, bots: str, interval: str) -> dict:
    fleet = Fleet(state_dir, Path(state_dir).parent / "inventory", base_port=int(base_port))
    fleet.up(bots=int(bots), families=family, trade_interval=float(interval))
    names = fleet.bot_names()
    for name in names:
        bot = fleet.bot(name)
        config = json.loads(bot["config_path"].read_text())
        config["listen"] = address
        bot["config_path"].write_text(json.dumps(config, indent=2) + "\n")
    fleet.supervisorctl("restart", *names, check=True)
    port_name, path = FAMILIES[family].readiness

    def wait(name):
        port = fleet.bot(name)["ports"][port_name]
        deadline = time.monotonic() + 90
        while http_status(address, port, path) != 200:
            if time.monotonic() > deadline:
                raise SystemExit(f"{name} is not ready at http://{address}:{port}{path} after 90 s")
            time.sleep(0.1)

    with ThreadPoolExecutor(len(names)) as pool:
        list(pool.map(wait, names))
    out = {"kind": "real", "bots": {}, "supervisor_conf": str(fleet.supervisor_conf),
           "supervisorctl": str(fleet.bindir / "supervisorctl"),
           "supervisord_pid": (fleet._supervisord_pid() or (None,))[0]}
    for name in names:
        bot = fleet.bot(name)
        out["bots"][name] = {"family": family, "ports": bot["ports"], "root": str(bot["root"]),
                             "api_token": bot["api_token"], "redis_url": bot["redis_url"],
                             "database": bot["database"], "database_password": bot["database"]["password"],
                             "paper_only": bot["paper_only"]}
    return out


def down(state_dir: str) -> None:
    Fleet(state_dir, Path(state_dir).parent / "inventory").down(purge=True)


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    if command == "packed":
        print(json.dumps(packed(*args)))
    elif command == "real":
        print(json.dumps(real(*args)))
    elif command == "down":
        down(*args)
    else:
        raise SystemExit(f"unknown command {command!r}")
