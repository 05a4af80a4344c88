"""Bad input to every task, through the real `botops` CLI: exit 2, a message that names the flag and
says what is accepted, and nothing changed on the fleet.

Every non-boolean flag of every task in botops.tasks.ns gets wrong values (wrong type, unknown name, empty,
10,000 characters, path traversal where the value names a version, a backup, a label or a path);
`test_every_flag_of_every_task_has_a_case` fails naming any flag without one, so a new flag needs a
case here. A broken profile key (BOTOPS_PROFILES_DIR) and a broken inventory variable are refused
the same way.

The CLI runs in this process (`botops.cli.main`, as the `botops` script does) against the
shared fleet's inventory, with the artifacts, lock, sandbox and crontab locations moved to a scratch
directory. The whole matrix runs once per module; each case is then checked on its own, and the
fleet (releases, ledgers, backups, processes, kill switch and mode as the bots report them) must be
exactly as before. Where a task would start acting (a playbook, a command on a host, a benchmark, a
sandbox, a crontab or AWX file), a tripwire stops it instead, so a regression fails here with its
name rather than operating the shared fleet.

Invoke's own parser refuses an unknown task or flag, or a flag without its value; the `botops`
program makes those exit 2 as well (`test_parser_refusal_exits_2`).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
HUGE = "x" * 10_000
MAX_MESSAGE = 2_000  # a refusal fits on a screen: a 10,000-character value is not echoed back whole


@dataclass(frozen=True)
class Case:
    task: str
    flag: str  # as invoke spells it on the command line, without the dashes
    value: str
    accepted: tuple[str, ...]  # what the message must say (what is accepted), beside the flag's name
    base: dict = field(default_factory=dict)  # the task's other flags, valid; None: a boolean flag
    env: dict = field(default_factory=dict)
    names: str = ""  # what the message must name instead of --flag (profile and inventory keys)

    @property
    def id(self) -> str:
        shown = self.value if len(self.value) <= 30 else f"{self.value[:10]}...({len(self.value)})"
        return f"{self.task} --{self.flag}={shown!r}" + (f" [{self.names}]" if self.names else "")

    def argv(self, context: dict) -> list[str]:
        options = {"inventory": context["inventory"]} if self.task in INVENTORY_TASKS else {}
        options.update({k: (v.format(**context) if isinstance(v, str) else v) for k, v in self.base.items()})
        if self.flag == "limit":
            options.pop("bot", None)  # --bot and --limit together is another error
        options[self.flag] = self.value.format(**context)
        args = [self.task]
        for name, value in options.items():
            args.append(f"--{name}" if value is None else f"--{name}={value}")
        return args


INVENTORY_TASKS = {"status", "deploy", "rollback", "releases", "restart", "backup", "restore", "backups", "promote",
                   "kill-switch", "emergency-stop", "last-resort-kill", "logs", "exec", "maintenance", "recover"}

HOST_PATTERN = "bot or group names separated by commas"
INVENTORY_VALUES = [
    ("", "inventory file or directory"),
    (HUGE, "inventory file or directory"),
    ("{tmp}/../no-such-dir/../../hosts.yml", "inventory file or directory"),
]
LIMIT_VALUES = [
    ("", HOST_PATTERN),
    (HUGE, "at most 2000 characters"),
    ("bot01;reboot", HOST_PATTERN),
    ("../../etc/passwd", HOST_PATTERN),
    ("nosuchbot", "bots: bot01, bot02"),
]
BOT_VALUES = [
    ("", "an inventory hostname"),
    ("../bot01", "letters, digits and ._-"),
    (HUGE, "at most 200"),
    ("nosuchbot", "bots: bot01, bot02"),
]
REASON = "bad input test"
BATCH = "a number of bots or a percentage"
POLICIES = "expected one of: refuse, wait, flatten, carry"
BACKUP_IDS = ("'latest' or a backup id", "e.g. 20261121T020000Z")
AWX_NAME = "1 to 512 characters on one line"

# task -> (its other flags, valid; {flag: [(wrong value, what the message says is accepted), ...]})
MATRIX: dict[str, tuple[dict, dict[str, list[tuple[str, str | tuple[str, ...]]]]]] = {
    "status": ({}, {}),
    "deploy": ({"version": "1.1.0", "artifacts": "{artifacts}"}, {
        "version": [("", "e.g. --version=1.1.0"), (HUGE, "at most 64"), ("../../etc/passwd", "no '..'"),
                    ("9.9.9", ("available:", "1.1.0")), ("1.1.0;reboot", "letters, digits and ._+-")],
        "artifacts": [("", "directory holding the release artifacts"), (HUGE, "--artifacts=DIR"),
                      ("{tmp}/../no-such-artifacts", "--artifacts=DIR")],
        "canary": [("abc", "whole number of bots"), ("-1", "from 0 to 999999"), ("9" * 10_000, "from 0 to 999999"),
                   ("", "whole number of bots")],
        "batch": [("", BATCH), ("0", BATCH), ("101%", BATCH), (HUGE, BATCH)],
        "max-fail": [("abc", "whole number of percent"), ("101", "from 0 to 100"), ("", "from 0 to 100")],
        "positions": [("", POLICIES), ("yolo", POLICIES), (HUGE, POLICIES)],
    }),
    "rollback": ({}, {
        "target": [("", "'latest' or a release version"), ("../1.0.0", "no '..'"), (HUGE, "at most 64")],
        "backup": [("", "is not a backup id"), ("../../etc/passwd", "e.g. 20261121T020000Z"),
                   ("20261121T020000Z-../x", "e.g. 20261121T020000Z"), (HUGE, "e.g. 20261121T020000Z")],
        "batch": [("abc", BATCH), ("0%", BATCH)],
    }),
    "releases": ({}, {}),
    "recover": ({}, {}),
    "restart": ({}, {
        "mode": [("", "expected one of: graceful, quick, recover"), ("hard", "expected one of: graceful, quick"),
                 (HUGE, "expected one of: graceful")],
        "positions": [("yolo", POLICIES), ("", POLICIES)],
        "batch": [("0", BATCH), ("x", BATCH)],
    }),
    "backup": ({}, {
        "label": [("", "1-64 letters, digits"), (HUGE, "1-64 letters, digits"), ("../../etc", "starting with a letter"),
                  ("$(reboot)", "1-64 letters, digits")],
    }),
    "restore": ({"backup": "latest"}, {
        "backup": [("", BACKUP_IDS), ("../../etc/passwd", BACKUP_IDS), ("LATEST", BACKUP_IDS), (HUGE, BACKUP_IDS)],
        "batch": [("x", BATCH), ("100.5%", BATCH)],
    }),
    "backups": ({"verify": None}, {
        "backup": [("", BACKUP_IDS), ("../x", BACKUP_IDS), (HUGE, BACKUP_IDS)],
    }),
    "promote": ({"to": "dry"}, {
        "to": [("", "--to=live"), ("LIVE", "--to=dry"), (HUGE, "--to=live")],
        "backup-age": [("abc", "whole number of hours from 1 to 2160"), ("0", "from 1 to 2160"),
                       ("99999999", "from 1 to 2160")],
        "stop-test-age": [("abc", "whole number of days from 1 to 365"), ("366", "from 1 to 365")],
    }),
    "kill-switch": ({"reason": REASON}, {
        "level": [("", "expected one of: pause, halt, flatten"), ("nuke", "expected one of: pause, halt"),
                  (HUGE, "expected one of: pause")],
        "reason": [("", "say why"), (HUGE, "one line of at most 500 characters"),
                   ("two\nlines", "one line of at most 500 characters")],
    }),
    "emergency-stop": ({"reason": REASON}, {
        "reason": [("", "say why"), (HUGE, "at most 500 characters"), ("a\x1b[2Jb", "one line")],
    }),
    "last-resort-kill": ({"reason": REASON, "bot": "bot01"}, {
        "reason": [("", "say why"), (HUGE, "at most 500 characters")],
        "bot": BOT_VALUES,
        "grace": [("abc", "number of seconds, more than 0, at most 600"), ("0", "more than 0"),
                  ("601", "at most 600"), ("nan", "more than 0")],
    }),
    "logs": ({"bot": "bot01"}, {
        "bot": [("", "--bot=NAME"), ("../bot01", "letters, digits and ._-"), (HUGE, "at most 200"),
                ("nosuchbot", "bots: bot01")],
        "lines": [("abc", "whole number of lines from 1 to 1000000"), ("0", "from 1 to 1000000"),
                  ("9" * 10_000, "from 1 to 1000000")],
    }),
    "exec": ({"command": "true", "bot": "bot01"}, {
        "command": [("", "must not be empty"), ("   ", "must not be empty")],
        "bot": BOT_VALUES,
        "timeout": [("abc", "number of seconds, more than 0, at most 86400"), ("0", "more than 0"),
                    ("inf", "at most 86400")],
    }),
    "maintenance": ({"window": "daily", "force": None}, {
        "window": [("", "expected one of: daily, weekly, monthly"), ("hourly", "expected one of: daily"),
                   (HUGE, "expected one of: daily")],
        "serial": [("abc", BATCH), ("0", BATCH), ("", BATCH)],
        "tasks": [("", "expected: graceful_stop"), ("backup,defrag", "expected: graceful_stop"),
                  (HUGE, "graceful_stop"), ("graceful_stop,backup", "graceful_stop needs restart")],
        "now": [("", "ISO 8601 instant"), ("garbage", "ISO 8601 instant"), (HUGE, "ISO 8601 instant"),
                ("9999-12-31T23:59:59Z", "years 2000 to 2999")],
    }),
    "schedule": ({"print": None}, {
        "inventory": INVENTORY_VALUES,
        "limit": LIMIT_VALUES[:4],  # no inventory to match bots against
    }),
    "bench": ({}, {
        "only": [("", "available:"), ("nosuch", "available:"), ("../../etc/passwd", "available:"),
                 (HUGE, "available:")],
        "args": [("'", "shell-quoted argument list"), ('"--bots 5', "shell-quoted argument list")],
        "quiet": [("abc", "a number from 0"), ("-1", "from 0 (do not wait) to 10000"), ("nan", "a number from 0"),
                  ("1e309", "to 10000")],
    }),
    "build-collection": ({}, {
        "output": [("", "a directory it can write to"), ("/proc/botops-dist", "cannot be created")],
    }),
    "sanity": ({}, {
        "test": [("", "is not a sanity test's name"), ("../../etc", "lower-case letters, digits and dashes"),
                 (HUGE, "e.g. --test=validate-modules")],
        "scratch": [("", "a directory outside the checkout"), ("/proc/botops-sanity", "cannot be created"),
                    (str(REPO / "dist"), "is inside the checkout")],
    }),
    "sandbox.up": ({}, {
        "bots": [("", "whole number of bots"), ("abc", "whole number of bots"), ("0", "1 or more"),
                 ("100000000", "at most 6450"), ("9" * 10_000, "whole number of bots")],
        "families": [("", "give one or more of mojorust"), ("dogecoin", "valid families are mojorust"),
                     (HUGE, "valid families are")],
        "base-port": [("", "port number between 1024"), ("abc", "between 1024 and 65515"), ("80", "between 1024"),
                      ("70000", "and 65515")],
        "trade-interval": [("", "number of seconds"), ("abc", "number of seconds"), ("0", "more than 0"),
                           ("nan", "more than 0"), ("1e308", "at most 3600")],
    }),
}
for _awx_flag in ("organization", "project", "awx-inventory", "execution-environment"):
    MATRIX["schedule"][1][_awx_flag] = [("", AWX_NAME), (HUGE, AWX_NAME), ("two\nlines", AWX_NAME)]


def _flags() -> list[tuple[str, str]]:
    from botops.tasks import ns

    found = []

    def walk(collection, prefix=""):
        for name, task in collection.tasks.items():
            for argument in task.get_arguments():
                if argument.kind is not bool:
                    found.append((prefix + name, argument.names[0]))
        for name, sub in collection.collections.items():
            walk(sub, f"{prefix}{name}.")

    walk(ns)
    return found


def _cases() -> list[Case]:
    """Each task's own cases, and the --inventory and --limit cases of every task that has them."""
    cases = []
    taken = set(_flags())
    for task, (base, flags) in MATRIX.items():
        flags = dict(flags)
        for common, values in (("inventory", INVENTORY_VALUES), ("limit", LIMIT_VALUES)):
            if (task, common) in taken:
                flags.setdefault(common, values)
        for flag, values in flags.items():
            case_base = {"awx": None} if task == "schedule" and flag not in ("inventory", "limit") else base
            for value, accepted in values:
                accepted = (accepted,) if isinstance(accepted, str) else accepted
                cases.append(Case(task, flag, value, accepted, case_base))
    # a profile key and an inventory variable of one bot, wrong: refused naming the bot and the key
    cases.append(Case("status", "inventory", "{inventory}", ("bot05", "http.timeout", "expected number"),
                      env={"BOTOPS_PROFILES_DIR": "{tmp}/profiles"}, names="profile key"))
    cases.append(Case("deploy", "inventory", "{tmp}/broken-inventory/hosts.yml",
                      ("bot03: bot_database.port", "expected integer"), MATRIX["deploy"][0], names="inventory var"))
    return cases


CASES = _cases()


class Started(Exception):
    """A task got past its input checks on bad input: it was about to act."""


def _tripwire(what: str):
    def fired(*args, **kwargs):
        raise Started(what)
    return fired


@contextlib.contextmanager
def _captured():
    """stdout and stderr as real text files (Ansible's display wants a .buffer), read back at the end."""
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="replace", write_through=True)
    err = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="replace", write_through=True)
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        yield out, err


def _text(stream) -> str:
    return stream.buffer.getvalue().decode("utf-8", "replace")


def run_cli(argv: list[str]) -> tuple[object, str]:
    """`botops ARGV` in this process: (exit code, or the tripwire that fired; its output)."""
    from botops.cli import main

    with _captured() as (out, err):
        try:
            main(["botops", *argv])
            code = 0
        except SystemExit as exc:
            code = exc.code
        except Started as exc:
            code = f"started: {exc}"
    return code, _text(out) + _text(err)


# ---------------------------------------------------------------------------- the fleet before and after
def _tree(path: Path) -> list[str] | None:
    return sorted(p.name for p in path.iterdir()) if path.is_dir() else None


def _read(path: Path) -> str | None:
    return path.read_text() if path.is_file() else None


def _reported(fleet, name: str) -> dict:
    """What the bot itself reports: which kill-switch levels hold (its profile's `engaged` checks), its
    execution mode and paper flag; read through the profile-driven client the modules use."""
    from ansible_collections.botops.fleet.plugins.module_utils.botops_bot import Bot
    from ansible_collections.botops.fleet.plugins.module_utils.botops_errors import BotError
    from ansible_collections.botops.fleet.plugins.module_utils.botops_kill_switch_checks import Observation

    from botops import profiles

    b = fleet.bot(name)
    profile = profiles.load(b["family"])
    inventory_vars = yaml.safe_load(fleet.hosts_file.read_text())
    host = next(group["hosts"][name] for group in inventory_vars["sandbox"]["children"].values()
                if name in (group.get("hosts") or {}))
    bot = Bot(profile, {"name": name, "root": b["root"], "listen": b["listen"], "ports": b["ports"],
                        "redis_url": b["redis_url"], "service": b["service"],
                        "process_match": host["bot_process_match"]},
              {"api_token": b["api_token"]})
    try:
        return {
            "kill_switch": Observation(bot, profile, None).holds,
            "execution_mode": bot.probe(profile["facts"]["execution_mode"]),
            "paper_trading": bot.probe(profile["facts"]["paper_trading"]),
        }
    except BotError as exc:  # a bot another test left stopped: it must stay so
        return {"unreachable": str(exc)}


def fleet_state(fleet) -> dict:
    state = {"processes": fleet.service_pids()}
    for name in fleet.bot_names():
        root = Path(fleet.bot(name)["root"])
        state[name] = {
            "current": os.readlink(root / "current"),
            "releases": _tree(root / "releases"),
            "ledger": _read(root / "releases" / "ledger.json"),
            "backups": _tree(root / "backups"),
            "data": _tree(root / "shared" / "data"),  # per-bot locks, kill-switch audit log
            "config": _read(root / "shared" / "config" / "bot.json"),
            **_reported(fleet, name),
        }
    return state


def repo_files() -> dict[str, str]:
    """What `schedule --awx` writes, by content."""
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((REPO / "awx").glob("*")) if p.is_file()}


# ---------------------------------------------------------------------------- the matrix, once
@pytest.fixture(scope="module")
def matrix(fleet, tmp_path_factory):
    import ansible.utils.display  # noqa: F401  (imported outside the capture: it looks at the real streams)

    from botops import bench, collection, host_commands, runner, schedule
    from botops.sandbox.fleet import Fleet

    tmp = tmp_path_factory.mktemp("bad-input")
    scratch = {name: tmp / name for name in ("runs", "locks", "sandbox", "sandbox-inventory")}
    context = {"tmp": str(tmp), "inventory": str(fleet.hosts_file), "artifacts": str(fleet.artifacts_dir)}

    # a copy of the profiles with vanta's http.timeout of the wrong type
    shutil.copytree(REPO / "profiles", tmp / "profiles")
    vanta = tmp / "profiles" / "vanta.yml"
    data = yaml.safe_load(vanta.read_text())
    data["http"]["timeout"] = "fast"
    vanta.write_text(yaml.safe_dump(data, sort_keys=False))
    # a copy of the fleet's inventory with bot03's database port of the wrong type
    shutil.copytree(fleet.inventory_dir, tmp / "broken-inventory")
    hosts_file = tmp / "broken-inventory" / "hosts.yml"
    inventory = yaml.safe_load(hosts_file.read_text())
    for group in inventory["sandbox"]["children"].values():
        if "bot03" in (group.get("hosts") or {}):
            group["hosts"]["bot03"]["bot_database"]["port"] = "five thousand"
    hosts_file.write_text(yaml.safe_dump(inventory, sort_keys=False))

    before, files_before = fleet_state(fleet), repo_files()
    results = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BOTOPS_ARTIFACTS_DIR", str(scratch["runs"]))
        mp.setenv("BOTOPS_LOCK_DIR", str(scratch["locks"]))
        mp.setenv("BOTOPS_SANDBOX_DIR", str(scratch["sandbox"]))
        mp.setenv("BOTOPS_SANDBOX_INVENTORY", str(scratch["sandbox-inventory"]))
        mp.setenv("BOTOPS_CRONTAB", str(tmp / "no-crontab"))
        mp.setenv("BOTOPS_OPERATOR", "bad-input-test")
        mp.delenv("BOTOPS_INVENTORY", raising=False)
        mp.delenv("BOTOPS_PROFILES_DIR", raising=False)
        mp.setattr(runner.PlaybookRun, "run", _tripwire("a playbook"))
        mp.setattr(host_commands, "run_on", _tripwire("a command on a bot's host"))
        mp.setattr(bench, "machine_lock", _tripwire("a benchmark"))
        mp.setattr(collection, "run_sanity", _tripwire("ansible-test sanity"))
        mp.setattr(Fleet, "_up", _tripwire("a sandbox"))
        mp.setattr(schedule, "write_awx", _tripwire("writing the AWX files"))
        mp.setattr(schedule, "write_crontab", _tripwire("writing the crontab"))
        for case in CASES:
            with pytest.MonkeyPatch.context() as case_env:
                for key, value in case.env.items():
                    case_env.setenv(key, value.format(**context))
                results[case.id] = run_cli(case.argv(context))
    after, files_after = fleet_state(fleet), repo_files()
    return {"results": results, "before": before, "after": after, "files": (files_before, files_after),
            "scratch": scratch, "tmp": tmp}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_value_exits_2_naming_the_flag_and_what_is_accepted(matrix, case):
    code, output = matrix["results"][case.id]
    assert code == 2, f"{case.id}: exit {code!r}, not 2\n{output[-3000:]}"
    named = case.names and case.accepted[0] or f"--{case.flag}"
    assert named in output, f"{case.id}: the message does not name {named}\n{output[-3000:]}"
    for text in case.accepted:
        assert text in output, f"{case.id}: the message does not say {text!r}\n{output[-3000:]}"
    assert len(output) < MAX_MESSAGE, f"{case.id}: a {len(output)}-character message\n{output[:3000]}"


def test_nothing_changed_on_the_fleet(fleet, matrix):
    before, after = matrix["before"], matrix["after"]
    assert set(fleet.bot_names()) <= set(before["processes"]), before["processes"]  # a look at a running fleet
    assert all("kill_switch" in before[name] for name in fleet.bot_names()), before
    changed = {key: (before.get(key), after.get(key)) for key in set(before) | set(after)
               if before.get(key) != after.get(key)}
    assert not changed, "the matrix changed the fleet:\n" + json.dumps(changed, indent=1, default=str)[:5000]
    assert matrix["files"][0] == matrix["files"][1], "awx/ files were rewritten"


def test_no_run_artifacts_locks_or_sandbox_left(matrix):
    for name, path in matrix["scratch"].items():
        left = sorted(str(p) for p in path.rglob("*")) if path.exists() else []
        assert not left, f"{name}: {left[:20]}"
    assert not (matrix["tmp"] / "no-crontab").exists()


@pytest.mark.parametrize("argv, named", [
    (["kill-switch", "--level=halt", "--bogus"], "--bogus is not a flag of kill-switch; the flags of kill-switch: --check"),
    (["deploy", "--verison=1.1.0"], "--verison is not a flag of deploy; did you mean --version?"),
    # a short flag meant --limit, --label, --level or --lines by task: `backup -l bot01` backed up every bot
    (["backup", "-l", "bot01"], "-l is not a flag of backup: botops tasks take long flags only"),
    (["kill-swich"], "kill-swich is not a task; did you mean kill-switch?"),
    (["rollback", "--target"], "rollback: --target needs a value (--target=VALUE)"),
    (["--help", "rolback"], "rolback is not a task; did you mean rollback?"),
    (["--lsit"], "'--lsit'"),
], ids=["unknown flag", "misspelt flag", "short flag", "unknown task", "flag without its value", "help of an unknown task",
        "unknown core flag"])
def test_parser_refusal_exits_2(argv, named):
    code, output = run_cli(argv)
    assert code == 2, f"exit {code!r}, not 2\n{output[-3000:]}"
    assert named in output and "botops --help TASK" in output, output[-3000:]


# ---------------------------------------------------------------------------- every flag has a case
def test_every_flag_of_every_task_has_a_case():
    flags = _flags()
    covered = {(c.task, c.flag) for c in CASES}
    missing = sorted(set(flags) - covered)
    assert not missing, "flags without a bad-input case in tests/integration/test_bad_input.py: " + ", ".join(
        f"{task} --{flag}" for task, flag in missing)
    unknown = sorted(covered - set(flags))
    assert not unknown, "cases for flags that do not exist: " + ", ".join(f"{t} --{f}" for t, f in unknown)
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)), sorted({i for i in ids if ids.count(i) > 1})
