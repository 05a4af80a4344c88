"""`botops logs`, `botops exec`, `botops last-resort-kill`: a shell on the bots' hosts, over SSH.

These go around Ansible and around the bot's API on purpose: they are what an operator reaches
for when a playbook is too slow, or when the bot no longer answers. They connect with Fabric,
using what the inventory says about each bot (``ansible_host``, ``ansible_port``,
``ansible_user``, ``ansible_ssh_private_key_file``, the ``UserKnownHostsFile`` and
``StrictHostKeyChecking`` options of ``ansible_ssh_common_args`` / ``ansible_ssh_extra_args``),
read through Ansible's own inventory and variable managers, so group_vars, host_vars and
vault-encrypted files (ANSIBLE_VAULT_PASSWORD_FILE) count exactly as they do for a playbook.
Host keys are checked against the user's and the inventory's known_hosts files; an unknown host
is refused unless the inventory turns strict checking off.

Bots with ``ansible_connection=local`` (the sandbox) are operated on this machine directly.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from invoke import Exit, task

from botops import profiles
from botops.inventory import InventoryError, data_loader, hosts
from botops.report import shown, table
from botops.runner import EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE, artifacts_root
from botops.fleet_task import number_flag, usage_error
from botops.kill_switch import check_reason, operator

LOG_DIRECTORY, LOG_FILE = "shared/logs", "bot.log"  # the default of a profile's `logs` (docs/profiles.md)
AUDIT_LOG = "shared/data/botops-kill-switch.log"  # the bot's kill-switch audit log (one trail per bot)
BOT_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,200}$")
MAX_WORKERS = 20  # bots handled at once, like ansible.cfg's forks
CONNECT_TIMEOUT = 10


@dataclass
class BotHost:
    """Where one bot lives and how to reach it."""

    name: str
    family: str
    root: str
    process_match: str | None
    local: bool
    host: str | None = None
    port: int = 22
    user: str | None = None
    key_file: str | None = None
    known_hosts: list[str] = field(default_factory=list)
    strict_host_keys: bool = True
    service_stop: list[str] | None = None  # how its service manager stops it without waiting

    @property
    def where(self) -> str:
        return "local" if self.local else f"{self.user or getpass_user()}@{self.host}:{self.port}"


@dataclass
class Outcome:
    name: str
    where: str
    exit_code: int | None  # None: the host could not be reached
    stdout: str = ""
    stderr: str = ""
    seconds: float = 0.0
    error: str = ""


def getpass_user() -> str:
    import getpass

    return getpass.getuser()


# ----------------------------------------------------------------------------- inventory
def _ssh_options(*args: str) -> dict[str, str]:
    """The -o options of ssh argument strings, keys lower-cased (last one wins, as for ssh)."""
    options: dict[str, str] = {}
    for text in args:
        words = shlex.split(text or "")
        for i, word in enumerate(words):
            value = None
            if word == "-o" and i + 1 < len(words):
                value = words[i + 1]
            elif word.startswith("-o") and len(word) > 2:
                value = word[2:]
            if value and "=" in value:
                key, _, val = value.partition("=")
                options[key.strip().lower()] = val.strip()
            elif value and " " in value.strip():
                key, _, val = value.strip().partition(" ")
                options[key.lower()] = val.strip()
    return options


def _host(name: str, values: dict, profile_service) -> BotHost:
    connection = str(values.get("ansible_connection") or "ssh")
    if connection not in ("ssh", "paramiko", "local"):
        raise InventoryError(f"bot {name!r}: ansible_connection={connection} is not supported by the remote tasks "
                             "(ssh or local)")
    for key in ("bot_family", "bot_root"):
        if not values.get(key):
            raise InventoryError(f"bot {name!r} has no {key} in the inventory")
    family = str(values["bot_family"])
    service = dict(profile_service(family), **(values.get("bot_service") or {}))
    match = values.get("bot_process_match") or service.get("process_match")
    options = _ssh_options(str(values.get("ansible_ssh_common_args") or ""),
                           str(values.get("ansible_ssh_extra_args") or ""))
    from ansible import constants

    strict = bool(constants.HOST_KEY_CHECKING) and options.get("stricthostkeychecking", "yes").lower() not in (
        "no", "off", "accept-new")
    key_file = values.get("ansible_ssh_private_key_file") or values.get("ansible_private_key_file")
    return BotHost(
        name=name,
        family=family,
        root=str(values["bot_root"]),
        process_match=str(match) if match else None,
        local=connection == "local",
        host=str(values.get("ansible_host") or values.get("ansible_ssh_host") or name),
        port=int(values.get("ansible_port") or values.get("ansible_ssh_port") or 22),
        user=str(values.get("ansible_user") or values.get("ansible_ssh_user") or "") or None,
        key_file=os.path.expanduser(str(key_file)) if key_file else None,
        known_hosts=[os.path.expanduser(p) for p in shlex.split(options.get("userknownhostsfile", ""))
                     if p.lower() != "/dev/null"],
        strict_host_keys=strict,
        service_stop=service_stop_command(service),
    )


def log_file(family: str) -> str:
    """The bot's main log, relative to its root: the profile's logs.directory / logs.file."""
    try:
        conf = profiles.load(family).get("logs") or {}
    except profiles.ProfileError:  # an unknown family: the inventory check names it; the default layout
        conf = {}
    return f"{conf.get('directory', LOG_DIRECTORY).rstrip('/')}/{conf.get('file', LOG_FILE)}"


def _profile_service(family: str) -> dict:
    """The family profile's service section (manager, name, process_match); {} for an unknown family."""
    try:
        return dict(profiles.load(family)["service"])
    except Exception:  # an unknown family: the kill refuses the bot below, the other tasks do not need it
        return {}


def targets(task_name: str, inventory: str | None, bot: str | None = None, limit: str | None = None,
            required: bool = True) -> tuple[Path, list[BotHost]]:
    """The bots one of these tasks acts on: exactly --bot, or what --limit selects."""
    if bot is not None and limit is not None:
        raise usage_error(task_name, "give --bot=NAME or --limit=PATTERN, not both")
    if bot is None and limit is None and required:
        raise usage_error(task_name, "give --bot=NAME or --limit=PATTERN (e.g. --limit=prod, --limit=all)")
    if bot is not None and not BOT_NAME.match(bot):
        raise usage_error(task_name, f"--bot {shown(bot)} is not a bot name (an inventory hostname: letters, digits "
                                     "and ._-, at most 200)")
    try:
        if bot is not None:
            path, names = hosts(inventory, bot, flag="--bot")
        else:
            path, names = hosts(inventory, limit)
        if bot is not None and names != [bot]:
            raise InventoryError(f"--bot {bot!r} is not one bot of the inventory but selects {', '.join(names)} "
                                 "(use --limit for groups)")
        return path, host_facts(path, names)
    except InventoryError as exc:
        raise usage_error(task_name, str(exc)) from None


def host_facts(path: Path, names: list[str]) -> list[BotHost]:
    """Each bot's connection facts and bot_* variables, templated as a playbook would see them."""
    from ansible.inventory.manager import InventoryManager
    from ansible.template import Templar
    from ansible.vars.manager import VariableManager

    loader = data_loader()
    manager = InventoryManager(loader=loader, sources=[str(path)])
    variables = VariableManager(loader=loader, inventory=manager)
    wanted = ("ansible_connection", "ansible_host", "ansible_ssh_host", "ansible_port", "ansible_ssh_port",
              "ansible_user", "ansible_ssh_user", "ansible_ssh_private_key_file", "ansible_private_key_file",
              "ansible_ssh_common_args", "ansible_ssh_extra_args", "bot_family", "bot_root", "bot_process_match",
              "bot_service")
    found = []
    for name in names:
        try:
            values = variables.get_vars(host=manager.get_host(name), include_hostvars=False)
            templar = Templar(loader=loader, variables=values)
            picked = {k: _plain(templar.template(values[k])) for k in wanted if values.get(k) is not None}
        except InventoryError:
            raise
        except Exception as exc:  # AnsibleError and friends: an undefined variable, a vault file without password
            hint = (" (a vault-encrypted file: give its password file with ANSIBLE_VAULT_PASSWORD_FILE)"
                    if "vault" in str(exc).lower() else "")
            raise InventoryError(f"cannot read the variables of bot {name!r}: {exc}{hint}") from None
        found.append(_host(name, picked, _profile_service))
    return found


def _plain(value):
    """Ansible's tagged values as plain Python values."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# ----------------------------------------------------------------------------- running commands
def connection(target: BotHost):
    """A Fabric connection that checks the host key against the known_hosts files."""
    from fabric import Connection
    from paramiko import RejectPolicy, WarningPolicy

    kwargs = {}
    if target.key_file:
        kwargs = {"key_filename": [target.key_file], "look_for_keys": False, "allow_agent": False}
    conn = Connection(target.host, user=target.user, port=target.port, connect_timeout=CONNECT_TIMEOUT,
                      connect_kwargs=kwargs)
    client = conn.client
    client.load_system_host_keys()
    for path in target.known_hosts:
        if os.path.exists(path):
            client.get_host_keys().load(path)
    client.set_missing_host_key_policy(RejectPolicy() if target.strict_host_keys else WarningPolicy())
    return conn


def run_on(target: BotHost, command: str, *, stdin: str | None = None, timeout: float | None = None) -> Outcome:
    """Run a shell command as the bot's user on the bot's host; never raises."""
    started = time.monotonic()
    outcome = Outcome(target.name, target.where, None)
    try:
        if target.local:
            proc = subprocess.run(["/bin/sh", "-c", command], input=stdin if stdin is not None else "",
                                  capture_output=True, text=True, timeout=timeout)
            outcome.exit_code, outcome.stdout, outcome.stderr = proc.returncode, proc.stdout, proc.stderr
        else:
            from io import StringIO

            with connection(target) as conn:
                result = conn.run(command, hide=True, warn=True, timeout=timeout, pty=False,
                                  in_stream=StringIO(stdin) if stdin is not None else False)
            outcome.exit_code, outcome.stdout, outcome.stderr = result.exited, result.stdout, result.stderr
    except subprocess.TimeoutExpired:
        outcome.exit_code, outcome.error = 124, f"timed out after {timeout:.0f}s"
    except Exception as exc:  # paramiko, socket and Fabric errors: the host is not reachable as configured
        if type(exc).__name__ == "CommandTimedOut":
            outcome.exit_code, outcome.error = 124, f"timed out after {timeout:.0f}s"
        else:
            outcome.error = f"{type(exc).__name__}: {exc}".strip().rstrip(":")
    outcome.seconds = round(time.monotonic() - started, 2)
    return outcome


def run_everywhere(targets_: list[BotHost], build, **kwargs) -> list[Outcome]:
    """`build(target) -> (command, stdin)` run on every bot at once; outcomes in the targets' order."""
    def one(target):
        command, stdin = build(target)
        return run_on(target, command, stdin=stdin, **kwargs)

    with ThreadPoolExecutor(max_workers=min(MAX_WORKERS, len(targets_)) or 1) as pool:
        return list(pool.map(one, targets_))


def exit_code(outcomes: list[Outcome], ok) -> int:
    if any(o.exit_code is None for o in outcomes):
        return EXIT_UNREACHABLE
    return EXIT_OK if all(ok(o) for o in outcomes) else EXIT_FAILED


# ----------------------------------------------------------------------------- logs
@task(
    help={
        "bot": "the bot whose log to show (an inventory hostname; required)",
        "lines": "how many of the last lines to show (default 100)",
        "follow": "keep printing new lines until Ctrl-C (tail -F: follows the log across rotations)",
        "inventory": "inventory file or directory (default: the sandbox)",
    }
)
def logs(c, bot=None, lines="100", follow=False, inventory=None):
    """Show the end of a bot's log (its profile's logs.directory/logs.file, by default
    <bot_root>/shared/logs/bot.log), over SSH or locally; --follow."""
    if not bot:
        raise usage_error("logs", "--bot=NAME is required (one bot's log)")
    count = number_flag("logs", "lines", lines, "lines", high=1_000_000)
    _, (target,) = targets("logs", inventory, bot=bot)
    path = f"{target.root.rstrip('/')}/{log_file(target.family)}"
    argv = ["tail", "-n", str(count), *(["-F"] if follow else []), "--", path]
    print(f"logs: {target.name} ({target.where}) {path}", file=sys.stderr, flush=True)
    if target.local:
        try:
            code = subprocess.run(argv).returncode
        except KeyboardInterrupt:
            code = EXIT_OK
    else:
        try:
            with connection(target) as conn:
                # a pty, so that Ctrl-C reaches the remote tail when following
                code = conn.run(shlex.join(argv), warn=True, pty=follow, in_stream=False).exited
        except KeyboardInterrupt:
            code = EXIT_OK
        except Exception as exc:
            raise Exit(f"logs: cannot reach {target.name} ({target.where}): {type(exc).__name__}: {exc}",
                       code=EXIT_UNREACHABLE) from None
    if code != EXIT_OK:
        raise Exit(f"logs: tail failed on {target.name} (exit {code})", code=EXIT_FAILED)


# ----------------------------------------------------------------------------- exec
EXEC_COLUMNS = [("name", "bot"), ("where", "where"), ("exit", "exit"), ("seconds", "seconds"), ("message", "message")]


@task(
    name="exec",
    help={
        "command": "the shell command to run on each bot's host, as the bot's user, in the bot's root directory (required)",
        "bot": "one bot (an inventory hostname)",
        "limit": "bots or groups, e.g. prod,vanta (Ansible --limit pattern; --limit=all for every bot)",
        "timeout": "seconds the command may run on each bot (default 60)",
        "inventory": "inventory file or directory (default: the sandbox)",
    }
)
def exec_(c, command=None, bot=None, limit=None, timeout="60", inventory=None):
    """Run an ad-hoc shell command on bots' hosts at once; print each bot's output and exit code."""
    if command is None or not str(command).strip():
        raise usage_error("exec", "--command is required and must not be empty, e.g. --command='df -h .'")
    seconds = number_flag("exec", "timeout", timeout, "seconds", high=86400, seconds=True)
    path, bots = targets("exec", inventory, bot=bot, limit=limit)
    print(f"exec: {len(bots)} bot(s) from {path}: {command}", flush=True)
    outcomes = run_everywhere(bots, lambda t: (f"cd {shlex.quote(t.root)} && {command}", None), timeout=seconds)
    for o in outcomes:
        state = f"exit {o.exit_code}" if o.exit_code is not None else "UNREACHABLE"
        print(f"\n== {o.name} ({o.where}): {state}, {o.seconds:.2f} s")
        if o.stdout:
            print(o.stdout.rstrip("\n"))
        if o.stderr:
            print("\n".join(f"stderr: {line}" for line in o.stderr.rstrip("\n").splitlines()))
        if o.error:
            print(o.error)
    rows = [{"name": o.name, "where": o.where, "exit": o.exit_code if o.exit_code is not None else "-",
             "seconds": o.seconds, "message": o.error or ("" if o.exit_code == 0 else "failed")} for o in outcomes]
    print()
    print(table(rows, EXEC_COLUMNS))
    code = exit_code(outcomes, lambda o: o.exit_code == 0)
    if code != EXIT_OK:
        bad = ", ".join(o.name for o in outcomes if o.exit_code != 0)
        raise Exit(f"exec: failed on {bad}", code=code)


# ----------------------------------------------------------------------------- last-resort kill
KILL_COLUMNS = [("name", "bot"), ("where", "where"), ("outcome", "outcome"), ("signals", "signals"),
                ("service", "service manager"), ("pids", "pids"), ("remaining", "left"), ("seconds", "seconds"),
                ("message", "message")]
RESULT_PREFIX = "botops-last-resort-kill: "

# Runs on the bot's host as `sh -s`, the script on stdin: the pattern is in no process's command
# line, so pgrep/pkill cannot match the shell running them.
# 1. The service manager is asked to stop the bot, in the background (a hung manager cannot block
#    the kill), and given the grace period: a process it stops is one it will not start again.
#    A stopped process gets SIGCONT once the manager's SIGTERM waits on it, so it can act on it.
# 2. What is left gets SIGTERM, then SIGCONT (as systemd does), and SIGKILL if it outlives the
#    grace period.
# 3. Verified: nothing matches, and nothing new matches after a settle period (a restart by the
#    service manager shows up as "respawned").
KILL_SCRIPT = r"""
set -u
umask 077
pat=%(pattern)s
audit=%(audit)s
grace_ms=%(grace_ms)d
settle_ms=%(settle_ms)d
dry=%(dry)d
now_ms() { t=$(date +%%s%%N); case $t in *N) echo $(( $(date +%%s) * 1000 ));; *) echo $(( t / 1000000 ));; esac; }
pids() { pgrep -f -- "$pat" | tr '\n' ',' | sed 's/,$//'; }
# any of the processes found first still there (a zombie's cmdline is empty: it is gone)
first_alive() { for p in $(echo "$before" | tr ',' ' '); do grep -q . "/proc/$p/cmdline" 2>/dev/null && return 0; done; return 1; }
# stopped_with_term PID: the process is stopped (SIGSTOP) and a SIGTERM waits for it to continue
stopped_with_term() {
  st=$(cat "/proc/$1/status" 2>/dev/null) || return 1
  echo "$st" | grep -q '^State:[[:space:]]*[Tt]' || return 1
  for mask in $(echo "$st" | sed -n -e 's/^ShdPnd:[[:space:]]*//p' -e 's/^SigPnd:[[:space:]]*//p'); do
    [ $(( 0x${mask#????????} & 0x4000 )) -ne 0 ] && return 0
  done
  return 1
}
# wait_gone MS: poll until the processes found first are gone, at most MS milliseconds
wait_gone() { end=$(( $(now_ms) + $1 )); while first_alive && [ "$(now_ms)" -lt "$end" ]; do sleep 0.1; done; }
start=$(now_ms)
before=$(pids)
signals=""
service="not asked"
outcome="not running"
if [ "$dry" = 1 ]; then
  [ -n "$before" ] && outcome="would kill"
else
  svc=""
  svc_cmd=%(service_stop)s
  if [ -n "$svc_cmd" ]; then
    ( eval "$svc_cmd" ) >/dev/null 2>&1 </dev/null &
    svc=$!
  fi
  if [ -n "$before" ] && [ -n "$svc" ]; then
    # the manager's own stop first, for at most the grace period (SIGCONT: a stopped process can act on it)
    end=$(( $(now_ms) + grace_ms ))
    while first_alive && kill -0 "$svc" 2>/dev/null && [ "$(now_ms)" -lt "$end" ]; do
      for p in $(echo "$before" | tr ',' ' '); do stopped_with_term "$p" && kill -CONT "$p" 2>/dev/null; done
      sleep 0.1
    done
  fi
  if [ -n "$before" ] && first_alive; then
    pkill -TERM -f -- "$pat"; pkill -CONT -f -- "$pat"; signals='"TERM"'
    wait_gone "$grace_ms"
    if first_alive; then
      pkill -KILL -f -- "$pat"; signals='"TERM","KILL"'
      wait_gone 5000
    fi
  fi
  if [ -n "$svc" ]; then
    end=$(( $(now_ms) + 5000 )); while kill -0 "$svc" 2>/dev/null && [ "$(now_ms)" -lt "$end" ]; do sleep 0.1; done
    if kill -0 "$svc" 2>/dev/null; then service="no answer"
    elif wait "$svc"; then service="stopped"
    else service="failed"
    fi
  fi
  if [ -z "$(pids)" ]; then
    end=$(( $(now_ms) + settle_ms )); while [ -z "$(pids)" ] && [ "$(now_ms)" -lt "$end" ]; do sleep 0.1; done
  fi
fi
after=$(pids)
if [ "$dry" != 1 ] && [ -n "$before" ]; then
  if [ -z "$after" ]; then
    outcome="killed"
  else
    outcome="still running"
    for p in $(echo "$after" | tr ',' ' '); do
      case ",$before," in *",$p,"*) ;; *) outcome="respawned" ;; esac
    done
  fi
elif [ "$dry" != 1 ] && [ -n "$after" ]; then
  outcome="respawned"
fi
ms=$(( $(now_ms) - start ))
record=$(printf '{"action":"last-resort-kill","bot":%(bot)s,"family":%(family)s,"outcome":"%%s","pids":[%%s],"remaining":[%%s],"signals":[%%s],"service_stop":"%%s","reason":%(reason)s,"who":%(who)s,"seconds":%%d.%%03d,"time":"%%s","via":"botops last-resort-kill","from_host":%(from_host)s}' \
  "$outcome" "$before" "$after" "$signals" "$service" $((ms / 1000)) $((ms %% 1000)) "$(date -u +%%Y-%%m-%%dT%%H:%%M:%%SZ)")
written=false
if [ "$dry" != 1 ] && mkdir -p "$(dirname "$audit")" 2>/dev/null && printf '%%s\n' "$record" >> "$audit" 2>/dev/null; then
  written=true
fi
printf '%(prefix)s{"record":%%s,"audit_written":%%s}\n' "$record" "$written"
"""
SETTLE_SECONDS = 2.0  # longer than a process manager's restart delay (supervisord: 1 s)


def service_stop_command(service: dict | None) -> list[str] | None:
    """How the bot's service manager is told to stop it without waiting (None: no manager known)."""
    if not service or not service.get("name"):
        return None
    manager, name = service.get("manager"), str(service["name"])
    if manager == "supervisor":
        cmd = [str(service.get("supervisorctl") or "supervisorctl")]
        if service.get("config"):
            cmd += ["-c", str(service["config"])]
        return cmd + ["stop", name]
    if manager == "systemd":
        return ["systemctl", "stop", "--no-block", name]
    return None


def kill_script(target: BotHost, reason: str, who: str, grace: float, dry: bool, service: bool = True,
                settle: float = SETTLE_SECONDS) -> str:
    """The kill script for one bot (see KILL_SCRIPT)."""
    q = shlex.quote
    return KILL_SCRIPT % {
        "pattern": q(target.process_match or ""),
        "audit": q(f"{target.root.rstrip('/')}/{AUDIT_LOG}"),
        "grace_ms": max(100, int(grace * 1000)),
        "settle_ms": int(settle * 1000),
        "dry": int(dry),
        "service_stop": shlex.quote(shlex.join(target.service_stop)) if service and target.service_stop else "''",
        "bot": _printf_json(target.name),
        "family": _printf_json(target.family),
        "reason": _printf_json(reason),
        "who": _printf_json(who),
        "from_host": _printf_json(socket.gethostname()),
        "prefix": RESULT_PREFIX,
    }


def _printf_json(value: str) -> str:
    """A JSON string literal that survives a single-quoted printf format: quotes, % and \\ escaped."""
    text = json.dumps(value)
    text = text.replace("\\", "\\\\").replace("%", "%%")
    return text.replace("'", "'\\''")


def parse_kill(outcome: Outcome) -> dict:
    for line in reversed(outcome.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            try:
                return json.loads(line[len(RESULT_PREFIX):])
            except ValueError:
                break
    return {}


def append_controller_audit(record: dict) -> None:
    path = artifacts_root() / "kill-switch-audit.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a") as f:
        f.write(json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n")


@task(
    help={
        "reason": "why (required; goes to the audit log on the bot's host and on the controller)",
        "bot": "one bot (an inventory hostname)",
        "limit": "bots or groups, e.g. prod,vanta (--limit=all for every bot)",
        "grace": "seconds between SIGTERM and SIGKILL (default 10)",
        "service": "also ask the bot's service manager to stop it (in the background: a hung manager cannot block "
                   "the kill), so that it does not start the bot again (default; --no-service: signals only)",
        "check": "only show which processes would be killed",
        "inventory": "inventory file or directory (default: the sandbox)",
    }
)
def last_resort_kill(c, reason=None, bot=None, limit=None, grace="10", service=True, check=False, inventory=None):
    """Kill bots' processes over SSH without their API or Ansible: SIGTERM, grace, SIGKILL, verified, audited."""
    check_reason("last-resort-kill", reason, required=not check)
    grace_s = number_flag("last-resort-kill", "grace", grace, "seconds", high=600, seconds=True)
    path, bots = targets("last-resort-kill", inventory, bot=bot, limit=limit)
    unmatched = [b.name for b in bots if not b.process_match]
    if unmatched:
        raise usage_error("last-resort-kill", "no bot_process_match in the inventory nor a process_match in the "
                                              f"profile for: {', '.join(unmatched)}")
    who = operator()
    mode = " (check: nothing is killed)" if check else ""
    print(f"last-resort-kill: {len(bots)} bot(s) from {path}{mode}", flush=True)
    outcomes = run_everywhere(bots, lambda t: ("sh -s", kill_script(t, reason or "", who, grace_s, check, service,
                                                                          settle=SETTLE_SECONDS)),
                              timeout=grace_s + SETTLE_SECONDS + 60)
    rows, results = [], {}
    for o in outcomes:
        parsed = parse_kill(o)
        record = parsed.get("record") or {}
        results[o.name] = record
        if record and not check:
            append_controller_audit(dict(record, where=o.where))
        message = o.error or ("" if record else (o.stderr.strip() or o.stdout.strip() or "no result")[-200:])
        if record and not check and not parsed.get("audit_written"):
            message = "could not write the audit log on the host"
        if record.get("outcome") == "respawned":
            message = "started again (by its service manager?): stop it there"
        elif record.get("service_stop") in ("failed", "no answer"):
            message = f"killed; the service manager did not take the stop ({record['service_stop']})"
        rows.append({"name": o.name, "where": o.where, "outcome": record.get("outcome", "unreachable" if o.exit_code is None else "failed"),
                     "signals": ",".join(record.get("signals", [])) or "-",
                     "service": record.get("service_stop", "-"),
                     "pids": ",".join(map(str, record.get("pids", []))) or "-",
                     "remaining": ",".join(map(str, record.get("remaining", []))) or "-",
                     "seconds": o.seconds, "message": message})
    print()
    print(table(rows, KILL_COLUMNS))
    good = ("would kill", "not running") if check else ("killed", "not running")
    code = exit_code(outcomes, lambda o: results.get(o.name, {}).get("outcome") in good)
    if code != EXIT_OK:
        bad = ", ".join(r["name"] for r in rows if r["outcome"] not in good)
        raise Exit(f"last-resort-kill: not verified dead: {bad}", code=code)
    return results
