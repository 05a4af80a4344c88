"""A packed sandbox fleet for benchmarks: N reference bots in K processes under supervisord.

``botops.sandbox.fleet.Fleet`` runs one process and one PostgreSQL database per bot: right for tests,
too heavy for a thousand bots on one 2-core machine (a Python bot process is ~30-40 MB, and a
thousand databases mean a thousand writer connections and a thousand Alembic runs). This fleet
builds on it (same state directory layout, same supervisord and Redis programs, same inventory
shape, same ``down``) and differs in two ways, both documented in docs/reference-bot.md:

- bots are packed: one ``python -m refbot --fleet-file packs/<pack>.json`` process serves
  ``per_process`` bots, each with its own ports, kill switches, API and ``bot.log``;
- bots trade into the in-memory ledger (``"ledger": "memory"``), so there is no PostgreSQL.

A pack holds bots of one family only: a family whose kill switch stops the process (mojorust)
stops the pack, and so exactly the bots being halted. A bot's service in the inventory is its
pack's supervisord program and its ``bot_process_match`` matches the pack's process, so the
escalation ladder (service stop, SIGTERM, SIGKILL) acts on the process that really serves it.

    fleet = PackedFleet("/tmp/bench/state", "/tmp/bench/inventory")
    fleet.up(bots=1000, per_process=50)
    fleet.freeze(["pack07"])      # SIGSTOP: its bots stop answering
    fleet.down(purge=True)
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import sys
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from botops.sandbox.fleet import (EXIT_USAGE, FAMILIES, FAMILY_NAMES, INITIAL_RELEASE, LISTEN,  # noqa: E402
                           REDIS_PROGRAM, STATE_FORMAT, Fleet, FleetError, free_port, http_status, port_in_use,
                           wait_until, write_file)

DEFAULT_TRADE_INTERVAL = 1.0
# Bench bots take 2 ports each from here (below Linux's ephemeral range, which starts at 32768,
# and below the port blocks test fleets use from 28000).
BASE_PORT_CANDIDATES = (21000, 23000, 25000, 12000, 14000)


def bench_bot_name(index: int) -> str:
    return f"b{index:04d}"


class PackedFleet(Fleet):
    """N bench bots in packs of ``per_process`` under supervisord (see the module docstring)."""

    # ------------------------------------------------------------------ paths
    @property
    def packs_dir(self) -> Path:
        return self.state_dir / "packs"

    @property
    def release_dir(self) -> Path:
        return self.state_dir / "release" / INITIAL_RELEASE

    def pack_file(self, pack: str) -> Path:
        return self.packs_dir / f"{pack}.json"

    # ------------------------------------------------------------------ up
    def up(self, bots: int = 200, per_process: int = 50, families: list[str] | None = None,
           trade_interval: float = DEFAULT_TRADE_INTERVAL, timeout: float | None = None,
           base_ports: tuple[int, ...] = BASE_PORT_CANDIDATES) -> dict:
        """Bring up a fresh packed fleet (an existing one in this state directory is purged first).

        Bot i (from 1) listens on ``base + 2*(i-1)`` (and ``+1``): the first base of ``base_ports``
        whose block is free."""
        if bots < 1 or per_process < 1:
            raise FleetError("bots and per_process must be 1 or more", EXIT_USAGE)
        rotation = list(families or FAMILY_NAMES)
        if self.exists():
            self.down(purge=True)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.state_dir, 0o755)
        t0 = time.monotonic()
        with self._locked():
            state = self._plan_packed(bots, per_process, rotation, trade_interval, base_ports)
            self._save_state(state)
            self._write_bots(state)
            self._write_supervisor(state)
            self._log(f"supervisord: starting {len(state['packs'])} packs for {bots} bots")
            self._start_supervisord()
            self._wait_redis(state)
            self._wait_packed(state, timeout or 60 + 0.05 * bots)
            self._write_inventory(state)
        took = time.monotonic() - t0
        self._log(f"packed fleet up: {bots} bots in {len(state['packs'])} processes in {took:.1f}s")
        return {"bots": bots, "packs": len(state["packs"]), "per_process": per_process, "seconds": round(took, 1),
                "inventory": str(self.hosts_file)}

    def _plan_packed(self, count: int, per_process: int, rotation: list[str], interval: float,
                     base_ports: tuple[int, ...] = BASE_PORT_CANDIDATES) -> dict:
        need = 2 * count + 2
        base = next((b for b in base_ports
                     if b + need <= 65535 and not any(port_in_use(p) for p in range(b, b + need))), None)
        if base is None:
            raise FleetError(f"no free block of {need} ports at {base_ports}", EXIT_USAGE)
        bots: dict[str, dict] = {}
        by_family: dict[str, list[str]] = {f: [] for f in rotation}
        for index in range(1, count + 1):
            family = rotation[(index - 1) % len(rotation)]
            spec = FAMILIES[family]
            first = base + 2 * (index - 1)
            name = bench_bot_name(index)
            bots[name] = {
                "index": index,
                "family": family,
                "ports": {port: first + offset for offset, port in enumerate(spec.ports)},
                "redis_db": index if spec.redis else None,
                "api_token": secrets.token_urlsafe(32) if spec.api_token else None,
                "database_password": secrets.token_urlsafe(24),  # unused by the memory ledger; realistic secrets
                "trade_interval": interval,
            }
            by_family[family].append(name)
        packs: dict[str, list[str]] = {}
        for family in rotation:
            names = by_family[family]
            for start in range(0, len(names), per_process):
                pack = f"pack{len(packs) + 1:02d}"
                packs[pack] = names[start:start + per_process]
                for name in packs[pack]:
                    bots[name]["pack"] = pack
        redis_port = free_port(range(base, base + need))
        return {"format": STATE_FORMAT, "kind": "packed", "base_port": base, "python": self.python,
                "redis": {"port": redis_port, "databases": self._redis_databases(count)},
                "bots": bots, "packs": packs, "per_process": per_process}

    def _write_bots(self, state: dict) -> None:
        self._ensure_artifacts()
        if not (self.release_dir / "release.json").is_file():
            self.release_dir.mkdir(parents=True, exist_ok=True)
            with tarfile.open(self.artifacts_dir / f"refbot-{INITIAL_RELEASE}.tar.gz") as tar:
                tar.extractall(self.release_dir, filter="data")
        redis_port = state["redis"]["port"]
        for name, spec in state["bots"].items():
            root = self.bot_root(name)
            for sub in ("releases", "shared/config", "shared/logs", "shared/data"):
                (root / sub).mkdir(parents=True, exist_ok=True)
            os.chmod(root / "shared" / "config", 0o700)
            release = root / "releases" / INITIAL_RELEASE
            if not os.path.lexists(release):
                release.symlink_to(self.release_dir)
            if not os.path.lexists(root / "current"):
                (root / "current").symlink_to(Path("releases") / INITIAL_RELEASE)
            family = FAMILIES[spec["family"]]
            config = {
                "name": name,
                "family": family.name,
                "listen": LISTEN,
                "ports": spec["ports"],
                "ledger": "memory",
                "redis_url": f"redis://{LISTEN}:{redis_port}/{spec['redis_db']}" if family.redis else None,
                "api_token": spec["api_token"],
                "trade_interval": spec["trade_interval"],
                "execution_mode": "DRY",
                "paper_trading": True,
                "paper_only": family.paper_only,
            }
            write_file(root / "shared" / "config" / "bot.json", json.dumps(config, indent=2) + "\n", 0o600)
        for pack, names in state["packs"].items():
            write_file(self.pack_file(pack), json.dumps({"roots": [str(self.bot_root(n)) for n in names]}) + "\n")

    def _write_supervisor(self, state: dict) -> None:
        conf_dir = self.supervisor_dir / "conf.d"
        for d in (conf_dir, self.supervisor_dir / "logs", self.redis_dir):
            d.mkdir(parents=True, exist_ok=True)
        write_file(self.supervisor_conf, self._supervisord_conf())
        write_file(self.redis_dir / "redis.conf", self._redis_conf(state))
        write_file(conf_dir / f"{REDIS_PROGRAM}.conf", self._program_conf(
            REDIS_PROGRAM, [self._redis_server(), str(self.redis_dir / "redis.conf")], self.redis_dir,
            self.redis_dir / "redis.log", None, priority=10, environment={}))
        logs = self.state_dir / "packs"
        for pack in state["packs"]:
            write_file(conf_dir / f"{pack}.conf", self._program_conf(
                pack, [self.python, "-m", "refbot", "--fleet-file", str(self.pack_file(pack))], self.release_dir,
                logs / f"{pack}.out.log", logs / f"{pack}.err.log", priority=100,
                environment={"PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"}))

    def _liveness_url(self, spec: dict) -> tuple[int, str]:
        port_name, path = FAMILIES[spec["family"]].liveness
        return spec["ports"][port_name], path

    def _readiness_url(self, spec: dict) -> tuple[int, str]:
        port_name, path = FAMILIES[spec["family"]].readiness
        return spec["ports"][port_name], path

    def _wait_packed(self, state: dict, timeout: float) -> None:
        """Every pack RUNNING and every bot ready (readiness 200), or FleetError naming what is not."""
        pending = dict(state["bots"])
        packs = [p for p, names in state["packs"].items() if set(names) & set(pending)]  # the ones serving them
        deadline = time.monotonic() + timeout

        def ready(item):
            name, spec = item
            return name if http_status(*self._readiness_url(spec), timeout=2) == 200 else None

        with ThreadPoolExecutor(max_workers=32) as pool:
            while True:
                procs = self.processes()
                dead = [p for p in packs if procs.get(p, {}).get("statename") in ("FATAL", "EXITED")]
                if dead:
                    raise FleetError(f"packs exited: {', '.join(dead)}; see {self.packs_dir}/<pack>.err.log")
                for name in pool.map(ready, list(pending.items())):
                    if name:
                        pending.pop(name)
                # ready bots are not enough: until supervisord counts a pack RUNNING (startsecs), a stop
                # signal to it counts as a failed start, and supervisord starts it again
                starting = [p for p in packs if procs.get(p, {}).get("statename") != "RUNNING"]
                if not pending and not starting:
                    break
                if time.monotonic() >= deadline:
                    raise FleetError(f"{len(pending)} bots not ready after {timeout:.0f}s: "
                                     f"{', '.join(sorted(pending)[:20])}; packs not RUNNING: "
                                     f"{', '.join(starting) or 'none'}")
                time.sleep(0.5)

    def wait_ready(self, names=None, timeout: float = 60.0) -> None:
        state = self._state()
        subset = {n: s for n, s in state["bots"].items() if names is None or n in names}
        self._wait_packed({**state, "bots": subset}, timeout)

    # ------------------------------------------------------------------ inventory
    def _inventory(self, state: dict) -> tuple[str, dict[str, str]]:
        groups: dict[str, dict] = {f.group: {"hosts": {}} for f in FAMILIES.values()}
        host_secrets: dict[str, str] = {}
        supervisorctl = str(self.bindir / "supervisorctl")
        for name in sorted(state["bots"], key=lambda n: state["bots"][n]["index"]):
            spec = state["bots"][name]
            family = FAMILIES[spec["family"]]
            redis_url = (f"redis://{LISTEN}:{state['redis']['port']}/{spec['redis_db']}"
                         if spec.get("redis_db") is not None else None)
            pack_file = str(self.pack_file(spec["pack"]))
            groups[family.group]["hosts"][name] = {
                "bot_family": family.name,
                "bot_root": str(self.bot_root(name)),
                "bot_listen": LISTEN,
                "bot_ports": spec["ports"],
                "bot_redis_url": redis_url,
                "bot_service": {"manager": "supervisor", "name": spec["pack"], "config": str(self.supervisor_conf),
                                "supervisorctl": supervisorctl},
                "bot_process_match": f"-m refbot --fleet-file {re.escape(pack_file)}$",
                "bot_paper_only": family.paper_only,
            }
            secret = {"bot_database_password": spec["database_password"]}
            if spec.get("api_token"):
                secret["bot_api_token"] = spec["api_token"]
            host_secrets[name] = ("# Generated by bench/fleet.py: this bench bot's secrets.\n"
                                  + yaml.safe_dump(secret, default_flow_style=False, sort_keys=False))
        for group in groups.values():
            if not group["hosts"]:
                group.pop("hosts")
        inventory = {"sandbox": {"vars": {"ansible_connection": "local", "ansible_python_interpreter": self.python,
                                          "botops_sandbox_dir": str(self.state_dir),
                                          "bot_release_artifact": "refbot"},
                                 "children": groups}}
        text = (f"# Generated by bench/fleet.py for the packed bench fleet in {self.state_dir}.\n"
                "# Secrets are in host_vars/<bot>/secrets.yml.\n"
                + yaml.safe_dump(inventory, default_flow_style=False, sort_keys=False))
        return text, host_secrets

    # ------------------------------------------------------------------ bench helpers
    def packs(self) -> dict[str, list[str]]:
        return self._state()["packs"]

    def pack_family(self, pack: str) -> str:
        state = self._state()
        return state["bots"][state["packs"][pack][0]]["family"]

    def pack_pids(self) -> dict[str, int]:
        return {n: i["pid"] for n, i in self.processes().items() if n.startswith("pack") and i["pid"]}

    def freeze(self, packs: list[str]) -> list[str]:
        """SIGSTOP the packs' processes: their bots accept connections and never answer. Returns their bots."""
        pids = self.pack_pids()
        bots = []
        for pack in packs:
            os.kill(pids[pack], signal.SIGSTOP)
            bots += self.packs()[pack]
        return bots

    def thaw(self, packs: list[str]) -> None:
        pids = self.pack_pids()
        for pack in packs:
            if pack in pids:
                os.kill(pids[pack], signal.SIGCONT)

    def start_stopped_packs(self, timeout: float = 60) -> list[str]:
        """Start every pack supervisord does not run (after an escalation stopped it), wait until ready."""
        rpc = self._rpc()
        stopped = [n for n, i in self.processes().items() if n.startswith("pack") and i["statename"] != "RUNNING"]
        for pack in stopped:
            self._start_program(rpc, pack)
        if stopped:
            packs = self.packs()
            self.wait_ready([b for p in stopped for b in packs[p]], timeout)
        return stopped

    def rss_mb(self) -> dict[str, float]:
        """Resident memory of every pack process (MB)."""
        out = {}
        for pack, pid in self.pack_pids().items():
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        out[pack] = int(line.split()[1]) / 1024
            except OSError:
                pass
        return out



if __name__ == "__main__":  # manual use: python bench/fleet.py up|down STATE_DIR INVENTORY_DIR [BOTS [PER_PROCESS]]
    import argparse

    parser = argparse.ArgumentParser(description="Bring a packed bench fleet up or down.")
    parser.add_argument("action", choices=["up", "down"])
    parser.add_argument("state_dir")
    parser.add_argument("inventory_dir")
    parser.add_argument("bots", type=int, nargs="?", default=200)
    parser.add_argument("per_process", type=int, nargs="?", default=50)
    args = parser.parse_args()
    fleet = PackedFleet(args.state_dir, args.inventory_dir, log=print)
    if args.action == "up":
        print(json.dumps(fleet.up(args.bots, args.per_process)))
    else:
        fleet.down(purge=True)
