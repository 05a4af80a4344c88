# Copyright: botops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Stop and start one bot through its service manager, verified on the process, and the
readiness gate.

Shared by bot_service (start / stop / restart) and bot_deploy (the change window of a deploy
or a rollback). Stdlib only.

- A graceful stop is the service manager's stop; a process still there `graceful_timeout`
  seconds later gets SIGTERM, then after `term_timeout` SIGKILL, and must then be gone.
- A start waits for the process, then (optionally) for the readiness gate: the profile's
  readiness check must hold without a break for `stable_for` seconds, so a release that
  answers ready and then falls over does not pass.
"""

from __future__ import annotations

import configparser
import errno
import fcntl
import http.client
import os
import socket
import stat
import tempfile
import threading
import time
import xmlrpc.client
from urllib.parse import quote

from ansible_collections.botops.fleet.plugins.module_utils.botops_bot import POLL_INTERVAL
from ansible_collections.botops.fleet.plugins.module_utils.botops_errors import BotError
from ansible_collections.botops.fleet.plugins.module_utils.botops_values import describe_answer

KILL_WAIT = 5.0  # seconds for a SIGKILLed process to disappear
DEFAULT_STOP_TIMEOUT = 30.0
SLOT_DIR = os.path.join(tempfile.gettempdir(), "botops-windows")
SLOT_WAIT = 600.0  # seconds a window waits for a slot before it gives up (nothing changed yet)
SLOT_POLL = 0.05


def stop_timeout(bot, given=None):
    """The graceful timeout: the one given, else the profile's service.stop_timeout, else 30 s."""
    if given is not None:
        return float(given)
    return float(bot.service_conf.get("stop_timeout") or DEFAULT_STOP_TIMEOUT)


def wait_pids(bot, present, deadline):
    """Poll the process table until a matching process is there (present) or gone; True on success."""
    while True:
        pids = bot.pids()
        if bool(pids) == present:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_INTERVAL)


def graceful_stop(bot, graceful_timeout, term_timeout, actions, kill_wait=KILL_WAIT, manager=None):
    """Service stop, then SIGTERM, then SIGKILL until the process is gone; appends what was done.
    `manager`: a SupervisorRPC to stop through (default: the service manager's command)."""
    began = time.monotonic()
    try:
        if manager is not None:
            manager.stop(graceful_timeout)
        else:
            bot.service("stop")
        actions.append("service stop")
    except BotError as exc:  # the signals below still stop it
        actions.append(f"service stop failed: {exc}")
    if wait_pids(bot, False, began + graceful_timeout):
        return
    pids = bot.send_signal("TERM")
    actions.append(f"SIGTERM {pids}")
    if wait_pids(bot, False, time.monotonic() + term_timeout):
        return
    pids = bot.send_signal("KILL")
    actions.append(f"SIGKILL {pids}")
    if wait_pids(bot, False, time.monotonic() + kill_wait):
        return
    raise BotError(f"process still there after SIGKILL: pids {bot.pids()}")


def wait_ready(bot, profile, deadline, stable_for):
    """Poll readiness until it holds without a break for stable_for seconds.

    Returns (ok, last observation, ready_at): ready_at is the monotonic time the unbroken
    stretch of readiness began (when the bot could trade again). A stretch that began before
    the deadline may finish after it."""
    specs = [profile["health"]["readiness"]]
    since = None
    while True:
        ok, observed = bot.check_all(specs)
        now = time.monotonic()
        if ok:
            if since is None:
                since = now
            if now - since >= stable_for:
                return True, observed, since
        else:
            since = None
            if now >= deadline:
                return False, observed, None
        time.sleep(POLL_INTERVAL)


def start(bot, profile, actions, ready_timeout, wait_for_ready=True, stable_for=1.0, began=None):
    """Service start, wait for the process and (wait_for_ready) for the readiness gate.

    Returns {"ready": bool or None, "ready_at": monotonic time or None}; raises BotError naming
    what did not happen within ready_timeout of `began` (default: now)."""
    began = time.monotonic() if began is None else began
    deadline = began + ready_timeout
    bot.service("start")
    actions.append("service start")
    if not wait_pids(bot, True, deadline):
        raise BotError(f"no process matching {bot.process_match!r} within {ready_timeout:g}s of the start")
    if not wait_for_ready:
        return {"ready": None, "ready_at": None}
    ok, observed, ready_at = wait_ready(bot, profile, deadline, stable_for)
    if not ok:
        raise NotReady(f"not ready within {ready_timeout:g}s of the start: last answer {describe_answer(observed)}", observed)
    actions.append("ready")
    return {"ready": True, "ready_at": ready_at}


class NotReady(BotError):
    """The readiness gate did not pass; `observed` is the last answer."""

    def __init__(self, msg, observed):
        super().__init__(msg)
        self.observed = observed


class Starting:
    """The service manager's start, running in a thread while the caller polls readiness: some
    managers return only after the program has run for a while (supervisor's startsecs), and the
    bot may be ready before that. `check()` raises as soon as the start failed - unless the
    manager is still bringing the program up (a process that crashed during its start is
    restarted: the readiness gate decides); `wait()` joins."""

    STILL_STARTING = ("RUNNING", "STARTING", "BACKOFF", "ACTIVE", "ACTIVATING")

    def __init__(self, bot):
        self.bot = bot
        self.error = None
        self.tolerated = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        try:
            self.bot.service("start")
        except Exception as exc:  # reported by check() / wait() in the caller's thread
            self.error = exc

    def check(self):
        if self.error is None:
            return
        try:
            state = self.bot.service_state()
        except (BotError, OSError):
            state = "UNKNOWN"
        if str(state).upper() in self.STILL_STARTING:
            self.tolerated = f"{self.error} (the service manager still brings it up: {state})"
            self.error = None
            return
        raise BotError(f"service start failed: {self.error} (service state {state})")

    def wait(self, timeout):
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise BotError(f"the service manager's start did not return within {timeout:g}s")
        self.check()


class RpcStarting:
    """A start through supervisord's XML-RPC without waiting (the same interface as Starting)."""

    EXITED_GRACE = 2.0  # an unexpected exit is restarted by supervisord (autorestart) within this

    def __init__(self, rpc):
        self.rpc = rpc
        self.tolerated = None
        self._checked = 0.0
        self._exited_since = None
        rpc.start()

    def check(self, every=0.5):
        now = time.monotonic()
        if now - self._checked < every:
            return
        self._checked = now
        info = self.rpc.info()
        state = info.get("statename")
        why = f": {info['spawnerr']}" if info.get("spawnerr") else ""
        if state == "EXITED":
            self._exited_since = self._exited_since or now
            if now - self._exited_since < self.EXITED_GRACE:
                return
        else:
            self._exited_since = None
        if state in ("FATAL", "EXITED", "STOPPED", "UNKNOWN"):
            raise BotError(f"service start failed: supervisord reports {self.rpc.name} {state}{why}")
        if state == "BACKOFF":
            self.tolerated = f"supervisord restarts it (BACKOFF{why})"

    def wait(self, timeout):
        deadline = time.monotonic() + min(timeout, self.EXITED_GRACE + 1.0)
        while True:
            self.check(every=0)
            if self._exited_since is None or time.monotonic() >= deadline:
                return
            time.sleep(POLL_INTERVAL)


def start_until_ready(bot, profile, deadline, manager=None):
    """Start the bot and poll its readiness meanwhile; returns (Starting, monotonic time it was
    first ready). Raises BotError when the start fails or readiness does not come by the deadline.
    `manager`: a SupervisorRPC to start through (default: the service manager's command)."""
    starting = RpcStarting(manager) if manager is not None else Starting(bot)
    specs = [profile["health"]["readiness"]]
    while True:
        starting.check()
        ok, observed = bot.check_all(specs)
        now = time.monotonic()
        if ok:
            return starting, now
        if now >= deadline:
            raise NotReady(f"not ready by the deadline after the start: last answer {describe_answer(observed)}", observed)
        time.sleep(POLL_INTERVAL)


# ---------------------------------------------------------------------------- supervisord over its socket
class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


class UnixSocketTransport(xmlrpc.client.Transport):
    """XML-RPC over supervisord's unix socket (the transport supervisorctl itself uses)."""

    def __init__(self, path, timeout):
        super().__init__()
        self._path = path
        self._timeout = timeout

    def make_connection(self, host):
        return _UnixConnection(self._path, self._timeout)


class SupervisorRPC:
    """One program of supervisord, driven through the XML-RPC interface supervisorctl itself uses,
    on the unix socket the config's [supervisorctl] serverurl names: no supervisorctl process (a
    Python start-up, a few hundred milliseconds on a busy host) for each stop and start."""

    ALREADY_STARTED, NOT_RUNNING = 60, 70

    def __init__(self, endpoint, name, timeout=60.0):
        self.name = name
        self._proxy = supervisor_proxy(endpoint, timeout)

    def _call(self, method, *args):
        try:
            return getattr(self._proxy.supervisor, method)(*args)
        except xmlrpc.client.Fault as fault:
            if fault.faultCode in (self.ALREADY_STARTED, self.NOT_RUNNING):
                return None
            raise BotError(f"supervisord {method} {self.name}: {fault.faultString}") from None
        except (OSError, xmlrpc.client.Error, http.client.HTTPException) as exc:
            raise BotError(f"supervisord {method} {self.name}: {exc.__class__.__name__}: {exc}") from None

    def stop(self, timeout=30.0):
        """Send the stop and poll until supervisord has reaped the process (up to timeout seconds);
        False when it was not running.

        `supervisorctl stop` waits through supervisord's own wait, which is noticed only when its
        event loop wakes (up to a second after the process is gone); polling wakes it at once. And
        while an XML-RPC call waits in supervisord (stopProcess or startProcess with wait), its
        event loop spins on the waiting connection: a core of the host, taken from its bots."""
        if self._call("stopProcess", self.name, False) is None:
            return False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.info().get("statename") in ("STOPPED", "EXITED", "FATAL"):
                break
            time.sleep(POLL_INTERVAL)
        return True

    def start(self):
        """Spawn without waiting for the program's startsecs; the caller polls readiness. False when
        it was already running."""
        return self._call("startProcess", self.name, False) is not None

    def wait_running(self, timeout):
        """Poll until supervisord counts the program RUNNING (it stayed up for its startsecs), as
        `supervisorctl start` waits; at the timeout the caller's own checks decide. Raises BotError,
        as `supervisorctl start` fails, when the program left STARTING for anything but RUNNING (it
        exited before its startsecs: BACKOFF, EXITED, FATAL)."""
        deadline = time.monotonic() + timeout
        while True:
            info = self.info()
            state = info.get("statename")
            if state == "RUNNING" or time.monotonic() >= deadline:
                return
            if state != "STARTING":
                why = f": {info['spawnerr']}" if info.get("spawnerr") else ""
                raise BotError(f"supervisord start {self.name}: it is {state}{why}, not running")
            time.sleep(POLL_INTERVAL)

    def info(self):
        return self._call("getProcessInfo", self.name) or {}


def supervisor_endpoint(config):
    """(unix socket, username, password) that supervisorctl talks to for this supervisord.conf, or
    None when it talks over HTTP or the file cannot be read (the caller then runs supervisorctl).

    The socket is [supervisorctl] serverurl's ``unix://`` path, else [unix_http_server] file;
    ``%(here)s`` is the config's directory, ``%%`` a percent sign, and a relative path is taken from
    the config's directory. Any other ``%(name)s`` expansion is left to supervisorctl (None)."""
    parser = configparser.RawConfigParser(strict=False)
    try:
        with open(config) as f:
            parser.read_file(f)
    except (OSError, UnicodeDecodeError, configparser.Error):
        return None
    here = os.path.dirname(os.path.abspath(config))
    url = parser.get("supervisorctl", "serverurl", fallback=None)
    if url:
        if not url.startswith("unix://"):
            return None
        path = url[len("unix://"):]
    elif parser.has_option("unix_http_server", "file"):
        path = parser.get("unix_http_server", "file")
    else:
        return None
    path = path.replace("%(here)s", here)
    if "%(" in path or not path:
        return None
    path = path.replace("%%", "%")
    if not os.path.isabs(path):
        path = os.path.join(here, path)
    return (path, parser.get("supervisorctl", "username", fallback=None) or None,
            parser.get("supervisorctl", "password", fallback=None))


def supervisor_proxy(endpoint, timeout):
    """An XML-RPC proxy to supervisord at a supervisor_endpoint() (with its basic auth)."""
    path, username, password = endpoint
    auth = f"{quote(username, safe='')}:{quote(password or '', safe='')}@" if username else ""
    return xmlrpc.client.ServerProxy(f"http://{auth}localhost", transport=UnixSocketTransport(path, timeout))


def supervisor_rpc(bot, timeout=60.0):
    """A SupervisorRPC for a bot run by supervisor whose config names a unix socket that exists,
    else None (the service manager's command is used then)."""
    conf = bot.service_conf
    config = conf.get("config")
    if conf.get("manager") != "supervisor" or not config:
        return None
    endpoint = supervisor_endpoint(config)
    if endpoint is None or not os.path.exists(endpoint[0]):
        return None
    return SupervisorRPC(endpoint, conf["name"], timeout)


# ---------------------------------------------------------------------------------- window slots
class WindowSlots:
    """At most `count` bots of one host in their trading-down window at once.

    A window (pause, stop, start, readiness) is short when the bot's restart has a core to itself.
    Fifty bots restarted at once on a few cores share them: every restart takes as long as all of
    them together, and every bot is down for that long. A window therefore holds one of the host's
    slots from the pause to the first readiness (the default count: the host's CPUs); the others
    wait before they pause, still trading. The work outside the windows (backups, migrations run
    online) does not take a slot.

    A slot is an exclusive flock on `<dir>/slot<N>`, released by the kernel when the process
    holding it ends, however it ends: a killed call never leaves a slot taken. The directory is
    shared by the bots' users of the host (sticky and world-writable, like /tmp); a slot file is
    opened read-only, which is all flock needs, and never through a symlink."""

    def __init__(self, count=None, directory=None):
        self.count = count if count is not None else (os.cpu_count() or 1)
        if self.count < 1:
            raise BotError(f"window_slots must be at least 1, got {self.count}")
        self.directory = directory or SLOT_DIR
        self._held = None

    @property
    def held(self):
        return self._held is not None

    def _dir(self):
        try:
            os.mkdir(self.directory, 0o700)
            os.chmod(self.directory, 0o1777)
        except FileExistsError:
            pass
        st = os.lstat(self.directory)
        if not stat.S_ISDIR(st.st_mode):
            raise BotError(f"window slots: {self.directory} is not a directory (a symlink or a file is in its place)")

    def _open(self, index):
        path = os.path.join(self.directory, f"slot{index}")
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            return os.open(path, flags)  # without O_CREAT: fs.protected_regular refuses O_CREAT on another user's file here
        except FileNotFoundError:
            pass
        try:
            fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return os.open(path, flags)
        try:
            os.fchmod(fd, 0o644)  # the bots' other users open it too, whatever this umask
        except OSError:
            os.close(fd)
            raise
        return fd

    def take(self, wait=None):
        """Block until a slot is free; returns the seconds waited. Raises BotError after `wait`
        seconds (default SLOT_WAIT)."""
        wait = SLOT_WAIT if wait is None else wait
        if self._held is not None:
            return 0.0
        self._dir()
        began = time.monotonic()
        while True:
            refused = {}  # slot files this round could not open (a round that opens none fails at once)
            for index in range(self.count):
                try:
                    fd = self._open(index)
                except OSError as exc:
                    refused[index] = f"{exc.strerror or exc}"
                    continue
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError as exc:
                    os.close(fd)
                    if exc.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                        raise
                    continue
                self._held = fd
                return round(time.monotonic() - began, 3)
            if len(refused) == self.count:
                raise BotError(f"window slots: cannot open any slot file in {self.directory}: "
                               + "; ".join(f"slot{i}: {why}" for i, why in sorted(refused.items())))
            if time.monotonic() - began >= wait:
                raise BotError(f"no window slot free on this host within {wait:g}s: {self.count} other "
                               f"window(s) held them all (lock files {self.directory}/slot*)")
            time.sleep(SLOT_POLL)

    def give(self):
        if self._held is not None:
            os.close(self._held)
            self._held = None
