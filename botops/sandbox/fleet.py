"""The sandbox fleet: reference bots under supervisord, with PostgreSQL 15 and Redis on loopback.

This is the engine behind ``botops sandbox.up|status|down`` (``botops/sandbox/tasks.py``). It has no
Invoke dependency, so tests drive an isolated fleet directly::

    fleet = Fleet("/tmp/fleet", "/tmp/fleet-inventory", base_port=28000)
    fleet.up(bots=6, trade_interval=0.1)
    fleet.status()
    fleet.down(purge=True)

Layout of the state directory (``$BOTOPS_SANDBOX_DIR``, default ``<repo>/.sandbox``)::

    state.json                 decisions of the first ``up``: ports, families, credentials (0600)
    artifacts/                 refbot-<version>.tar.gz + refbot-<version>.json, built once
    postgres/                  the cluster (data/), its unix socket and log; owned by the OS user
                               that runs it (``postgres`` when we are root)
    redis/                     redis.conf, dump.rdb, redis.log
    supervisor/                supervisord.conf, conf.d/<program>.conf, socket, pid file, logs
    bots/<name>/               one bot root per bot (docs/reference-bot.md, "Host layout")

The inventory (``$BOTOPS_SANDBOX_INVENTORY``, default ``<repo>/inventory/sandbox``) gets
``hosts.yml`` and ``host_vars/<bot>/secrets.yml``; playbooks operate the fleet through it exactly
as they would a production fleet.

User errors raise :class:`FleetError` with ``exit_code`` 2 and change nothing; a failure after
something was started stops what that run started and raises with ``exit_code`` 1.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import http.client
import json
import math
import os
import pwd
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import xmlrpc.client
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable
from urllib.parse import urlsplit, urlunsplit

import yaml

from botops.layout import HOME

if TYPE_CHECKING:
    import psycopg



def _pg():
    """psycopg, imported when the sandbox talks to PostgreSQL: `botops --list` and every task that does
    not touch the sandbox work without the sandbox's packages."""
    import psycopg
    import psycopg.sql  # noqa: F401  (psycopg.sql.SQL, Identifier, Literal)

    return psycopg

DEFAULT_BOTS = 6
DEFAULT_BASE_PORT = 18000
DEFAULT_TRADE_INTERVAL = 0.2
PORT_BLOCK = 10  # bot i listens in [base_port + 10*i, base_port + 10*i + 9]
MIN_BASE_PORT = 1024
MAX_BOTS = (65535 - MIN_BASE_PORT + 1) // PORT_BLOCK - 1  # what fits below 65536 from the lowest --base-port
MAX_TRADE_INTERVAL = 3600.0  # seconds between trading ticks; more is a bot that never trades
LISTEN = "127.0.0.1"
INITIAL_RELEASE = "1.0.0"
PG_BINDIR = Path("/usr/lib/postgresql/15/bin")
PG_OS_USER = "postgres"  # runs the cluster when we are root (initdb and postgres refuse root)
PG_SUPERUSER = "postgres"
PG_MAX_CONNECTIONS = 300
PG_CONNECTIONS_PER_BOT = 3  # the trading loop's connection, health checks, an operator's psql or pg_dump
REDIS_PROGRAM = "redis"
STATE_FORMAT = 1
# unix socket paths (sun_path) are limited to 108 bytes including the terminating NUL
MAX_SOCKET_PATH = 107

EXIT_USAGE = 2
EXIT_FAILURE = 1

# executables (argv[0] or the script a Python runs) of the processes a sandbox runs
OWN_PROGRAMS = frozenset({"supervisord", "alembic", "postgres", "pg_ctl", "initdb", "redis-server"})
RUNNING_STATES = frozenset({"STARTING", "RUNNING", "BACKOFF", "STOPPING"})
STOPPED_STATES = frozenset({"STOPPED", "EXITED", "FATAL", "UNKNOWN"})


class FleetError(Exception):
    """A sandbox command failed; ``exit_code`` 2 means bad input (nothing was changed)."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILURE):
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class Family:
    """How the sandbox runs one bot family (the bot side of docs/reference-bot.md)."""

    name: str
    ports: tuple[str, ...]
    redis: bool
    liveness: tuple[str, str]  # (port name, path): any HTTP answer means the process serves
    readiness: tuple[str, str]  # (port name, path): HTTP 200 means ready
    paper_only: bool = False
    api_token: bool = False

    @property
    def group(self) -> str:
        """Inventory group name (Ansible group names use underscores)."""
        return self.name.replace("-", "_")


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("mojorust", ("api", "health"), False, ("health", "/health"), ("health", "/health")),
        Family("papertrader", ("api",), True, ("api", "/api/health"), ("api", "/api/health/detailed"),
               paper_only=True),
        Family("solana-cli", ("api",), True, ("api", "/health"), ("api", "/api/status")),
        Family("hyperliquid", ("api",), True, ("api", "/api/health"), ("api", "/api/health"),
               api_token=True),
        Family("vanta", ("api",), True, ("api", "/healthz"), ("api", "/readyz")),
    )
}
FAMILY_NAMES = tuple(FAMILIES)


# ----------------------------------------------------------------------------- small helpers
def default_state_dir() -> Path:
    return Path(os.path.abspath(os.environ.get("BOTOPS_SANDBOX_DIR") or HOME / ".sandbox"))


def default_inventory_dir() -> Path:
    return Path(os.path.abspath(os.environ.get("BOTOPS_SANDBOX_INVENTORY") or HOME / "inventory" / "sandbox"))


def bot_name(index: int) -> str:
    return f"bot{index:02d}"


def mask_url(url: str | None) -> str | None:
    """The URL with its password replaced by ``***``."""
    if not url:
        return url
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname or ''}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _shown(value) -> str:
    """A value as a message quotes it, cut short when huge."""
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:56]}...{text[-1]} ({len(str(value))} characters)"


def parse_bot_count(value) -> int:
    text = str(value).strip()
    try:
        count = int(text)
    except ValueError:  # also a number of more than 4300 digits
        raise FleetError(f"--bots must be a whole number of bots (1 to {MAX_BOTS}), got {_shown(text)}",
                         EXIT_USAGE) from None
    if count < 1:
        raise FleetError(f"--bots must be 1 or more, got {count}", EXIT_USAGE)
    if count > MAX_BOTS:
        raise FleetError(f"--bots must be at most {MAX_BOTS} (10 ports per bot below 65536), got {_shown(count)}",
                         EXIT_USAGE)
    return count


def parse_families(value) -> list[str] | None:
    """``"a,b"`` or a list to a list of family names (underscores accepted); None for all."""
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else list(value)
    names: list[str] = []
    for item in items:
        name = str(item).strip().lower().replace("_", "-")
        if not name:
            continue
        if name not in FAMILIES:
            raise FleetError(
                f"--families: unknown family {_shown(str(item).strip())}: valid families are {', '.join(FAMILY_NAMES)}",
                EXIT_USAGE
            )
        if name not in names:
            names.append(name)
    if not names:
        raise FleetError(f"--families is empty: give one or more of {', '.join(FAMILY_NAMES)}", EXIT_USAGE)
    return names


def parse_trade_interval(value) -> float | None:
    if value is None:
        return None
    try:
        interval = float(value)
    except (TypeError, ValueError):
        raise FleetError(f"--trade-interval must be a number of seconds, got {_shown(value)}", EXIT_USAGE) from None
    if not math.isfinite(interval) or interval <= 0 or interval > MAX_TRADE_INTERVAL:
        raise FleetError(f"--trade-interval must be more than 0 seconds and at most {MAX_TRADE_INTERVAL:g}, "
                         f"got {_shown(value)}", EXIT_USAGE)
    return interval


def parse_base_port(value) -> int | None:
    if value is None:
        return None
    try:
        port = int(str(value).strip())
    except ValueError:
        raise FleetError(f"--base-port must be a port number between {MIN_BASE_PORT} and {65535 - 2 * PORT_BLOCK}, "
                         f"got {_shown(value)}", EXIT_USAGE) from None
    if not MIN_BASE_PORT <= port <= 65535 - 2 * PORT_BLOCK:
        raise FleetError(f"--base-port must be between {MIN_BASE_PORT} and {65535 - 2 * PORT_BLOCK}, got {port}",
                         EXIT_USAGE)
    return port


def bot_ports(base_port: int, index: int, family: str) -> dict[str, int]:
    first = base_port + PORT_BLOCK * index
    return {name: first + offset for offset, name in enumerate(FAMILIES[family].ports)}


def port_in_use(port: int, host: str = LISTEN) -> bool:
    """True when a server could not bind ``host:port`` (bound the way servers bind: SO_REUSEADDR)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def free_port(exclude: Iterable[int] = ()) -> int:
    excluded = set(exclude)
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((LISTEN, 0))
            port = sock.getsockname()[1]
        if port not in excluded:
            return port
    raise FleetError("could not find a free loopback port")


def http_status(port: int, path: str, timeout: float = 1.0) -> int | None:
    """HTTP status of ``GET http://127.0.0.1:port/path``, None when nothing answers."""
    conn = http.client.HTTPConnection(LISTEN, port, timeout=timeout)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.05, max_interval: float = 0.5):
    """Poll ``predicate`` until it returns something truthy or ``timeout`` passes; returns the last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
        interval = min(interval * 1.5, max_interval)


def write_file(path: Path, text: str, mode: int = 0o644) -> bool:
    """Write ``text`` atomically with ``mode``; returns False (and writes nothing) when it is already so."""
    try:
        if path.read_text() == text and (path.stat().st_mode & 0o777) == mode:
            return False
    except OSError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return True


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"({path} not readable)"
    return "\n".join(text.rstrip().splitlines()[-lines:]) or f"({path} is empty)"


# ----------------------------------------------------------------------------- processes
def _proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, starttime) of a process, None when it does not exist."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = data[data.rindex(")") + 2:].split()
    return fields[0], int(fields[1]), int(fields[19])


def _proc_cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def _all_pids() -> list[int]:
    return [int(e) for e in os.listdir("/proc") if e.isdigit()]


def process_alive(pid: int, starttime: int | None = None) -> bool:
    """True while ``pid`` runs (a zombie does not; with ``starttime``: only that very process)."""
    stat = _proc_stat(pid)
    if stat is None or stat[0] in ("Z", "X"):
        return False
    return starttime is None or stat[2] == starttime


def _descendants(roots: Iterable[int]) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid in _all_pids():
        stat = _proc_stat(pid)
        if stat:
            children.setdefault(stat[1], []).append(pid)
    found, todo = [], list(roots)
    while todo:
        pid = todo.pop()
        for child in children.get(pid, []):
            if child not in found:
                found.append(child)
                todo.append(child)
    return found


def _ancestors() -> set[int]:
    pids, pid = set(), os.getpid()
    while pid > 1:
        pids.add(pid)
        stat = _proc_stat(pid)
        if not stat:
            break
        pid = stat[1]
    return pids


# ----------------------------------------------------------------------------- the fleet
class Fleet:
    """One sandbox fleet, identified by its state directory.

    ``log`` receives one progress line per phase / per bot (default: silent).
    """

    def __init__(
        self,
        state_dir: str | Path | None = None,
        inventory_dir: str | Path | None = None,
        base_port: int | None = None,
        *,
        log: Callable[[str], None] | None = None,
        pg_bindir: str | Path | None = None,
        python: str | None = None,
    ):
        self.state_dir = Path(os.path.abspath(state_dir)) if state_dir else default_state_dir()
        self.inventory_dir = Path(os.path.abspath(inventory_dir)) if inventory_dir else default_inventory_dir()
        self.requested_base_port = parse_base_port(base_port)
        self.pg_bindir = Path(pg_bindir or os.environ.get("BOTOPS_PG_BINDIR") or PG_BINDIR)
        # The venv's interpreter runs the bots, alembic, supervisord and Ansible's modules. The one
        # recorded by the first up is kept (python and python3 of one venv would otherwise make the
        # program definitions differ, and supervisord restart every bot).
        self.python = python or self._recorded_python() or sys.executable
        self.bindir = Path(self.python).parent
        self._log = log or (lambda line: None)

    def _recorded_python(self) -> str | None:
        try:
            recorded = json.loads(self.state_file.read_text()).get("python")
        except (OSError, ValueError, AttributeError):
            return None
        return recorded if recorded and os.access(recorded, os.X_OK) else None

    # ------------------------------------------------------------------ paths
    @property
    def state_file(self) -> Path:
        return self.state_dir / "state.json"

    @property
    def artifacts_dir(self) -> Path:
        return self.state_dir / "artifacts"

    @property
    def bots_dir(self) -> Path:
        return self.state_dir / "bots"

    @property
    def supervisor_dir(self) -> Path:
        return self.state_dir / "supervisor"

    @property
    def supervisor_conf(self) -> Path:
        return self.supervisor_dir / "supervisord.conf"

    @property
    def supervisor_sock(self) -> Path:
        return self.supervisor_dir / "supervisor.sock"

    @property
    def supervisor_pidfile(self) -> Path:
        return self.supervisor_dir / "supervisord.pid"

    @property
    def redis_dir(self) -> Path:
        return self.state_dir / "redis"

    @property
    def hosts_file(self) -> Path:
        return self.inventory_dir / "hosts.yml"

    def bot_root(self, name: str) -> Path:
        return self.bots_dir / name

    # ------------------------------------------------------------------ state
    def exists(self) -> bool:
        return self.state_file.is_file()

    def _load_state(self) -> dict | None:
        try:
            state = json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise FleetError(f"cannot read {self.state_file}: {exc}") from None
        if state.get("format") != STATE_FORMAT:
            raise FleetError(
                f"{self.state_file} has format {state.get('format')!r}, expected {STATE_FORMAT}: "
                "run `botops sandbox.down --purge` and bring the sandbox up again"
            )
        return state

    def _state(self) -> dict:
        state = self._load_state()
        if state is None:
            raise FleetError(f"no sandbox at {self.state_dir}: run `botops sandbox.up` first", EXIT_USAGE)
        return state

    def _save_state(self, state: dict) -> None:
        write_file(self.state_file, json.dumps(state, indent=2, sort_keys=True) + "\n", 0o600)

    @contextlib.contextmanager
    def _locked(self):
        lock_path = self.state_dir / ".lock"
        with open(lock_path, "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise FleetError(
                    f"another sandbox command is running on {self.state_dir} (it holds {lock_path})", EXIT_USAGE
                ) from None
            yield

    def _secrets(self, state: dict | None) -> list[str]:
        found = []
        for spec in ((state or {}).get("bots") or {}).values():
            found += [spec["database"]["password"], spec.get("api_token") or ""]
        return [s for s in found if s]

    def _redact(self, text: str, state: dict | None) -> str:
        for secret in self._secrets(state):
            text = text.replace(secret, "***")
        return re.sub(r"(postgres(?:ql)?://[^:/@\s]*:)[^@\s]+@", r"\1***@", text)

    # ------------------------------------------------------------------ bot facts
    def bot_names(self) -> list[str]:
        state = self._load_state() or {"bots": {}}
        return sorted(state["bots"], key=lambda n: state["bots"][n]["index"])

    def _bot(self, state: dict, name: str) -> dict:
        try:
            spec = state["bots"][name]
        except KeyError:
            raise FleetError(
                f"no bot {name!r} in the sandbox at {self.state_dir} (bots: {', '.join(sorted(state['bots'])) or 'none'})",
                EXIT_USAGE,
            ) from None
        family = FAMILIES[spec["family"]]
        pg_port = state["postgres"]["port"]
        db = spec["database"]
        redis_url = (
            f"redis://{LISTEN}:{state['redis']['port']}/{spec['redis_db']}" if spec.get("redis_db") is not None else None
        )
        ports = dict(spec["ports"])
        root = self.bot_root(name)
        return {
            "name": name,
            "index": spec["index"],
            "family": family.name,
            "group": family.group,
            "root": root,
            "config_path": root / "shared" / "config" / "bot.json",
            "listen": LISTEN,
            "ports": ports,
            "database": {"host": LISTEN, "port": pg_port, "name": db["name"], "user": db["user"],
                         "password": db["password"]},
            "database_url": f"postgresql://{db['user']}:{db['password']}@{LISTEN}:{pg_port}/{db['name']}",
            "redis_url": redis_url,
            "api_token": spec.get("api_token"),
            "paper_only": family.paper_only,
            "trade_interval": spec["trade_interval"],
            "service": {"manager": "supervisor", "name": name, "config": str(self.supervisor_conf)},
            "base_url": f"http://{LISTEN}:{ports['api']}",
            "liveness_url": f"http://{LISTEN}:{ports[family.liveness[0]]}{family.liveness[1]}",
            "readiness_url": f"http://{LISTEN}:{ports[family.readiness[0]]}{family.readiness[1]}",
        }

    def bot(self, name: str) -> dict:
        """Everything about one bot: root, ports, database_url, redis_url, api_token, family, URLs ..."""
        return self._bot(self._state(), name)

    def bots(self) -> list[dict]:
        state = self._state()
        return [self._bot(state, n) for n in sorted(state["bots"], key=lambda n: state["bots"][n]["index"])]

    def is_live(self, name: str) -> bool:
        b = self.bot(name)
        return self._live(b)

    def is_ready(self, name: str) -> bool:
        b = self.bot(name)
        family = FAMILIES[b["family"]]
        port, path = family.readiness
        return http_status(b["ports"][port], path) == 200

    @staticmethod
    def _live(b: dict) -> bool:
        port, path = FAMILIES[b["family"]].liveness
        return http_status(b["ports"][port], path) is not None

    def wait_ready(self, names: Iterable[str] | None = None, timeout: float = 60.0) -> None:
        """Wait until every named bot (default: all) answers its readiness endpoint with 200."""
        pending = set(names or self.bot_names())

        def all_ready():
            pending.difference_update([n for n in pending if self.is_ready(n)])
            return not pending

        if not wait_until(all_ready, timeout):
            raise FleetError(f"not ready after {timeout:.0f}s: {', '.join(sorted(pending))}")

    # ------------------------------------------------------------------ PostgreSQL
    def _pg_dir(self, state: dict) -> Path:
        return Path(state["postgres"]["dir"])

    def _pg_as_user(self) -> dict:
        """subprocess arguments that run a PostgreSQL binary as the unprivileged cluster owner."""
        if os.geteuid() != 0:
            return {}
        pw = pwd.getpwnam(PG_OS_USER)
        return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": [],
                "env": {"PATH": "/usr/bin:/bin", "LC_ALL": "C", "HOME": pw.pw_dir}}

    def _pg_run(self, state: dict, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        kwargs = self._pg_as_user()
        cmd = [str(self.pg_bindir / args[0]), *args[1:]]
        proc = subprocess.run(cmd, cwd=self._pg_dir(state), capture_output=True, text=True, timeout=timeout, **kwargs)
        if check and proc.returncode != 0:
            out = self._redact((proc.stdout + proc.stderr).strip(), state)
            raise FleetError(f"{' '.join(cmd)} failed (rc={proc.returncode}): {out}")
        return proc

    def _pg_owner(self) -> tuple[int, int] | None:
        if os.geteuid() != 0:
            return None
        pw = pwd.getpwnam(PG_OS_USER)
        return pw.pw_uid, pw.pw_gid

    def _reachable_by_pg_user(self, path: Path) -> bool:
        """Can the cluster's OS user traverse every directory down to ``path`` (or its deepest existing parent)?"""
        if os.geteuid() != 0:
            return True
        probe = path
        while not probe.exists():
            probe = probe.parent
        proc = subprocess.run(["test", "-x", str(probe)], cwd="/", **self._pg_as_user())
        return proc.returncode == 0

    def _choose_pg_dir(self) -> Path:
        """``<state>/postgres`` when the cluster's OS user can reach it, else a directory in its home."""
        wanted = self.state_dir / "postgres"
        if self._reachable_by_pg_user(wanted):
            return wanted
        home = Path(pwd.getpwnam(PG_OS_USER).pw_dir)
        digest = hashlib.sha256(str(self.state_dir).encode()).hexdigest()[:8]
        elsewhere = home / "botops-sandbox" / f"{self.state_dir.name}-{digest}"
        if not self._reachable_by_pg_user(elsewhere.parent.parent):
            raise FleetError(
                f"PostgreSQL runs as the OS user {PG_OS_USER!r}, which cannot reach {self.state_dir} nor its home "
                f"{home}: make the parents of {self.state_dir} traversable (chmod o+x) or set BOTOPS_SANDBOX_DIR "
                "to a directory it can reach",
                EXIT_USAGE,
            )
        self._log(
            f"PostgreSQL: {self.state_dir} is not reachable by the OS user {PG_OS_USER!r} "
            f"(a parent directory is not traversable): placing the cluster in {elsewhere} (recorded in state.json)"
        )
        return elsewhere

    def _pg_data(self, state: dict) -> Path:
        return self._pg_dir(state) / "data"

    def _pg_initialized(self, state: dict) -> bool:
        return (self._pg_data(state) / "PG_VERSION").is_file()

    def pg_running(self, state: dict | None = None) -> bool:
        state = state or self._load_state()
        if not state or not state.get("postgres") or not self._pg_initialized(state):
            return False
        return self._pg_run(state, "pg_ctl", "status", "-D", str(self._pg_data(state)), check=False).returncode == 0

    def _pg_init(self, state: dict) -> None:
        pg_dir, data = self._pg_dir(state), self._pg_data(state)
        pg_dir.mkdir(parents=True, exist_ok=True)
        owner = self._pg_owner()
        if owner:
            if not pg_dir.is_relative_to(self.state_dir):
                os.chown(pg_dir.parent, *owner)  # relocated into the OS user's home: botops-sandbox/ is its own
            os.chown(pg_dir, *owner)
        os.chmod(pg_dir, 0o700)
        if data.exists():  # left over by an interrupted initdb
            shutil.rmtree(data)
        port = state["postgres"]["port"]
        self._log(f"PostgreSQL: initdb {data} (OS user {PG_OS_USER if owner else pwd.getpwuid(os.geteuid()).pw_name})")
        self._pg_run(state, "initdb", "-D", str(data), "-U", PG_SUPERUSER, "-E", "UTF8", "--locale=C", "--no-sync",
                     "--auth-local=trust", "--auth-host=scram-sha-256")
        quoted = str(pg_dir).replace("'", "''")
        with open(data / "postgresql.conf", "a") as conf:
            conf.write(
                "\n# --- botops sandbox ---\n"
                f"listen_addresses = '{LISTEN}'\n"
                f"port = {port}\n"
                f"unix_socket_directories = '{quoted}'\n"
                "unix_socket_permissions = 0700\n"
                f"max_connections = {PG_MAX_CONNECTIONS}\n"
            )

    def _ensure_max_connections(self, state: dict, bots: int) -> bool:
        """Raise max_connections (a restart) when the fleet outgrew it; True when it did."""
        wanted = max(PG_MAX_CONNECTIONS, PG_CONNECTIONS_PER_BOT * bots + 50)
        with self._admin(state) as conn:
            current = int(conn.execute("SHOW max_connections").fetchone()[0])
            if current >= wanted:
                return False
            conn.execute(_pg().sql.SQL("ALTER SYSTEM SET max_connections = {}").format(_pg().sql.Literal(wanted)))
        self._log(f"PostgreSQL: max_connections {current} is too low for {bots} bots: restarting with {wanted}")
        self._pg_run(state, "pg_ctl", "-D", str(self._pg_data(state)), "-l", str(self._pg_dir(state) / "postgresql.log"),
                     "-m", "fast", "-w", "-t", "60", "-s", "restart")
        return True

    def _pg_start(self, state: dict) -> None:
        pg_dir = self._pg_dir(state)
        self._log(f"PostgreSQL: starting on {LISTEN}:{state['postgres']['port']} (socket in {pg_dir})")
        proc = self._pg_run(state, "pg_ctl", "-D", str(self._pg_data(state)), "-l", str(pg_dir / "postgresql.log"),
                            "-w", "-t", "60", "-s", "start", check=False)
        if proc.returncode != 0:
            raise FleetError(
                f"PostgreSQL did not start (pg_ctl rc={proc.returncode}); {pg_dir / 'postgresql.log'} ends with:\n"
                + tail(pg_dir / "postgresql.log")
            )

    def _pg_stop(self, state: dict, mode: str = "fast") -> None:
        self._pg_run(state, "pg_ctl", "-D", str(self._pg_data(state)), "-m", mode, "-w", "-t", "60", "-s", "stop")

    def pg_start(self) -> None:
        """Start the cluster (no-op when it runs)."""
        state = self._state()
        if not self.pg_running(state):
            self._pg_start(state)

    def pg_stop(self, mode: str = "fast") -> None:
        """Stop the cluster (``pg_ctl stop -m <mode>``); the bots lose their database until ``pg_start``."""
        state = self._state()
        if self.pg_running(state):
            self._pg_stop(state, mode)

    def _pg_postmaster(self, state: dict) -> tuple[int, int] | None:
        try:
            pid = int((self._pg_data(state) / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None
        stat = _proc_stat(pid)
        return (pid, stat[2]) if stat else None

    def _admin(self, state: dict, dbname: str = "postgres") -> psycopg.Connection:
        return _pg().connect(host=str(self._pg_dir(state)), port=state["postgres"]["port"], user=PG_SUPERUSER,
                               dbname=dbname, autocommit=True, connect_timeout=10)

    def db_query(self, name: str, query: str, params=None) -> list[tuple]:
        """Run ``query`` in bot ``name``'s database as the bot's own role (over TCP); returns the rows."""
        b = self.bot(name)
        with _pg().connect(b["database_url"], autocommit=True, connect_timeout=5) as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else []

    # ------------------------------------------------------------------ supervisord
    def _rpc(self):
        from supervisor.xmlrpc import SupervisorTransport

        transport = SupervisorTransport(None, None, f"unix://{self.supervisor_sock}")
        return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)

    def supervisor_running(self) -> bool:
        if not self.supervisor_sock.exists():
            return False
        try:
            return self._rpc().supervisor.getState()["statename"] == "RUNNING"
        except (OSError, xmlrpc.client.Error, http.client.HTTPException):
            return False

    def processes(self) -> dict[str, dict]:
        """supervisord's view: program name -> {state, pid, ...}; empty when supervisord is down."""
        if not self.supervisor_sock.exists():
            return {}
        try:
            infos = self._rpc().supervisor.getAllProcessInfo()
        except (OSError, xmlrpc.client.Error, http.client.HTTPException):
            return {}
        return {i["name"]: i for i in infos}

    def pids(self) -> dict[str, int]:
        """Program name -> pid of every running program."""
        return {n: i["pid"] for n, i in self.processes().items() if i["pid"]}

    def service_pids(self) -> dict[str, int]:
        """pids of everything the sandbox runs: ``supervisord``, ``postgresql`` (the postmaster), every program."""
        found = dict(self.pids())
        sup = self._supervisord_pid()
        if sup:
            found["supervisord"] = sup[0]
        state = self._load_state()
        if state and state.get("postgres", {}).get("dir") and self.pg_running(state):
            postmaster = self._pg_postmaster(state)
            if postmaster:
                found["postgresql"] = postmaster[0]
        return found

    def supervisorctl(self, *args: str, check: bool = False, timeout: float = 120) -> subprocess.CompletedProcess:
        """Run the venv's ``supervisorctl -c <supervisord.conf> ARGS`` (e.g. ``"stop", "bot01"``)."""
        cmd = [str(self.bindir / "supervisorctl"), "-c", str(self.supervisor_conf), *args]
        return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=timeout)

    def _supervisord_pid(self) -> tuple[int, int] | None:
        try:
            pid = int(self.supervisor_pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        stat = _proc_stat(pid)
        return (pid, stat[2]) if stat and stat[0] not in ("Z", "X") else None

    @staticmethod
    def _conf_value(value: str) -> str:
        return value.replace("%", "%%")

    def _supervisord_conf(self) -> str:
        d = self.supervisor_dir
        v = self._conf_value
        return (
            "; Generated by `botops sandbox.up`: the sandbox's process manager.\n"
            "[unix_http_server]\n"
            f"file = {v(str(self.supervisor_sock))}\n"
            "chmod = 0700\n\n"
            "[supervisord]\n"
            f"logfile = {v(str(d / 'supervisord.log'))}\n"
            f"pidfile = {v(str(self.supervisor_pidfile))}\n"
            f"childlogdir = {v(str(d / 'logs'))}\n"
            f"directory = {v(str(self.state_dir))}\n"
            "identifier = botops-sandbox\n"
            "logfile_maxbytes = 10MB\n"
            "logfile_backups = 2\n"
            "nodaemon = false\n\n"
            "[rpcinterface:supervisor]\n"
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\n"
            "[supervisorctl]\n"
            f"serverurl = unix://{v(str(self.supervisor_sock))}\n\n"
            "[include]\n"
            f"files = {v(str(d / 'conf.d'))}/*.conf\n"
        )

    def _program_conf(self, name: str, command: list[str], directory: Path, stdout: Path, stderr: Path | None,
                      priority: int, environment: dict[str, str]) -> str:
        v = self._conf_value
        env = ",".join(f'{k}="{val}"' for k, val in environment.items())
        lines = [
            f"[program:{name}]",
            f"command = {v(shlex.join(command))}",
            f"directory = {v(str(directory))}",
            "autostart = true",
            "autorestart = unexpected",
            "exitcodes = 0",
            "startsecs = 1",
            "startretries = 3",
            "stopsignal = TERM",
            "stopwaitsecs = 15",
            f"priority = {priority}",
            f"stdout_logfile = {v(str(stdout))}",
            "stdout_logfile_maxbytes = 10MB",
            "stdout_logfile_backups = 2",
        ]
        if stderr:
            lines += [f"stderr_logfile = {v(str(stderr))}", "stderr_logfile_maxbytes = 10MB",
                      "stderr_logfile_backups = 2"]
        else:
            lines.append("redirect_stderr = true")
        if env:
            lines.append(f"environment = {v(env)}")
        return "; Generated by `botops sandbox.up`.\n" + "\n".join(lines) + "\n"

    def _bot_program_conf(self, name: str) -> str:
        root = self.bot_root(name)
        logs = root / "shared" / "logs"
        return self._program_conf(
            name, [self.python, "-m", "refbot", "--root", str(root)], root / "current",
            logs / "stdout.log", logs / "stderr.log", priority=100,
            environment={"PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"},
        )

    def _redis_conf(self, state: dict) -> str:
        r = state["redis"]
        return (
            "# Generated by `botops sandbox.up`: the sandbox's Redis (one database per bot).\n"
            f"bind {LISTEN}\n"
            f"port {r['port']}\n"
            "protected-mode yes\n"
            f"databases {r['databases']}\n"
            "daemonize no\n"
            'logfile ""\n'
            f'dir "{self.redis_dir}"\n'
            "dbfilename dump.rdb\n"
            "save 300 1\n"
            "appendonly no\n"
            "# the config path in the process title: `pgrep -f <state dir>` finds redis too\n"
            'proc-title-template "{title} {listen-addr} {config-file}"\n'
        )

    def _start_supervisord(self) -> None:
        self._log(f"supervisord: starting ({self.supervisor_conf})")
        env = {k: os.environ[k] for k in ("PATH", "LANG", "LC_ALL", "TZ", "HOME") if k in os.environ}
        exe = self.bindir / "supervisord"
        cmd = [str(exe)] if exe.exists() else [self.python, "-m", "supervisor.supervisord"]
        out = self.supervisor_dir / "supervisord.out"
        with open(out, "ab") as f:
            proc = subprocess.run([*cmd, "-c", str(self.supervisor_conf)], stdin=subprocess.DEVNULL, stdout=f,
                                  stderr=subprocess.STDOUT, env=env, cwd=self.state_dir, timeout=60)
        if proc.returncode != 0 or not wait_until(self.supervisor_running, 30):
            raise FleetError(
                f"supervisord did not start (rc={proc.returncode}); {out} ends with:\n{tail(out)}\n"
                f"{self.supervisor_dir / 'supervisord.log'} ends with:\n{tail(self.supervisor_dir / 'supervisord.log')}"
            )

    def _stop_supervisord(self, timeout: float = 120) -> None:
        pid = self._supervisord_pid()
        rpc = self._rpc()
        with contextlib.suppress(OSError, xmlrpc.client.Error, http.client.HTTPException):
            rpc.supervisor.stopAllProcesses(True)
        with contextlib.suppress(OSError, xmlrpc.client.Error, http.client.HTTPException):
            rpc.supervisor.shutdown()
        if pid and not wait_until(lambda: not process_alive(*pid), timeout):
            raise FleetError(f"supervisord (pid {pid[0]}) did not exit within {timeout:.0f}s")

    # ------------------------------------------------------------------ artifacts and bot files
    def _ensure_artifacts(self) -> bool:
        manifest = self.artifacts_dir / f"refbot-{INITIAL_RELEASE}.json"
        if manifest.is_file():
            return False
        from botops.sandbox.releases import build_artifacts

        self._log(f"artifacts: building release artifacts into {self.artifacts_dir}")
        tmp = Path(tempfile.mkdtemp(prefix=".artifacts-", dir=self.state_dir))
        try:
            built = build_artifacts(tmp)
            if self.artifacts_dir.exists():
                shutil.rmtree(self.artifacts_dir)
            os.replace(tmp, self.artifacts_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        versions = ", ".join(m.get("version", "?") for m in built or [])
        self._log(f"artifacts: built {versions}")
        return True

    def _install_release(self, root: Path, version: str) -> bool:
        dest = root / "releases" / version
        if (dest / "release.json").is_file():
            return False
        tarball = self.artifacts_dir / f"refbot-{version}.tar.gz"
        manifest_path = self.artifacts_dir / f"refbot-{version}.json"
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, ValueError) as exc:
            raise FleetError(f"cannot read the release manifest {manifest_path}: {exc}") from None
        actual = sha256_file(tarball)
        if actual != manifest.get("sha256"):
            raise FleetError(f"{tarball}: sha256 {actual} does not match its manifest ({manifest.get('sha256')})")
        tmp = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=dest.parent))
        try:
            with tarfile.open(tarball) as tar:
                tar.extractall(tmp, filter="data")
            os.chmod(tmp, 0o755)
            if dest.exists():
                shutil.rmtree(dest)
            os.replace(tmp, dest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return True

    @staticmethod
    def _point_current(root: Path, version: str) -> None:
        link = root / "current"
        tmp = root / f".current-{os.getpid()}"
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(Path("releases") / version)
        os.replace(tmp, link)

    @staticmethod
    def release_of(root: Path) -> str | None:
        """The version ``<root>/current`` points at."""
        try:
            return Path(os.readlink(root / "current")).name
        except OSError:
            return None

    def _bot_config(self, state: dict, name: str) -> dict:
        b = self._bot(state, name)
        family = FAMILIES[b["family"]]
        return {
            "name": name,
            "family": family.name,
            "listen": LISTEN,
            "ports": b["ports"],
            "database_url": b["database_url"],
            "redis_url": b["redis_url"],
            "api_token": b["api_token"],
            "trade_interval": b["trade_interval"],
            "execution_mode": "DRY",
            "paper_trading": True,
            "paper_only": family.paper_only,
        }

    def _ensure_bot_files(self, state: dict, name: str, interval_changed: bool) -> list[str]:
        """Bot root, release, ``current`` and bot.json; returns what was done."""
        root = self.bot_root(name)
        done = []
        for sub in ("releases", "shared/config", "shared/logs", "shared/data", "backups"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(root / "shared" / "config", 0o700)
        if not os.path.lexists(root / "current"):
            if self._install_release(root, INITIAL_RELEASE):
                done.append(f"installed release {INITIAL_RELEASE}")
            self._point_current(root, INITIAL_RELEASE)
        config_path = root / "shared" / "config" / "bot.json"
        wanted = self._bot_config(state, name)
        if not config_path.exists():
            write_file(config_path, json.dumps(wanted, indent=2) + "\n", 0o600)
            done.append("wrote bot.json")
        elif interval_changed:
            # only the tunable up owns on a running bot: keys operations may have changed stay as they are
            current = json.loads(config_path.read_text())
            if current.get("trade_interval") != wanted["trade_interval"]:
                current["trade_interval"] = wanted["trade_interval"]
                write_file(config_path, json.dumps(current, indent=2) + "\n", 0o600)
                done.append(f"set trade_interval {wanted['trade_interval']}")
        return done

    def _ensure_database(self, state: dict, conn: psycopg.Connection, name: str, fresh: bool) -> list[str]:
        db = state["bots"][name]["database"]
        done = []
        role = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (db["user"],)).fetchone()
        if not role:
            conn.execute(_pg().sql.SQL("CREATE ROLE {} LOGIN CREATEDB PASSWORD {}").format(
                _pg().sql.Identifier(db["user"]), _pg().sql.Literal(db["password"])))
            done.append("created role")
        elif fresh:  # a role left by an interrupted first up: make it match state.json
            conn.execute(_pg().sql.SQL("ALTER ROLE {} LOGIN CREATEDB PASSWORD {}").format(
                _pg().sql.Identifier(db["user"]), _pg().sql.Literal(db["password"])))
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db["name"],)).fetchone():
            conn.execute(_pg().sql.SQL("CREATE DATABASE {} OWNER {}").format(
                _pg().sql.Identifier(db["name"]), _pg().sql.Identifier(db["user"])))
            done.append("created database")
        return done

    def _needs_migration(self, state: dict, name: str) -> bool:
        with self._admin(state, state["bots"][name]["database"]["name"]) as conn:
            if conn.execute("SELECT to_regclass('public.alembic_version')").fetchone()[0] is None:
                return True
            return conn.execute("SELECT count(*) FROM alembic_version").fetchone()[0] == 0

    def _migrate(self, state: dict, name: str) -> str:
        b = self._bot(state, name)
        current = b["root"] / "current"
        env = {k: os.environ[k] for k in ("PATH", "LANG", "LC_ALL", "HOME") if k in os.environ}
        env.update(DATABASE_URL=b["database_url"], PYTHONDONTWRITEBYTECODE="1")
        cmd = [str(self.bindir / "alembic"), "-c", str(current / "alembic.ini"), "upgrade", "head"]
        proc = subprocess.run(cmd, cwd=current, env=env, capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            out = self._redact((proc.stdout + proc.stderr).strip(), state)
            raise FleetError(f"{name}: alembic upgrade head failed (rc={proc.returncode}):\n{out[-3000:]}")
        try:
            head = json.loads((current / "release.json").read_text()).get("alembic_head", "head")
        except (OSError, ValueError):
            head = "head"
        return head

    # ------------------------------------------------------------------ inventory
    def _inventory(self, state: dict) -> tuple[str, dict[str, str]]:
        groups: dict[str, dict] = {f.group: {"hosts": {}} for f in FAMILIES.values()}
        host_secrets: dict[str, str] = {}
        for name in sorted(state["bots"], key=lambda n: state["bots"][n]["index"]):
            b = self._bot(state, name)
            groups[b["group"]]["hosts"][name] = {
                "bot_family": b["family"],
                "bot_root": str(b["root"]),
                "bot_listen": b["listen"],
                "bot_ports": b["ports"],
                "bot_database": {k: b["database"][k] for k in ("host", "port", "name", "user")},
                "bot_redis_url": b["redis_url"],
                "bot_service": {**b["service"], "supervisorctl": str(self.bindir / "supervisorctl")},
                "bot_process_match": f"-m refbot --root {re.escape(str(b['root']))}$",
                "bot_paper_only": b["paper_only"],
            }
            secret = {"bot_database_password": b["database"]["password"]}
            if b["api_token"]:
                secret["bot_api_token"] = b["api_token"]
            host_secrets[name] = (
                "# Generated by `botops sandbox.up`: this sandbox bot's secrets.\n"
                + yaml.safe_dump(secret, default_flow_style=False, sort_keys=False)
            )
        for group in groups.values():
            if not group["hosts"]:
                group.pop("hosts")
        inventory = {
            "sandbox": {
                "vars": {
                    "ansible_connection": "local",
                    "ansible_python_interpreter": self.python,
                    "botops_sandbox_dir": str(self.state_dir),
                    # the reference bot implements every family's API and ships as refbot-<version>.tar.gz
                    "bot_release_artifact": "refbot",
                },
                "children": groups,
            }
        }
        text = (
            "# Generated by `botops sandbox.up` for the sandbox fleet in "
            f"{self.state_dir}: do not edit, it is rewritten.\n"
            "# Secrets are in host_vars/<bot>/secrets.yml.\n"
            + yaml.safe_dump(inventory, default_flow_style=False, sort_keys=False)
        )
        return text, host_secrets

    def _write_inventory(self, state: dict) -> bool:
        text, host_secrets = self._inventory(state)
        self.inventory_dir.mkdir(parents=True, exist_ok=True)
        changed = write_file(self.hosts_file, text, 0o644)
        for name, secret in host_secrets.items():
            d = self.inventory_dir / "host_vars" / name
            d.mkdir(parents=True, exist_ok=True)
            os.chmod(d, 0o700)
            changed |= write_file(d / "secrets.yml", secret, 0o600)
        return changed

    def _purge_inventory(self, names: Iterable[str]) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.hosts_file.unlink()
        host_vars = self.inventory_dir / "host_vars"
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                (host_vars / name / "secrets.yml").unlink()
            with contextlib.suppress(OSError):
                (host_vars / name).rmdir()
        for d in (host_vars, self.inventory_dir):
            with contextlib.suppress(OSError):
                d.rmdir()  # only when empty: README.md and anything else stays

    # ------------------------------------------------------------------ up
    def _plan(self, state: dict, count: int, families: list[str] | None, interval: float | None) -> dict:
        """Validate the request against the existing fleet; returns the bots to add and to reconfigure."""
        existing = state["bots"]
        if count < len(existing):
            names = sorted(existing, key=lambda n: existing[n]["index"])
            raise FleetError(
                f"the sandbox has {len(existing)} bots ({names[0]}..{names[-1]}); up does not remove bots, "
                f"so --bots {count} is refused: ask for {len(existing)} or more, or run "
                "`botops sandbox.down --purge` first to start over",
                EXIT_USAGE,
            )
        rotation = families or list(FAMILY_NAMES)
        base_port = state["base_port"]
        last_port = base_port + PORT_BLOCK * count + PORT_BLOCK - 1
        if last_port > 65535:
            most = (65535 - base_port - PORT_BLOCK + 1) // PORT_BLOCK
            raise FleetError(
                f"--bots {count} needs ports up to {last_port} from --base-port {base_port}: "
                f"at most {most} bots fit below 65536",
                EXIT_USAGE,
            )
        mismatched, new = [], {}
        for index in range(1, count + 1):
            name = bot_name(index)
            family = rotation[(index - 1) % len(rotation)]
            if name in existing:
                if families and existing[name]["family"] != family:
                    mismatched.append(f"{name} is {existing[name]['family']}, --families would make it {family}")
                continue
            spec = FAMILIES[family]
            new[name] = {
                "index": index,
                "family": family,
                "ports": bot_ports(base_port, index, family),
                "database": {"name": name, "user": name, "password": secrets.token_urlsafe(24)},
                "redis_db": index if spec.redis else None,
                "api_token": secrets.token_urlsafe(32) if spec.api_token else None,
                "trade_interval": interval or DEFAULT_TRADE_INTERVAL,
                "provisioned": False,
            }
        if mismatched:
            raise FleetError(
                "a bot's family is fixed when it is created: " + "; ".join(mismatched)
                + ". Use the --families of the existing fleet, or `botops sandbox.down --purge` first",
                EXIT_USAGE,
            )
        retune = []
        if interval is not None:
            retune = [n for n, s in existing.items() if s["trade_interval"] != interval]
        return {"new": new, "retune": retune, "interval": interval}

    def _check_ports(self, state: dict, plan: dict, need_redis: bool) -> None:
        """Every port something is about to bind must be free; raises naming each taken one."""
        procs = self.processes()
        wanted: list[tuple[int, str]] = []
        if state.get("postgres") and not self.pg_running(state):
            wanted.append((state["postgres"]["port"], "postgresql"))
        if need_redis and procs.get(REDIS_PROGRAM, {}).get("statename") not in RUNNING_STATES:
            wanted.append((state["redis"]["port"], "redis"))
        all_bots = {**state["bots"], **plan["new"]}
        own = {state["postgres"]["port"]: "postgresql", state["redis"]["port"]: "redis"}
        for name in sorted(all_bots, key=lambda n: all_bots[n]["index"]):
            spec = all_bots[name]
            if procs.get(name, {}).get("statename") in RUNNING_STATES:
                continue
            for port_name, port in spec["ports"].items():
                if port in own:
                    raise FleetError(
                        f"port {port} ({name} {port_name}) is the sandbox's {own[port]} port: "
                        "use another --base-port (with `botops sandbox.down --purge` first)",
                        EXIT_USAGE,
                    )
                wanted.append((port, f"{name} {port_name}"))
        taken = [f"port {port} ({who}) is already in use" for port, who in wanted if port_in_use(port)]
        if taken:
            raise FleetError(
                "; ".join(taken) + ": stop what holds it (`ss -ltnp` shows who) or choose another --base-port; "
                "nothing was started",
                EXIT_USAGE,
            )

    def _check_prerequisites(self, need_redis: bool) -> bool:
        """PostgreSQL binaries and OS user, the venv's tools, redis-server; True when redis must be installed."""
        missing = [b for b in ("initdb", "pg_ctl", "postgres") if not (self.pg_bindir / b).is_file()]
        if missing:
            raise FleetError(
                f"PostgreSQL 15 binaries not found in {self.pg_bindir} (missing {', '.join(missing)}): "
                "install them with `apt-get install postgresql-15` or run ./scripts/bootstrap",
                EXIT_USAGE,
            )
        if os.geteuid() == 0:
            try:
                pwd.getpwnam(PG_OS_USER)
            except KeyError:
                raise FleetError(
                    f"running as root, PostgreSQL must run as the OS user {PG_OS_USER!r}, which does not exist: "
                    "install `postgresql-15` (it creates the user) or run ./scripts/bootstrap",
                    EXIT_USAGE,
                ) from None
        for needed in ("supervisord", "supervisorctl", "alembic"):
            if not (self.bindir / needed).exists():
                raise FleetError(f"{self.bindir / needed} not found: run ./scripts/bootstrap (it installs the venv)",
                                 EXIT_USAGE)
        if need_redis and not self._redis_server():
            if os.geteuid() != 0:
                raise FleetError(
                    "redis-server not found and needed by the families papertrader, solana-cli, hyperliquid, vanta: "
                    "install it with `sudo apt-get install -y redis-server` (or run ./scripts/bootstrap as root), "
                    "or restrict --families to mojorust",
                    EXIT_USAGE,
                )
            return True
        return False

    def _check_socket_paths(self, state: dict) -> None:
        for sock in (self.supervisor_sock, self._pg_dir(state) / f".s.PGSQL.{state['postgres']['port']}"):
            if len(str(sock)) > MAX_SOCKET_PATH:
                raise FleetError(
                    f"unix socket path {sock} is {len(str(sock))} bytes, the limit is {MAX_SOCKET_PATH}: "
                    "use a shorter BOTOPS_SANDBOX_DIR",
                    EXIT_USAGE,
                )

    @staticmethod
    def _redis_server() -> str | None:
        return shutil.which("redis-server") or (
            "/usr/bin/redis-server" if os.access("/usr/bin/redis-server", os.X_OK) else None)

    def _install_redis(self) -> None:
        self._log("redis: redis-server is missing: apt-get install -y redis-server")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        cmd = ["apt-get", "install", "-y", "-q", "redis-server"]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:  # stale package lists: refresh once
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, text=True)
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0 or not self._redis_server():
            raise FleetError(f"apt-get install -y redis-server failed (rc={proc.returncode}):\n{proc.stderr[-2000:]}")
        # Debian starts the packaged service; the sandbox runs its own instance
        subprocess.run(["service", "redis-server", "stop"], capture_output=True)

    @staticmethod
    def _redis_databases(max_index: int) -> int:
        return max(64, 1 << math.ceil(math.log2(max_index + 1)))

    def up(self, bots: int | str = DEFAULT_BOTS, families: str | list[str] | None = None,
           trade_interval: float | str | None = None) -> dict:
        """Bring the fleet up (idempotent); returns a report.

        ``families`` restricts the round-robin (default: all five). ``trade_interval`` defaults to
        0.2 for new bots; when given, it is applied to every bot (bots whose value changes restart).
        """
        count = parse_bot_count(bots)
        wanted_families = parse_families(families)
        interval = parse_trade_interval(trade_interval)

        created_dir = not self.state_dir.exists()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if created_dir:
            os.chmod(self.state_dir, 0o755)
        try:
            with self._locked():
                return self._up(count, wanted_families, interval)
        except FleetError as exc:
            if created_dir and exc.exit_code == EXIT_USAGE and not self.state_file.exists():
                shutil.rmtree(self.state_dir, ignore_errors=True)
            raise

    def _up(self, count: int, families: list[str] | None, interval: float | None) -> dict:
        state = self._load_state()
        fresh_fleet = state is None
        if fresh_fleet:
            base_port = self.requested_base_port or DEFAULT_BASE_PORT
            bot_range = range(base_port, base_port + PORT_BLOCK * (count + 1))
            pg_port = free_port(bot_range)
            state = {
                "format": STATE_FORMAT,
                "base_port": base_port,
                "postgres": {"dir": None, "port": pg_port, "os_user": PG_OS_USER if os.geteuid() == 0 else None},
                "redis": {"port": free_port([*bot_range, pg_port]), "databases": 0},
                "bots": {},
            }
        elif self.requested_base_port and self.requested_base_port != state["base_port"]:
            raise FleetError(
                f"the sandbox in {self.state_dir} uses --base-port {state['base_port']}: "
                f"--base-port {self.requested_base_port} needs `botops sandbox.down --purge` first",
                EXIT_USAGE,
            )
        state["python"] = self.python
        plan = self._plan(state, count, families, interval)
        all_bots = {**state["bots"], **plan["new"]}
        need_redis = any(FAMILIES[s["family"]].redis for s in all_bots.values())
        install_redis = self._check_prerequisites(need_redis)
        if fresh_fleet:
            state["postgres"]["dir"] = str(self._choose_pg_dir())
        self._check_socket_paths(state)
        if not fresh_fleet and not self.supervisor_running():
            stray = self._orphans(state)
            if stray:
                raise FleetError(
                    f"supervisord of the sandbox in {self.state_dir} is not running, but {len(stray)} of its "
                    f"processes are (pids {', '.join(map(str, sorted(stray)))}): run `botops sandbox.down` to stop "
                    "them, then `botops sandbox.up`",
                    EXIT_USAGE,
                )
        self._check_ports(state, plan, need_redis)
        if install_redis:
            self._install_redis()

        started: dict[str, object] = {"pg": False, "supervisord": False, "programs": []}
        try:
            return self._converge(state, plan, need_redis, started)
        except BaseException as exc:
            stopped = self._undo(state, started)
            if isinstance(exc, FleetError):
                msg = f"sandbox.up failed: {exc}"
                if stopped:
                    msg += f"\nstopped what this run had started: {', '.join(stopped)}"
                raise FleetError(self._redact(msg, state), exc.exit_code) from None
            raise

    def _undo(self, state: dict, started: dict) -> list[str]:
        stopped = []
        with contextlib.suppress(Exception):
            if started["supervisord"]:
                self._stop_supervisord()
                stopped.append("supervisord and its programs")
            elif started["programs"]:
                rpc = self._rpc()
                for name in started["programs"]:
                    with contextlib.suppress(xmlrpc.client.Fault):
                        rpc.supervisor.stopProcess(name, True)
                stopped.append(", ".join(started["programs"]))
        with contextlib.suppress(Exception):
            if started["pg"]:
                self._pg_stop(state)
                stopped.append("PostgreSQL")
        return stopped

    def _converge(self, state: dict, plan: dict, need_redis: bool, started: dict) -> dict:
        actions: list[str] = []
        new, retune = plan["new"], plan["retune"]
        t0 = time.monotonic()

        def act(line: str) -> None:
            actions.append(line)
            self._log(line)

        # state first: the ports, credentials and families decided now are kept from here on
        for name, spec in new.items():
            state["bots"][name] = spec
        for name in retune:
            state["bots"][name]["trade_interval"] = plan["interval"]
        max_index = max(s["index"] for s in state["bots"].values())
        redis_resized = False
        if need_redis and state["redis"]["databases"] < max_index + 1:
            redis_resized = state["redis"]["databases"] > 0
            state["redis"]["databases"] = self._redis_databases(max_index)
        self._save_state(state)

        for d in (self.bots_dir, self.redis_dir, self.supervisor_dir / "conf.d", self.supervisor_dir / "logs"):
            d.mkdir(parents=True, exist_ok=True)
        if self._ensure_artifacts():
            actions.append("built artifacts")

        # PostgreSQL: one cluster, one database and role per bot
        if not self._pg_initialized(state):
            self._pg_init(state)
            actions.append("initialised PostgreSQL")
        if not self.pg_running(state):
            self._pg_start(state)
            started["pg"] = True
            actions.append("started PostgreSQL")
        names = sorted(state["bots"], key=lambda n: state["bots"][n]["index"])
        if self._ensure_max_connections(state, len(names)):
            act(f"PostgreSQL: restarted to raise max_connections for {len(names)} bots")
        unprovisioned = [n for n in names if not state["bots"][n].get("provisioned")]
        # per bot: database and role, bot root, release, current, bot.json
        changed_config = []
        with self._admin(state) as conn:
            for name in names:
                done = self._ensure_database(state, conn, name, name in unprovisioned)
                files = self._ensure_bot_files(state, name, name in retune)
                if any(d.startswith("set trade_interval") for d in files):
                    changed_config.append(name)
                if done or files:
                    act(f"{name} ({state['bots'][name]['family']}): {', '.join(done + files)}")

        # migrations (only for databases never migrated: later schema changes belong to deploys)
        to_migrate = [n for n in names if n in unprovisioned or self._needs_migration(state, n)]
        if to_migrate:
            self._log(f"migrations: alembic upgrade head for {len(to_migrate)} bot(s)")
            workers = max(1, min(len(to_migrate), (os.cpu_count() or 2) + 1))
            with ThreadPoolExecutor(max_workers=workers) as pool:
                futures = {pool.submit(self._migrate, state, n): n for n in to_migrate}
                for future in as_completed(futures):
                    act(f"{futures[future]}: database migrated to {future.result()}")
        for name in unprovisioned:
            state["bots"][name]["provisioned"] = True
        self._save_state(state)

        # supervisord: redis and one program per bot
        conf_dir = self.supervisor_dir / "conf.d"
        write_file(self.supervisor_conf, self._supervisord_conf())
        if need_redis:
            redis_conf = self.redis_dir / "redis.conf"
            existed = redis_conf.exists()
            if write_file(redis_conf, self._redis_conf(state)) and existed:
                # supervisord does not read redis.conf: restart the program to apply it
                changed_config.append(REDIS_PROGRAM)
                act("redis: configuration changed" + (f" (databases raised to {state['redis']['databases']})"
                                                      if redis_resized else "") + ": redis restarts")
            redis_cmd = [self._redis_server(), str(self.redis_dir / "redis.conf")]
            redis_prog = self._program_conf(REDIS_PROGRAM, redis_cmd, self.redis_dir, self.redis_dir / "redis.log",
                                            None, priority=10, environment={})
            write_file(conf_dir / f"{REDIS_PROGRAM}.conf", redis_prog)
        for name in names:
            write_file(conf_dir / f"{name}.conf", self._bot_program_conf(name))

        if not self.supervisor_running():
            self._start_supervisord()
            started["supervisord"] = True
            act(f"supervisord: started with {len(names)} bot(s)" + (" and redis" if need_redis else ""))
            now_started, restarted = list(names), []
        else:
            now_started, restarted = self._apply_supervisor_config(changed_config, started, act)

        # wait: redis answers PING, every bot answers its liveness endpoint
        if need_redis:
            self._wait_redis(state)
        self._wait_live(state, names, quiet=not (now_started or restarted))

        if self._write_inventory(state):
            act(f"inventory: wrote {self.hosts_file}")
        self._save_state(state)

        changed = bool(actions)
        bots = f"{len(names)} bot{'s' if len(names) != 1 else ''}"
        summary = (f"sandbox is up: nothing to change ({bots})" if not changed else
                   f"sandbox is up: {bots} in {time.monotonic() - t0:.1f}s, inventory {self.hosts_file}")
        self._log(summary)
        return {
            "changed": changed,
            "actions": actions,
            "created": list(new),
            "started": [n for n in now_started if n != REDIS_PROGRAM],
            "restarted": [n for n in restarted if n != REDIS_PROGRAM],
            "bots": names,
            "state_dir": str(self.state_dir),
            "inventory": str(self.hosts_file),
            "summary": summary,
        }

    def _apply_supervisor_config(self, changed_config: list[str], started: dict, act) -> tuple[list, list]:
        """supervisorctl update, then start what is stopped and restart programs whose configuration changed.

        Returns (programs started, programs restarted).
        """
        rpc = self._rpc()
        now_started, restarted = [], []
        before = {i["name"]: i["statename"] for i in rpc.supervisor.getAllProcessInfo()}
        added, changed, removed = rpc.supervisor.reloadConfig()[0]
        for group in removed:
            rpc.supervisor.stopProcessGroup(group, True)
            rpc.supervisor.removeProcessGroup(group)
            act(f"supervisord: removed program {group}")
        for group in changed:
            rpc.supervisor.stopProcessGroup(group, True)
            rpc.supervisor.removeProcessGroup(group)
            rpc.supervisor.addProcessGroup(group)
            self._start_program(rpc, group)
            started["programs"].append(group)
            restarted.append(group)
            act(f"{group}: program definition changed: restarted")
        for group in added:
            rpc.supervisor.addProcessGroup(group)
            self._start_program(rpc, group)
            started["programs"].append(group)
            now_started.append(group)
            act(f"{group}: started")
        for name, statename in before.items():
            if name in changed or name in removed or statename not in STOPPED_STATES:
                continue
            self._start_program(rpc, name)
            started["programs"].append(name)
            now_started.append(name)
            act(f"{name}: was {statename}: started")
        # restart the rest together: each stop may take a graceful shutdown (up to stopwaitsecs)
        to_restart = [n for n in changed_config if n not in changed and n not in started["programs"]]
        for name in to_restart:
            with contextlib.suppress(xmlrpc.client.Fault):  # NOT_RUNNING: just start it
                rpc.supervisor.stopProcess(name, False)

        def all_stopped():
            states = {i["name"]: i["statename"] for i in rpc.supervisor.getAllProcessInfo()}
            return all(states.get(n) in STOPPED_STATES for n in to_restart)

        if to_restart and not wait_until(all_stopped, 30):
            raise FleetError(f"{', '.join(to_restart)} did not stop within 30s")
        for name in to_restart:
            self._start_program(rpc, name)
            started["programs"].append(name)
            restarted.append(name)
            if name != REDIS_PROGRAM:
                act(f"{name}: restarted to apply the new trade_interval")
        return now_started, restarted

    @staticmethod
    def _start_program(rpc, name: str) -> None:
        try:
            rpc.supervisor.startProcess(name, False)
        except xmlrpc.client.Fault as fault:
            from supervisor.xmlrpc import Faults

            if fault.faultCode != Faults.ALREADY_STARTED:
                raise FleetError(f"supervisord could not start {name}: {fault.faultString}") from None

    def _wait_redis(self, state: dict, timeout: float = 30) -> None:
        import redis

        client = redis.Redis(host=LISTEN, port=state["redis"]["port"], socket_timeout=1, socket_connect_timeout=1)

        def pong():
            try:
                return client.ping()
            except redis.RedisError:
                return False

        try:
            if not wait_until(pong, timeout):
                raise FleetError(f"redis did not answer PING on {LISTEN}:{state['redis']['port']} within "
                                 f"{timeout:.0f}s; {self.redis_dir / 'redis.log'} ends with:\n"
                                 + tail(self.redis_dir / "redis.log"))
        finally:
            client.close()

    def _wait_live(self, state: dict, names: list[str], quiet: bool = False) -> None:
        """Poll until every bot answers its liveness endpoint and supervisord reports it RUNNING."""
        timeout = 60 + 0.2 * len(names)
        log = (lambda line: None) if quiet else self._log
        log(f"bots: waiting for {len(names)} bot(s) to answer their liveness endpoint (at most {timeout:.0f}s)")
        bots = {n: self._bot(state, n) for n in names}
        pending = set(names)
        deadline = time.monotonic() + timeout
        interval = 0.05
        while True:
            procs = self.processes()
            for name in sorted(pending):
                if procs.get(name, {}).get("statename") == "RUNNING" and self._live(bots[name]):
                    pending.discard(name)
            if not pending:
                break
            dead = sorted(n for n in pending if procs.get(n, {}).get("statename") in ("FATAL", "EXITED", "STOPPED"))
            if dead or time.monotonic() >= deadline:
                failed = dead or sorted(pending)
                details = "\n".join(
                    f"{n} ({procs.get(n, {}).get('statename', 'not in supervisord')}); "
                    f"{bots[n]['root'] / 'shared/logs/stderr.log'} ends with:\n"
                    + tail(bots[n]["root"] / "shared" / "logs" / "stderr.log")
                    for n in failed
                )
                why = "exited" if dead else f"did not answer liveness within {timeout:.0f}s"
                raise FleetError(self._redact(f"{', '.join(failed)} {why}:\n{details}", state))
            time.sleep(interval)
            interval = min(interval * 1.5, 0.5)
        log(f"bots: all {len(names)} bot(s) answer")

    # ------------------------------------------------------------------ status
    def status(self) -> list[dict]:
        """One row per bot: bot, family, release, state, pid, trades, open_positions (None when unknown)."""
        state = self._load_state()
        if state is None:
            return []
        procs = self.processes()
        pg_up = self.pg_running(state)
        rows = []
        for name in sorted(state["bots"], key=lambda n: state["bots"][n]["index"]):
            b = self._bot(state, name)
            info = procs.get(name)
            trades = positions = None
            if pg_up:
                with contextlib.suppress(_pg().Error):
                    with _pg().connect(b["database_url"], autocommit=True, connect_timeout=3) as conn:
                        trades = conn.execute("SELECT count(*) FROM trades").fetchone()[0]
                        positions = conn.execute(
                            "SELECT count(*) FROM positions WHERE status = 'open'").fetchone()[0]
            rows.append({
                "bot": name,
                "family": b["family"],
                "release": self.release_of(b["root"]),
                "state": info["statename"] if info else ("NOT ADDED" if procs else "SUPERVISORD DOWN"),
                "pid": info["pid"] if info and info["pid"] else None,
                "trades": trades,
                "open_positions": positions,
                "kill_switch": self.kill_switch_of(b["root"]),
                "ports": b["ports"],
            })
        return rows

    @staticmethod
    def kill_switch_of(root) -> str | None:
        """The kill switch level an operator engaged, as botops records it on the bot's host:
        '<level> by <who> at <time>', or None."""
        try:
            doc = json.loads((Path(root) / "shared" / "data" / "botops-kill-switch.json").read_text())
        except (OSError, ValueError):
            return None
        operator = doc.get("operator") if isinstance(doc, dict) else None
        if not isinstance(operator, dict):
            return None
        return f"{operator.get('level')} by {operator.get('who')} at {operator.get('time')}"

    def services(self) -> dict[str, str]:
        """State of the shared services: postgresql, redis, supervisord."""
        state = self._load_state()
        if state is None:
            return {}
        procs = self.processes()
        result = {
            "postgresql": (f"running on {LISTEN}:{state['postgres']['port']}" if self.pg_running(state)
                           else "stopped"),
            "supervisord": "running" if procs or self.supervisor_running() else "stopped",
        }
        if REDIS_PROGRAM in procs:
            result["redis"] = f"{procs[REDIS_PROGRAM]['statename'].lower()} on {LISTEN}:{state['redis']['port']}"
        return result

    # ------------------------------------------------------------------ down
    def _markers(self, state: dict | None) -> list[str]:
        markers = [str(self.state_dir)]
        if state and state.get("postgres", {}).get("dir"):
            markers.append(state["postgres"]["dir"])
        return markers

    def leftover_processes(self, state: dict | None = None) -> dict[int, str]:
        """The sandbox's processes found by command line (``pgrep -f <state dir>``), pid -> command line.

        Only the sandbox's own programs count (bots, alembic, supervisord, postgres, pg_ctl, redis):
        an operator's ``tail -f`` of a bot log is not the sandbox's and is never touched.
        """
        state = state if state is not None else self._load_state()
        markers = self._markers(state)
        skip = _ancestors()
        found = {}
        for pid in _all_pids():
            if pid in skip or not process_alive(pid):
                continue
            args = _proc_cmdline(pid)
            if not args or not any(a == m or (m + "/") in a for a in args for m in markers):
                continue
            programs = {os.path.basename(a.split(" ", 1)[0]) for a in args[:2]}
            if programs & OWN_PROGRAMS or any(p.startswith("python") for p in programs):
                found[pid] = " ".join(args)
        return found

    def down(self, purge: bool = False) -> dict:
        """Stop supervisord (and every program), then PostgreSQL; verify nothing is left; ``purge`` deletes all."""
        if not self.state_dir.exists():
            self._log(f"sandbox is not up (no {self.state_dir})")
            if purge:
                self._purge_inventory([p.name for p in (self.inventory_dir / "host_vars").glob("bot*")])
            return {"was_up": False, "stopped": [], "purged": purge}
        with self._locked():
            return self._down(purge)

    def _down(self, purge: bool) -> dict:
        state = self._load_state()
        sup = self._supervisord_pid()
        pg = self._pg_postmaster(state) if state and state.get("postgres") and state["postgres"].get("dir") else None
        pg_up = bool(pg) and self.pg_running(state)
        orphans = self.leftover_processes(state)
        stopped: list[str] = []
        if not sup and not pg_up and not orphans:
            self._log("sandbox is not up: nothing to stop")
        else:
            # every process this sandbox runs, remembered with its start time (pids get reused)
            roots = [p[0] for p in (sup, pg) if p]
            tree = {}
            for pid in [*roots, *_descendants(roots), *orphans]:
                stat = _proc_stat(pid)
                if stat:
                    tree[pid] = stat[2]
            if sup:
                programs = [n for n, i in self.processes().items() if i["statename"] in RUNNING_STATES]
                self._log(f"supervisord: stopping {len(programs)} program(s) and supervisord")
                self._stop_supervisord()
                stopped.append("supervisord")
                stopped += programs
            stray = self._orphans(state)
            if stray:
                # left running by a supervisord that died: stop them as it would have, before the database
                self._log(f"stopping {len(stray)} process(es) of the sandbox that run without supervisord "
                          f"(pids {', '.join(map(str, sorted(stray)))}): SIGTERM")
                self._signal_and_wait(stray)
                stopped += [f"pid {pid}" for pid in sorted(stray)]
            if pg_up:
                self._log("PostgreSQL: pg_ctl stop -m fast")
                self._pg_stop(state, "fast")
                stopped.append("postgresql")
            self._verify_gone(state, tree)
            self._log("sandbox is down: no process of it is left")
        if purge:
            self._purge(state)
        return {"was_up": bool(stopped or orphans), "stopped": stopped, "purged": purge}

    def _orphans(self, state: dict | None) -> dict[int, int]:
        """Sandbox processes (not PostgreSQL's) outside a running supervisord: pid -> start time."""
        postmaster = self._pg_postmaster(state) if state and state.get("postgres", {}).get("dir") else None
        pg_family = set(_descendants([postmaster[0]])) | {postmaster[0]} if postmaster else set()
        supervised = set(_descendants([self._supervisord_pid()[0]])) if self._supervisord_pid() else set()
        found = {}
        for pid in self.leftover_processes(state):
            stat = _proc_stat(pid)
            if stat and pid not in pg_family and pid not in supervised and not self._is_supervisord(pid):
                found[pid] = stat[2]
        return found

    def _is_supervisord(self, pid: int) -> bool:
        return any(os.path.basename(a) == "supervisord" for a in _proc_cmdline(pid)[:2])

    @staticmethod
    def _signal_and_wait(pids: dict[int, int], grace: float = 15) -> None:
        """SIGTERM, wait ``grace`` seconds (supervisord's stopwaitsecs), then SIGKILL what is left."""
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5)):
            for pid, start in pids.items():
                if process_alive(pid, start):
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, sig)
            if wait_until(lambda: not any(process_alive(p, t) for p, t in pids.items()), wait):
                return

    def _verify_gone(self, state: dict | None, tree: dict[int, int]) -> None:
        """Poll until none of ``tree`` (pid -> start time) nor any sandbox process is left; escalate if needed."""
        def left() -> dict[int, int]:
            remaining = {p: start for p, start in tree.items() if process_alive(p, start)}
            for pid in self.leftover_processes(state):
                stat = _proc_stat(pid)
                if stat:
                    remaining[pid] = stat[2]
            return remaining

        if wait_until(lambda: not left(), 15):
            return
        remaining = left()
        # they outlived a graceful stop: the sandbox owns them, so escalate
        self._log(f"down: {len(remaining)} process(es) outlived the stop "
                  f"(pids {', '.join(map(str, sorted(remaining)))}): SIGTERM, then SIGKILL")
        self._signal_and_wait(remaining, grace=10)
        remaining = left()
        if remaining:
            raise FleetError("processes of the sandbox are still running after SIGKILL: "
                             + "; ".join(f"{p}: {' '.join(_proc_cmdline(p))}" for p in sorted(remaining)))

    def _purge(self, state: dict | None) -> None:
        names = list((state or {}).get("bots") or [])
        self._purge_inventory(names)
        pg_dir = Path(state["postgres"]["dir"]) if state and state.get("postgres", {}).get("dir") else None
        if pg_dir and not pg_dir.is_relative_to(self.state_dir):
            shutil.rmtree(pg_dir, ignore_errors=True)
            with contextlib.suppress(OSError):
                pg_dir.parent.rmdir()  # botops-sandbox/ in the OS user's home, when no other sandbox uses it
        shutil.rmtree(self.state_dir, ignore_errors=True)
        self._log(f"purged {self.state_dir} and the generated inventory in {self.inventory_dir}")
