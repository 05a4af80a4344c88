"""The bot process: wiring, operator actions, signals and graceful shutdown."""

from __future__ import annotations

import argparse
import json
import logging
import logging.handlers
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import psycopg
from psycopg.rows import dict_row

from . import context, families
from .config import BotConfig, ConfigError, Release, load_config, load_release, mask_url
from .health import HealthChecker
from .memory import MemoryTrader
from .server import JsonServer, bearer_authorizer
from .state import BotState, level_rank, utcnow_iso
from .trading import Trader, Tx, describe_error

log = logging.getLogger("refbot")

STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}
SHUTDOWN_TICK_TIMEOUT = 15.0
SHUTDOWN_FLATTEN_SECONDS = 5.0


class RedactingFormatter(logging.Formatter):
    """Formats like ``logging.Formatter`` and blanks every configured secret."""

    converter = time.gmtime

    def __init__(self, secrets: list[str], fmt: str = "%(asctime)s.%(msecs)03dZ %(levelname)s %(name)s: %(message)s"):
        super().__init__(fmt, "%Y-%m-%dT%H:%M:%S")
        self.secrets = [s for s in secrets if s]

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text


def setup_logging(cfg: BotConfig) -> None:
    cfg.log_path.parent.mkdir(parents=True, exist_ok=True)
    formatter = RedactingFormatter(cfg.secrets())
    file_handler = logging.handlers.WatchedFileHandler(cfg.log_path, encoding="utf-8")
    file_handler.setFormatter(formatter)
    # Problems also go to stderr, which the process manager keeps.
    stderr_handler = logging.StreamHandler(sys.stderr)
    stderr_handler.setLevel(logging.WARNING)
    stderr_handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [file_handler, stderr_handler]
    root.setLevel(logging.INFO)


class RoutingHandler(logging.Handler):
    """One process, many bots: a record goes to the ``bot.log`` of the bot its thread works for
    (``context.bind``); warnings and errors also go to the process's stderr, prefixed with the bot."""

    def __init__(self, files: dict[str, logging.Handler], stderr: logging.Handler):
        super().__init__()
        self.files = files
        self.stderr = stderr

    def emit(self, record: logging.LogRecord) -> None:
        name = context.current()
        handler = self.files.get(name)
        if handler is not None:
            handler.handle(record)
        if record.levelno >= logging.WARNING or handler is None:
            record.bot = name or "-"
            self.stderr.handle(record)


def setup_packed_logging(cfgs: list[BotConfig]) -> None:
    """Per-bot log files for a process that serves many bots (see RoutingHandler)."""
    files: dict[str, logging.Handler] = {}
    all_secrets: list[str] = []
    for cfg in cfgs:
        cfg.log_path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.handlers.WatchedFileHandler(cfg.log_path, encoding="utf-8")
        handler.setFormatter(RedactingFormatter(cfg.secrets()))
        files[cfg.name] = handler
        all_secrets += cfg.secrets()
    stderr_handler = logging.StreamHandler(sys.stderr)
    stderr_handler.setFormatter(RedactingFormatter(
        all_secrets, "%(asctime)s.%(msecs)03dZ %(levelname)s [%(bot)s] %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [RoutingHandler(files, stderr_handler)]
    root.setLevel(logging.INFO)


def make_redis(url: str):
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis.Redis.from_url(
        url, socket_connect_timeout=1, socket_timeout=1, decode_responses=True,
        retry=Retry(NoBackoff(), 1),
    )


def write_json_atomic(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2, sort_keys=True)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


class Bot:
    def __init__(self, cfg: BotConfig, release: Release, poll_interval: float = 0.2):
        self.cfg = cfg
        self.release = release
        self.poll_interval = poll_interval
        self.state = BotState(cfg.execution_mode, cfg.paper_trading)
        self.redis = make_redis(cfg.redis_url) if cfg.uses_redis and cfg.redis_url else None
        trader = MemoryTrader if cfg.memory_ledger else Trader
        self.trader = trader(cfg, release, self.state, self.redis)
        self.health = HealthChecker(cfg, release, self.state, self.redis)
        self.servers: list[JsonServer] = []

    @property
    def version(self) -> str:
        return self.release.version

    def view(self) -> dict:
        return self.state.view()

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        authorize = bearer_authorizer(self.cfg.api_token)
        for spec in families.BUILDERS[self.cfg.family](self):
            port = self.cfg.ports[spec.port_name]
            try:
                server = JsonServer(spec.port_name, self.cfg.listen, port, spec.routes,
                                    authorize=authorize, protect=spec.protect, owner=self.cfg.name,
                                    poll_interval=self.poll_interval)
            except OSError as exc:
                self.stop_servers()
                raise OSError(f"cannot listen on {self.cfg.listen}:{port} ({spec.port_name}): {exc.strerror}") from exc
            self.servers.append(server)
        for server in self.servers:
            server.start()
        log.info("listening: %s", ", ".join(
            f"{s.label} on {s.address[0]}:{s.address[1]}" for s in self.servers))
        if self.cfg.family == "hyperliquid" and not self.cfg.api_token:
            log.warning("no api_token configured: every protected route answers 401")
        self.trader.start()

    def stop_servers(self) -> None:
        for server in self.servers:
            server.stop()
        self.servers = []

    def shutdown(self, signum: int) -> dict:
        """Finish the in-flight tick, (mojorust) flatten, record last_shutdown.json."""
        name = signal.Signals(signum).name
        log.info("received %s: finishing the in-flight tick, then shutting down", name)
        errors: list[str] = []
        if not self.trader.stop(SHUTDOWN_TICK_TIMEOUT):
            errors.append(f"trading loop did not stop within {SHUTDOWN_TICK_TIMEOUT:.0f}s")
            log.error("shutdown: %s", errors[-1])
        self.state.shutting_down = True
        if self.cfg.family == "mojorust" and not errors:
            self.state.engage("shutdown", "flatten", f"{name}: closing positions before exit")
            try:
                result = self.trader.run_final(
                    self._flatten, deadline=time.monotonic() + SHUTDOWN_FLATTEN_SECONDS)
                log.info("shutdown: closed %d open positions and cancelled %d open orders",
                         result["closed_positions"], result["cancelled_orders"])
            except Exception as exc:  # noqa: BLE001 - recorded in last_shutdown.json
                errors.append(f"could not close open positions: {describe_error(exc)}")
                log.error("shutdown: %s", errors[-1])
        self.trader.close()
        view = self.state.view()
        record = {
            "reason": "graceful_shutdown",
            "signal": name,
            "at": utcnow_iso(),
            "name": self.cfg.name,
            "family": self.cfg.family,
            "version": self.version,
            "last_trade_id": view["last_trade_id"],
            "open_positions": view["open_positions"],
            "open_orders": view["open_orders"],
            "portfolio_value": view["portfolio_value"],
            "execution_mode": view["execution_mode"],
            "paper_trading": view["paper_trading"],
            "clean": not errors,
            "errors": errors,
        }
        path = self.cfg.data_dir / "last_shutdown.json"
        write_json_atomic(path, record)
        self.stop_servers()
        if self.redis is not None:
            self.redis.close()
        log.info("shutdown complete: wrote %s (last_trade_id=%d, open_positions=%d, portfolio_value=%.2f)",
                 path, record["last_trade_id"], record["open_positions"], record["portfolio_value"])
        return record

    # --- operator actions (called from HTTP threads) ---------------------------------------

    def _flatten(self, tx: Tx) -> dict:
        cancelled = self.trader.cancel_orders(tx, self.trader.open_orders(tx))
        closed = self.trader.close_positions(tx, self.trader.open_positions(tx))
        return {"cancelled_orders": cancelled, "closed_positions": closed}

    def engage_kill(self, source: str, level: str, reason: str, persist: bool = False) -> dict:
        """Engage a kill flag at once in memory, then have the writer apply it.

        ``applied`` is False when the writer could not confirm (database down): the flag
        stays engaged in memory, so no new entry is made either way.
        """
        if self.state.engage(source, level, reason):
            log.warning("kill switch: %s engaged by %s (%s); effective level %s",
                        level, source, reason, self.state.kill_level())
        flag = self.state.flag(source)

        def apply(tx: Tx) -> dict:
            if persist and flag is not None:
                self.trader.persist_state(tx.cur, "kill_switch",
                                     {"level": flag.level, "reason": flag.reason, "since": flag.since})
            effective = self.state.kill_level()
            out = {"cancelled_orders": 0, "closed_positions": 0}
            if level_rank(effective) >= level_rank("halt"):
                out["cancelled_orders"] = self.trader.cancel_orders(tx, self.trader.open_orders(tx))
            if effective == "flatten":
                out["closed_positions"] = self.trader.close_positions(tx, self.trader.open_positions(tx))
            return out

        result = {"success": True, "applied": True, "kill_switch": self.state.kill_level(), "reason": reason}
        try:
            result.update(self.trader.call(apply))
        except Exception as exc:  # noqa: BLE001 - reported to the operator
            result.update(success=False, applied=False, error=describe_error(exc))
            log.error("kill switch: %s engaged in memory but not applied: %s", source, result["error"])
        else:
            if result["cancelled_orders"] or result["closed_positions"]:
                log.warning("kill switch: cancelled %d open orders, closed %d positions",
                            result["cancelled_orders"], result["closed_positions"])
        return result

    def release_kill(self, source: str, persist: bool = False) -> dict:
        """Release a kill flag; a persisted one is released in the database first."""
        if persist:
            def apply(tx: Tx) -> dict:
                self.trader.persist_state(tx.cur, "kill_switch", {"level": "none", "reason": "", "since": utcnow_iso()})
                return {}

            try:
                self.trader.call(apply)
            except Exception as exc:  # noqa: BLE001 - reported to the operator
                error = describe_error(exc)
                log.error("kill switch: could not release %s: %s", source, error)
                return {"success": False, "applied": False, "error": error,
                        "kill_switch": self.state.kill_level()}
        if self.state.release(source):
            log.warning("kill switch: %s released; effective level %s", source, self.state.kill_level())
        return {"success": True, "applied": True, "kill_switch": self.state.kill_level()}

    def cancel_open_orders(self, why: str) -> int:
        n = self.trader.call(lambda tx: {"n": self.trader.cancel_orders(tx, self.trader.open_orders(tx))})["n"]
        log.warning("%s: cancelled %d open orders", why, n)
        return n

    def close_all_positions(self, why: str) -> int:
        n = self.trader.call(lambda tx: {"n": self.trader.close_positions(tx, self.trader.open_positions(tx))})["n"]
        log.warning("%s: closed %d open positions", why, n)
        return n

    def set_paper_trading(self, enabled: bool) -> dict:
        if not enabled and self.cfg.paper_only:
            raise ValueError("paper-only bot")
        self.trader.call(lambda tx: self.trader.persist_state(tx.cur, "paper_trading", enabled) or {})
        before = self.state.paper_trading
        self.state.set_mode(self.state.execution_mode, enabled)
        if before != enabled:
            log.warning("paper trading %s via API", "enabled" if enabled else "DISABLED")
        return {"paperTradingMode": enabled}

    def read(self, query, params: tuple = ()) -> list[dict]:
        """A read-only query on a short-lived connection (never the writer's)."""
        with psycopg.connect(self.cfg.database_url, autocommit=True, connect_timeout=2,
                             application_name=f"refbot:{self.cfg.name}:api",
                             options="-c statement_timeout=5000 -c default_transaction_read_only=on",
                             row_factory=dict_row) as conn:
            return conn.execute(query, params).fetchall()


def _wait_for_stop_signal(bot: Bot) -> int | None:
    """Block until SIGTERM/SIGINT; None if the trading loop died instead."""
    while True:
        info = signal.sigtimedwait(STOP_SIGNALS, 0.5)
        # After SIGSTOP/SIGCONT the wait can return without one of our signals: ignore it.
        if info is not None and info.si_signo in {int(s) for s in STOP_SIGNALS}:
            return info.si_signo
        if not bot.trader.alive():
            return None


def _log_start(cfg: BotConfig, release: Release) -> None:
    log.info("starting refbot %s for bot %s (family %s), pid %d",
             release.version, cfg.name, cfg.family, os.getpid())
    log.info("release %s: alembic head %s, migration %s; trades column %s, writes fee: %s%s",
             release.version, release.alembic_head, release.migration, release.qty_column,
             str(release.writes_fee).lower(), "; BROKEN build" if release.broken else "")
    database = "in-memory ledger" if cfg.memory_ledger else mask_url(cfg.database_url)
    log.info("database %s; redis %s; trade interval %.3fs; execution mode at first start %s, paper %s",
             database, mask_url(cfg.redis_url) if cfg.redis_url else "none",
             cfg.trade_interval, cfg.execution_mode, str(cfg.paper_trading).lower())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="refbot", description="Reference trading bot (paper trading).")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--root", type=Path,
                       help="bot root holding shared/config/bot.json (cwd: <root>/current)")
    where.add_argument("--roots", type=Path, nargs="+", metavar="ROOT",
                       help="serve several bots from this one process, one root each")
    where.add_argument("--fleet-file", type=Path,
                       help='serve the bots of a JSON file {"roots": [...]} from this one process')
    args = parser.parse_args(argv)
    # Signals are taken synchronously by the main thread (sigtimedwait): block them before
    # any thread starts so that every thread inherits the mask. A SIGTERM arriving during
    # start-up stays pending and leads to a graceful shutdown once running.
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    if args.root is not None:
        return run_bot(args.root.absolute())
    roots = args.roots
    if args.fleet_file is not None:
        try:
            roots = [Path(r) for r in json.loads(args.fleet_file.read_text())["roots"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            print(f"refbot: cannot read the fleet file {args.fleet_file}: {exc}", file=sys.stderr)
            return 2
    return run_bots([r.absolute() for r in roots])


def run_bot(root: Path) -> int:
    """One bot, this process: ``python -m refbot --root <bot_root>``."""
    try:
        cfg = load_config(root)
    except ConfigError as exc:
        print(f"refbot: configuration error: {exc}", file=sys.stderr)
        return 2
    setup_logging(cfg)
    try:
        release = load_release(Path.cwd(), Path(__file__).resolve().parent)
    except ConfigError as exc:
        log.error("cannot start: %s", exc)
        return 2

    _log_start(cfg, release)
    bot = Bot(cfg, release)
    try:
        bot.start()
    except OSError as exc:
        log.error("cannot start: %s", exc)
        return 1

    signum = _wait_for_stop_signal(bot)
    if signum is None:
        log.critical("trading loop died unexpectedly: exiting so the process manager restarts the bot")
        bot.stop_servers()
        return 1
    bot.shutdown(signum)
    return 0


PACKED_POLL_INTERVAL = 0.5


def run_bots(roots: list[Path]) -> int:
    """Many bots, this one process: each with its own ports, state, kill switches, writer and bot.log.

    Every bot behaves as it would alone; what they share is the process (its signals, its exit
    code and so its process manager's program). A bot's release is the one its own ``current``
    points at (the code running is this process's). SIGTERM shuts every bot down gracefully, all
    at once; if one bot's trading loop dies, the others are shut down gracefully and the process
    exits 1, as a single bot would, so that the process manager restarts them all.
    """
    package_dir = Path(__file__).resolve().parent
    cfgs: list[BotConfig] = []
    for root in roots:
        try:
            cfgs.append(load_config(root))
        except ConfigError as exc:
            print(f"refbot: configuration error: {exc}", file=sys.stderr)
            return 2
    names = [c.name for c in cfgs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        print(f"refbot: bots given twice: {', '.join(twice)}", file=sys.stderr)
        return 2
    setup_packed_logging(cfgs)
    bots: list[Bot] = []
    for cfg in cfgs:
        context.bind(cfg.name)
        current = cfg.root / "current"
        try:
            release = load_release(current if current.is_dir() else Path.cwd(), package_dir)
        except ConfigError as exc:
            log.error("cannot start: %s", exc)
            return 2
        _log_start(cfg, release)
        bots.append(Bot(cfg, release, poll_interval=PACKED_POLL_INTERVAL))
    started: list[Bot] = []
    for bot in bots:
        context.bind(bot.cfg.name)
        try:
            bot.start()
        except OSError as exc:
            log.error("cannot start: %s", exc)
            _shutdown_all(started, signal.SIGTERM)
            return 1
        started.append(bot)
    context.bind(None)
    log.info("serving %d bots from pid %d", len(bots), os.getpid())

    while True:
        info = signal.sigtimedwait(STOP_SIGNALS, 0.5)
        if info is not None and info.si_signo in {int(s) for s in STOP_SIGNALS}:
            _shutdown_all(bots, info.si_signo)
            return 0
        dead = [b for b in bots if not b.trader.alive()]
        if dead:
            for bot in dead:
                context.bind(bot.cfg.name)
                log.critical("trading loop died unexpectedly: exiting so the process manager restarts the bot "
                             "(and the %d other bots of this process)", len(bots) - 1)
                bot.stop_servers()
            _shutdown_all([b for b in bots if b not in dead], signal.SIGTERM)
            return 1


def _shutdown_all(bots: list[Bot], signum: int) -> None:
    """Shut every bot down gracefully at the same time (each one as ``Bot.shutdown``)."""
    def one(bot: Bot) -> None:
        context.bind(bot.cfg.name)
        try:
            bot.shutdown(signum)
        except Exception:  # noqa: BLE001 - one bot's failure must not keep the others running
            log.exception("shutdown failed")

    threads = [threading.Thread(target=one, args=(b,), name=f"shutdown-{b.cfg.name}") for b in bots]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
