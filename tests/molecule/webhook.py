"""A webhook receiver for molecule verify playbooks: capture one POST, then exit.

    python tests/molecule/webhook.py PORT_FILE OUT_FILE [--timeout SECONDS]

Listens on 127.0.0.1 on a free port and writes the port to PORT_FILE once it listens. The first
POST is answered 200 ``{"ok": true}`` and written to OUT_FILE as ``{"path", "headers", "body"}``
(``body`` parsed as JSON when it is JSON); then the receiver exits 0. Without a POST within the
timeout it exits 1. Both files are written atomically, so a reader never sees half of one.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("port_file", type=Path, help="file to write the listening port to")
    parser.add_argument("out_file", type=Path, help="file to write the captured request to")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the POST")
    args = parser.parse_args(argv)
    captured: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's naming)
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode(errors="replace")
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw
            captured.append({"path": self.path, "headers": dict(self.headers.items()), "body": body})
            answer = b'{"ok": true}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format, *args):  # noqa: A002 (quiet: the capture is the record)
            pass

    with HTTPServer(("127.0.0.1", 0), Handler) as server:
        server.timeout = args.timeout
        write_atomically(args.port_file, f"{server.server_address[1]}\n")
        server.handle_request()  # one request, or none within the timeout
    if not captured:
        print(f"no POST within {args.timeout:.0f}s", file=sys.stderr)
        return 1
    write_atomically(args.out_file, json.dumps(captured[0], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
