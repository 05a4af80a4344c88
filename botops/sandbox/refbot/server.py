"""JSON over HTTP with the standard library: routing, bearer auth, one server per port."""

from __future__ import annotations

import hmac
import json
import logging
import threading
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable
from urllib.parse import parse_qs, urlsplit

from . import context

log = logging.getLogger("refbot.http")

MAX_BODY = 64 * 1024


class HttpError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict:
        """The JSON object body; an empty body is ``{}``."""
        if not self.body.strip():
            return {}
        try:
            data = json.loads(self.body)
        except ValueError as exc:
            raise HttpError(400, f"body is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise HttpError(400, "body must be a JSON object")
        return data

    def query_int(self, name: str, default: int, lo: int, hi: int) -> int:
        raw = self.query.get(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise HttpError(400, f"query parameter {name} must be an integer") from None
        return max(lo, min(hi, value))


Handler = Callable[[Request], tuple[int, dict | list]]
Routes = dict[tuple[str, str], Handler]


def bearer_authorizer(token: str | None) -> Callable[[Request], bool]:
    """Accept ``Authorization: Bearer <token>``; with no token configured, accept nothing."""
    expected = f"Bearer {token}".encode() if token else None

    def authorize(request: Request) -> bool:
        if expected is None:
            return False
        given = request.headers.get("authorization", "").strip().encode()
        return hmac.compare_digest(given, expected)

    return authorize


def _json_default(value):
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def encode(body) -> bytes:
    return (json.dumps(body, default=_json_default, separators=(",", ":")) + "\n").encode()


def _make_handler(label: str, routes: Routes, authorize: Callable[[Request], bool] | None,
                  protect: Callable[[Request], bool]):
    paths = {path for _method, path in routes}

    class JsonHandler(BaseHTTPRequestHandler):
        server_version = "refbot"
        sys_version = ""

        def _dispatch(self) -> None:
            parts = urlsplit(self.path)
            path = parts.path.rstrip("/") or "/"
            try:
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_BODY:
                    raise HttpError(413, "request body too large")
                body = self.rfile.read(length) if length > 0 else b""
                request = Request(
                    method=self.command,
                    path=path,
                    query={k: v[-1] for k, v in parse_qs(parts.query).items()},
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=body,
                )
                handler = routes.get((self.command, path))
                if handler is None:
                    if path in paths:
                        raise HttpError(405, f"method {self.command} not allowed on {path}")
                    raise HttpError(404, f"no route {path}")
                if protect(request) and (authorize is None or not authorize(request)):
                    self._send(401, {"detail": "Not authenticated"}, {"WWW-Authenticate": "Bearer"})
                    return
                status, payload = handler(request)
            except HttpError as exc:
                status, payload = exc.status, {"error": exc.message}
            except ValueError:
                status, payload = 400, {"error": "bad request"}
            except Exception:  # noqa: BLE001 - one failing request must not hurt the server
                log.exception("%s: unhandled error on %s %s", label, self.command, path)
                status, payload = 500, {"error": "internal error"}
            self._send(status, payload)

        def _send(self, status: int, payload, headers: dict[str, str] | None = None) -> None:
            data = encode(payload)
            try:
                self.send_response(status, HTTPStatus(status).phrase)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Cache-Control", "no-store")
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _dispatch

        def log_message(self, format, *args):  # noqa: A002 - stdlib signature
            # No per-request lines in bot.log: only significant events are logged.
            pass

    return JsonHandler


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64
    owner: str | None = None  # the bot this server answers for (its request threads log as that bot)

    def process_request_thread(self, request, client_address):
        context.bind(self.owner)
        super().process_request_thread(request, client_address)


class JsonServer:
    """One listening socket, served by its own thread."""

    def __init__(self, label: str, host: str, port: int, routes: Routes,
                 authorize: Callable[[Request], bool] | None = None,
                 protect: Callable[[Request], bool] = lambda request: False,
                 owner: str | None = None, poll_interval: float = 0.2):
        self.label = label
        self.address = (host, port)
        self.poll_interval = poll_interval
        self._httpd = _Server(self.address, _make_handler(label, routes, authorize, protect))
        self._httpd.owner = owner
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": self.poll_interval},
            name=f"http-{self.label}", daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(5)
        self._httpd.server_close()
