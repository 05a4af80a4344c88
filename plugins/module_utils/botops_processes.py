# Copyright: botops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The bot's processes and its service manager: the manager's commands (supervisor, systemd, docker
compose) and its state, the processes that match the bot (a scan of /proc, as pgrep -f sees them),
their states (T: stopped) and signals. BotProcesses is a part of botops_bot.Bot; scan_processes also
serves a fleet run's one scan for many bots (plugins/module_utils/botops_fleet.py). Stdlib only.
"""

from __future__ import annotations

import os
import re
import shutil
import signal as signal_mod
import sys

from ansible_collections.botops.fleet.plugins.module_utils.botops_errors import BotError
from ansible_collections.botops.fleet.plugins.module_utils.botops_values import PROCESS_EXPECTED

SIGNALS = {"TERM": signal_mod.SIGTERM, "KILL": signal_mod.SIGKILL, "INT": signal_mod.SIGINT, "HUP": signal_mod.SIGHUP,
           "STOP": signal_mod.SIGSTOP, "CONT": signal_mod.SIGCONT}
STOPPED_STATES = ("T", "t")  # /proc/<pid>/stat: stopped by a signal (SIGSTOP...), or by a tracer


def process_states(pids):
    """{pid: state letter} from /proc/<pid>/stat (R running, S sleeping, T stopped...); gone ones left out."""
    states = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                raw = f.read().decode(errors="replace")
        except OSError:
            continue
        # "pid (comm) state ...": comm may hold spaces and parentheses, the state follows the last ')'
        rest = raw[raw.rfind(")") + 1:].split()
        if rest:
            states[pid] = rest[0]
    return states


def scan_processes(exclude=()):
    """[(pid, command line)] of every process (like `pgrep -f` sees them), `exclude` left out."""
    found = []
    skip = set(exclude)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        if pid in skip:
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if cmdline:
            found.append((pid, cmdline))
    return found


def find_pids(pattern):
    """PIDs whose full command line matches the pattern (like pgrep -f), this process excluded."""
    regex = re.compile(pattern)
    return sorted(pid for pid, cmdline in scan_processes(exclude=(os.getpid(),)) if regex.search(cmdline))


def supervisorctl_path():
    """supervisorctl from PATH, else the one installed beside this Python (a virtualenv)."""
    return shutil.which("supervisorctl") or os.path.join(os.path.dirname(sys.executable), "supervisorctl")


class BotProcesses:
    """The service manager and the processes of a Bot. It reads what Bot.__init__ sets (root,
    service_conf, process_match, _run_command, _memo) and a fleet run's helpers (processes,
    services: see Bot)."""

    def service_command(self, op):
        conf = self.service_conf
        name = conf["name"]
        manager = conf["manager"]
        if manager == "supervisor":
            cmd = [conf.get("supervisorctl") or supervisorctl_path()]
            if conf.get("config"):
                cmd += ["-c", conf["config"]]
            return cmd + [op, name]
        if manager == "systemd":
            return ["systemctl", op, name]
        if manager == "docker_compose":
            cmd = ["docker", "compose"]
            if conf.get("compose_file"):
                cmd += ["-f", os.path.join(self.root, conf["compose_file"])]
            return cmd + [op, name]
        raise BotError(f"unknown service manager {manager!r}")

    def service(self, op):
        if self.services is not None:
            return self.services.run(self, op)
        return self.service_run(op)

    def service_run(self, op):
        """The service manager's own command for `op` (start, stop, restart)."""
        cmd = self.service_command(op)
        rc, out, err = self._run_command(cmd)
        text = (out + err).strip()
        # supervisorctl exits non-zero for "already started" / "not running": those are fine.
        if rc != 0 and not re.search(r"already started|not running|ERROR \(not running\)", text):
            raise BotError(f"{' '.join(cmd)} failed (rc={rc}): {text}")
        return text

    def service_state(self):
        """RUNNING / STOPPED / ... as the service manager reports it."""
        if self.services is not None:
            return self.services.state(self)
        return self.service_state_run()

    def service_state_run(self):
        conf = self.service_conf
        if conf["manager"] == "supervisor":
            rc, out, err = self._run_command(self.service_command("status"))
            parts = out.split()
            return parts[1] if len(parts) > 1 else "UNKNOWN"
        if conf["manager"] == "systemd":
            rc, out, err = self._run_command(["systemctl", "is-active", conf["name"]])
            return out.strip().upper() or "UNKNOWN"
        return "RUNNING" if self.pids() else "STOPPED"

    def pids(self):
        if self._memo is not None and "pids" in self._memo:
            return list(self._memo["pids"])
        if self.processes is not None:
            pids = self.processes.pids(self.process_match)
        else:
            pids = find_pids(self.process_match)
        if self._memo is not None:
            self._memo["pids"] = list(pids)
        return pids

    def process_states(self, pids=None):
        """{pid: state letter} of the bot's processes (/proc/<pid>/stat: T is stopped); within
        `memoized`, read once."""
        if self._memo is not None and "states" in self._memo:
            return dict(self._memo["states"])
        states = process_states(self.pids() if pids is None else pids)
        if self._memo is not None:
            self._memo["states"] = dict(states)
        return states

    def send_signal(self, name):
        pids = self.pids()
        for pid in pids:
            try:
                os.kill(pid, SIGNALS[name])
            except ProcessLookupError:
                pass
        return pids

    def _check_process(self, want):
        pids = self.pids()
        if want in ("absent", "present"):
            ok = (not pids) if want == "absent" else bool(pids)
            observed = {"pids": pids}
        else:
            states = self.process_states(pids)
            stopped = [pid for pid, state in states.items() if state in STOPPED_STATES]
            ok = bool(states) and (len(stopped) == len(states) if want == "stopped" else not stopped)
            observed = {"pids": pids, "states": {str(pid): state for pid, state in states.items()}}
        if not ok:
            observed["expected"] = PROCESS_EXPECTED[want]
        return ok, observed
