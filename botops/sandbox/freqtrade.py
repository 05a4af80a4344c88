"""A fleet of real, unmodified Freqtrade bots for operating with botops' `freqtrade` profile.

    python -m botops.sandbox.freqtrade up   --dir DIR [--bots 3] [--base-port 33000]
    python -m botops.sandbox.freqtrade down --dir DIR

Each bot is `freqtrade trade` in dry-run under one supervisord, with a SQLite trade database and
its REST API on loopback, pointed at the loopback exchange stand-in (`botops/sandbox/exchange.py`, a
supervisord program too). Freqtrade itself comes from PyPI into a cached virtualenv of its own
(`ensure_venv`: BOTOPS_FREQTRADE_VENV, default ~/.cache/botops/freqtrade-<version>).

Layout of a bot (what profiles/freqtrade.yml expects):

    <root>/releases/<v>/strategies/    the release: strategy files,
    <root>/releases/<v>/config.json    its trading config (strategy, timeframe, pairs, ROI)
    <root>/current -> releases/<v>
    <root>/shared/config.json          the bot's own config (name, API port, exchange, dry_run,
                                       initial_state): read after the release's, so it wins
    <root>/shared/tradesv3.sqlite      the trade database
    <root>/user_data/                  Freqtrade's user directory

Secrets (the API password, the JWT key) reach Freqtrade through its environment
(FREQTRADE__API_SERVER__PASSWORD ...), never through a file a backup would copy.
Releases are `freqtrade-<version>.tar.gz` with their manifest in `<dir>/artifacts`: 1.0.0 and
1.1.0 trade; 1.2.0 ships a strategy that fails to load (what a canary must catch).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import yaml

from botops.layout import HOME

FREQTRADE_VERSION = "2026.9"
RELEASES = ("1.0.0", "1.1.0", "1.2.0")
BROKEN_RELEASE = "1.2.0"
INITIAL_RELEASE = "1.0.0"
USERNAME = "botops"

STRATEGY = '''"""botops' probe strategy, release {version}: enters every pair at once and holds (ROI and
stoploss out of reach), so a dry-run bot has open trades to operate on."""
from pandas import DataFrame

from freqtrade.strategy import IStrategy
{broken}

class BotopsProbe(IStrategy):
    INTERFACE_VERSION = 3
    timeframe = "1m"
    minimal_roi = {{"0": 10}}
    stoploss = -0.99
    startup_candle_count = 5
    process_only_new_candles = False

    def version(self) -> str:
        return "{version}"

    def populate_indicators(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        return dataframe

    def populate_entry_trend(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        dataframe["enter_long"] = 1
        return dataframe

    def populate_exit_trend(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        dataframe["exit_long"] = 0
        return dataframe
'''


class FreqtradeError(Exception):
    """The Freqtrade fleet could not be set up; the message says what and why."""


def default_venv() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return Path(os.environ.get("BOTOPS_FREQTRADE_VENV") or cache / "botops" / f"freqtrade-{FREQTRADE_VERSION}")


def ensure_venv(venv: Path | None = None, log=print) -> Path:
    """A virtualenv holding freqtrade==FREQTRADE_VERSION (made once, then reused): its freqtrade program."""
    venv = venv or default_venv()
    program = venv / "bin" / "freqtrade"
    marker = venv / ".botops-freqtrade"
    if program.exists() and marker.exists() and marker.read_text().strip() == FREQTRADE_VERSION:
        return program
    log(f"freqtrade: installing freqtrade=={FREQTRADE_VERSION} into {venv} (once; about 770 MB)")
    shutil.rmtree(venv, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    for cmd in ([sys.executable, "-m", "venv", str(venv)],
                [str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check",
                 f"freqtrade=={FREQTRADE_VERSION}"]):
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        if proc.returncode != 0:
            shutil.rmtree(venv, ignore_errors=True)
            raise FreqtradeError(f"{shlex.join(cmd)} failed (rc={proc.returncode}): {(proc.stderr or proc.stdout)[-1500:]}")
    marker.write_text(FREQTRADE_VERSION + "\n")
    return program


def build_artifacts(directory: Path) -> None:
    """freqtrade-<v>.tar.gz and freqtrade-<v>.json (the manifest botops checks) for every release."""
    directory.mkdir(parents=True, exist_ok=True)
    for version in RELEASES:
        files = {
            "strategies/botops_probe.py": STRATEGY.format(
                version=version, broken="from freqtrade.no_such_module import missing  # fails to load\n"
                if version == BROKEN_RELEASE else ""),
            "config.json": json.dumps({
                "strategy": "BotopsProbe", "timeframe": "1m", "max_open_trades": 3, "stake_currency": "USDT",
                "stake_amount": 100, "tradable_balance_ratio": 0.99, "trading_mode": "spot",
                "entry_pricing": {"price_side": "other", "use_order_book": True, "order_book_top": 1},
                "exit_pricing": {"price_side": "other", "use_order_book": True, "order_book_top": 1},
                "order_types": {"entry": "market", "exit": "market", "stoploss": "market",
                                "stoploss_on_exchange": False},
                "pairlists": [{"method": "StaticPairList"}],
            }, indent=1),
            "release.json": json.dumps({"name": "freqtrade", "version": version}),
        }
        tarball = directory / f"freqtrade-{version}.tar.gz"
        with tarfile.open(tarball, "w:gz") as tar:
            for name, text in files.items():
                raw = text.encode()
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.mtime = len(raw), 0o644, 1_700_000_000
                tar.addfile(info, io.BytesIO(raw))
        raw = tarball.read_bytes()
        manifest = {"name": "freqtrade", "version": version, "sha256": hashlib.sha256(raw).hexdigest(),
                    "size": len(raw), "alembic_head": None, "migration": "none",
                    "description": "botops probe strategy" + (" (fails to load)" if version == BROKEN_RELEASE else "")}
        (directory / f"freqtrade-{version}.json").write_text(json.dumps(manifest, indent=1) + "\n")


def conf_value(text: str) -> str:
    return text.replace("%", "%%")


class FreqtradeFleet:
    """`bots` Freqtrade bots (ft1, ft2, ...) under one supervisord in `directory`."""

    def __init__(self, directory: Path, bots: int = 3, base_port: int = 25000, freqtrade: Path | None = None):
        self.dir = Path(directory).resolve()
        self.count = bots
        self.base_port = base_port
        self.freqtrade = freqtrade
        self.names = [f"ft{i}" for i in range(1, bots + 1)]
        self.exchange_port = base_port
        self.supervisor_conf = self.dir / "supervisor" / "supervisord.conf"
        self.artifacts = self.dir / "artifacts"
        self.inventory = self.dir / "inventory" / "hosts.yml"
        self.bindir = Path(sys.executable).parent
        state = self.dir / "fleet.json"
        self.passwords = json.loads(state.read_text())["passwords"] if state.exists() else {}

    # ---------------------------------------------------------------- per bot
    def root(self, name: str) -> Path:
        return self.dir / "bots" / name

    def port(self, name: str) -> int:
        return self.base_port + 1 + self.names.index(name)

    def database(self, name: str) -> Path:
        return self.root(name) / "shared" / "tradesv3.sqlite"

    def process_match(self, name: str) -> str:
        return f"freqtrade trade .*--userdir {re.escape(str(self.root(name) / 'user_data'))}( |$)"

    def _install_release(self, name: str, version: str) -> None:
        release = self.root(name) / "releases" / version
        release.mkdir(parents=True, exist_ok=True)
        with tarfile.open(self.artifacts / f"freqtrade-{version}.tar.gz") as tar:
            tar.extractall(release, filter="data")
        current = self.root(name) / "current"
        if not current.is_symlink():
            current.symlink_to(Path("releases") / version)

    def _bot_config(self, name: str) -> dict:
        url = f"http://127.0.0.1:{self.exchange_port}/api/v3"
        ccxt = {"urls": {"api": {"public": url}}, "options": {"fetchMarkets": {"types": ["spot"]}}}
        return {
            "bot_name": name, "dry_run": True, "dry_run_wallet": 10000, "initial_state": "running",
            "force_entry_enable": True, "cancel_open_orders_on_exit": False,
            "exchange": {"name": "binance", "key": "", "secret": "", "ccxt_config": ccxt, "ccxt_async_config": ccxt,
                         "enable_ws": False, "pair_whitelist": ["BTC/USDT", "ETH/USDT", "SOL/USDT"],
                         "pair_blacklist": []},
            "api_server": {"enabled": True, "listen_ip_address": "127.0.0.1", "listen_port": self.port(name),
                           "verbosity": "error", "enable_openapi": False, "CORS_origins": [], "username": USERNAME},
            "internals": {"process_throttle_secs": 2, "heartbeat_interval": 60},
            "db_url": f"sqlite:///{self.database(name)}",
        }

    def _program(self, name: str) -> str:
        root = self.root(name)
        command = [str(self.freqtrade), "trade", "--config", str(root / "current" / "config.json"),
                   "--config", str(root / "shared" / "config.json"),
                   "--strategy-path", str(root / "current" / "strategies"),
                   "--userdir", str(root / "user_data")]
        env = {"FREQTRADE__API_SERVER__PASSWORD": self.passwords[name]["password"],
               "FREQTRADE__API_SERVER__JWT_SECRET_KEY": self.passwords[name]["jwt"],
               "FREQTRADE__API_SERVER__WS_TOKEN": self.passwords[name]["ws"]}
        return "\n".join([
            f"[program:{name}]",
            f"command = {conf_value(shlex.join(command))}",
            f"directory = {conf_value(str(root))}",
            "environment = " + ",".join(f'{k}="{v}"' for k, v in env.items()),
            "autostart = true", "autorestart = unexpected", "exitcodes = 0", "startsecs = 5", "startretries = 2",
            "stopsignal = TERM", "stopwaitsecs = 30",
            f"stdout_logfile = {conf_value(str(root / 'user_data' / 'freqtrade.log'))}",
            "redirect_stderr = true", "stdout_logfile_maxbytes = 10MB", "stdout_logfile_backups = 1", "",
        ])

    # ---------------------------------------------------------------- the fleet
    def up(self, log=print) -> None:
        started = time.monotonic()
        self.freqtrade = self.freqtrade or ensure_venv(log=log)
        sup = self.dir / "supervisor"
        (sup / "conf.d").mkdir(parents=True, exist_ok=True)
        build_artifacts(self.artifacts)
        if not self.passwords:
            self.passwords = {n: {"password": secrets.token_urlsafe(18), "jwt": secrets.token_hex(32),
                                  "ws": secrets.token_urlsafe(18)} for n in self.names}
            (self.dir / "fleet.json").write_text(json.dumps({"passwords": self.passwords}))
            os.chmod(self.dir / "fleet.json", 0o600)
        for name in self.names:
            root = self.root(name)
            for sub in ("shared", "user_data", "releases"):
                (root / sub).mkdir(parents=True, exist_ok=True)
            self._install_release(name, INITIAL_RELEASE)
            config = root / "shared" / "config.json"
            if not config.exists():
                config.write_text(json.dumps(self._bot_config(name), indent=1) + "\n")
            (sup / "conf.d" / f"{name}.conf").write_text(self._program(name))
        exchange = [sys.executable, "-m", "botops.sandbox.exchange", "--port", str(self.exchange_port)]
        (sup / "conf.d" / "exchange.conf").write_text("\n".join([
            "[program:exchange]", f"command = {conf_value(shlex.join(exchange))}",
            f"directory = {conf_value(str(HOME))}", "priority = 1", "autostart = true", "startsecs = 1",
            f"stdout_logfile = {conf_value(str(sup / 'exchange.log'))}", "redirect_stderr = true", ""]))
        self.supervisor_conf.write_text("\n".join([
            "[unix_http_server]", f"file = {conf_value(str(sup / 'supervisor.sock'))}", "chmod = 0700", "",
            "[supervisord]", f"logfile = {conf_value(str(sup / 'supervisord.log'))}",
            f"pidfile = {conf_value(str(sup / 'supervisord.pid'))}", f"directory = {conf_value(str(self.dir))}",
            "identifier = botops-freqtrade", "nodaemon = false", "",
            "[rpcinterface:supervisor]",
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface", "",
            "[supervisorctl]", f"serverurl = unix://{conf_value(str(sup / 'supervisor.sock'))}", "",
            "[include]", f"files = {conf_value(str(sup / 'conf.d'))}/*.conf", ""]))
        self.write_inventory()
        if self.supervisord_pid() is None:
            subprocess.run([str(self.bindir / "supervisord"), "-c", str(self.supervisor_conf)], check=True,
                           cwd=HOME, timeout=60)
        else:
            self.ctl("update")
        self.wait_ready(self.names, timeout=180)
        log(f"freqtrade: {len(self.names)} bot(s) up in {time.monotonic() - started:.1f}s, inventory {self.inventory}")

    def write_inventory(self) -> None:
        hosts = {}
        for name in self.names:
            hosts[name] = {
                "bot_root": str(self.root(name)),
                "bot_ports": {"api": self.port(name)},
                "bot_service": {"name": name, "config": str(self.supervisor_conf),
                                "supervisorctl": str(self.bindir / "supervisorctl")},
                "bot_process_match": self.process_match(name),
                "bot_paper_only": True,
            }
            host_vars = self.inventory.parent / "host_vars" / name
            host_vars.mkdir(parents=True, exist_ok=True)
            secrets_file = host_vars / "secrets.yml"
            secrets_file.write_text(yaml.safe_dump({"bot_api_username": USERNAME,
                                                    "bot_api_password": self.passwords[name]["password"]}))
            os.chmod(secrets_file, 0o600)
        inventory = {"all": {"vars": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                                      "botops_artifacts_dir": str(self.artifacts)},
                             "children": {"freqtrade": {"vars": {"bot_family": "freqtrade"}, "hosts": hosts}}}}
        self.inventory.write_text("# Generated by botops/sandbox/freqtrade.py: real Freqtrade bots in dry-run.\n"
                                  + yaml.safe_dump(inventory, sort_keys=False))

    def supervisord_pid(self) -> int | None:
        pidfile = self.dir / "supervisor" / "supervisord.pid"
        try:
            pid = int(pidfile.read_text().strip())
            os.kill(pid, 0)
            return pid
        except (OSError, ValueError):
            return None

    def ctl(self, *args: str, check: bool = False) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.bindir / "supervisorctl"), "-c", str(self.supervisor_conf), *args],
                              capture_output=True, text=True, timeout=120, check=check)

    def api(self, name: str, method: str, path: str, body=None, auth: bool = True, timeout: float = 5.0):
        """(status, JSON) of one request to the bot's REST API, logged in as botops when `auth`."""
        import base64
        import http.client
        conn = http.client.HTTPConnection("127.0.0.1", self.port(name), timeout=timeout)
        headers = {"Content-Type": "application/json"}
        try:
            if auth:
                basic = base64.b64encode(f"{USERNAME}:{self.passwords[name]['password']}".encode()).decode()
                conn.request("POST", "/api/v1/token/login", headers={"Authorization": f"Basic {basic}"})
                resp = conn.getresponse()
                token = json.loads(resp.read())["access_token"]
                headers["Authorization"] = f"Bearer {token}"
            conn.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
            return resp.status, (json.loads(raw) if raw else None)
        finally:
            conn.close()

    def ready(self, name: str) -> bool:
        try:
            status, health = self.api(name, "GET", "/api/v1/health", timeout=2)
        except (OSError, ValueError, KeyError):
            return False
        return status == 200 and bool((health or {}).get("last_process_ts"))

    def wait_ready(self, names, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        waiting = list(names)
        while waiting:
            waiting = [n for n in waiting if not self.ready(n)]
            if not waiting:
                return
            if time.monotonic() > deadline:
                logs = {n: (self.root(n) / "user_data" / "freqtrade.log") for n in waiting}
                tails = "\n".join(f"--- {n}:\n" + (p.read_text()[-1500:] if p.exists() else "(no log)")
                                  for n, p in logs.items())
                raise FreqtradeError(f"freqtrade bots not ready after {timeout:g}s: {', '.join(waiting)}\n{tails}")
            time.sleep(0.5)

    def down(self, purge: bool = False) -> None:
        pid = self.supervisord_pid()
        if pid is not None:
            self.ctl("shutdown")
            deadline = time.monotonic() + 60
            while self.supervisord_pid() is not None and time.monotonic() < deadline:
                time.sleep(0.2)
        if purge:
            shutil.rmtree(self.dir, ignore_errors=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m botops.sandbox.freqtrade", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["up", "down"])
    parser.add_argument("--dir", required=True, type=Path)
    parser.add_argument("--bots", type=int, default=3)
    parser.add_argument("--base-port", type=int, default=25000)
    parser.add_argument("--purge", action="store_true", help="down: remove the directory too")
    args = parser.parse_args(argv)
    fleet = FreqtradeFleet(args.dir, args.bots, args.base_port)
    try:
        fleet.up() if args.action == "up" else fleet.down(purge=args.purge)
    except FreqtradeError as exc:
        print(f"freqtrade: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
