"""The bot's configuration (``shared/config/bot.json``) and release manifest (``release.json``)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

FAMILIES = ("mojorust", "papertrader", "solana-cli", "hyperliquid", "vanta")

# Port names each family must be given in bot.json "ports".
FAMILY_PORTS = {
    "mojorust": ("api", "health"),
    "papertrader": ("api",),
    "solana-cli": ("api",),
    "hyperliquid": ("api",),
    "vanta": ("api",),
}

# Families whose stack includes Redis: readiness depends on it.
REDIS_FAMILIES = frozenset({"papertrader", "solana-cli", "hyperliquid", "vanta"})

EXECUTION_MODES = ("DRY", "LIVE")

# Where the trading writer keeps its tables: its PostgreSQL database, or (bench-only bots) memory.
LEDGERS = ("postgres", "memory")


class ConfigError(Exception):
    """bot.json or release.json is missing or invalid."""


@dataclass(frozen=True)
class BotConfig:
    root: Path
    name: str
    family: str
    listen: str
    ports: dict[str, int]
    database_url: str
    redis_url: str | None
    api_token: str | None
    trade_interval: float
    execution_mode: str
    paper_trading: bool
    paper_only: bool
    ledger: str = "postgres"

    @property
    def memory_ledger(self) -> bool:
        return self.ledger == "memory"

    @property
    def log_path(self) -> Path:
        return self.root / "shared" / "logs" / "bot.log"

    @property
    def data_dir(self) -> Path:
        return self.root / "shared" / "data"

    @property
    def uses_redis(self) -> bool:
        return self.family in REDIS_FAMILIES

    def secrets(self) -> list[str]:
        """Strings that must never appear in a log line."""
        found = [self.api_token or ""]
        for url in (self.database_url, self.redis_url):
            if url:
                found.append(urlsplit(url).password or "")
        return [s for s in found if len(s) >= 4]


@dataclass(frozen=True)
class Release:
    name: str
    version: str
    alembic_head: str
    migration: str
    description: str
    qty_column: str
    writes_fee: bool
    broken: bool
    directory: Path
    # Alembic revisions shipped with this release, oldest first (read from migrations/versions).
    revisions: tuple[str, ...] = field(default=())

    def schema_status(self, db_revision: str | None) -> tuple[bool, str]:
        """Compare the database's alembic revision with this release's head.

        Returns (ok, detail). A revision this release does not know is newer than its head
        (an expand migration of a later release): not a failure by itself.
        """
        if db_revision == self.alembic_head:
            return True, f"at {self.alembic_head}"
        if db_revision is None:
            return False, f"migration pending: database not migrated, release expects {self.alembic_head}"
        if db_revision in self.revisions:
            return False, f"migration pending: database at {db_revision}, release expects {self.alembic_head}"
        return True, f"database at {db_revision}, newer than this release's head {self.alembic_head}"


def mask_url(url: str | None) -> str:
    """The URL with its password replaced by ``***`` (for logs)."""
    if not url:
        return str(url)
    parts = urlsplit(url)
    if parts.password is None:
        return url
    userinfo = f"{parts.username or ''}:***"
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{userinfo}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _require(data: dict, key: str, kind: type, where: str):
    if key not in data:
        raise ConfigError(f"{where}: missing key {key!r}")
    value = data[key]
    if not isinstance(value, kind):
        raise ConfigError(
            f"{where}: key {key!r} must be a {kind.__name__}, got {type(value).__name__}"
        )
    return value


def load_config(root: Path) -> BotConfig:
    path = root / "shared" / "config" / "bot.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: not a JSON object")
    where = str(path)

    family = _require(data, "family", str, where)
    if family not in FAMILIES:
        raise ConfigError(f"{where}: unknown family {family!r} (expected one of {', '.join(FAMILIES)})")
    ports = _require(data, "ports", dict, where)
    for port_name in FAMILY_PORTS[family]:
        port = ports.get(port_name)
        if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
            raise ConfigError(f"{where}: family {family} needs ports.{port_name} (an integer port)")
    ledger = data.get("ledger", "postgres")
    if ledger not in LEDGERS:
        raise ConfigError(f"{where}: ledger must be postgres or memory, got {ledger!r}")
    if ledger == "memory" and not data.get("database_url"):
        database_url = ""
    else:
        database_url = _require(data, "database_url", str, where)
        if not database_url.startswith(("postgresql://", "postgres://")):
            raise ConfigError(f"{where}: database_url must be a postgresql:// URL")
    redis_url = data.get("redis_url")
    if family in REDIS_FAMILIES and not redis_url:
        raise ConfigError(f"{where}: family {family} needs redis_url")
    execution_mode = data.get("execution_mode", "DRY")
    if execution_mode not in EXECUTION_MODES:
        raise ConfigError(f"{where}: execution_mode must be DRY or LIVE, got {execution_mode!r}")
    interval = data.get("trade_interval", 0.2)
    if not isinstance(interval, (int, float)) or isinstance(interval, bool) or interval <= 0:
        raise ConfigError(f"{where}: trade_interval must be a positive number of seconds")
    paper_only = bool(data.get("paper_only", False))
    paper_trading = bool(data.get("paper_trading", True))
    if paper_only and not paper_trading:
        raise ConfigError(f"{where}: paper_only bot configured with paper_trading false")

    return BotConfig(
        root=root,
        name=_require(data, "name", str, where),
        family=family,
        listen=data.get("listen", "127.0.0.1"),
        ports={k: int(v) for k, v in ports.items()},
        database_url=database_url,
        redis_url=redis_url or None,
        api_token=data.get("api_token") or None,
        trade_interval=float(interval),
        execution_mode=execution_mode,
        paper_trading=paper_trading,
        paper_only=paper_only,
        ledger=ledger,
    )


_REVISION_RE = re.compile(r"^revision\s*=\s*['\"]([^'\"]+)['\"]", re.MULTILINE)
_DOWN_RE = re.compile(r"^down_revision\s*=\s*(?:['\"]([^'\"]+)['\"]|None)", re.MULTILINE)


def revision_chain(versions_dir: Path) -> list[str]:
    """Alembic revision ids in ``versions_dir``, oldest first (linear history)."""
    parents: dict[str, str | None] = {}
    for path in sorted(versions_dir.glob("*.py")):
        text = path.read_text()
        rev, down = _REVISION_RE.search(text), _DOWN_RE.search(text)
        if rev:
            parents[rev.group(1)] = down.group(1) if down else None
    chain: list[str] = []
    children = {parent: rev for rev, parent in parents.items()}
    current = children.get(None)
    while current is not None and current not in chain:
        chain.append(current)
        current = children.get(current)
    return chain


def find_release_file(cwd: Path, package_dir: Path) -> Path:
    for candidate in (cwd / "release.json", package_dir.parent / "release.json"):
        if candidate.is_file():
            return candidate
    raise ConfigError(
        f"release.json not found in {cwd} or {package_dir.parent}: "
        "run the bot from an extracted release (cwd <bot_root>/current)"
    )


def load_release(cwd: Path, package_dir: Path) -> Release:
    path = find_release_file(cwd, package_dir)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    where = str(path)
    behaviour = data.get("behaviour") or {}
    qty_column = behaviour.get("qty_column", "qty")
    if qty_column not in ("qty", "quantity"):
        raise ConfigError(f"{where}: behaviour.qty_column must be qty or quantity")
    directory = path.parent
    return Release(
        name=data.get("name", "refbot"),
        version=_require(data, "version", str, where),
        alembic_head=_require(data, "alembic_head", str, where),
        migration=data.get("migration", "none"),
        description=data.get("description", ""),
        qty_column=qty_column,
        writes_fee=bool(behaviour.get("writes_fee", False)),
        broken=bool(behaviour.get("broken", False)),
        directory=directory,
        revisions=tuple(revision_chain(directory / "migrations" / "versions")),
    )
