"""The SSH tier: bots behind real sshd instances, operated with a production-shaped inventory.

Each "host" is a loopback address (127.0.0.2, 127.0.0.3, ...) with its own sshd on a high port
(key authentication only, no root login, no passwords) and its own unprivileged bot user
(``botops-b1`` ...). The bot user runs everything its bot needs on the host - the reference bot
under its own supervisord, its PostgreSQL and Redis - from its home directory, with the hosts'
Python (a virtualenv of the system interpreter holding the bot's dependencies, like a bot's
virtualenv on a production host). The bot's API listens on the host's address.

The inventory (``ssh_fleet.inventory``) is shaped like a production one: groups per family and
per environment (``prod``, ``staging``), ``ansible_host``/``ansible_port``/``ansible_user``/
``ansible_ssh_private_key_file`` per host, strict host key checking against a known_hosts file,
and the secrets in Ansible Vault encrypted ``host_vars/<host>/vault.yml`` files whose password
file is given through ``ANSIBLE_VAULT_PASSWORD_FILE`` (``ssh_fleet.env``).

Needs root (to create the bot users and run sshd for them) and openssh-server, which is installed
with apt-get when missing; the tier is skipped, saying why, when that cannot be done.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import pytest
import yaml

from botops.sandbox.fleet import PORT_BLOCK, Fleet, port_in_use

REPO = Path(__file__).resolve().parents[2]
SSHD = Path("/usr/sbin/sshd")
SYSTEM_PYTHON = Path("/usr/bin/python3")
HOST_VENV = Path(os.environ.get("BOTOPS_SSH_HOST_VENV", "/var/tmp/botops-ssh-host-venv"))
# what the bots and the modules need on a host, pinned to the controller's versions
HOST_PACKAGES = ("psycopg", "psycopg-binary", "SQLAlchemy", "alembic", "redis", "supervisor", "PyYAML")
TIER_LOCK = Path(tempfile.gettempdir()) / "botops-ssh-tier.lock"
PORT_LOCK = Path(tempfile.gettempdir()) / "botops-test-sandbox-ports.lock"  # shared with tests/integration
BASE_PORT = int(os.environ.get("BOTOPS_SSH_BASE_PORT", "46000"))
VAULT_PASSWORD = "botops-ssh-tier-vault-password"


@dataclass
class SshHost:
    name: str  # inventory hostname
    family: str
    env: str  # prod | staging
    address: str  # the host's loopback address
    user: str  # the unprivileged bot user
    ssh_port: int = 0
    base_port: int = 0
    state_dir: Path = Path()
    bot: dict = field(default_factory=dict)  # what host_fleet.py up reported (secrets included)
    sshd: subprocess.Popen | None = None

    @property
    def home(self) -> Path:
        return Path(pwd.getpwnam(self.user).pw_dir)

    @property
    def root(self) -> Path:
        return Path(self.bot["root"])

    @property
    def fleet(self) -> Fleet:
        """The host's one-bot sandbox, seen from the controller (root reads its state)."""
        return Fleet(self.state_dir, self.state_dir.parent / "inventory")

    def trades(self) -> int:
        return int(self.fleet.db_query("bot01", "SELECT count(*) FROM trades")[0][0])

    def secrets(self) -> list[str]:
        return [s for s in (self.bot["database"]["password"], self.bot.get("api_token")) if s]


HOSTS = [
    ("hl-eu-1", "hyperliquid", "prod", "127.0.0.2", "botops-b1"),
    ("mojo-1", "mojorust", "prod", "127.0.0.3", "botops-b2"),
    ("vanta-stg-1", "vanta", "staging", "127.0.0.4", "botops-b3"),
]


@dataclass
class SshFleet:
    dir: Path
    hosts: dict[str, SshHost]
    inventory: Path  # the inventory directory (hosts.yml, group_vars, host_vars with vault files)
    env: dict  # environment for `invoke` runs: vault password file, artifacts, locks, control sockets
    artifacts: Path  # release artifacts on the controller
    key: Path  # the controller's private key
    known_hosts: Path
    setup_seconds: float = 0.0

    def secrets(self) -> list[str]:
        return [s for h in self.hosts.values() for s in h.secrets()] + [VAULT_PASSWORD]


# ----------------------------------------------------------------------------- preconditions
def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, **kwargs)


def ensure_sshd() -> None:
    if SSHD.exists():
        return
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "openssh-server"]
    proc = run(cmd, env=env, timeout=600)
    if proc.returncode != 0:  # stale package lists: refresh once
        run(["apt-get", "update", "-q"], env=env, timeout=600)
        proc = run(cmd, env=env, timeout=600)
    if proc.returncode != 0 or not SSHD.exists():
        pytest.skip(f"openssh-server is not installed and apt-get could not install it: {proc.stderr[-500:]}")


def ensure_host_venv() -> Path:
    """The hosts' Python: a virtualenv of the system interpreter with the bot's dependencies.

    Built once per machine (kept in /var/tmp); the controller's own virtualenv lives where other
    users cannot run it."""
    pins = sorted(f"{name}=={metadata.version(name)}" for name in HOST_PACKAGES)
    marker = HOST_VENV / "botops-pins.txt"
    python = HOST_VENV / "bin" / "python"
    with open(Path(tempfile.gettempdir()) / "botops-ssh-host-venv.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if python.exists() and marker.is_file() and marker.read_text().split() == pins:
            return python
        shutil.rmtree(HOST_VENV, ignore_errors=True)
        proc = run([str(SYSTEM_PYTHON), "-m", "venv", str(HOST_VENV)], timeout=300)
        if proc.returncode == 0:
            proc = run([str(HOST_VENV / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", *pins],
                       timeout=900)
        if proc.returncode != 0:
            shutil.rmtree(HOST_VENV, ignore_errors=True)
            pytest.skip(f"cannot build the SSH hosts' virtualenv in {HOST_VENV}: {(proc.stdout + proc.stderr)[-800:]}")
        marker.write_text("\n".join(pins) + "\n")
        HOST_VENV.chmod(0o755)
    return python


@contextlib.contextmanager
def tier_lock(timeout: float = 900):
    """One SSH tier per machine at a time: the bot users and loopback addresses are machine-wide."""
    with open(TIER_LOCK, "a") as lock:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    pytest.skip(f"another test session holds the SSH tier ({TIER_LOCK}) for more than {timeout:.0f}s")
                time.sleep(1)
        yield


# ----------------------------------------------------------------------------- hosts
def free_port(address: str, start: int) -> int:
    for port in range(start, 65000):
        if not port_in_use(port, address):
            return port
    raise RuntimeError(f"no free port on {address} from {start}")


def bot_port_base(address: str, start: int, taken: set[int]) -> int:
    """A base port whose bot ports are free on loopback and on the host's address."""
    for base in range(start, 60000, 100):
        ports = range(base + PORT_BLOCK, base + 2 * PORT_BLOCK)
        if taken.isdisjoint(ports) and not any(port_in_use(p) or port_in_use(p, address) for p in ports):
            taken.update(ports)
            return base
    raise RuntimeError(f"no free bot port block from {start}")


def ensure_user(host: SshHost, public_key: str) -> None:
    try:
        pwd.getpwnam(host.user)
    except KeyError:
        # '*': no password, but not locked (sshd without PAM refuses locked accounts even with keys)
        proc = run(["useradd", "--create-home", "--shell", "/bin/bash", "--password", "*", host.user])
        if proc.returncode != 0:
            pytest.skip(f"cannot create the bot user {host.user}: {proc.stderr.strip()}")
    pw = pwd.getpwnam(host.user)
    ssh_dir = Path(pw.pw_dir) / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    keys = ssh_dir / "authorized_keys"
    keys.write_text(public_key)
    for path, mode in ((ssh_dir, 0o700), (keys, 0o600)):
        os.chown(path, pw.pw_uid, pw.pw_gid)
        path.chmod(mode)


def as_user(host: SshHost, python: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    home = str(host.home)
    env = ["env", "-i", f"HOME={home}", "PATH=/usr/bin:/bin", "LANG=C.UTF-8", f"PYTHONPATH={REPO}",
           "PYTHONDONTWRITEBYTECODE=1"]
    cmd = ["runuser", "-u", host.user, "--", *env, str(python), str(Path(__file__).with_name("host_fleet.py")), *args]
    return run(cmd, cwd=home, timeout=timeout)


def clear_leftovers(host: SshHost, python: Path) -> None:
    """A killed session's bots, in the bot user's home: bring them down before starting over."""
    for state in host.home.glob("fleet-*/state"):
        as_user(host, python, "down", str(state))
        shutil.rmtree(state.parent, ignore_errors=True)


def start_bot(host: SshHost, python: Path, artifacts: Path) -> None:
    pw = pwd.getpwnam(host.user)
    workdir = Path(tempfile.mkdtemp(prefix="fleet-", dir=host.home))
    host.state_dir = workdir / "state"
    shutil.copytree(artifacts, host.state_dir / "artifacts")  # the releases the host starts from
    for path in (workdir, *workdir.rglob("*")):
        os.chown(path, pw.pw_uid, pw.pw_gid, follow_symlinks=False)
    workdir.chmod(0o755)
    proc = as_user(host, python, "up", str(host.state_dir), str(host.base_port), host.family, host.address)
    if proc.returncode != 0:
        raise RuntimeError(f"{host.name}: the bot did not start as {host.user}:\n{(proc.stdout + proc.stderr)[-3000:]}")
    host.bot = json.loads(proc.stdout.strip().splitlines()[-1])


def start_sshd(host: SshHost, workdir: Path) -> None:
    host_key = workdir / "sshd" / f"{host.name}_ed25519"
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", host.name, "-f", str(host_key)], check=True)
    config = workdir / "sshd" / f"{host.name}.conf"
    config.write_text(
        f"ListenAddress {host.address}:{host.ssh_port}\n"
        f"HostKey {host_key}\n"
        f"PidFile {workdir / 'sshd' / f'{host.name}.pid'}\n"
        "AuthorizedKeysFile .ssh/authorized_keys\n"
        "PubkeyAuthentication yes\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "PermitRootLogin no\n"
        f"AllowUsers {host.user}\n"
        "UsePAM no\n"
        "StrictModes yes\n"
        "X11Forwarding no\n"
        "AllowAgentForwarding no\n"
        "PrintMotd no\n"
        "MaxStartups 50:30:100\n"
        "MaxSessions 50\n"
        "Subsystem sftp internal-sftp\n"
        "LogLevel VERBOSE\n"
    )
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    check = run([str(SSHD), "-t", "-f", str(config)])
    if check.returncode != 0:
        raise RuntimeError(f"{host.name}: sshd refuses its configuration: {check.stderr.strip()}")
    log = open(workdir / "sshd" / f"{host.name}.log", "ab")
    host.sshd = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL)
    log.close()
    deadline = time.monotonic() + 20
    while True:
        with socket.socket() as sock:
            sock.settimeout(0.5)
            if sock.connect_ex((host.address, host.ssh_port)) == 0:
                return
        if host.sshd.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{host.name}: sshd did not listen on {host.address}:{host.ssh_port}: "
                               + (workdir / "sshd" / f"{host.name}.log").read_text()[-1000:])
        time.sleep(0.05)


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                children.setdefault(int(stat[stat.rindex(")") + 2:].split()[1]), []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def stop_sshd(host: SshHost) -> None:
    """Stop the host's sshd and the sessions it forked (by pid: only what this fixture started)."""
    if host.sshd is None or host.sshd.poll() is not None:
        return
    sessions = descendants(host.sshd.pid)
    host.sshd.terminate()
    for pid in sessions:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 15)
    try:
        host.sshd.wait(10)
    except subprocess.TimeoutExpired:
        host.sshd.kill()
        host.sshd.wait(5)


# ----------------------------------------------------------------------------- inventory
def write_inventory(fleet_dir: Path, hosts: list[SshHost], python: Path, key: Path, known_hosts: Path) -> Path:
    from ansible.parsing.vault import VaultLib, VaultSecret

    inv = fleet_dir / "inventory"
    vault = VaultLib([("default", VaultSecret(VAULT_PASSWORD.encode()))])

    def dump(path: Path, data: dict, header: str = "") -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(header + yaml.safe_dump(data, default_flow_style=False, sort_keys=False))

    envs: dict[str, dict] = {}
    families: dict[str, dict] = {}
    for h in hosts:
        envs.setdefault(h.env, {"hosts": {}})["hosts"][h.name] = {
            "ansible_host": h.address, "ansible_port": h.ssh_port, "ansible_user": h.user}
        families.setdefault(h.family.replace("-", "_"), {"hosts": {}})["hosts"][h.name] = None
    dump(inv / "hosts.yml", {"all": {"children": {**envs, **families}}},
         "# A production-shaped inventory of the SSH test tier: groups per environment and per family.\n")
    dump(inv / "group_vars" / "all" / "main.yml", {
        "ansible_python_interpreter": str(python),  # the bot's virtualenv on the host (alembic, supervisorctl)
        "ansible_ssh_private_key_file": str(key),
        "bot_release_artifact": "refbot",  # the reference bot's artifacts, whatever the family
        "ansible_ssh_common_args": f"-o UserKnownHostsFile={known_hosts} -o StrictHostKeyChecking=yes",
    })
    for family in {h.family for h in hosts}:
        dump(inv / "group_vars" / family.replace("-", "_") / "main.yml", {"bot_family": family})
    for h in hosts:
        b = h.bot
        dump(inv / "host_vars" / h.name / "main.yml", {
            # the bot on the host reports its own name (bot01), not the inventory's host name: who it is
            "bot_id": b["name"],
            "bot_root": b["root"],
            "bot_listen": h.address,
            "bot_ports": b["ports"],
            "bot_database": {k: b["database"][k] for k in ("host", "port", "name", "user")},
            "bot_redis_url": b["redis_url"],
            "bot_service": {"manager": "supervisor", "name": b["name"], "config": b["supervisor_conf"],
                            "supervisorctl": b["supervisorctl"]},
            "bot_process_match": f"-m refbot --root {b['root']}$",
            "bot_paper_only": b["paper_only"],
        })
        secrets = {"bot_database_password": b["database"]["password"]}
        if b.get("api_token"):
            secrets["bot_api_token"] = b["api_token"]
        vault_file = inv / "host_vars" / h.name / "vault.yml"
        vault_file.write_bytes(vault.encrypt(yaml.safe_dump(secrets)))
        vault_file.chmod(0o600)
    return inv


# ----------------------------------------------------------------------------- the fixture
@pytest.fixture(scope="session")
def ssh_fleet():
    """Three hosts behind real sshd: hl-eu-1 (hyperliquid, prod), mojo-1 (mojorust, prod),
    vanta-stg-1 (vanta, staging), one bot each, trade interval 0.1 s."""
    if os.geteuid() != 0:
        pytest.skip("the SSH tier needs root: it creates the bot users and runs an sshd for each")
    for tool in ("ssh", "ssh-keygen", "runuser", "useradd", "userdel"):
        if not shutil.which(tool):
            pytest.skip(f"the SSH tier needs {tool}, which is not installed")
    if not SYSTEM_PYTHON.exists():
        pytest.skip(f"the SSH tier runs the bots with the system Python {SYSTEM_PYTHON}, which is missing")
    ensure_sshd()
    python = ensure_host_venv()
    started = time.monotonic()
    with tier_lock():
        workdir = Path(tempfile.mkdtemp(prefix="botops-ssh-", dir="/tmp"))
        workdir.chmod(0o755)
        hosts = [SshHost(*spec) for spec in HOSTS]
        try:
            yield _bring_up(workdir, hosts, python, started)
        finally:
            _tear_down(workdir, hosts, python)


def _bring_up(workdir: Path, hosts: list[SshHost], python: Path, started: float) -> SshFleet:
    from botops.sandbox.releases import build_artifacts

    (workdir / "sshd").mkdir()
    keys = workdir / "keys"
    keys.mkdir(mode=0o700)
    key = keys / "id_ed25519"
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "botops-controller", "-f", str(key)], check=True)
    artifacts = workdir / "artifacts"
    build_artifacts(artifacts)

    public_key = key.with_suffix(".pub").read_text()
    for host in hosts:
        ensure_user(host, public_key)
        clear_leftovers(host, python)

    with open(PORT_LOCK, "a") as lock:  # hold the ports until the bots and sshd have bound them
        fcntl.flock(lock, fcntl.LOCK_EX)
        taken: set[int] = set()
        for host in hosts:
            host.base_port = bot_port_base(host.address, BASE_PORT, taken)
            host.ssh_port = free_port(host.address, BASE_PORT + 2200)
        with ThreadPoolExecutor(len(hosts)) as pool:
            list(pool.map(lambda h: start_bot(h, python, artifacts), hosts))
        for host in hosts:
            start_sshd(host, workdir)

    known_hosts = workdir / "known_hosts"
    known_hosts.write_text("".join(
        f"[{h.address}]:{h.ssh_port} " + " ".join(
            (workdir / "sshd" / f"{h.name}_ed25519.pub").read_text().split()[:2]) + "\n"
        for h in hosts))
    inventory = write_inventory(workdir, hosts, python, key, known_hosts)
    password_file = keys / "vault-password"
    password_file.write_text(VAULT_PASSWORD + "\n")
    password_file.chmod(0o600)
    env = dict(
        os.environ,
        ANSIBLE_VAULT_PASSWORD_FILE=str(password_file),
        ANSIBLE_SSH_CONTROL_PATH_DIR=str(workdir / "cp"),
        BOTOPS_ARTIFACTS_DIR=str(workdir / "runs"),
        BOTOPS_LOCK_DIR=str(workdir / "locks"),
        BOTOPS_OPERATOR="ssh-tier",
    )
    env.pop("BOTOPS_INVENTORY", None)
    env.pop("BOTOPS_SANDBOX_DIR", None)
    return SshFleet(dir=workdir, hosts={h.name: h for h in hosts}, inventory=inventory, env=env,
                    artifacts=artifacts, key=key, known_hosts=known_hosts,
                    setup_seconds=round(time.monotonic() - started, 1))


def close_control_masters(workdir: Path) -> None:
    for sock in (workdir / "cp").glob("*") if (workdir / "cp").is_dir() else []:
        run(["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "botops-ssh-tier"], timeout=10)


def _tear_down(workdir: Path, hosts: list[SshHost], python: Path) -> None:
    close_control_masters(workdir)
    for host in hosts:
        stop_sshd(host)

    def down(host: SshHost) -> None:
        if host.state_dir != Path() and host.state_dir.exists():
            proc = as_user(host, python, "down", str(host.state_dir))
            if proc.returncode != 0:
                print(f"{host.name}: down failed: {proc.stderr[-1000:]}", file=sys.stderr)
            shutil.rmtree(host.state_dir.parent, ignore_errors=True)

    with ThreadPoolExecutor(len(hosts)) as pool:
        list(pool.map(down, hosts))
    for host in hosts:
        with contextlib.suppress(KeyError):
            pwd.getpwnam(host.user)
            proc = run(["userdel", "--remove", host.user])
            if proc.returncode != 0:
                print(f"userdel {host.user}: {proc.stderr.strip()}", file=sys.stderr)
    shutil.rmtree(workdir, ignore_errors=True)

