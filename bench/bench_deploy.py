"""Deploy and rollback of a 50-bot sandbox fleet through the real `invoke` tasks, plain Ansible and
Mitogen side by side, against the issue's targets.

    botops bench --only=deploy [-- --bots 50 --modes plain,mitogen --no-write]
    .venv/bin/python -m bench --only deploy
    .venv/bin/python bench/bench_deploy.py --bots 50 --modes plain,mitogen

For each mode a fresh fleet (botops.sandbox.fleet.Fleet, one real bot process and database per bot,
families round-robin, trade_interval 0.2) is brought up in a /tmp directory, then:

1. `botops deploy --version=1.1.0` (canary 1, then the rest; backup and expand migration per bot);
2. `botops rollback --target=latest` (back to 1.0.0: downgrade with 1.1.0's scripts);

each timed end to end, with the module calls per bot counted from ansible-runner's events (the
front end's summary), the per-bot downtime the report gives (bot_deploy's stop -> ready), and the
downtime measured independently in each bot's trades table: the largest gap between consecutive
trade timestamps from 3 s before the run to its end (the bots' normal largest gap, measured the
same way before the run, is printed beside it).

Mitogen runs with the `mitogen_linear` strategy through the environment (ANSIBLE_STRATEGY,
ANSIBLE_STRATEGY_PLUGINS) when the `mitogen` package is importable; it is not a dependency of
botops (pip install mitogen into the venv to bench it). Results go to bench/RESULTS.md (its
"Deploy" section only) unless --no-write.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.results import cpu_busy, cpu_times, machine, publish  # noqa: E402
from botops.sandbox.fleet import Fleet  # noqa: E402
from tests.integration.conftest import make_sandbox_dir, port_block  # noqa: E402

BOTOPS = Path(sys.executable).with_name("botops")
SECTION = "deploy"
TARGETS = {
    "deploy_s": 180.0,  # botops deploy of 50 bots with backup and migration
    "module_calls": 10,  # per bot
    "rollback_s": 60.0,  # botops rollback --target=latest of 50 bots
    "rollback_downtime_s": 3.0,  # per bot
}
TRADE_INTERVAL = 0.2
LEAD = 3.0  # seconds of trades before a run that count towards its gaps


def mitogen_env():
    spec = importlib.util.find_spec("ansible_mitogen")
    if spec is None:
        return None
    plugins = Path(spec.submodule_search_locations[0]) / "plugins" / "strategy"
    import mitogen
    version = ".".join(str(p) for p in mitogen.__version__)
    return {"ANSIBLE_STRATEGY_PLUGINS": str(plugins), "ANSIBLE_STRATEGY": "mitogen_linear"}, version


def quantiles(values):
    values = sorted(v for v in values if v is not None)
    if not values:
        return {"n": 0, "median": None, "p90": None, "max": None}
    p90 = values[min(len(values) - 1, int(round(0.9 * (len(values) - 1))))]
    return {"n": len(values), "median": round(statistics.median(values), 2), "p90": round(p90, 2),
            "max": round(values[-1], 2)}



def trade_gaps(fleet, bots, since, until):
    """Largest gap between consecutive trades of each bot in [since, until] (epoch seconds)."""
    gaps = {}
    for bot in bots:
        rows = fleet.db_query(bot, "SELECT extract(epoch FROM ts)::float8 FROM trades WHERE ts >= to_timestamp(%s) "
                                   "AND ts <= to_timestamp(%s) ORDER BY ts", (since, until))
        times = [since] + [r[0] for r in rows] + [until]
        gaps[bot] = round(max(b - a for a, b in zip(times, times[1:])), 3)
    return gaps


def stop_group(child, grace=30.0):
    """Interrupt a run's whole process group, then kill what is left of it."""
    for sig, wait in ((signal.SIGINT, grace), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(wait)
            return


class Bench:
    def __init__(self, bots, families=None):
        self.bots = bots
        self.families = families
        self.workdir = None
        self.fleet = None
        self.names = []

    def up(self):
        self.workdir = make_sandbox_dir("botops-bench-deploy-")
        began = time.monotonic()
        # below Linux's ephemeral ports (32768-60999): a client's source port there took a bot's port
        # between the check and the bind once; 18000 is the sandbox's, 21000+ the packed bench fleets'
        with port_block(self.bots, 19000) as base:
            self.fleet = Fleet(self.workdir / "state", self.workdir / "inventory", base_port=base)
            self.fleet.up(bots=self.bots, families=self.families, trade_interval=TRADE_INTERVAL)
        self.names = self.fleet.bot_names()
        self.fleet.wait_ready(self.names, timeout=300)
        return round(time.monotonic() - began, 1)

    def down(self):
        if self.fleet is not None:
            self.fleet.down(purge=True)
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def env(self, extra):
        env = dict(os.environ, BOTOPS_SANDBOX_DIR=str(self.workdir / "state"),
                   BOTOPS_ARTIFACTS_DIR=str(self.workdir / "runs"), BOTOPS_LOCK_DIR=str(self.workdir / "locks"))
        env.update(extra or {})
        return env

    def invoke(self, extra_env, *args):
        """Run one invoke task; returns (seconds, returncode, summary, output tail, epoch start, epoch end)."""
        cmd = [str(BOTOPS), *args, f"--inventory={self.workdir / 'inventory' / 'hosts.yml'}"]
        t0, m0 = time.time(), time.monotonic()
        # its own session: an interrupted bench stops the whole run (ansible-playbook and its workers)
        child = subprocess.Popen(cmd, env=self.env(extra_env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True, start_new_session=True)
        try:
            out, _ = child.communicate(timeout=3600)
        except BaseException:
            stop_group(child)
            raise
        proc = subprocess.CompletedProcess(cmd, child.returncode, out, "")
        seconds, t1 = time.monotonic() - m0, time.time()
        runs = sorted((self.workdir / "runs" / args[0]).glob("*/botops-summary.json"))
        summary = json.loads(runs[-1].read_text()) if runs else {}
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        return round(seconds, 1), proc.returncode, summary, tail, t0, t1

    def measure(self, extra_env, *args):
        """One timed run with its module calls, report downtimes and trade gaps."""
        time.sleep(LEAD)
        cpu0 = cpu_times()
        seconds, rc, summary, tail, t0, t1 = self.invoke(extra_env, *args)
        busy = cpu_busy(cpu0, cpu_times())
        time.sleep(1.0)  # the last trades of the run are committed
        gaps = trade_gaps(self.fleet, self.names, t0 - LEAD, t1)
        rows = summary.get("bots") or {}
        hosts = summary.get("hosts") or {}
        calls = {b: (hosts.get(b) or {}).get("module_calls") for b in self.names}
        downtime = {b: (rows.get(b) or {}).get("downtime") for b in self.names}
        failed = sorted(b for b in self.names if (rows.get(b) or {}).get("result") != "ok")
        steps = {}
        for b in self.names:
            for step, secs in ((rows.get(b) or {}).get("timings") or {}).items():
                steps.setdefault(step, []).append(secs)
        by_family = {}
        for b in self.fleet.bots():
            by_family.setdefault(b["family"], []).append(b["name"])
        return {
            "args": list(args), "seconds": seconds, "rc": rc, "failed": failed,
            # why each failed bot failed, as its report row says (the run's directory goes with the fleet)
            "failures": {b: str((rows.get(b) or {}).get("message") or "no message")[:400] for b in failed},
            "module_calls": {"max": max((c for c in calls.values() if c is not None), default=None),
                             "min": min((c for c in calls.values() if c is not None), default=None)},
            "downtime_report": quantiles(float(d) if d is not None else None for d in downtime.values()),
            "downtime_trades": quantiles(gaps.values()),
            "steps": {step: quantiles(v) for step, v in steps.items()},
            "by_family": {f: {"report_max": quantiles(float(downtime[b]) for b in names if downtime[b] is not None)["max"],
                              "trades_max": quantiles(gaps[b] for b in names)["max"]}
                          for f, names in sorted(by_family.items())},
            "load_after": round(os.getloadavg()[0], 2),
            "cpu_busy": busy,
            "tail": tail if rc else "",
        }

    def normal_gap(self, seconds=10.0):
        """The bots' largest trade gaps while nothing else happens, and how busy the machine is then."""
        t0, cpu0 = time.time(), cpu_times()
        time.sleep(seconds)
        busy = cpu_busy(cpu0, cpu_times())
        result = quantiles(trade_gaps(self.fleet, self.names, t0, time.time()).values())
        result["cpu_busy"] = busy
        return result


def run_mode(mode, bots, extra_env, families=None):
    bench = Bench(bots, families)
    print(f"[{mode}] bringing up {bots} bots ...", flush=True)
    try:
        up_s = bench.up()
        print(f"[{mode}] up in {up_s}s; normal trading gaps ...", flush=True)
        result = {"mode": mode, "bots": bots, "up_s": up_s, "load_before": round(os.getloadavg()[0], 2),
                  "normal_gap": bench.normal_gap()}
        print(f"[{mode}] botops deploy --version=1.1.0 ...", flush=True)
        result["deploy"] = bench.measure(extra_env, "deploy", "--version=1.1.0")
        print(f"[{mode}] deploy {result['deploy']['seconds']}s rc={result['deploy']['rc']}; "
              "botops rollback --target=latest ...", flush=True)
        result["rollback"] = bench.measure(extra_env, "rollback", "--target=latest")
        print(f"[{mode}] rollback {result['rollback']['seconds']}s rc={result['rollback']['rc']}", flush=True)
        return result
    finally:
        bench.down()


def fmt(value, unit=""):
    return "-" if value is None else f"{value}{unit}"


def ratio(value, target):
    return "-" if value is None else f"{value / target:.2f}"


def table(results):
    """Markdown rows: measure, target, then per mode the value and its ratio to the target."""
    modes = [r["mode"] for r in results]
    head = "| measure | target | " + " | ".join(f"{m} | {m}/target" for m in modes) + " |"
    sep = "|---|---|" + "---|---|" * len(modes)
    lines = [head, sep]

    def row(label, target, pick, unit="s"):
        cells = []
        for r in results:
            value = pick(r)
            cells += [fmt(value, unit), ratio(value, target) if target else "-"]
        lines.append(f"| {label} | {fmt(target, unit) if target else '-'} | " + " | ".join(cells) + " |")

    bots = results[0]["bots"]
    row(f"deploy 1.1.0, {bots} bots (total)", TARGETS["deploy_s"], lambda r: r["deploy"]["seconds"])
    row("module calls per bot, deploy (max)", TARGETS["module_calls"], lambda r: r["deploy"]["module_calls"]["max"], "")
    row("module calls per bot, rollback (max)", TARGETS["module_calls"],
        lambda r: r["rollback"]["module_calls"]["max"], "")
    row("deploy downtime per bot, report (median)", None, lambda r: r["deploy"]["downtime_report"]["median"])
    row("deploy downtime per bot, report (max)", None, lambda r: r["deploy"]["downtime_report"]["max"])
    row("deploy downtime per bot, trades gap (max)", None, lambda r: r["deploy"]["downtime_trades"]["max"])
    row(f"rollback --target=latest, {bots} bots (total)", TARGETS["rollback_s"], lambda r: r["rollback"]["seconds"])
    row("rollback downtime per bot, report (median)", TARGETS["rollback_downtime_s"],
        lambda r: r["rollback"]["downtime_report"]["median"])
    row("rollback downtime per bot, report (max)", TARGETS["rollback_downtime_s"],
        lambda r: r["rollback"]["downtime_report"]["max"])
    row("rollback downtime per bot, trades gap (median)", TARGETS["rollback_downtime_s"],
        lambda r: r["rollback"]["downtime_trades"]["median"])
    row("rollback downtime per bot, trades gap (max)", TARGETS["rollback_downtime_s"],
        lambda r: r["rollback"]["downtime_trades"]["max"])
    row("normal largest trades gap (max, before the runs)", None, lambda r: r["normal_gap"]["max"])
    row("machine CPU busy, fleet idle (share of all CPUs)", None, lambda r: r["normal_gap"].get("cpu_busy"), "")
    row("machine CPU busy during the deploy", None, lambda r: r["deploy"].get("cpu_busy"), "")
    row("machine CPU busy during the rollback", None, lambda r: r["rollback"].get("cpu_busy"), "")
    return "\n".join(lines)


def steps_table(results):
    """Median / max seconds of each step of the window (bot_deploy's timings), per mode and run."""
    lines = ["| mode | run | step | median s | max s |", "|---|---|---|---|---|"]
    for r in results:
        for run in ("deploy", "rollback"):
            for step, q in r[run].get("steps", {}).items():
                lines.append(f"| {r['mode']} | {run} | {step} | {fmt(q['median'])} | {fmt(q['max'])} |")
    return "\n".join(lines)


def family_table(results):
    lines = ["| mode | run | family | report max s | trades gap max s |", "|---|---|---|---|---|"]
    for r in results:
        for run in ("deploy", "rollback"):
            for family, v in r[run]["by_family"].items():
                lines.append(f"| {r['mode']} | {run} | {family} | {fmt(v['report_max'])} | {fmt(v['trades_max'])} |")
    return "\n".join(lines)


def misses(r):
    out = []
    if r["deploy"]["seconds"] > TARGETS["deploy_s"]:
        out.append("deploy total")
    if (r["deploy"]["module_calls"]["max"] or 0) > TARGETS["module_calls"]:
        out.append("module calls")
    if r["rollback"]["seconds"] > TARGETS["rollback_s"]:
        out.append("rollback total")
    if (r["rollback"]["downtime_report"]["max"] or 0) > TARGETS["rollback_downtime_s"]:
        out.append("rollback downtime (report)")
    if (r["rollback"]["downtime_trades"]["max"] or 0) > TARGETS["rollback_downtime_s"]:
        out.append("rollback downtime (trades)")
    if r["deploy"]["rc"] or r["rollback"]["rc"]:
        out.append("a run failed")
    return out


def section(results, info, mitogen_version, note):
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load = info["load_at_start"]
    lines = [
        f"<!-- bench:{SECTION}:start -->",
        f"## Deploy: deploy and rollback of {info['bots']} bots (`botops bench --only=deploy`)",
        "",
        f"- date: {now}",
        f"- machine: {info['nproc']} CPUs ({info['cpu']}), {info['memory']}, kernel {info['kernel']}; "
        f"load average at start {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1/5/15 min)",
        f"- software: Python {info['python']}, ansible-core {info['ansible_core']}"
        + (f", Mitogen {mitogen_version} (strategy mitogen_linear)" if mitogen_version else ""),
        f"- fleet: {info['bots']} bots (botops.sandbox.fleet, one process and database per bot, families "
        f"round-robin, trade_interval {TRADE_INTERVAL}), a fresh fleet per mode; deploy 1.0.0 -> 1.1.0 "
        "(backup + expand migration), then rollback --target=latest (1.1.0 -> 1.0.0, downgrade)",
        "- load average (1 min) before / after each run: " + "; ".join(
            f"{r['mode']}: {r['load_before']} -> deploy {r['deploy']['load_after']} -> rollback {r['rollback']['load_after']}"
            for r in results),
        "",
        table(results),
        "",
        "Ratios are measured / target (at most 1.00 meets the target). Downtime \"report\" is bot_deploy's "
        "own measure (stop began -> ready with the pause released); \"trades gap\" is the largest gap between "
        "consecutive trades in the bot's database around the run (it includes the pause before the stop and "
        "the time to the next trade).",
        "",
        "<details><summary>Per family</summary>",
        "",
        family_table(results),
        "",
        "</details>",
        "",
        "<details><summary>Steps of the window (bot_deploy timings)</summary>",
        "",
        steps_table(results),
        "",
        "</details>",
        "",
    ]
    for r in results:
        missed = misses(r)
        lines.append(f"- {r['mode']}: " + ("meets every target" if not missed else "misses: " + ", ".join(missed)))
        for run in ("deploy", "rollback"):
            if r[run]["rc"]:
                tail = "\n".join(r[run]["tail"].strip().splitlines()[-15:])
                why = [f"- {bot}: {msg}" for bot, msg in sorted((r[run].get("failures") or {}).items())]
                lines += ["", f"<details><summary>{r['mode']} {run}: exit {r[run]['rc']}, the end of its output</summary>",
                          "", *why, "", "```", tail, "```", "", "</details>", ""]
    lines += ["", note.strip(), f"<!-- bench:{SECTION}:end -->", ""]
    return "\n".join(lines)


def decision(results):
    by = {r["mode"]: r for r in results}
    plain, mito = by.get("plain"), by.get("mitogen")
    if not plain or not mito:
        return "Mitogen: not measured in this run (only one mode), no decision."
    speed = {run: round(plain[run]["seconds"] / mito[run]["seconds"], 2) for run in ("deploy", "rollback")}
    plain_miss, mito_miss = misses(plain), misses(mito)
    # a failed run is reported, not counted: on a saturated machine one mode's bot may miss its
    # readiness timeout in one run and not in the next; the decision rests on the targets
    only_with = [m for m in plain_miss if m not in mito_miss and m != "a run failed"]
    text = (f"Mitogen speed-up: deploy {speed['deploy']}x, rollback {speed['rollback']}x. "
            f"Plain misses: {', '.join(plain_miss) or 'nothing'}; Mitogen misses: {', '.join(mito_miss) or 'nothing'}.")
    if only_with:
        return text + (" Rule: Mitogen earns a place when it meets a target plain Ansible misses: it does "
                       f"({', '.join(only_with)}). Its place is an opt-in documented in the README (\"Faster "
                       "deploys with Mitogen\"), not a dependency or the default: ansible-core deprecates "
                       "third-party strategy plugins, and a botops install must not stop deploying on an "
                       "ansible-core upgrade.")
    return text + (" Rule: Mitogen earns a place when it meets a target plain Ansible misses: it does not in "
                   "this run (the README's opt-in stands on the runs where it did).")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bots", type=int, default=50, help="bots in the fleet (default 50)")
    parser.add_argument("--modes", default="plain,mitogen", help="plain, mitogen or both (default plain,mitogen)")
    parser.add_argument("--families", default=None, help="restrict the families (default: all five round-robin)")
    parser.add_argument("--note", default="", help="text added under the numbers (the decision and its reasons)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave bench/RESULTS.md alone")
    parser.add_argument("--json", type=Path, help="also write the raw results to this file")
    args = parser.parse_args(argv)
    # a TERM (a CI timeout, an operator) brings the fleets down like Ctrl-C does
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))

    load = os.getloadavg()
    info = machine(load)
    info["bots"] = args.bots
    print(f"machine: {info['nproc']} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", flush=True)
    mito = mitogen_env()
    results = []
    for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
        if mode == "mitogen":
            if mito is None:
                print("mitogen is not installed in this environment: skipped (pip install mitogen)", flush=True)
                continue
            extra = mito[0]
        elif mode == "plain":
            extra = {}
        else:
            parser.error(f"unknown mode {mode!r}")
        results.append(run_mode(mode, args.bots, extra, args.families))
    if not results:
        return 1
    note = args.note or ("Decision: " + decision(results))
    text = section(results, info, mito[1] if mito else None, note)
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "results": results}, indent=2))
    publish(SECTION, text, write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
