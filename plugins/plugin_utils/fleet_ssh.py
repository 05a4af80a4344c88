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

The session is OpenSSH's, with the host's inventory settings (ansible_host, ansible_port,
ansible_user, ansible_ssh_private_key_file, ansible_ssh_common_args, ansible_ssh_extra_args), in
batch mode (no prompt), with Ansible's host key checking, and a shared connection per host
(ControlMaster, kept 60 s) so the next command reuses it. A host that needs become, or another
connection plugin, is left to the per-host task.

A host is waited for as long as its bots' kill-switch ladders can take, no longer (``host_wait``): a
host whose sshd accepts but whose Python never answers fails its bots then, saying their state there
is unknown, instead of holding the fleet's result.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shlex
import signal
import subprocess
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor

from ansible_collections.botops.fleet.plugins.module_utils import botops_fleet_kill_switch as fleet

SSH_CONNECTIONS = ("ssh", "ansible.builtin.ssh", "smart")
PAYLOAD_PACKAGE = "ansible_collections/botops/fleet/plugins/module_utils/"
CONNECT_TIMEOUT = 10
PYTHON_START = 5  # seconds for the host's Python to start and import the module_utils it is sent
REAP_WAIT = 2  # seconds an ssh killed at the end of its wait is given to close its output
UNREAD_LADDER = 900  # seconds a ladder is counted for when its profile cannot be read here (the host judges it)
EXIT_SSH = 255  # ssh's own failure: the host could not be reached or refused the key

# What the host's Python runs: the module_utils zip from stdin, imported from memory, then
# run_fleet on the host's bots. Standard library only; Python 3.8 and newer.
BOOTSTRAP = r"""
import importlib.abc, importlib.util, io, json, sys, zipfile
data = sys.stdin.buffer.read()
size = int(data[:16])
archive = zipfile.ZipFile(io.BytesIO(data[16:16 + size]))
params = json.loads(data[16 + size:])
names = set(archive.namelist())
class Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path=None, target=None):
        if not name.startswith("ansible_collections"):
            return None
        base = name.replace(".", "/")
        if base + ".py" in names:
            return importlib.util.spec_from_loader(name, self, origin="<botops>/" + base + ".py")
        if any(n.startswith(base + "/") for n in names):
            return importlib.util.spec_from_loader(name, self, origin="<botops>/" + base, is_package=True)
        return None
    def create_module(self, spec):
        return None
    def exec_module(self, module):
        base = module.__name__.replace(".", "/")
        if base + ".py" in names:
            exec(compile(archive.read(base + ".py"), "<botops>/" + base + ".py", "exec"), module.__dict__)
        else:
            module.__path__ = []
sys.meta_path.insert(0, Finder())
from ansible_collections.botops.fleet.plugins.module_utils import botops_fleet_kill_switch as fleet
result, failure = fleet.run_fleet(params["params"], params["check_mode"], return_audit=True)
sys.stdout.write(json.dumps({"result": result, "failure": failure}))
"""


def module_utils_payload(module_utils_dir):
    """The collection's module_utils as a zip (deterministic: sorted, fixed dates), once per run."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(os.listdir(module_utils_dir)):
            if name.endswith(".py"):
                with open(os.path.join(module_utils_dir, name), "rb") as source:
                    info = zipfile.ZipInfo(PAYLOAD_PACKAGE + name, date_time=(1980, 1, 1, 0, 0, 0))
                    archive.writestr(info, source.read(), zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


def reachable_by_ssh(host_vars):
    """Whether this host's bots go through one SSH session here: an SSH connection without become,
    unless the inventory keeps them to the per-host task (bot_kill_switch_sessions: per_host_task)."""
    if str(host_vars.get("bot_kill_switch_sessions") or "ssh") == "per_host_task":
        return False
    connection = str(host_vars.get("ansible_connection") or "ssh")
    become = host_vars.get("ansible_become")
    return connection in SSH_CONNECTIONS and not (become is True or str(become).lower() in ("true", "yes", "1"))


def destination(host_vars, name):
    """(the session's key: who is reached where, the ssh command for it, the host's Python)."""
    address = str(host_vars.get("ansible_host") or name)
    port = host_vars.get("ansible_port") or host_vars.get("ansible_ssh_port")
    user = host_vars.get("ansible_user") or host_vars.get("ansible_ssh_user")
    key_file = host_vars.get("ansible_ssh_private_key_file") or host_vars.get("ansible_private_key_file")
    extra = " ".join(str(host_vars.get(v) or "") for v in ("ansible_ssh_common_args", "ansible_ssh_extra_args"))
    python = str(host_vars.get("ansible_python_interpreter") or "/usr/bin/python3")
    if python.startswith("auto"):
        python = "/usr/bin/python3"
    key = (address, str(port or ""), str(user or ""), str(key_file or ""), extra.strip(), python)
    return key


def ssh_command(key, control_dir, host_key_checking=True):
    address, port, user, key_file, extra, python = key
    command = ["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={CONNECT_TIMEOUT}",
               "-o", "ControlMaster=auto", "-o", "ControlPersist=60s",
               "-o", f"ControlPath={os.path.join(control_dir, 'botops-%C')}"]
    if not host_key_checking:
        command += ["-o", "StrictHostKeyChecking=no"]
    if port:
        command += ["-p", port]
    if user:
        command += ["-l", user]
    if key_file:
        command += ["-i", os.path.expanduser(key_file), "-o", "IdentitiesOnly=yes"]
    command += shlex.split(extra)
    remote = f"{shlex.quote(python)} -E -c {shlex.quote(BOOTSTRAP)}"
    return command + ["--", address, remote]


class NoAnswer(RuntimeError):
    """The host's session gave no answer within the wait: its bots' state there is unknown."""


def end_session(proc):
    """SIGKILL to ssh and whatever it started in its session (a ProxyCommand), then reap it; a
    shared connection's master, which detaches into a session of its own, is left to its ControlPersist."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        with contextlib.suppress(OSError):
            proc.kill()
    try:
        proc.communicate(timeout=REAP_WAIT)
    except subprocess.TimeoutExpired:  # something outside its session holds its output open
        for stream in (proc.stdout, proc.stderr):
            with contextlib.suppress(OSError):
                stream.close()
        proc.wait()


def drive_host(command, payload, params, check_mode, timeout):
    """One host's bots through one SSH session: (the host's run_fleet result, its failure) or raises
    RuntimeError saying why the host could not be driven (NoAnswer: nothing within `timeout` seconds;
    ssh and what it started are killed then)."""
    body = json.dumps({"params": params, "check_mode": check_mode}).encode()
    stdin = b"%016d" % len(payload) + payload + body
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
        end_session(proc)
        raise NoAnswer(f"gave no answer over SSH within {timeout:.0f} s") from None
    except BaseException:
        end_session(proc)
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


def host_wait(entries, params):
    """Seconds to wait for one host's answer: the SSH connect (CONNECT_TIMEOUT), then the longest
    kill-switch ladder of its bots (fleet.ladder_seconds: an upper bound of a bot's ladder at this
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
    return CONNECT_TIMEOUT + longest * math.ceil(len(entries) / at_once) + PYTHON_START


def drive_hosts(groups, payload, params, check_mode, control_dir, host_key_checking=True, timeout=None,
                max_sessions=256):
    """Every host's bots at once. `groups`: {session key: [entries]}. Returns {bot name: result}, each
    bot's result as run_fleet gives it, the audit record kept ("audit") for the controller's log.

    Each host is waited for host_wait() seconds (`timeout`: at most that many); a host that gives no
    answer by then fails each of its bots, unreachable, their state there unknown."""
    os.makedirs(control_dir, mode=0o700, exist_ok=True)

    def one(item):
        key, entries = item
        host_params = dict(params, bots=entries, audit_log="")
        bound = host_wait(entries, params)
        wait = bound if timeout is None else min(bound, timeout)
        try:
            result, _failure = drive_host(ssh_command(key, control_dir, host_key_checking), payload, host_params,
                                          check_mode, wait)
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
        return {e["bot"]["name"]: dict(fleet.bot_failed(e["bot"]["name"], params, f"its host {key[0]} {why}"),
                                       unreachable=True)
                for e in entries}

    found = {}
    with ThreadPoolExecutor(max_workers=max(1, min(max_sessions, len(groups))),
                            thread_name_prefix="kill-switch-ssh") as pool:
        for bots in pool.map(one, groups.items()):
            found.update(bots)
    return found
