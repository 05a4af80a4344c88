# Copyright: botops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The fleet kill switch on remote hosts: one SSH session per host, every host at once.

Bots on other hosts cannot be driven from the controller alone: their API may listen only on their
host's loopback, and the rungs that stop a process (the service manager, signals, the process table)
act on the host. Ansible's per-host task does it on the host, but each host costs the controller a
worker, templating and a module payload: about half a CPU-second per host, minutes for a few hundred
hosts on a small controller.

Here the action plugin (plugins/action/bot_fleet_kill_switch.py) drives every bot of a host through
one ``ssh`` session to that host, all hosts at once: the session runs the host's Python on a small
bootstrap (``BOOTSTRAP``), which reads from its standard input the collection's module_utils (a zip,
built once per run and imported from memory: nothing is written on the host) and the parameters of
that host's bots (their secrets included: never on a command line), and runs ``run_fleet`` there, the
code the module runs, for those bots as local ones. Every rung, the API's and the host's, runs on the
host, as the per-host task would; the operator's record is written there before the ladder, under its
lock. The answer is the same per-bot results, which the plugin merges with the local bots'.

The session is OpenSSH's, built as the ssh connection plugin builds its own, from that plugin's
options for the host (inventory variables, ansible.cfg, environment: the address, port, user, key,
``ssh_args``, ``ssh_common_args``, ``ssh_extra_args``, timeout, host key checking), in batch mode (no
prompt). Its ControlPath is the plugin's: with ControlPersist in ``ssh_args`` (botops' ansible.cfg
keeps connections 60 s), a session rides on a connection Ansible's tasks opened to that host, and
leaves its own for the next command. A host that needs become, a password, a key given as content,
or another connection plugin, is left to the per-host task.

A host is waited for as long as its bots' kill-switch ladders can take, no longer (``host_wait``): a
host whose sshd accepts but whose Python never answers fails its bots then, saying their state there
is unknown, instead of holding the fleet's result.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import marshal
import math
import os
import re
import shlex
import subprocess
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

from ansible import constants as C

from ansible_collections.botops.fleet.plugins.module_utils import botops_fleet_kill_switch as fleet
from ansible_collections.botops.fleet.plugins.module_utils.botops_host import end_group

SSH_CONNECTIONS = ("ssh", "ansible.builtin.ssh", "smart")
PACKAGE = "ansible_collections.botops.fleet.plugins.module_utils"
PYTHON_START = 5  # seconds for the host's Python to start and import the module_utils it is sent
REAP_WAIT = 2  # seconds an ssh killed at the end of its wait is given to close its output
UNREAD_LADDER = 900  # seconds a ladder is counted for when its profile cannot be read here (the host judges it)
EXIT_SSH = 255  # ssh's own failure: the host could not be reached or refused the key
# the ssh connection plugin's options a session follows, as that plugin resolves them for the host
# (inventory variables, ansible.cfg, environment)
SSH_OPTIONS = ("host", "port", "remote_user", "private_key_file", "ssh_executable", "ssh_args", "ssh_common_args",
               "ssh_extra_args", "control_path", "control_path_dir", "host_key_checking", "timeout")
# what only the per-host task can do: a password (sshpass) or a key given as content (ssh-agent)
NEEDS_PER_HOST_TASK = ("password", "private_key")
IMPORT_LINE = re.compile(r"\s*(from|import)\s.*module_utils")
MODULE_NAME = re.compile(r"\b(botops_\w+)")

# What the host's Python runs. From its standard input: the collection's module_utils (their sources,
# and the controller's compiled code, used when the host's Python has the same bytecode: compiling
# them is most of a session's cost on the host), imported from memory (nothing is written on the
# host); then the parameters of the host's bots, for run_fleet. Standard library only; Python 3.8+.
BOOTSTRAP = r"""
import importlib.util, json, marshal, sys, zlib
data = sys.stdin.buffer.read()
parts, at = [], 0
for _ in range(2):
    size = int(data[at:at + 16])
    parts.append(zlib.decompress(data[at + 16:at + 16 + size]))
    at += 16 + size
sources = json.loads(parts[0])
codes = marshal.loads(parts[1][4:]) if parts[1][:4] == importlib.util.MAGIC_NUMBER else {}
params = json.loads(data[at:])
class Finder:
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name not in sources:
            return None
        return importlib.util.spec_from_loader(name, cls, origin="<botops>/" + name, is_package=not sources[name])
    @staticmethod
    def create_module(spec):
        return None
    @staticmethod
    def exec_module(module):
        name = module.__name__
        if not sources[name]:
            module.__path__ = []
            return
        exec(codes.get(name) or compile(sources[name], "<botops>/" + name.replace(".", "/") + ".py", "exec"),
             module.__dict__)
sys.meta_path.insert(0, Finder)
from ansible_collections.botops.fleet.plugins.module_utils import botops_fleet_kill_switch as fleet
result, failure = fleet.run_fleet(params["params"], params["check_mode"], return_audit=True)
sys.stdout.write(json.dumps({"result": result, "failure": failure}))
"""


def needed_modules(module_utils_dir, first="botops_fleet_kill_switch"):
    """The module_utils the kill switch imports, first and all those it imports in turn (every import
    line that names one, at any depth of the code): the only ones a host is sent."""
    found, todo = set(), [first]
    while todo:
        name = todo.pop()
        if name in found:
            continue
        found.add(name)
        with open(os.path.join(module_utils_dir, name + ".py"), encoding="utf-8") as source:
            for line in source:
                if IMPORT_LINE.match(line):
                    todo += [n for n in MODULE_NAME.findall(line)
                             if os.path.exists(os.path.join(module_utils_dir, n + ".py"))]
    return sorted(found)


def module_utils_payload(module_utils_dir):
    """What the bootstrap reads first, built once per run: the kill switch's module_utils as sources
    (the packages above them empty) and as code compiled by this Python, each part zlib-compressed
    and preceded by its size."""
    sources = {}
    parts = PACKAGE.split(".")
    for i in range(1, len(parts) + 1):
        sources[".".join(parts[:i])] = ""
    for name in needed_modules(module_utils_dir):
        with open(os.path.join(module_utils_dir, name + ".py"), encoding="utf-8") as source:
            sources[f"{PACKAGE}.{name}"] = source.read()
    codes = {name: compile(text, "<botops>/" + name.replace(".", "/") + ".py", "exec")
             for name, text in sources.items() if text}
    blobs = [zlib.compress(json.dumps(sources, sort_keys=True).encode(), 6),
             zlib.compress(importlib.util.MAGIC_NUMBER + marshal.dumps(codes), 6)]
    return b"".join(b"%016d" % len(blob) + blob for blob in blobs)


def reachable_by_ssh(host_vars, options=None):
    """Whether this host's bots go through one SSH session here: an SSH connection without become,
    a password or a key given as content, unless the inventory keeps them to the per-host task
    (bot_kill_switch_sessions: per_host_task). `options`: the ssh plugin's, when resolved."""
    if str(host_vars.get("bot_kill_switch_sessions") or "ssh") == "per_host_task":
        return False
    connection = str(host_vars.get("ansible_connection") or "ssh")
    become = host_vars.get("ansible_become")
    if any((options or {}).get(name) for name in NEEDS_PER_HOST_TASK):
        return False
    return connection in SSH_CONNECTIONS and not (become is True or str(become).lower() in ("true", "yes", "1"))


def connection_options(connection, host_vars):
    """The ssh connection plugin's options for a host, as Ansible resolves them for its own tasks:
    `connection` is a loaded ssh plugin (reused from host to host), given the host's variables."""
    names = C.config.get_plugin_vars("connection", connection._load_name)
    connection.set_options(var_options={name: host_vars[name] for name in names if name in host_vars})
    return {name: connection.get_option(name) for name in SSH_OPTIONS + NEEDS_PER_HOST_TASK}


def destination(options, host_vars):
    """The session's key (hashable): the ssh options that decide who is reached where and how, and the
    host's Python."""
    python = str(host_vars.get("ansible_python_interpreter") or "/usr/bin/python3")
    if python.startswith("auto"):
        python = "/usr/bin/python3"
    return tuple((name, options.get(name)) for name in SSH_OPTIONS) + (("python", python),)


def control_path(options):
    """Where ssh keeps the host's shared connection, as the ssh connection plugin names it: a session
    and Ansible's own tasks on that host share one connection while ControlPersist keeps it."""
    directory = os.path.abspath(os.path.expanduser(options["control_path_dir"]))
    name = options.get("control_path")
    if not name:
        name = "%(directory)s/" + hashlib.sha1(
            f"{options['host']}-{options['port']}-{options['remote_user']}".encode()).hexdigest()[:10]
    return directory, name % {"directory": directory}


def ssh_command(key):
    """The ssh command for one host, built as the ssh connection plugin builds its own (ssh_args first,
    then the host's port, key, user and timeout, then ssh_common_args and ssh_extra_args; the first
    value ssh reads of an option is the one it keeps), in batch mode: it never prompts."""
    o = dict(key)
    command = [o["ssh_executable"] or "ssh"]
    command += shlex.split(o["ssh_args"] or "")
    command += ["-o", "BatchMode=yes"]
    if o["host_key_checking"] is False:
        command += ["-o", "StrictHostKeyChecking=no"]
    if o["port"] is not None:
        command += ["-o", f"Port={o['port']}"]
    if o["private_key_file"]:
        command += ["-o", f'IdentityFile="{os.path.expanduser(o["private_key_file"])}"']
    command += ["-o", "KbdInteractiveAuthentication=no", "-o", "PasswordAuthentication=no"]
    if o["remote_user"]:
        command += ["-o", f'User="{o["remote_user"]}"']
    command += ["-o", f"ConnectTimeout={o['timeout']}"]
    for extra in (o["ssh_common_args"], o["ssh_extra_args"]):
        command += shlex.split(extra or "")
    said = " ".join(command).lower()
    if "controlpersist" in said and "controlpath" not in said:
        directory, path = control_path(o)
        os.makedirs(directory, mode=0o700, exist_ok=True)
        command += ["-o", f'ControlPath="{path}"']
    remote = f"{shlex.quote(o['python'])} -E -c {shlex.quote(BOOTSTRAP)}"
    return command + ["--", o["host"], remote]


class NoAnswer(RuntimeError):
    """The host's session gave no answer within the wait: its bots' state there is unknown."""


def drive_host(command, payload, params, check_mode, timeout):
    """One host's bots through one SSH session: (the host's run_fleet result, its failure) or raises
    RuntimeError saying why the host could not be driven (NoAnswer: nothing within `timeout` seconds;
    ssh and what it started are killed then)."""
    body = json.dumps({"params": params, "check_mode": check_mode}).encode()
    stdin = payload + body
    started = time.monotonic()
    try:
        # a session of its own: at the end of the wait, everything it started goes with it
        proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True)
    except OSError as exc:
        raise RuntimeError(f"cannot run ssh: {exc.strerror}") from None
    try:
        stdout, stderr = proc.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        # ssh and what it started in its session (a ProxyCommand) are killed; a shared connection's
        # master, which detaches into a session of its own, is left to its ControlPersist
        end_group(proc, reap=REAP_WAIT)
        raise NoAnswer(f"gave no answer over SSH within {timeout:.0f} s") from None
    except BaseException:
        end_group(proc, reap=REAP_WAIT)
        raise
    if proc.returncode != 0:
        said = stderr.decode(errors="replace").strip().splitlines()
        why = said[-1] if said else f"exit {proc.returncode}"
        if proc.returncode == EXIT_SSH:
            raise RuntimeError(f"unreachable over SSH: {why}")
        raise RuntimeError(f"the host's Python failed (exit {proc.returncode}): {why}")
    try:
        answer = json.loads(stdout)
    except ValueError:
        raise RuntimeError(f"the host's answer is not JSON: {stdout[:200]!r}") from None
    answer["result"].setdefault("summary", {})["ssh_seconds"] = round(time.monotonic() - started, 3)
    return answer["result"], answer["failure"]


def host_wait(entries, params, connect_timeout):
    """Seconds to wait for one host's answer: the SSH connect (`connect_timeout`: the ssh plugin's
    timeout), then the longest kill-switch ladder of its bots (fleet.ladder_seconds: an upper bound of a bot's ladder at this
    operation, from its profile and its service's stop timeout) once for each wave of its bots (the
    host runs at most min(max_workers, max_requests_per_host) of them at once), and PYTHON_START.
    A bot without a profile fails on the host before anything is tried: it adds nothing; one whose
    profile's ladder cannot be read here (a value of the wrong type) counts UNREAD_LADDER."""
    profiles = params.get("profiles") or {}
    longest = 0.0
    for e in entries:
        profile = e.get("profile") or profiles.get(e["bot"].get("family"))
        if not profile:
            continue
        try:
            ladder = fleet.ladder_seconds(profile, params["state"], params["level"], params["escalate"], params["force"],
                                          service=e["bot"].get("service"))
        except (AttributeError, KeyError, TypeError, ValueError):
            ladder = UNREAD_LADDER
        longest = max(longest, ladder)
    at_once = max(1, min(params["max_workers"], params["max_requests_per_host"]))
    return float(connect_timeout or 0) + longest * math.ceil(len(entries) / at_once) + PYTHON_START


def drive_hosts(groups, payload, params, check_mode, timeout=None, max_sessions=256):
    """Every host's bots at once. `groups`: {session key (destination()): [entries]}. Returns {bot name:
    result}, each bot's result as run_fleet gives it, the audit record kept ("audit") for the
    controller's log.

    Each host is waited for host_wait() seconds (`timeout`: at most that many); a host that gives no
    answer by then fails each of its bots, unreachable, their state there unknown."""

    def one(item):
        key, entries = item
        host_params = dict(params, bots=entries, audit_log="")
        bound = host_wait(entries, params, dict(key)["timeout"])
        wait = bound if timeout is None else min(bound, timeout)
        try:
            result, _failure = drive_host(ssh_command(key), payload, host_params, check_mode, wait)
            return result["bots"]
        except NoAnswer as exc:
            what = ("the bound of its bots' kill-switch ladders plus the SSH connect" if wait == bound
                    else "the most this run waits for a host")
            why = f"{exc} ({what}): the bots' state there is unknown; check them on the host"
        except RuntimeError as exc:
            why = str(exc)
        # what ssh or the host's Python said may quote a value it was given: never a bot's secret
        for entry in entries:
            for secret in fleet.own_secrets(entry):
                why = why.replace(secret, "********")
        return {e["bot"]["name"]: dict(fleet.bot_failed(e["bot"]["name"], params, f"its host {dict(key)['host']} {why}"),
                                       unreachable=True)
                for e in entries}

    found = {}
    with ThreadPoolExecutor(max_workers=max(1, min(max_sessions, len(groups))),
                            thread_name_prefix="kill-switch-ssh") as pool:
        for bots in pool.map(one, groups.items()):
            found.update(bots)
    return found
