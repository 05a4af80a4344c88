"""The one way botops runs a playbook: ansible-runner, the same entry point cron and AWX use.

`PlaybookRun` builds one params dict, makes one `ansible_runner.run()` call, streams a cheap
progress line per finished host task, maps runner status and rc to an exit code, and keeps the
artifacts under `artifacts/<playbook>/<ident>/` (override with BOTOPS_ARTIFACTS_DIR).

Playbooks hand their per-bot results back through `ansible.builtin.set_stats` under the key
`botops_report` (a dict keyed by bot name, aggregated); AWX shows the same data as job artifacts.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import ansible_runner

from botops import DSA_WARNING, profiles
from botops.layout import COLLECTION, HOME, PACKAGE_PARENT, collections_path
from botops.progress import Progress

PLAYBOOKS = COLLECTION / "playbooks"
DEFAULT_INVENTORY = HOME / "inventory" / "sandbox" / "hosts.yml"

# Exit codes of every botops task.
EXIT_OK = 0
EXIT_FAILED = 1  # the run finished but at least one targeted bot failed
EXIT_USAGE = 2  # bad input: nothing was changed
EXIT_UNREACHABLE = 3  # at least one bot could not be reached
EXIT_CANCELED = 4
EXIT_KILL_SWITCH = 5  # an operator's kill switch level stopped the run on at least one bot (nothing else failed)

# How a bot's failure says it yielded to an operator's kill switch level: modules return yielded,
# the playbooks' own gate (bot_guard preflight) fails with a message that starts so.
YIELD_PREFIXES = ("skipped: kill switch ", "stopped: kill switch ")


def artifacts_root() -> Path:
    return Path(os.environ.get("BOTOPS_ARTIFACTS_DIR", HOME / "artifacts"))


def resolve_inventory(inventory: str | None) -> Path:
    """The inventory to run against: the sandbox unless one is given. Raises ValueError if missing
    (or empty: `--inventory=` is a mistake, never a way to say the sandbox)."""
    from botops.report import shown

    if inventory is not None and not str(inventory).strip():
        raise ValueError("--inventory is empty: give an inventory file or directory "
                         "(or leave --inventory out for the sandbox)")
    path = Path(inventory) if inventory else Path(os.environ.get("BOTOPS_INVENTORY", DEFAULT_INVENTORY))
    try:
        found = path.exists()
    except OSError as exc:  # a name too long for the file system, a path through a file
        raise ValueError(f"--inventory {shown(str(path))} cannot be used: {exc.strerror} "
                         "(pass --inventory=PATH to an inventory file or directory)") from None
    if not found:
        if not inventory and path == DEFAULT_INVENTORY:
            raise ValueError(
                f"no inventory at {path}: start the sandbox with 'botops sandbox.up' "
                "or pass --inventory=PATH to a real inventory"
            )
        where = path if len(str(path)) <= 300 else shown(str(path))
        raise ValueError(f"inventory {where} does not exist "
                         "(pass --inventory=PATH to an inventory file or directory)")
    return path.resolve()


# Actions that run in the controller's strategy and never execute a module on a host: they cost
# a task slot but no module call. validate_argument_spec is the task Ansible puts first in every
# role entry point that roles/<role>/meta/argument_specs.yml declares.
CONTROLLER_ACTIONS = frozenset({
    "set_fact", "set_stats", "assert", "fail", "debug", "meta", "include_tasks", "import_tasks",
    "include_role", "import_role", "include_vars", "add_host", "group_by", "pause", "end_play", "end_host",
    "validate_argument_spec",
})


def is_module_call(action: str | None) -> bool:
    """Does a task with this action run a module (ansible.builtin.set_fact and set_fact are the same)?"""
    return bool(action) and str(action).rsplit(".", 1)[-1] not in CONTROLLER_ACTIONS


@dataclass
class HostOutcome:
    ok: int = 0
    changed: int = 0
    failed: int = 0
    unreachable: int = 0
    skipped: int = 0
    module_calls: int = 0  # modules run for this bot (a loop counts each item), set_fact & co. excluded
    last_error: str = ""
    kill_switch: str = ""  # why the bot was skipped or stopped: an operator's kill switch level
    # why a module refused the bot before changing it: a ledger that would lose rows (ledger_refused),
    # a bot that is not who the inventory says (identity_refused)
    refused: str = ""


@dataclass
class RunResult:
    status: str
    rc: int
    exit_code: int
    artifact_dir: Path
    hosts: dict[str, HostOutcome] = field(default_factory=dict)
    report: dict = field(default_factory=dict)
    duration: float = 0.0
    error: str = ""  # the end of Ansible's output when the run failed before reaching any bot
    notes: list = field(default_factory=list)  # lines a playbook hands the operator (set_stats botops_notes)

    @property
    def failed_hosts(self) -> list[str]:
        return sorted(h for h, o in self.hosts.items() if o.failed or o.unreachable)


class PlaybookRun:
    """Run one playbook through ansible-runner and collect what the operator needs to see."""

    def __init__(
        self,
        playbook: str,
        *,
        inventory: str | None = None,
        limit: str | None = None,
        extravars: dict | None = None,
        check: bool = False,
        diff: bool = False,
        verbosity: int = 0,
        progress=None,
    ):
        self.playbook = PLAYBOOKS / playbook if not os.path.isabs(playbook) else Path(playbook)
        if not self.playbook.is_file():
            raise ValueError(f"playbook {self.playbook} does not exist")
        self.inventory = resolve_inventory(inventory)
        self.limit = limit
        self.extravars = dict(extravars or {})
        self.check = check
        self.diff = diff
        self.verbosity = verbosity
        self.progress = progress if progress is not None else Progress()
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
        self.ident = f"{stamp}-{os.getpid()}"
        self.artifact_dir = artifacts_root() / self.playbook.stem
        self._hosts: dict[str, HostOutcome] = {}
        self._report: dict = {}
        self._notes: list[str] = []
        self._trace_file = None

    def params(self) -> dict:
        cmdline = []
        if self.check:
            cmdline.append("--check")
        if self.diff:
            cmdline.append("--diff")
        env = {
            "ANSIBLE_CONFIG": str(COLLECTION / "ansible.cfg"),
            "ANSIBLE_HOME": str(HOME / ".ansible"),
            # the botops.fleet collection: the checkout's link, or the installed package's (botops.layout)
            "ANSIBLE_COLLECTIONS_PATH": str(collections_path()),
            "ANSIBLE_ROLES_PATH": str(COLLECTION / "roles"),
            # the profiles search path, resolved here: the lookup plugin in the playbook searches the
            # same directories in the same order (botops.profiles.search_path)
            "BOTOPS_PROFILES_PATH": os.pathsep.join(str(d.resolve()) for d in profiles.search_path()),
            "BOTOPS_PROFILES_DIR": "",
            "PYTHONPATH": os.pathsep.join(p for p in (str(PACKAGE_PARENT), os.environ.get("PYTHONPATH", "")) if p),
            # ansible-playbook from the same environment as this front end
            "PATH": os.pathsep.join((str(Path(sys.executable).parent), os.environ.get("PATH", ""))),
            "PYTHONWARNINGS": ",".join(w for w in (f"ignore:{DSA_WARNING}", os.environ.get("PYTHONWARNINGS")) if w),
        }
        return {
            "private_data_dir": tempfile.mkdtemp(prefix="botops-runner-"),
            "artifact_dir": str(self.artifact_dir),
            "ident": self.ident,
            "project_dir": str(COLLECTION),
            "playbook": str(self.playbook),
            "inventory": str(self.inventory),
            "limit": self.limit,
            "extravars": self.extravars,
            "cmdline": " ".join(cmdline) or None,
            "envvars": env,
            "verbosity": self.verbosity or None,
            "quiet": True,
            "event_handler": self._on_event,
            "cancel_callback": None,
            "suppress_env_files": True,
            "timeout": None,
        }

    def _trace(self, kind: str, host: str | None, task: str) -> None:
        """One line of progress.jsonl in the run's artifact directory: every step started and ended on
        every bot, skipped ones too, for `tail -f` from another terminal, AWX-style log shippers and the
        fault tests (which wait for a step to start on a bot before they kill the run)."""
        if self._trace_file is None:
            path = self.artifact_dir / self.ident / "progress.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            self._trace_file = path.open("a", buffering=1)
        self._trace_file.write(json.dumps({"time": round(time.time(), 3), "event": kind.removeprefix("runner_on_"),
                                           "host": host, "task": task}) + "\n")

    def _on_event(self, event: dict) -> bool:
        kind = event.get("event", "")
        data = event.get("event_data") or {}
        host = data.get("host")
        if host and kind.startswith("runner_on_"):
            self._trace(kind, host, data.get("task", ""))
        if kind == "playbook_on_play_start":
            self.progress(None, data.get("play", data.get("name", "")), kind, {})
        elif kind == "playbook_on_stats":
            self._report = (data.get("artifact_data") or {}).get("botops_report", {})
            self._notes = list((data.get("artifact_data") or {}).get("botops_notes") or [])
            # Ansible's own final count: a failure later rescued is not a failure of the bot
            for name, outcome in self._hosts.items():
                outcome.failed = (data.get("failures") or {}).get(name, 0)
                outcome.unreachable = (data.get("dark") or {}).get(name, 0)
        elif host and kind in ("runner_on_ok", "runner_on_failed", "runner_on_unreachable", "runner_on_skipped"):
            outcome = self._hosts.setdefault(host, HostOutcome())
            res = data.get("res") or {}
            if kind != "runner_on_skipped" and is_module_call(data.get("resolved_action") or data.get("task_action")):
                items = res.get("results")
                outcome.module_calls += (sum(1 for r in items if isinstance(r, dict) and not r.get("skipped"))
                                         if isinstance(items, list) else 1)
            if kind == "runner_on_ok":
                outcome.ok += 1
                outcome.changed += bool(res.get("changed"))
            elif kind == "runner_on_skipped":
                outcome.skipped += 1
            elif kind == "runner_on_failed" and data.get("ignore_errors"):
                outcome.ok += 1
                return False
            else:
                if kind == "runner_on_failed":
                    outcome.failed += 1
                else:
                    outcome.unreachable += 1
                outcome.last_error = str(res.get("msg") or res.get("stderr") or "failed")
                if not outcome.kill_switch:
                    outcome.kill_switch = yielded_message(res)
                if (res.get("ledger_refused") or res.get("identity_refused") or res.get("input_refused")) and not outcome.refused:
                    outcome.refused = str(res.get("msg") or "refused")
            action = data.get("resolved_action") or data.get("task_action")
            # the operator sees the steps that ran on each bot (module calls), and every failure
            if kind != "runner_on_skipped" and (kind != "runner_on_ok" or is_module_call(action)):
                self.progress(host, data.get("task", ""), kind, res)
        if kind == "playbook_on_stats":
            self.progress(None, "", kind, {"botops_report": self._report})
        return False  # keep the job_events/ files lean: stdout is in the artifact dir anyway

    def run(self) -> RunResult:
        started = time.monotonic()
        params = self.params()
        private = Path(params["private_data_dir"])
        try:
            runner = ansible_runner.run(**params)
        finally:
            shutil.rmtree(private, ignore_errors=True)
            if self._trace_file is not None:
                self._trace_file.close()
        status, rc = runner.status, runner.rc
        for name, row in self._report.items():  # bots the playbook skipped for an operator's level
            if isinstance(row, dict) and yielded_message(row):
                outcome = self._hosts.setdefault(name, HostOutcome())
                outcome.kill_switch = outcome.kill_switch or yielded_message(row)
        if status == "successful" and rc == 0:
            code = EXIT_KILL_SWITCH if any(o.kill_switch for o in self._hosts.values()) else EXIT_OK
        elif status == "canceled":
            code = EXIT_CANCELED
        elif any(o.unreachable for o in self._hosts.values()):
            code = EXIT_UNREACHABLE
        elif any(o.kill_switch for o in self._hosts.values()) and all(
                o.kill_switch for o in self._hosts.values() if o.failed):
            code = EXIT_KILL_SWITCH
        elif any(o.failed for o in self._hosts.values()) and all(
                o.refused for o in self._hosts.values() if o.failed):
            code = EXIT_USAGE  # refused before any change on every failed bot: bad input, nothing changed
        else:
            code = EXIT_FAILED
        for name, outcome in self._hosts.items():
            # the report (table and JSON summary) says why, not just "failed": a bot that yielded to an
            # operator's kill switch level, or that a module refused before changing it
            row = self._report.get(name)
            if not isinstance(row, dict):
                continue
            if outcome.kill_switch:
                row.update(result=outcome.kill_switch.split(":", 1)[0], message=outcome.kill_switch)
            elif outcome.refused and outcome.failed:
                row.update(result="refused", message=outcome.refused)
        result = RunResult(
            status=status,
            rc=rc if rc is not None else -1,
            exit_code=code,
            artifact_dir=self.artifact_dir / self.ident,
            hosts=self._hosts,
            report=self._report,
            duration=time.monotonic() - started,
            notes=self._notes,
        )
        if code != EXIT_OK and not self._hosts:
            result.error = _tail(result.artifact_dir / "stdout")
        self._write_summary(result)
        return result

    def _write_summary(self, result: RunResult) -> None:
        summary = {
            "playbook": self.playbook.name,
            "inventory": str(self.inventory),
            "limit": self.limit,
            "check": self.check,
            "status": result.status,
            "rc": result.rc,
            "exit_code": result.exit_code,
            "duration_s": round(result.duration, 3),
            "hosts": {h: vars(o) for h, o in sorted(result.hosts.items())},
            "bots": result.report,
        }
        result.artifact_dir.mkdir(parents=True, exist_ok=True)
        path = result.artifact_dir / "botops-summary.json"
        path.write_text(json.dumps(summary, indent=2, sort_keys=True, default=str) + "\n")
        os.chmod(path, 0o600)


def yielded_message(res: dict) -> str:
    """'skipped: kill switch halt engaged by ...' when this failed result is a bot yielding to an
    operator's kill switch level, else ''."""
    msg = str(res.get("msg") or res.get("message") or "")
    for prefix in YIELD_PREFIXES:
        at = msg.find(prefix)
        if at >= 0:
            return msg[at:]
    if res.get("yielded"):
        record = res.get("kill_switch") or {}
        return f"stopped: kill switch {record.get('level')} engaged by {record.get('who')} at {record.get('time')}"
    return ""


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


