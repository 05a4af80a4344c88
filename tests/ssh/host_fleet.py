"""The bots of one SSH test host, run by that host's unprivileged bot user.

    python host_fleet.py up STATE_DIR BASE_PORT FAMILY LISTEN   -> prints the bot's facts as JSON
    python host_fleet.py down STATE_DIR

``up`` brings up a one-bot sandbox fleet (its own PostgreSQL, Redis, supervisord: everything the
bot needs on its host, all owned by this user) and makes the bot listen on the host's own address,
the way a production bot's API is reached at its host's address. It runs with the hosts' Python
(a virtualenv of the system interpreter, like a bot's virtualenv on a production host).
"""

from __future__ import annotations

import json
import sys
import tarfile
import time
import urllib.request
from pathlib import Path

if not hasattr(tarfile, "data_filter"):  # Python < 3.11.4 (Debian 12's 3.11.2): no extraction filters
    _extractall = tarfile.TarFile.extractall

    def _extractall_without_filter(self, path=".", members=None, *, numeric_owner=False, filter=None):
        return _extractall(self, path, members, numeric_owner=numeric_owner)  # our own artifacts only

    tarfile.TarFile.extractall = _extractall_without_filter

from botops.sandbox.fleet import FAMILIES, Fleet  # noqa: E402

BOT = "bot01"


def ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as answer:
            return answer.status == 200
    except OSError:
        return False


def up(state_dir: str, base_port: str, family: str, listen: str) -> dict:
    fleet = Fleet(state_dir, Path(state_dir).parent / "inventory", base_port=int(base_port))
    fleet.up(bots=1, families=family, trade_interval=0.1)
    bot = fleet.bot(BOT)
    config = json.loads(bot["config_path"].read_text())
    if config["listen"] != listen:
        config["listen"] = listen
        bot["config_path"].write_text(json.dumps(config, indent=2) + "\n")
        fleet.supervisorctl("restart", BOT, check=True)
    port_name, path = FAMILIES[family].readiness
    url = f"http://{listen}:{bot['ports'][port_name]}{path}"
    deadline = time.monotonic() + 60
    while not ready(url):
        if time.monotonic() > deadline:
            raise SystemExit(f"{BOT} is not ready at {url} after 60 s")
        time.sleep(0.1)
    return {
        "name": BOT,
        "root": str(bot["root"]),
        "ports": bot["ports"],
        "database": bot["database"],
        "redis_url": bot["redis_url"],
        "api_token": bot["api_token"],
        "paper_only": bot["paper_only"],
        "supervisor_conf": str(fleet.supervisor_conf),
        "supervisorctl": str(fleet.bindir / "supervisorctl"),
        "artifacts": str(fleet.artifacts_dir),
    }


def down(state_dir: str) -> None:
    Fleet(state_dir, Path(state_dir).parent / "inventory").down(purge=True)


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    if command == "up":
        print(json.dumps(up(*args)))
    elif command == "down":
        down(*args)
    else:
        raise SystemExit(f"unknown command {command!r}")
