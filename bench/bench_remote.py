"""Remote fleet: the kill switch of 200 bots on 100 hosts over SSH, and a 20-host deploy and rollback.

    botops bench --only=remote [--args='--hosts 5,20,100 --deploy-hosts 20 --rounds 2 --no-write']
    .venv/bin/python bench/bench_remote.py [--hosts 100] [--deploy-hosts 20] [--no-baseline] [--no-deploy] [--ops-nice N]

Bots on other hosts than the controller's take botops' per-host path: the fleet kill switch
(playbooks/tasks/fleet_kill_switch.yml) hands every bot whose ``ansible_connection`` is not local
to one ``bot_kill_switch`` task per bot, run on its host over SSH. This benchmark measures that
path as it is today, the baseline the next change is compared to, on hosts that are real sshd
instances (bench/remote_fleet.py: one loopback address, sshd, unprivileged user per host, two
bots per host, a production-shaped inventory with strict host key checking):

(a) kill switch, for each size of ``--hosts`` (a fresh fleet each; default 100 hosts, 200 bots):
    ``botops kill-switch --level=halt`` then ``--release``, ``--rounds`` times. The bots are
    *packed*: one reference bot process serves both bots of a host (bench/fleet.py's PackedFleet),
    with an in-memory ledger and no PostgreSQL, under the host user's own supervisord, next to the
    host's own Redis. At the largest size, the plain-Ansible baseline too:
    bench/baseline_uri_kill_switch.yml, whose uri tasks run on each bot's host over SSH;
(b) deploy and rollback on ``--deploy-hosts`` hosts (default 20, 40 bots) of *real* bots (one
    process and one PostgreSQL database per bot, each host's own PostgreSQL cluster: a packed bot
    shares its process and release with its host's other bot and cannot be deployed alone):
    ``botops deploy --version=1.1.0 --artifacts=...`` then ``botops rollback --target=latest``.
    botops' work on the hosts runs at the inventory's ``bot_ops_nice`` (botops' default 10);
    ``--ops-nice 0`` runs it at the bots' priority, the comparison.

Every run is the real front end as an operator runs it (a subprocess ``botops ...``), started with
no SSH connection open (ControlPersist masters of earlier runs are closed first). While it runs,
the benchmark itself polls every bot on its host (its own API, or its process for mojorust, whose
halt stops it) every ``--poll`` seconds, independently of botops' report: the time to the first
bot halted (or released, or on the new release and ready) and to the last one, from the start of
``botops``. After each run every bot is checked again and a bot not in the asked state fails the
benchmark (nothing is written). During the deploy and rollback each bot's readiness is sampled
every 0.25 s: its downtime is the longest stretch it was not ready.

CPU is counted in cpuacct cgroups: the controller's (botops, ansible-playbook and its workers, the
ssh clients and their ControlPersist masters), the hosts' sshd (with the sessions they fork, so the
modules Ansible runs on the hosts), the
hosts' bots (supervisord, bots, Redis, PostgreSQL); the benchmark's own polling is its process's
CPU. The controller's peak memory is the summed PSS and RSS of its cgroup's processes sampled every
250 ms, as bench_kill_switch.py does. A timeline callback (bench/callback_plugins) records when each
task started and, per bot, when its worker started and its result came back: where the time goes.

Results go to bench/RESULTS.md (its "remote" section) unless --no-write. A fleet left by a killed
run is brought down by the next run, or by ``python bench/remote_fleet.py down``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.remote_fleet import (CGROUPS, RemoteFleet, cgroup_pids, cpu_ns, joiner, memory_kb,  # noqa: E402
                                 mem_available_mb)
from bench.results import cpu_busy, cpu_times, machine, publish  # noqa: E402
from botops.sandbox.fleet import FAMILIES  # noqa: E402

BOTOPS = Path(sys.executable).with_name("botops")
ANSIBLE_PLAYBOOK = Path(sys.executable).with_name("ansible-playbook")
SECTION = "remote"
PER_HOST_TASK = "Drive the kill switch on the host of every remote bot"
DEPLOY_FROM, DEPLOY_TO = "1.0.0", "1.1.0"
WARM_SSH_ARGS = "-C -o ControlMaster=auto -o ControlPersist=15m"  # the warm path's ssh_args
TARGETS = {
    "halt_200_s": 5.0,  # 200 remote bots halted and verified, end to end
    "speedup": 10.0,  # today's per-host path / the sessions path, same run
}


# ---------------------------------------------------------------------------------- the bots' own state
def api(address, port, path, timeout=2.0):
    try:
        with urllib.request.urlopen(f"http://{address}:{port}{path}", timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        with contextlib.suppress(ValueError):
            return exc.code, json.loads(exc.read() or b"null")
        return exc.code, None
    except (OSError, ValueError):
        return None, None


def alive(pid) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, TypeError):
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def halt_flag(bot) -> bool | None:
    """The family's halt flag as the bot's API shows it (None: no answer)."""
    family, address, port = bot["family"], bot["address"], bot["facts"]["ports"]["api"]
    if family == "papertrader":
        doc = api(address, port, "/api/health/detailed")[1]
        return None if doc is None else bool(doc.get("trading", {}).get("emergencyStop"))
    if family == "solana-cli":
        doc = api(address, port, "/api/status")[1]
        return None if doc is None else bool(doc.get("risk", {}).get("killSwitchActive"))
    if family == "hyperliquid":
        doc = api(address, port, "/api/health")[1]
        return None if doc is None else doc.get("circuit_breaker") == "open"
    if family == "vanta":
        doc = api(address, port, "/health")[1]
        return None if doc is None else bool(doc.get("components", {}).get("executor", {}).get("emergency_stop"))
    if family == "mojorust":
        return None  # its halt stops the process
    raise ValueError(family)


def ready(bot) -> bool:
    port_name, path = FAMILIES[bot["family"]].readiness
    return api(bot["address"], bot["facts"]["ports"][port_name], path, timeout=1.0)[0] == 200


def halted(bot, pids) -> bool:
    """Halted as the bot shows it on its host: its process is gone, or its API shows the halt."""
    if not alive(pids.get(bot["host"])):
        return True
    return bool(halt_flag(bot))


def released(bot) -> bool:
    """Trading again: ready, and (when the family has one) the halt flag down."""
    return ready(bot) and (bot["family"] == "mojorust" or halt_flag(bot) is False)


def on_release(version):
    def check(bot) -> bool:
        with contextlib.suppress(OSError):
            if os.readlink(Path(bot["facts"]["root"]) / "current").endswith(version):
                return ready(bot)
        return False
    return check


class Watch(threading.Thread):
    """Polls every bot (a sweep every `interval` s) until each shows the state `check` asks for;
    records when each was first seen so, in seconds from `t0`."""

    def __init__(self, bots, check, interval):
        super().__init__(daemon=True)
        self.bots, self.check, self.interval = {b["name"]: b for b in bots}, check, interval
        self.seen: dict[str, float] = {}
        self.t0 = None
        self.halt = threading.Event()

    def begin(self, t0):
        self.t0 = t0
        self.start()

    def run(self):
        with ThreadPoolExecutor(8) as pool:
            while not self.halt.is_set():
                sweep = time.monotonic()
                pending = [n for n in self.bots if n not in self.seen]
                if not pending:
                    return
                for name, ok in zip(pending, pool.map(lambda n: self.check(self.bots[n]), pending)):
                    if ok:
                        self.seen[name] = round(time.time() - self.t0, 2)
                self.halt.wait(max(0.0, self.interval - (time.monotonic() - sweep)))

    def finish(self, grace):
        """Wait up to `grace` s more for the last bots (vanta's flag is read once per tick), then stop."""
        deadline = time.monotonic() + grace
        while self.is_alive() and len(self.seen) < len(self.bots) and time.monotonic() < deadline:
            time.sleep(0.1)
        self.halt.set()
        self.join()
        missing = sorted(set(self.bots) - set(self.seen))
        times = list(self.seen.values())
        return {"first_s": min(times) if times else None, "last_s": max(times) if times else None,
                "seen": len(self.seen), "missing": missing}


class Downtime(threading.Thread):
    """Each bot's readiness every `interval` s; the longest stretch each was not ready."""

    def __init__(self, bots, interval=0.25):
        super().__init__(daemon=True)
        self.bots, self.interval = bots, interval
        self.down_since: dict[str, float] = {}
        self.longest: dict[str, float] = {b["name"]: 0.0 for b in bots}
        self.halt = threading.Event()

    def run(self):
        with ThreadPoolExecutor(8) as pool:
            while not self.halt.is_set():
                sweep = time.monotonic()
                for bot, ok in zip(self.bots, pool.map(ready, self.bots)):
                    name = bot["name"]
                    if not ok:
                        self.down_since.setdefault(name, sweep)
                        self.longest[name] = max(self.longest[name], sweep - self.down_since[name])
                    else:
                        self.down_since.pop(name, None)
                self.halt.wait(max(0.0, self.interval - (time.monotonic() - sweep)))

    def stop(self):
        self.halt.set()
        self.join()
        return {n: round(s, 2) for n, s in self.longest.items()}


def verify(bots, check, what, wait=5.0):
    """Every bot in the state `check` asks for, or the benchmark fails naming the ones that are not."""
    deadline = time.monotonic() + wait
    while True:
        with ThreadPoolExecutor(8) as pool:
            bad = [b["name"] for b, ok in zip(bots, pool.map(check, bots)) if not ok]
        if not bad:
            return len(bots)
        if time.monotonic() >= deadline:
            raise SystemExit(f"remote bench: {len(bad)} of {len(bots)} bots are not {what} after the run: "
                             f"{', '.join(bad[:20])}{' ...' if len(bad) > 20 else ''}; no result recorded")
        time.sleep(0.5)


# ---------------------------------------------------------------------------------- measuring a run
class CgroupMemory(threading.Thread):
    """Peak summed PSS and RSS of a cgroup's processes, every 250 ms (bench_kill_switch's MemorySampler)."""

    def __init__(self, name, interval=0.25):
        super().__init__(daemon=True)
        self.name, self.interval = name, interval
        self.peak_pss = self.peak_rss = self.peak_processes = 0
        self.halt = threading.Event()

    def run(self):
        while not self.halt.is_set():
            pids = cgroup_pids(self.name)
            pss, rss = memory_kb(pids)
            self.peak_pss, self.peak_rss = max(self.peak_pss, pss), max(self.peak_rss, rss)
            self.peak_processes = max(self.peak_processes, len(pids))
            self.halt.wait(self.interval)


def stop_group(child, grace=30.0):
    for sig, wait in ((signal.SIGINT, grace), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(wait)
            return


class Runs:
    def __init__(self, fleet: RemoteFleet, work: Path):
        self.fleet, self.work, self.n = fleet, work, 0
        self.artifacts = work / "runs"
        self.ssh_args = None  # ANSIBLE_SSH_ARGS for the runs, when not ansible.cfg's

    def env(self, timeline):
        env = dict(os.environ)
        for key in ("BOTOPS_INVENTORY", "BOTOPS_SANDBOX_DIR"):
            env.pop(key, None)
        env.update(BOTOPS_ARTIFACTS_DIR=str(self.artifacts), BOTOPS_LOCK_DIR=str(self.work / "locks"),
                   BOTOPS_OPERATOR="bench", ANSIBLE_SSH_CONTROL_PATH_DIR=str(self.fleet.control_dir),
                   ANSIBLE_CALLBACK_PLUGINS=str(REPO / "bench" / "callback_plugins"),
                   ANSIBLE_CALLBACKS_ENABLED="bench_timeline", BENCH_TIMELINE=str(timeline))
        env["PATH"] = os.pathsep.join((str(Path(sys.executable).parent), env.get("PATH", "")))
        # this checkout's botops and collection, whatever checkout the virtualenv's editable install points to
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
        if self.ssh_args:
            env["ANSIBLE_SSH_ARGS"] = self.ssh_args
        return env

    def timed(self, label, cmd, watch=None, downtime=None, grace=5.0, env=None, cold=True):
        """One run, from a cold start (no SSH connection open) unless `cold` is false (the connections the
        last run left open, ControlPersist, are kept): wall, CPU by cgroup, peak memory, watch."""
        self.n += 1
        if cold:
            self.fleet.close_connections()
        settled = settle()
        timeline = self.work / f"timeline-{self.n}.json"
        env = env or self.env(timeline)
        env["BENCH_TIMELINE"] = str(timeline)
        before = set(self.artifacts.glob("*/*/botops-summary.json"))
        load = os.getloadavg()
        cpu0 = {g: cpu_ns(g) for g in CGROUPS}
        self0 = resource.getrusage(resource.RUSAGE_SELF)
        machine0 = cpu_times()
        sampler = CgroupMemory("controller")
        log = open(self.work / f"run-{self.n}.log", "w")
        t0, m0 = time.time(), time.monotonic()
        child = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                                 preexec_fn=joiner("controller"), start_new_session=True)
        sampler.start()
        if watch:
            watch.begin(t0)
        if downtime:
            downtime.start()
        try:
            _, status, usage = os.wait4(child.pid, 0)
        except BaseException:
            stop_group(child)
            raise
        finally:
            log.close()
        seconds = time.monotonic() - m0
        cpu1 = {g: cpu_ns(g) for g in CGROUPS}
        busy = cpu_busy(machine0, cpu_times())
        sampler.halt.set()
        sampler.join()
        seen = watch.finish(grace) if watch else {}
        longest = downtime.stop() if downtime else None
        self1 = resource.getrusage(resource.RUSAGE_SELF)
        rc = os.waitstatus_to_exitcode(status)
        new = sorted(set(self.artifacts.glob("*/*/botops-summary.json")) - before)
        summary = json.loads(new[-1].read_text()) if new else {}
        result = {
            "label": label, "command": " ".join(str(c) for c in cmd[:3]), "rc": rc, "seconds": round(seconds, 2),
            "cpu_s": round((cpu1["controller"] - cpu0["controller"]) / 1e9, 2),
            "cpu_s_waited": round(usage.ru_utime + usage.ru_stime, 2),  # without the ssh masters
            "sshd_cpu_s": round((cpu1["sshd"] - cpu0["sshd"]) / 1e9, 2),
            "bots_cpu_s": round((cpu1["bots"] - cpu0["bots"]) / 1e9, 2),
            "bench_cpu_s": round(self1.ru_utime + self1.ru_stime - self0.ru_utime - self0.ru_stime, 2),
            "machine_busy": busy,
            "pss_mb": round(sampler.peak_pss / 1024), "rss_mb": round(sampler.peak_rss / 1024),
            "controller_processes": sampler.peak_processes,
            "load_before": [round(v, 2) for v in load], "settled": settled, "started_at": t0, "ended_at": t0 + seconds,
            "status": summary.get("status"), "rows": summary.get("bots") or {},
        }
        result.update(seen)
        if downtime:
            result["downtime"] = longest
        with contextlib.suppress(OSError, ValueError):
            result["timeline"] = json.loads(timeline.read_text())
        print(f"    {label}: {result['seconds']}s rc {rc}, first {result.get('first_s')}s, last "
              f"{result.get('last_s')}s ({result.get('seen', '-')} seen), controller CPU {result['cpu_s']}s, "
              f"sshd {result['sshd_cpu_s']}s, bots {result['bots_cpu_s']}s, PSS {result['pss_mb']} MB, "
              f"load before {result['load_before'][0]}", flush=True)
        if rc != 0:
            tail = (self.work / f"run-{self.n}.log").read_text()[-3000:]
            raise SystemExit(f"remote bench: {label} exited {rc}; the end of its output:\n{tail}")
        return result


def settle(busy_below=0.3, quiet_for=3, timeout=120.0):
    """Wait (up to `timeout`) until the machine has been less than `busy_below` busy for `quiet_for`
    seconds in a row: a run does not start while the last one's aftermath (a hundred bots starting
    after a release) still holds the cores. Returns (seconds waited, the last second's busy share)."""
    began, quiet, busy = time.monotonic(), 0, None
    while time.monotonic() - began < timeout:
        before = cpu_times()
        time.sleep(1.0)
        busy = cpu_busy(before, cpu_times())
        quiet = quiet + 1 if busy is not None and busy < busy_below else 0
        if quiet >= quiet_for:
            break
    return round(time.monotonic() - began, 1), busy


# ---------------------------------------------------------------------------------- the kill switch
def pack_pids(fleet):
    pids = {}
    for name, spec in fleet.hosts().items():
        info = fleet.supervised(spec).get(spec["facts"]["service"]) or {}
        pids[name] = info.get("pid") or None
    return pids


def start_stopped(fleet):
    """Start the packs a baseline's service stop left stopped (through each host's supervisord)."""
    import xmlrpc.client

    from supervisor.xmlrpc import SupervisorTransport

    started = 0
    for spec in fleet.hosts().values():
        info = fleet.supervised(spec).get(spec["facts"]["service"]) or {}
        if info.get("statename") != "RUNNING":
            sock = Path(spec["state_dir"]) / "supervisor" / "supervisor.sock"
            rpc = xmlrpc.client.ServerProxy("http://127.0.0.1", transport=SupervisorTransport(None, None, f"unix://{sock}"))
            rpc.supervisor.startProcess(spec["facts"]["service"], True)
            started += 1
    return started


def idle_cpu(seconds=5.0):
    c0, m0 = {g: cpu_ns(g) for g in CGROUPS}, cpu_times()
    time.sleep(seconds)
    c1, m1 = {g: cpu_ns(g) for g in CGROUPS}, cpu_times()
    return {"sshd_share": round((c1["sshd"] - c0["sshd"]) / 1e9 / seconds, 3),
            "bots_share": round((c1["bots"] - c0["bots"]) / 1e9 / seconds, 3),
            "machine_busy": cpu_busy(m0, m1)}


def sessions(fleet, value):
    """How the fleet kill switch reaches the remote bots: the inventory's bot_kill_switch_sessions for
    every bot (None: the default, one SSH session per host; per_host_task: Ansible's per-host task)."""
    path = fleet.inventory / "group_vars" / "all" / "kill_switch_sessions.yml"
    if value is None:
        path.unlink(missing_ok=True)
    else:
        path.write_text(f"bot_kill_switch_sessions: {value}\n")


def bench_kill_switch(hosts, rounds, with_baseline, poll, work, per_host=True, per_host_rounds=None):
    fleet = RemoteFleet()
    out = {"hosts": hosts, "halt": [], "release": []}
    try:
        out["up"] = fleet.up(hosts=hosts, kind="packed", trade_interval=1.0)
        bots = fleet.bots()
        out["bots"] = len(bots)
        out["idle"] = idle_cpu()
        runs = Runs(fleet, work / f"ks-{hosts}")
        runs.work.mkdir(parents=True, exist_ok=True)
        inventory = f"--inventory={fleet.inventory}"
        # (path, its keys, from a cold start): "warm" keeps the connections the previous run left open
        paths = [("sessions", "halt", "release", True), ("sessions, warm", "halt_warm", "release_warm", False)]
        paths += [("per-host", "halt_per_host", "release_per_host", True)] if per_host else []
        for path, halt_key, release_key, cold in paths:
            out.setdefault(halt_key, [])
            out.setdefault(release_key, [])
            sessions(fleet, "per_host_task" if path == "per-host" else None)
            # warm: ControlPersist long enough to outlast the settling between runs (ansible.cfg's ssh_args
            # with 15m: the tuning docs/operations/kill-switch.md names), every host's connection opened
            # by a run before (a release of released bots)
            runs.ssh_args = None if cold else WARM_SSH_ARGS
            if not cold:
                runs.timed(f"[{hosts} hosts, {path}] open the connections", [
                    str(BOTOPS), "kill-switch", "--level=halt", "--release", inventory])
            for i in range(rounds if path != "per-host" or per_host_rounds is None else per_host_rounds):
                pids = pack_pids(fleet)
                halt = runs.timed(f"[{hosts} hosts, {path}] halt {i + 1}", [
                    str(BOTOPS), "kill-switch", "--level=halt", "--reason=bench: remote kill switch drill", inventory],
                    watch=Watch(bots, lambda b: halted(b, pids), poll), cold=cold)
                halt["verified"] = verify(bots, lambda b: halted(b, pids), "halted")
                release = runs.timed(f"[{hosts} hosts, {path}] release {i + 1}",
                                     [str(BOTOPS), "kill-switch", "--level=halt", "--release", inventory],
                                     watch=Watch(bots, released, poll), grace=10.0, cold=cold)
                release["verified"] = verify(bots, released, "released (ready, halt flag down)", wait=30)
                out[halt_key].append(halt)
                out[release_key].append(release)
        sessions(fleet, None)
        if with_baseline:
            pids = pack_pids(fleet)
            env = runs.env(runs.work / "baseline-timeline.json")
            env.update(ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_HOME=str(runs.work / ".ansible"))
            base = runs.timed(f"[{hosts} hosts] baseline uri", [str(ANSIBLE_PLAYBOOK), "-i", str(fleet.inventory),
                              str(REPO / "bench" / "baseline_uri_kill_switch.yml")],
                              watch=Watch(bots, lambda b: halted(b, pids), poll), env=env)
            base["verified"] = verify(bots, lambda b: halted(b, pids), "halted")
            out["baseline"] = base
            restore = runs.timed(f"[{hosts} hosts] release after the baseline",
                                 [str(BOTOPS), "kill-switch", "--level=halt", "--release", inventory])
            out["baseline_restarted_packs"] = start_stopped(fleet)
            verify(bots, released, "released after the baseline", wait=60)
            out["baseline_release_rc"] = restore["rc"]
        out["memory_after"] = fleet.memory()
    finally:
        fleet.down()
    return out


# ---------------------------------------------------------------------------------- deploy and rollback
def bench_deploy(hosts, poll, work, ops_nice=None):
    fleet = RemoteFleet()
    out = {"hosts": hosts, "ops_nice": ops_nice}
    try:
        out["up"] = fleet.up(hosts=hosts, kind="real", trade_interval=0.5)
        if ops_nice is not None:  # the inventory's bot_ops_nice for every host (botops' default: 10)
            fleet.set_group_vars(bot_ops_nice=ops_nice)
        bots = fleet.bots()
        out["bots"] = len(bots)
        out["idle"] = idle_cpu()
        runs = Runs(fleet, work / f"deploy-{hosts}")
        runs.work.mkdir(parents=True, exist_ok=True)
        inventory = f"--inventory={fleet.inventory}"
        for label, args, version in (
                ("deploy", ["deploy", f"--version={DEPLOY_TO}", f"--artifacts={fleet.artifacts}"], DEPLOY_TO),
                ("rollback", ["rollback", "--target=latest"], DEPLOY_FROM)):
            run = runs.timed(f"[{hosts} hosts] {label}", [str(BOTOPS), *args, inventory],
                             watch=Watch(bots, on_release(version), poll), downtime=Downtime(bots), grace=10.0)
            run["verified"] = verify(bots, on_release(version), f"ready on {version}", wait=30)
            out[label] = run
        # plain Ansible beside it: restart every bot and wait until it is ready, nothing else
        readiness = runs.work / "baseline_readiness.json"
        readiness.write_text(json.dumps({"baseline_readiness": {f.name: list(f.readiness) for f in FAMILIES.values()}}))
        env = runs.env(runs.work / "baseline-restart-timeline.json")
        env.update(ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_HOME=str(runs.work / ".ansible"))
        base = runs.timed(f"[{hosts} hosts] plain Ansible restart", [
            str(ANSIBLE_PLAYBOOK), "-i", str(fleet.inventory), str(REPO / "bench" / "baseline_restart.yml"),
            "-e", f"@{readiness}"], watch=Watch(bots, on_release(DEPLOY_FROM), poll), downtime=Downtime(bots),
            grace=10.0, env=env)
        base["verified"] = verify(bots, on_release(DEPLOY_FROM), f"ready on {DEPLOY_FROM}", wait=30)
        out["baseline_restart"] = base
    finally:
        fleet.down()
    return out


# ---------------------------------------------------------------------------------- report
def med(values):
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 2) if values else None


def quantiles(values):
    values = sorted(v for v in values if v is not None)
    if not values:
        return {"median": None, "max": None}
    return {"median": round(statistics.median(values), 2), "max": round(values[-1], 2)}


def where_the_time_goes(run):
    """(part, seconds) of one run from its timeline, and the per-bot spans of the per-host task."""
    tl = run.get("timeline")
    if not tl:
        return [], {}
    events = tl["events"]
    parts = [("invoke and ansible-playbook start-up, inventory (before the first task)",
              events[0][1] - run["started_at"])]
    for (name, at), (_, nxt) in zip(events, events[1:]):
        if name.startswith("task: "):
            parts.append((name[len("task: "):], nxt - at))
    parts.append(("after the play: ansible-runner, the report", run["ended_at"] - events[-1][1]))
    merged: dict[str, float] = {}  # a task that starts once per batch of hosts (meta end_host) is one part
    for part, seconds in parts:
        merged[part] = merged.get(part, 0.0) + seconds
    parts = list(merged.items())
    spans = {}
    for task, hosts in (tl.get("hosts") or {}).items():
        if task.startswith(PER_HOST_TASK):
            done = [(s, e) for s, e in hosts.values() if e]
            if done:
                module = [float(r["duration"]) for r in run["rows"].values() if r.get("duration") is not None]
                spans = {"bots": len(done), "per_bot": quantiles([e - s for s, e in done]),
                         "module": quantiles(module),
                         "first_start": round(min(s for s, _ in done) - run["started_at"], 2),
                         "last_end": round(max(e for _, e in done) - run["started_at"], 2)}
    return [(p, round(s, 2)) for p, s in parts if s >= 0.05], spans


def fmt(v, unit=""):
    return "-" if v is None else f"{v}{unit}"


def run_row(path, hosts, bots, run, result):
    return (f"| {path} | {hosts} | {bots} | {run['seconds']} | {fmt(run.get('first_s'))} | {fmt(run.get('last_s'))} | "
            f"{run['cpu_s']} | {run['cpu_s'] / bots:.3f} | {run['pss_mb']} / {run['rss_mb']} | "
            f"{run['sshd_cpu_s']} | {run['bots_cpu_s']} | {run['bench_cpu_s']} | {result} | "
            f"{run['load_before'][0]} |")


def section(info, sizes, deploy, note):
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load = info["load_at_start"]
    largest = max(sizes, key=lambda s: s["hosts"]) if sizes else None
    lines = [
        f"<!-- bench:{SECTION}:start -->",
        "## Remote fleet: kill switch and deploy over SSH (`botops bench --only=remote`)",
        "",
        f"- date: {now}",
        f"- machine: {info['nproc']} CPUs ({info['cpu']}), {info['memory']}, kernel {info['kernel']}; "
        f"load average at start {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1/5/15 min)",
        f"- software: botops {info.get('commit', '?')}, Python {info['python']}, ansible-core {info['ansible_core']}, "
        f"OpenSSH {info.get('openssh', '?')}; ansible.cfg as shipped (forks 20, pipelining, ControlPersist 60 s)",
        "- hosts (bench/remote_fleet.py): host i is 127.0.1.i with its own sshd on port 2222 (keys only, no "
        "password, no root login, only the host's user), strict host key checking against a known_hosts file the "
        "harness writes, an unprivileged user per host running its bots from its home under its own supervisord; "
        "two bots per host, one family per host (families round-robin). Inventory hosts are the bots "
        "(ansible_host/ansible_port/ansible_user per bot, the key and known_hosts for all, groups per family, "
        "host_vars main.yml + secrets.yml, not vaulted). All hosts share this machine's two cores with the "
        "controller: their sshd and bots' CPU is measured apart (cgroups) and shown next to the controller's.",
        "- kill-switch fleet: packed - one reference bot process serves both bots of a host (bench/fleet.py's "
        "PackedFleet), in-memory ledger, no PostgreSQL, trade every 1 s; a host runs sshd, supervisord, the bot "
        "process and its own Redis. The kill-switch ladder works on the host as the bot's user: the bots' "
        "service is the pack's supervisord program (so mojorust's halt, a service stop, stops both bots of its "
        "host, and papertrader's release restarts the pack).",
        "- deploy fleet: real - one process and one PostgreSQL database per bot (a packed bot cannot be deployed "
        "alone), each host its own PostgreSQL cluster, Redis and supervisord; trade every 0.5 s; deploy "
        f"{DEPLOY_FROM} -> {DEPLOY_TO} (artifact copied to each host, backup, expand migration), then rollback "
        "--target=latest.",
        "- every run is `botops ...` as an operator runs it, started with no SSH connection open, except the rows "
        "marked warm: there every host's connection was left open by the run before (ansible.cfg's ssh_args with "
        f"`{WARM_SSH_ARGS}`, docs/operations/kill-switch.md). Before each run the benchmark waits (up to 2 min) "
        "until the machine has been under 30% busy for 3 s, so that a run does not start in the last one's "
        "aftermath (a release restarts a hundred bot processes). \"first\" and "
        "\"last\" are seconds from its start until the benchmark, polling every bot on its host itself (its API, "
        "or its process for mojorust), first saw a bot / saw the last bot in the asked state (resolution: the poll "
        f"interval, {info['poll']} s); every bot is checked again after the run, and a run where one is not in the "
        "asked state fails the benchmark. Controller CPU: botops, ansible-playbook and its workers, ssh clients and "
        "their ControlPersist masters (a cgroup). Hosts' sshd + modules / bots CPU: everything the hosts' sshd "
        "(their SSH sessions and the modules Ansible runs in them, as the bot's user) and the bots did during the run. Bench CPU: this benchmark's own polling and sampling.",
        "",
        "Memory of the hosts as the fleet scales (after start-up, idle):",
        "",
        "| hosts | bots | sshd processes | sshd PSS / RSS MB | bots' processes | bots' PSS / RSS MB | machine memory used MB | "
        "idle CPU: sshd / bots (cores) | up s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in sorted(sizes, key=lambda s: s["hosts"]) + ([deploy] if deploy else []):
        m = s["up"]["memory"]
        kind = "" if s is not deploy else " (deploy fleet, real bots)"
        lines.append(f"| {s['hosts']}{kind} | {s['bots']} | {m['sshd']['processes']} | {m['sshd']['pss_mb']} / "
                     f"{m['sshd']['rss_mb']} | {m['bots']['processes']} | {m['bots']['pss_mb']} / {m['bots']['rss_mb']} "
                     f"| {m['machine_used_mb']} | {s['idle']['sshd_share']} / {s['idle']['bots_share']} | "
                     f"{s['up']['seconds']} |")
    lines += [
        "",
        "Kill switch (`botops kill-switch --level=halt`, then `--release`):",
        "",
        "| path | hosts | bots | wall s | first s | last verified s | controller CPU s | CPU s per bot | controller "
        "peak MB (PSS / RSS) | hosts' sshd + modules CPU s | hosts' bots CPU s | bench CPU s | result | load before |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for s in sorted(sizes, key=lambda s: s["hosts"]):
        for path, kind, runs in (("one SSH session per host", "halt", s["halt"]),
                                 ("one SSH session per host", "release", s["release"]),
                                 ("one SSH session per host, connections open (warm)", "halt", s.get("halt_warm") or []),
                                 ("one SSH session per host, connections open (warm)", "release",
                                  s.get("release_warm") or []),
                                 ("per-host task (bot_kill_switch_sessions: per_host_task)", "halt",
                                  s.get("halt_per_host") or []),
                                 ("per-host task (bot_kill_switch_sessions: per_host_task)", "release",
                                  s.get("release_per_host") or [])):
            for r in runs:
                lines.append(run_row(f"{path}: {kind}", s["hosts"], s["bots"], r,
                                     f"{r['verified']}/{s['bots']} {'halted' if kind == 'halt' else 'released'}"))
        if "baseline" in s:
            b = s["baseline"]
            lines.append(run_row("plain Ansible: uri per bot from its host (bench/baseline_uri_kill_switch.yml)",
                                 s["hosts"], s["bots"], b, f"{b['verified']}/{s['bots']} halted"))
    lines += ["", "| halt, medians | bots | one SSH session per host, cold s | the same, warm s | per-host task s | "
              "per-host / sessions: cold, warm | target | meets |", "|---|---:|---:|---:|---:|---:|---|---|"]
    for s in sorted(sizes, key=lambda s: s["hosts"]):
        cold, warm = med([r["seconds"] for r in s["halt"]]), med([r["seconds"] for r in s.get("halt_warm") or []])
        per_host = med([r["seconds"] for r in s.get("halt_per_host") or []])
        ratios = [per_host / v if per_host and v else None for v in (cold, warm)]
        target = f"<= {TARGETS['halt_200_s']:g} s, >= {TARGETS['speedup']:g}x" if s["bots"] >= 200 else ""

        def within(v):
            return "-" if v is None else "yes" if v <= TARGETS["halt_200_s"] else "no"

        def faster(r):
            return "-" if r is None else "yes" if r >= TARGETS["speedup"] else "no"
        meets = "" if not target else (f"{TARGETS['halt_200_s']:g} s: cold {within(cold)}, warm {within(warm)}; "
                                       f"{TARGETS['speedup']:g}x: cold {faster(ratios[0])}, warm {faster(ratios[1])}")
        shown = ", ".join("-" if r is None else f"{r:.1f}x" for r in ratios)
        lines.append(f"| {s['hosts']} hosts | {s['bots']} | {fmt(cold)} | {fmt(warm)} | {fmt(per_host)} | {shown} | "
                     f"{target} | {meets} |")
    if deploy:
        lines += [
            "",
            f"Deploy and rollback, {deploy['hosts']} hosts, {deploy['bots']} real bots, bot_ops_nice "
            f"{10 if deploy.get('ops_nice') is None else deploy['ops_nice']} (\"first\" / \"last\": on the "
            "new release and ready; downtime: the longest stretch each bot's readiness did not answer 200, "
            "sampled every 0.25 s by the benchmark; \"report\": bot_deploy's own stop -> ready):",
            "",
            "| run | wall s | first s | last verified s | controller CPU s | CPU s per bot | controller peak MB (PSS / "
            "RSS) | hosts' sshd + modules CPU s | hosts' bots CPU s | downtime median / max s | report downtime median / max s "
            "| result | load before |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|",
        ]
        for label, version in (("deploy", DEPLOY_TO), ("rollback", DEPLOY_FROM), ("baseline_restart", DEPLOY_FROM)):
            r = deploy.get(label)
            if r is None:
                continue
            down = quantiles(r["downtime"].values())
            report = quantiles([float(row["downtime"]) for row in r["rows"].values() if row.get("downtime") is not None])
            command = {"deploy": f"`botops deploy --version={DEPLOY_TO}`", "rollback": "`botops rollback --target=latest`",
                       "baseline_restart": "plain Ansible: restart each bot, wait until ready (bench/baseline_restart.yml)"}[label]
            lines.append(f"| {command} | {r['seconds']} | {fmt(r.get('first_s'))} | {fmt(r.get('last_s'))} | {r['cpu_s']} | "
                         f"{r['cpu_s'] / deploy['bots']:.2f} | {r['pss_mb']} / {r['rss_mb']} | {r['sshd_cpu_s']} | "
                         f"{r['bots_cpu_s']} | {down['median']} / {down['max']} | {report['median']} / {report['max']} | "
                         f"{r['verified']}/{deploy['bots']} on {version} and ready | {r['load_before'][0]} |")
    for key, what in (("halt", "one SSH session per host, cold"), ("halt_warm", "one SSH session per host, warm")):
        halts = (largest or {}).get(key) or []
        if not halts:
            continue
        halt = sorted(halts, key=lambda r: r["seconds"])[len(halts) // 2]
        parts, _spans = where_the_time_goes(halt)
        if parts:
            lines += ["", f"Where the time of a {largest['bots']}-bot halt goes, {what} (the median run: "
                          f"{halt['seconds']} s, controller CPU {halt['cpu_s']} s, hosts' sshd and Python "
                          f"{halt['sshd_cpu_s']} s, bots {halt['bots_cpu_s']} s):", "", "| part | seconds |", "|---|---:|"]
            lines += [f"| {p} | {s} |" for p, s in parts]
    if largest and (largest.get("halt_per_host") or largest["halt"]):
        halts = largest.get("halt_per_host") or largest["halt"]
        halt = sorted(halts, key=lambda r: r["seconds"])[len(halts) // 2]
        parts, spans = where_the_time_goes(halt)
        if parts:
            lines += ["", f"Where the time of a {largest['bots']}-bot halt goes, per-host task ({halt['seconds']} s, controller CPU "
                          f"{halt['cpu_s']} s; the timeline callback):", "", "| part | seconds |", "|---|---:|"]
            lines += [f"| {p} | {s} |" for p, s in parts]
        if spans:
            lines += ["", f"The per-host task, per bot ({spans['bots']} bots, 20 forks): worker start -> result "
                          f"median {spans['per_bot']['median']} s, max {spans['per_bot']['max']} s, of which the "
                          f"module's own ladder on the host (its `duration`) median {spans['module']['median']} s, max "
                          f"{spans['module']['max']} s; the first bot's worker started {spans['first_start']} s and the "
                          f"last result came {spans['last_end']} s after `botops` started."]
    lines += ["", note.strip(), f"<!-- bench:{SECTION}:end -->", ""]
    return "\n".join(lines)


def commit():
    """The commit measured (and whether the checkout has changes of its own)."""
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True)
    return (head.stdout.strip() or "?") + (" with uncommitted changes" if dirty.stdout.strip() else "")


def openssh_version():
    proc = subprocess.run(["ssh", "-V"], capture_output=True, text=True)
    return (proc.stderr or proc.stdout).strip().split(",")[0].replace("OpenSSH_", "")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", default="100", help="kill-switch fleet sizes in hosts, comma separated (default 100)")
    parser.add_argument("--deploy-hosts", type=int, default=20, help="hosts of the deploy fleet (default 20)")
    parser.add_argument("--rounds", type=int, default=1, help="halt/release rounds per size (default 1)")
    parser.add_argument("--poll", type=float, default=0.5, help="seconds between two polls of a bot (default 0.5)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the plain-Ansible uri baseline")
    parser.add_argument("--no-deploy", action="store_true", help="skip the deploy and rollback")
    parser.add_argument("--no-per-host", action="store_true",
                        help="skip the per-host task runs (bot_kill_switch_sessions: per_host_task) beside the sessions'")
    parser.add_argument("--per-host-max", type=int, default=None,
                        help="run the per-host task path only at sizes up to this many hosts (default: every size)")
    parser.add_argument("--per-host-rounds", type=int, default=None,
                        help="rounds of the per-host task path (default: --rounds; it takes minutes a round at 100 hosts)")
    parser.add_argument("--ops-nice", type=int, default=None, metavar="N",
                        help="the deploy fleet's bot_ops_nice (default: botops' own, 10; 0: botops' work at the bots' "
                             "priority, the comparison run)")
    parser.add_argument("--note", default="", help="text added under the numbers")
    parser.add_argument("--no-write", action="store_true", help="print only; leave bench/RESULTS.md alone")
    parser.add_argument("--json", type=Path, help="also write the raw results to this file")
    parser.add_argument("--from-json", type=Path,
                        help="run nothing: write the section of the results a run saved with --json (a new --note)")
    args = parser.parse_args(argv)
    if args.from_json:
        saved = json.loads(args.from_json.read_text())
        publish(SECTION, section(saved["machine"], saved["sizes"], saved["deploy"], args.note or NOTE),
                write=not args.no_write)
        return 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))  # a TERM brings the fleet down too

    load = os.getloadavg()
    info = machine(load)
    info.update(poll=args.poll, openssh=openssh_version(), commit=commit())
    print(f"machine: {info['nproc']} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, "
          f"{mem_available_mb()} MB available", flush=True)
    work = Path(f"/tmp/botops-bench-remote-runs-{os.getpid()}")
    work.mkdir(parents=True, exist_ok=True)
    sizes, deploy = [], None
    hosts = [int(h) for h in args.hosts.split(",") if h.strip()]
    try:
        for n in hosts:
            print(f"== kill switch, {n} hosts", flush=True)
            sizes.append(bench_kill_switch(n, args.rounds, with_baseline=not args.no_baseline and n == max(hosts),
                                           poll=args.poll, work=work, per_host=not args.no_per_host and (
                                               args.per_host_max is None or n <= args.per_host_max),
                                           per_host_rounds=args.per_host_rounds))
        if not args.no_deploy:
            print(f"== deploy and rollback, {args.deploy_hosts} hosts", flush=True)
            deploy = bench_deploy(args.deploy_hosts, args.poll, work, ops_nice=args.ops_nice)
    finally:
        if args.json:
            args.json.write_text(json.dumps({"machine": info, "sizes": sizes, "deploy": deploy}, indent=2, default=str))
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    publish(SECTION, section(info, sizes, deploy, args.note or NOTE), write=not args.no_write)
    return 0


NOTE = """Notes: the one-SSH-session path (the default) drives a host's bots through one `ssh` session to
the host, every host at once: the host's Python runs `run_fleet` for that host's bots on the kill
switch's module_utils read from the session's stdin, compiled by the controller
(plugins/plugin_utils/fleet_ssh.py), and the controller writes every result and audit record itself;
no per-host task, no per-bot worker. The session's ssh command is the ssh connection plugin's for the
host, on Ansible's own ControlPath: "warm" rides on the connection the run before left open.

Where the 200-bot halt's time goes on this machine: every host runs on the controller's two cores,
so a run is bound by the CPU of the whole rig, not by the controller. Warm, the controller uses
4 CPU-s (0.02 per bot; start-up to the first task 1.4 s), while the hosts' sshd and Python use
14 CPU-s (about 0.14 per host: the host's Python starting, importing the kill switch's code and
walking two bots' ladders) and the bots 8: 26 CPU-s of work on 2 cores cannot end before 13 s.
Cold, each new connection's key exchange adds about 0.08 CPU-s to the controller's ssh client
(OpenSSH 9.2's default sntrup761x25519; curve25519-sha256 costs 0.007 here) and 0.025 to the host's
sshd: 12 CPU-s of controller, 24-25 s. With the hosts on their own machines, the controller's share
alone would allow about 2 s of CPU for the 200 bots, warm; that is an estimate from the columns
above, not a measurement: the 5 s target is not shown on this rig.

The per-host path (`bot_kill_switch_sessions: per_host_task`) runs one `bot_kill_switch` task per bot:
Ansible forks a worker per bot (20 at a time), which templates the bot's variables, opens (or reuses)
the host's SSH connection and runs the module with the host's Python on the host; the two bots of a
host share one SSH connection (ControlPersist), but not a task. After it, fleet_kill_gather.yml writes
each remote bot's record into the controller's audit log with one `lineinfile` per bot (58 s of the
175 s here). It ran one round (several minutes a round at 100 hosts); the sessions paths three.

Deploy and rollback: the rollback's downtime (median 2.9 s, max 7.3 s) is the bot's own stop and
start (bot_deploy's window: pause, stop, switch `current`, start, readiness), at most 20% of the
bots in a window at once (window slots). The plain-Ansible restart, which restarts all 40 bots at
once with no window slot, keeps them down 8.3 s (median) on the same cores, at 0.27 CPU-s of
controller per bot against the rollback's 2.3 (a lock, a preflight, a backup of the state being
left, the window with its ledger, an unlock: five module calls per bot). Its first and last columns
mean nothing: its bots were on 1.0.0 and ready before it began."""


if __name__ == "__main__":
    sys.exit(main())
