"""A fleet of remote hosts for benchmarks: loopback addresses, each with its own sshd and bot user.

The SSH test tier's hosts (tests/ssh/conftest.py), scaled to a hundred: host i (from 1) is the
loopback address 127.0.1.i (the tier uses 127.0.0.2-4), with

- its own sshd on ADDRESS:2222 (key authentication only, no passwords, no root login, only the
  host's user allowed), whose host key the harness writes into a known_hosts file the inventory
  checks strictly;
- its own unprivileged user (``botops-r001`` ...), which runs everything of the host's bots from
  its home directory: its own supervisord, the bots' process, and (for the families that use one)
  its own Redis on the host's address;
- two bots (by default), one family per host (families round-robin over the hosts).

Two kinds of host (bench/remote_host.py brings a host's bots up as its user):

- ``packed`` (the kill-switch fleet): one reference bot process serves both bots of the host
  (bench/fleet.py's PackedFleet), in-memory ledger, no PostgreSQL. A host runs sshd, supervisord,
  the bot process and its own Redis (PackedFleet runs one whatever the family). The ladder still works on the host as the
  bot's user: the bots' service is the pack's supervisord program, their process match the pack's
  process, so a service stop or a signal acts on the process that really serves them (and on both
  bots of the host, as in production when two bots share a process).
- ``real`` (the deploy fleet): one process and one PostgreSQL database per bot, the host's own
  PostgreSQL cluster, Redis and supervisord (botops.sandbox.fleet.Fleet), as the SSH tier runs.

The inventory is production-shaped: inventory hosts are the bots (``rh001-1``, ``rh001-2``), with
``ansible_host``/``ansible_port``/``ansible_user`` per bot, ``ansible_ssh_private_key_file`` and
strict host key checking for all, groups per family, per-bot variables in ``host_vars/<bot>/main.yml``
and secrets in ``host_vars/<bot>/secrets.yml`` (0600, not vaulted). The two bots of a host share
its sshd, user and, through Ansible's ControlPersist, one SSH connection.

Processes are accounted in cpuacct cgroups (v1) the harness creates: the hosts' sshd (and their
sessions, so the modules Ansible runs on a host too), the hosts' bots (supervisord, bots, Redis, PostgreSQL), and the controller (whatever the
benchmark runs in ``controller_cgroup``, ssh ControlPersist masters included, which leave the
process tree).

Everything is recorded in /tmp/botops-bench-remote/fleet.json as it is created, so that
``python bench/remote_fleet.py down`` after a killed run stops every sshd and bot and removes the
users, their homes and the cgroups.

    fleet = RemoteFleet()
    fleet.up(hosts=100, kind="packed")
    fleet.down()
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from botops.sandbox.fleet import FAMILIES, FAMILY_NAMES  # noqa: E402

WORK = Path("/tmp/botops-bench-remote")
RECORD = WORK / "fleet.json"
USER_PREFIX = "botops-r"  # botops-r001 ...: created and removed by this harness only
SUBNET = "127.0.1."
SSH_PORT = 2222
PACKED_PORT = 26100  # the packed bots' ports (and Redis) on each host's own address
REAL_BASE_PORT = 16000  # real fleets come up on 127.0.0.1 first: host i uses REAL_BASE_PORT + 100*i
CGROUP_ROOT = Path("/sys/fs/cgroup/cpuacct/botops-bench-remote")
CGROUPS = ("sshd", "bots", "controller")
HOST_SCRIPT = Path(__file__).with_name("remote_host.py")
WORKERS = 4  # hosts brought up at once (two cores)


def log(line: str) -> None:
    print(f"  [remote] {line}", flush=True)


def run(cmd, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, **kwargs)


# ----------------------------------------------------------------------------- cgroups
def cgroup(name: str) -> Path:
    return CGROUP_ROOT / name


def cpu_ns(name: str) -> int:
    """CPU nanoseconds used so far by every process that ever ran in the cgroup."""
    try:
        return int((cgroup(name) / "cpuacct.usage").read_text())
    except (OSError, ValueError):
        return 0


def cgroup_pids(name: str) -> list[int]:
    try:
        return [int(p) for p in (cgroup(name) / "cgroup.procs").read_text().split()]
    except OSError:
        return []


def join_cgroup(name: str, pid: int | None = None) -> None:
    (cgroup(name) / "cgroup.procs").write_text(str(pid or os.getpid()))


def joiner(name: str):
    """preexec_fn: the child (and all it starts) counts in the cgroup."""
    path = str(cgroup(name) / "cgroup.procs")

    def join():
        with open(path, "w") as f:
            f.write(str(os.getpid()))
    return join


def memory_kb(pids) -> tuple[int, int]:
    """Summed (PSS, RSS) in kB of the processes."""
    pss = rss = 0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError):
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        pss += int(line.split()[1])
                    elif line.startswith("Rss:"):
                        rss += int(line.split()[1])
    return pss, rss


def mem_available_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) // 1024
    return 0


# ----------------------------------------------------------------------------- the fleet
class RemoteFleet:
    def __init__(self, work: Path = WORK):
        self.work = work
        self.record_file = work / "fleet.json"
        self.record: dict = {}

    # paths
    @property
    def inventory(self) -> Path:
        return self.work / "inventory"

    @property
    def artifacts(self) -> Path:
        return self.work / "artifacts"

    @property
    def key(self) -> Path:
        return self.work / "keys" / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.work / "known_hosts"

    @property
    def control_dir(self) -> Path:
        return self.work / "cp"

    def _save(self) -> None:
        tmp = self.record_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.record, indent=1))
        os.replace(tmp, self.record_file)

    # ------------------------------------------------------------------ up
    def up(self, hosts: int = 100, kind: str = "packed", bots_per_host: int = 2, trade_interval: float = 1.0,
           first: int = 1) -> dict:
        """Bring up `hosts` hosts of `kind` (packed | real); an earlier fleet is brought down first."""
        from tests.ssh.conftest import ensure_host_venv, ensure_sshd

        if os.geteuid() != 0:
            raise SystemExit("the remote bench needs root: it creates a user and runs an sshd per host")
        if first < 1 or first + hosts - 1 > 254:
            raise SystemExit(f"hosts {first}..{first + hosts - 1} do not fit in {SUBNET}1-254")
        down(self.work)
        ensure_sshd()
        python = str(ensure_host_venv())
        t0 = time.monotonic()
        mem0 = mem_available_mb()
        for d in (self.work, self.work / "sshd", self.control_dir, self.work / "keys"):
            d.mkdir(parents=True, exist_ok=True)
        self.work.chmod(0o755)
        (self.work / "keys").chmod(0o700)
        CGROUP_ROOT.mkdir(exist_ok=True)
        for name in CGROUPS:
            cgroup(name).mkdir(exist_ok=True)
        self.record = {"kind": kind, "python": str(python), "hosts": {}, "trade_interval": trade_interval}
        self._save()
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "botops-bench-controller", "-f", str(self.key)],
            check=True)
        from botops.sandbox.releases import build_artifacts

        build_artifacts(self.artifacts)
        public_key = self.key.with_suffix(".pub").read_text()
        specs = []
        for n in range(first, first + hosts):
            family = FAMILY_NAMES[(n - 1) % len(FAMILY_NAMES)]
            specs.append({"name": f"rh{n:03d}", "address": f"{SUBNET}{n}", "user": f"{USER_PREFIX}{n:03d}",
                          "family": family, "ssh_port": SSH_PORT, "index": n,
                          "base_port": PACKED_PORT if kind == "packed" else REAL_BASE_PORT + 100 * n})
        for spec in specs:  # recorded before anything of theirs exists: a `down` finds them all
            self.record["hosts"][spec["name"]] = spec
        self._save()

        def bring(spec):
            self._user(spec, public_key)
            self._bots(spec, python, kind, bots_per_host, trade_interval)
            return spec["name"]

        done = 0
        with ThreadPoolExecutor(WORKERS) as pool:
            for _ in pool.map(bring, specs):
                done += 1
                if done % 10 == 0 or done == len(specs):
                    log(f"{done}/{len(specs)} hosts' bots up ({time.monotonic() - t0:.0f}s)")
        for spec in specs:
            self._sshd(spec)
        self._save()
        self.known_hosts.write_text("".join(
            f"[{s['address']}]:{s['ssh_port']} " + " ".join(
                (self.work / "sshd" / f"{s['name']}_ed25519.pub").read_text().split()[:2]) + "\n" for s in specs))
        self._write_inventory(python)
        took = time.monotonic() - t0
        time.sleep(3)
        memory = self.memory()
        memory["machine_used_mb"] = mem0 - mem_available_mb()
        self.record["up"] = {"seconds": round(took, 1), "memory": memory}
        self._save()
        log(f"{hosts} {kind} hosts, {len(self.bots())} bots up in {took:.0f}s; memory {memory}")
        return self.record["up"]

    def _user(self, spec: dict, public_key: str) -> None:
        from tests.ssh.conftest import SshHost, ensure_user

        ensure_user(SshHost(spec["name"], spec["family"], "bench", spec["address"], spec["user"]), public_key)

    def as_user(self, spec: dict, python: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        home = pwd.getpwnam(spec["user"]).pw_dir
        env = ["env", "-i", f"HOME={home}", "PATH=/usr/bin:/bin", "LANG=C.UTF-8", f"PYTHONPATH={REPO}",
               "PYTHONDONTWRITEBYTECODE=1"]
        cmd = ["runuser", "-u", spec["user"], "--", *env, python, str(HOST_SCRIPT), *args]
        return subprocess.run(cmd, capture_output=True, text=True, cwd=home, timeout=timeout,
                              preexec_fn=joiner("bots"))

    def _bots(self, spec: dict, python: str, kind: str, bots: int, interval: float) -> None:
        pw = pwd.getpwnam(spec["user"])
        workdir = Path(pw.pw_dir) / "fleet"
        state = workdir / "state"
        shutil.rmtree(workdir, ignore_errors=True)
        shutil.copytree(self.artifacts, state / "artifacts")
        for path in (workdir, *workdir.rglob("*")):
            os.chown(path, pw.pw_uid, pw.pw_gid, follow_symlinks=False)
        workdir.chmod(0o755)
        spec["state_dir"] = str(state)
        proc = self.as_user(spec, python, kind, str(state), spec["address"], str(spec["base_port"]),
                            spec["family"], str(bots), str(interval))
        if proc.returncode != 0:
            raise RuntimeError(f"{spec['name']}: its bots did not start as {spec['user']}:\n"
                               f"{(proc.stdout + proc.stderr)[-3000:]}")
        spec["facts"] = json.loads(proc.stdout.strip().splitlines()[-1])

    def _sshd(self, spec: dict) -> None:
        from tests.ssh.conftest import SshHost, start_sshd

        host = SshHost(spec["name"], spec["family"], "bench", spec["address"], spec["user"], ssh_port=spec["ssh_port"])
        start_sshd(host, self.work)
        join_cgroup("sshd", host.sshd.pid)  # before any connection: its sessions count there too
        spec["sshd_pid"] = host.sshd.pid
        self._save()

    # ------------------------------------------------------------------ inventory
    def set_group_vars(self, **variables) -> None:
        """Add variables to the inventory's group_vars/all (e.g. bot_ops_nice for every host)."""
        path = self.inventory / "group_vars" / "all" / "main.yml"
        data = yaml.safe_load(path.read_text()) or {}
        data.update(variables)
        path.write_text(yaml.safe_dump(data, default_flow_style=False, sort_keys=False))

    def _write_inventory(self, python: str) -> None:
        inv = self.inventory
        shutil.rmtree(inv, ignore_errors=True)

        def dump(path: Path, data: dict, header: str = "", mode: int = 0o644) -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(header + yaml.safe_dump(data, default_flow_style=False, sort_keys=False))
            path.chmod(mode)

        families: dict[str, dict] = {}
        for bot in self.bots():
            families.setdefault(FAMILIES[bot["family"]].group, {"hosts": {}})["hosts"][bot["name"]] = {
                "ansible_host": bot["address"], "ansible_port": bot["ssh_port"], "ansible_user": bot["user"]}
        dump(inv / "hosts.yml", {"all": {"children": {"remote": {"children": families}}}},
             "# Generated by bench/remote_fleet.py: the bots of the remote bench hosts, groups per family.\n"
             "# Per-bot variables in host_vars/<bot>/main.yml, secrets in host_vars/<bot>/secrets.yml.\n")
        dump(inv / "group_vars" / "all" / "main.yml", {
            "ansible_python_interpreter": python,
            "ansible_ssh_private_key_file": str(self.key),
            "ansible_ssh_common_args": f"-o UserKnownHostsFile={self.known_hosts} -o StrictHostKeyChecking=yes",
            "bot_release_artifact": "refbot",
        })
        for family in {b["family"] for b in self.bots()}:
            dump(inv / "group_vars" / FAMILIES[family].group / "main.yml", {"bot_family": family})
        for bot in self.bots():
            facts, host = bot["facts"], bot["host_facts"]
            main = {
                "bot_id": bot["bot"],  # the bot reports its own name (b0001), not the inventory's
                "bot_root": facts["root"],
                "bot_listen": bot["address"],
                "bot_ports": facts["ports"],
                "bot_redis_url": facts["redis_url"],
                "bot_paper_only": FAMILIES[bot["family"]].paper_only,
            }
            if host["kind"] == "packed":
                main["bot_service"] = {"manager": "supervisor", "name": host["service"],
                                       "config": host["supervisor_conf"], "supervisorctl": host["supervisorctl"]}
                main["bot_process_match"] = f"-m refbot --fleet-file {re.escape(host['pack_file'])}$"
            else:
                main["bot_service"] = {"manager": "supervisor", "name": bot["bot"],
                                       "config": host["supervisor_conf"], "supervisorctl": host["supervisorctl"]}
                main["bot_process_match"] = f"-m refbot --root {facts['root']}$"
                main["bot_database"] = {k: facts["database"][k] for k in ("host", "port", "name", "user")}
            dump(inv / "host_vars" / bot["name"] / "main.yml", main)
            secrets = {"bot_database_password": facts["database_password"]}
            if facts.get("api_token"):
                secrets["bot_api_token"] = facts["api_token"]
            dump(inv / "host_vars" / bot["name"] / "secrets.yml", secrets,
                 "# Generated by bench/remote_fleet.py: this bench bot's secrets.\n", 0o600)

    # ------------------------------------------------------------------ what the benchmark reads
    def hosts(self) -> dict[str, dict]:
        if not self.record:
            self.record = json.loads(self.record_file.read_text())
        return self.record["hosts"]

    def bots(self) -> list[dict]:
        """One dict per bot: inventory name, bot name, host, address, family, ports, user, facts."""
        out = []
        for spec in self.hosts().values():
            facts = spec.get("facts")
            if not facts:
                continue
            for i, (bot, bot_facts) in enumerate(sorted(facts["bots"].items()), 1):
                out.append({"name": f"{spec['name']}-{i}", "bot": bot, "host": spec["name"],
                            "address": spec["address"], "ssh_port": spec["ssh_port"], "user": spec["user"],
                            "family": spec["family"], "facts": bot_facts, "host_facts": facts,
                            "state_dir": spec["state_dir"]})
        return out

    def supervised(self, spec: dict) -> dict[str, dict]:
        """The host's supervisord's view (program -> info), read through its socket as root."""
        import xmlrpc.client

        from supervisor.xmlrpc import SupervisorTransport

        sock = Path(spec["state_dir"]) / "supervisor" / "supervisor.sock"
        transport = SupervisorTransport(None, None, f"unix://{sock}")
        try:
            infos = xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport).supervisor.getAllProcessInfo()
        except Exception:  # noqa: BLE001 - a host whose supervisord does not answer shows no program
            return {}
        return {i["name"]: i for i in infos}

    def memory(self) -> dict:
        """The hosts' memory now (MB): sshd and the bots' processes, summed PSS / RSS, and counts."""
        out = {}
        for name in ("sshd", "bots"):
            pids = cgroup_pids(name)
            pss, rss = memory_kb(pids)
            out[name] = {"processes": len(pids), "pss_mb": round(pss / 1024), "rss_mb": round(rss / 1024)}
        return out

    def close_connections(self) -> int:
        """End every process left in the controller cgroup (ssh ControlPersist masters), by pid."""
        pids = cgroup_pids("controller")
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while cgroup_pids("controller") and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in cgroup_pids("controller"):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return len(pids)

    def down(self) -> None:
        down(self.work)


# ----------------------------------------------------------------------------- down
def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def _kill_pids(pids: list[int], grace: float = 10.0) -> None:
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not any(_alive(p) for p in pids):
            return


def _uid_pids(uid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    found.append(int(entry))
    return found


def down(work: Path = WORK) -> None:
    """Stop everything a fleet (or a killed run's) created: sshd, bots, users and homes, cgroups, files.

    Works from the record (/tmp/botops-bench-remote/fleet.json) and, for users whose record was
    lost, from the harness's user prefix."""
    record_file = work / "fleet.json"
    try:
        record = json.loads(record_file.read_text())
    except (OSError, ValueError):
        record = {"hosts": {}}
    hosts = record.get("hosts", {})
    python = record.get("python")
    # the controller's leftover ssh masters and the hosts' sshd (their sessions are their children)
    for name in ("controller", "sshd"):
        _kill_pids(cgroup_pids(name))
    sshd = [s["sshd_pid"] for s in hosts.values() if s.get("sshd_pid") and _alive(s["sshd_pid"])
            and str(work) in Path(f"/proc/{s['sshd_pid']}/cmdline").read_text(errors="replace")]
    _kill_pids(sshd)
    users = {s["user"] for s in hosts.values()}
    users |= {p.pw_name for p in pwd.getpwall() if re.fullmatch(rf"{USER_PREFIX}\d{{3}}", p.pw_name)}

    def bring_down(user: str) -> None:
        try:
            pw = pwd.getpwnam(user)
        except KeyError:
            return
        state = Path(pw.pw_dir) / "fleet" / "state"
        if state.exists() and python and Path(python).exists():
            home = pw.pw_dir
            env = ["env", "-i", f"HOME={home}", "PATH=/usr/bin:/bin", "LANG=C.UTF-8", f"PYTHONPATH={REPO}"]
            proc = subprocess.run(["runuser", "-u", user, "--", *env, python, str(HOST_SCRIPT), "down", str(state)],
                                  capture_output=True, text=True, cwd=home, timeout=300)
            if proc.returncode != 0:
                print(f"  [remote] {user}: down failed, its processes are killed: {proc.stderr[-500:]}", flush=True)
        left = _uid_pids(pw.pw_uid)  # whatever of this harness's user is still running
        if left:
            _kill_pids(left, grace=5)
        proc = run(["userdel", "--remove", user])
        if proc.returncode != 0 and "not found" not in proc.stderr:
            print(f"  [remote] userdel {user}: {proc.stderr.strip()}", flush=True)

    with ThreadPoolExecutor(WORKERS) as pool:
        list(pool.map(bring_down, sorted(users)))
    for name in CGROUPS:
        left = cgroup_pids(name)
        if left:
            _kill_pids(left, grace=5)
        with contextlib.suppress(OSError):
            cgroup(name).rmdir()
    with contextlib.suppress(OSError):
        CGROUP_ROOT.rmdir()
    shutil.rmtree(work, ignore_errors=True)
    if hosts or users:
        print(f"  [remote] down: {len(hosts)} hosts, {len(users)} users removed", flush=True)


if __name__ == "__main__":  # python bench/remote_fleet.py up [HOSTS [packed|real]] | down
    import argparse

    parser = argparse.ArgumentParser(description="Bring the remote bench fleet up or down.")
    parser.add_argument("action", choices=["up", "down"])
    parser.add_argument("hosts", type=int, nargs="?", default=5)
    parser.add_argument("kind", nargs="?", default="packed", choices=["packed", "real"])
    args = parser.parse_args()
    if args.action == "up":
        print(json.dumps(RemoteFleet().up(args.hosts, args.kind)))
    else:
        down()
