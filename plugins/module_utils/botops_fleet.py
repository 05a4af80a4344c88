# Copyright: botops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the bots of one fleet run share, so that a thousand bots cost little more than one.

A fleet module (`bot_fleet_kill_switch`) drives many `Bot`s at once from the controller. Done
naively, every bot scans /proc on its own, starts a `supervisorctl` and a `redis-cli` process per
operation, and restarts a service as many times as there are bots behind it. `FleetRun` gives
every Bot of a run the same helpers instead (see `Bot`'s class attributes):

- `ProcessTable`: one /proc scan serves every bot that asked before the scan began, at most
  twenty scans a second;
- `ServiceGate`: a service operation asked by several bots behind the same service (bots that
  share a process) is done once: a bot joins an operation of the same kind on the same service
  that started after its own previous action, else starts one. Operations of different kinds on
  one service go one after the other: a bot that saw its process gone in the middle of another
  bot's restart and asks a start waits for the restart to end, rather than start the process
  under a stop that then waits for a stopped state that never comes. supervisord is driven over
  its XML-RPC unix socket (what `supervisorctl` does, without a Python process per call);
- `RedisClient`: GET and SET over a socket (RESP), without a `redis-cli` process;
- `fail_fast`: once a request to a bot timed out, later requests to it wait at most this long;
- `http_slots`: at most `per_host` requests in flight to one host (one listen address) at a time.
  A thousand threads asking at once flood the host their bots share: its bots answer so late
  that their requests time out and their ladders escalate to stopping processes that would have
  halted on their API. A request waits for a slot before its timeout starts; requests to a bot
  that already timed out take no slot (they cost its host nothing), so bots that do not answer
  hold up the others for at most their first timeout.

Results never change: every check, action and verification is still made per bot. Stdlib only.
"""

from __future__ import annotations

import http.client
import os
import re
import socket
import ssl
import threading
import time
import xmlrpc.client
from urllib.parse import parse_qs, unquote, urlsplit

from ansible_collections.botops.fleet.plugins.module_utils.botops_bot import Bot
from ansible_collections.botops.fleet.plugins.module_utils.botops_errors import BotError
from ansible_collections.botops.fleet.plugins.module_utils.botops_processes import scan_processes
from ansible_collections.botops.fleet.plugins.module_utils.botops_service import SupervisorRPC, stop_timeout, supervisor_endpoint, supervisor_proxy

FAIL_FAST_TIMEOUT = 0.5
REDIS_TIMEOUT = 2.0  # seconds a Redis connect, or a reply, may take
REQUESTS_PER_HOST = 128
SCAN_GAP = 0.05  # seconds between two scans of /proc
SUPERVISOR_RPC_TIMEOUT = 30.0  # one XML-RPC call (none waits in supervisord: the stop and start are polled)
SUPERVISOR_START_WAIT = 60.0  # seconds a start waits for RUNNING (the program's startsecs); then the rung's verify decides
# supervisor.xmlrpc.Faults
FAULT_BAD_NAME = 10


# ---------------------------------------------------------------------------------- processes
class ProcessTable:
    """The process list, shared: a caller gets a scan that began after it asked, and one scan serves
    every caller that was waiting for it. Scans begin at least `gap` seconds apart: callers that
    keep arriving (a thousand bots' threads do not all start at once) would otherwise get a scan
    each, and a thousand scans of /proc cost seconds of CPU; those that arrive in the gap wait for
    its end and share the scan that follows."""

    def __init__(self, gap=SCAN_GAP):
        self._lock = threading.Lock()
        self._snapshot = (float("-inf"), [], {})
        self.gap = gap
        self.scans = 0

    def pids(self, pattern):
        asked = time.monotonic()
        with self._lock:
            started, table, matches = self._snapshot
            if started < asked:
                wait = started + self.gap - time.monotonic()
                if wait > 0:
                    time.sleep(wait)  # holding the lock: whoever asks meanwhile shares the next scan
                started = time.monotonic()
                table, matches = scan_processes(exclude=(os.getpid(),)), {}
                self._snapshot = (started, table, matches)
                self.scans += 1
            if pattern not in matches:  # bots sharing a process share its pattern: match it once per scan
                regex = re.compile(pattern)
                matches[pattern] = sorted(pid for pid, cmdline in table if regex.search(cmdline))
            return list(matches[pattern])


# ---------------------------------------------------------------------------------- supervisord
class _Operation:
    def __init__(self, op, by=None):
        self.op = op
        self.by = by  # the bot that asked it first
        self.started = time.monotonic()
        self.done = threading.Event()
        self.text = None
        self.error = None


class ServiceGate:
    """Service operations of the bots of one run (see the module docstring)."""

    def __init__(self, rpc_timeout=SUPERVISOR_RPC_TIMEOUT):
        self._lock = threading.Lock()
        self._ops = {}
        self._serial = {}  # service key -> the lock its operations take, one after the other
        self._endpoints = {}
        self.rpc_timeout = rpc_timeout
        self.done = []  # (service key, op): what was really done, for tests and reports

    @staticmethod
    def key(bot):
        """Bots with the same key are behind the same service."""
        conf = bot.service_conf
        where = bot.root if conf["manager"] == "docker_compose" else ""  # compose files are relative to the root
        return (conf["manager"], conf.get("config") or "", conf.get("compose_file") or "", where, conf["name"])

    def run(self, bot, op):
        key = self.key(bot)
        not_before = bot.last_action_at
        with self._lock:
            shared = next((o for o in self._ops.get(key, []) if o.op == op and o.started >= not_before), None)
            if shared is None:
                mine = _Operation(op, bot.name)
                self._ops.setdefault(key, []).append(mine)
            serial = self._serial.setdefault(key, threading.Lock())
        if shared is not None:
            shared.done.wait()
            if shared.error is not None:
                raise BotError(str(shared.error))
            return shared.text
        try:
            with serial:
                mine.text = self._execute(bot, op)
            self.done.append((key, op))
            return mine.text
        except BotError as exc:
            mine.error = exc
            raise
        finally:
            mine.done.set()

    def stopped_for_another(self, bot):
        """The bot for which this run stopped this bot's service (a stop or a restart another bot
        behind the same service asked), or None."""
        with self._lock:
            ops = list(self._ops.get(self.key(bot), []))
        return next((o.by for o in ops if o.op in ("stop", "restart") and o.by != bot.name), None)

    def state(self, bot):
        rpc = self._rpc(bot)
        if rpc is None:
            return bot.service_state_run()
        try:
            return rpc.supervisor.getProcessInfo(bot.service_conf["name"])["statename"]
        except xmlrpc.client.Fault as fault:
            if fault.faultCode == FAULT_BAD_NAME:
                return "UNKNOWN"
            raise BotError(self._describe(bot, "status", fault)) from None
        except (OSError, xmlrpc.client.Error, http.client.HTTPException) as exc:
            raise BotError(self._describe(bot, "status", exc)) from None

    # ------------------------------------------------------------------ supervisord over XML-RPC
    def _endpoint(self, bot):
        conf = bot.service_conf
        if conf["manager"] != "supervisor" or not conf.get("config"):
            return None
        config = conf["config"]
        with self._lock:
            if config not in self._endpoints:
                self._endpoints[config] = supervisor_endpoint(config)
            return self._endpoints[config]

    def _rpc(self, bot):
        endpoint = self._endpoint(bot)
        return None if endpoint is None else supervisor_proxy(endpoint, self.rpc_timeout)

    def _describe(self, bot, op, exc):
        name = bot.service_conf["name"]
        cause = exc.faultString if isinstance(exc, xmlrpc.client.Fault) else f"{exc.__class__.__name__}: {exc}"
        return f"supervisorctl {op} {name} (XML-RPC on {self._endpoint(bot)[0]}) failed: {cause}"

    def _execute(self, bot, op):
        endpoint = self._endpoint(bot)
        if endpoint is None or op not in ("stop", "start", "restart"):
            return bot.service_run(op)
        name = bot.service_conf["name"]
        rpc = SupervisorRPC(endpoint, name, timeout=self.rpc_timeout)
        texts = []
        if op in ("stop", "restart"):
            texts.append(f"{name}: stopped" if rpc.stop(stop_timeout(bot)) else f"{name}: ERROR (not running)")
        if op in ("start", "restart"):
            if rpc.start():
                rpc.wait_running(SUPERVISOR_START_WAIT)
                texts.append(f"{name}: started")
            else:
                texts.append(f"{name}: ERROR (already started)")
        return "\n".join(texts)


# ---------------------------------------------------------------------------------- Redis
class RedisReplyError(ValueError):
    """Redis answered an error (-ERR ...)."""


def _encode(args):
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        raw = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(out)


class _Reader:
    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("Redis closed the connection")
        self.buf += chunk

    def line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def exact(self, n):
        while len(self.buf) < n + 2:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def reply(self):
        line = self.line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            return RedisReplyError(rest.decode(errors="replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self.exact(n)
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.reply() for item in range(n)]
        raise ValueError(f"unexpected Redis reply {line[:40]!r}")


class RedisClient:
    """One Redis command per connection (redis://, rediss:// and unix:// URLs, AUTH, database)."""

    def __init__(self, timeout=REDIS_TIMEOUT):
        self.timeout = timeout

    def command(self, url, *args):
        parts = urlsplit(url)
        if parts.scheme == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            sock.connect(parts.path)
            db = int((parse_qs(parts.query).get("db") or ["0"])[0])
        elif parts.scheme in ("redis", "rediss"):
            sock = socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), timeout=self.timeout)
            if parts.scheme == "rediss":
                sock = ssl.create_default_context().wrap_socket(sock, server_hostname=parts.hostname)
            db = int(parts.path.lstrip("/") or 0)
        else:
            raise ValueError(f"unsupported Redis URL scheme {parts.scheme!r}")
        try:
            commands = []
            if parts.password:
                user = unquote(parts.username) if parts.username else None
                commands.append(["AUTH", user, unquote(parts.password)] if user else ["AUTH", unquote(parts.password)])
            if db:
                commands.append(["SELECT", db])
            commands.append(list(args))
            sock.sendall(b"".join(_encode(c) for c in commands))
            reader = _Reader(sock)
            replies = [reader.reply() for command in commands]
        finally:
            sock.close()
        for reply in replies:
            if isinstance(reply, RedisReplyError):
                raise reply
        return replies[-1]


# ---------------------------------------------------------------------------------- the run
class FleetRun:
    """The helpers one fleet run shares between its Bots; `attach(bot)` gives them to a Bot."""

    def __init__(self, fail_fast=FAIL_FAST_TIMEOUT, redis_timeout=REDIS_TIMEOUT, per_host=REQUESTS_PER_HOST):
        self.started = time.monotonic()
        self.processes = ProcessTable()
        self.services = ServiceGate()
        self.redis = RedisClient(redis_timeout)
        self.fail_fast = fail_fast
        self.per_host = per_host
        self._slots = {}
        self._slots_lock = threading.Lock()

    def http_slots(self, host):
        """The slots of one host: a semaphore of `per_host` (see the module docstring)."""
        with self._slots_lock:
            if host not in self._slots:
                self._slots[host] = threading.BoundedSemaphore(self.per_host)
            return self._slots[host]

    def attach(self, bot):
        if isinstance(bot, Bot):
            bot.processes = self.processes
            bot.services = self.services
            bot.redis = self.redis
            bot.fail_fast = self.fail_fast
            bot.http_slots = self.http_slots
            # a bot that has done nothing yet joins any operation of this run on its service: what it
            # needs changed dates from before the run (its thread may well start after another bot's)
            bot.last_action_at = self.started
        return bot


def scrub(value, secrets, cache=None):
    """`value` with every secret replaced by ******** (AnsibleModule's rule for no_log values:
    values only, keys are kept), each distinct string looked at once: a fleet's result repeats the
    same texts many times. Masking keys too would let a short secret ("1", "bot") rename the keys
    a result is read by (its bots' names, `bots` itself), and the bots would vanish from the report."""
    if cache is None:
        cache = {}
    if isinstance(value, str):
        if value not in cache:
            text = value
            if text in secrets:
                text = "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"
            else:
                for secret in secrets:
                    if secret in text:
                        text = text.replace(secret, "********")
            cache[value] = text
        return cache[value]
    if isinstance(value, dict):
        return {k: scrub(v, secrets, cache) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub(v, secrets, cache) for v in value]
    return value
