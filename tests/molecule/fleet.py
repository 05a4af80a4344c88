"""The instance of a role's molecule scenario: a real one-bot sandbox fleet.

    python tests/molecule/fleet.py up INVENTORY FAMILY   # bring up bot01 of FAMILY
    python tests/molecule/fleet.py down INVENTORY        # bring it down, purge it

``up`` brings up a fleet of one bot (PostgreSQL, supervisord, Redis when the family needs it) in a
fresh directory under /tmp, in a free port block, and writes INVENTORY: the fleet's generated
inventory with the bot's secrets merged into its host entry (0600). Placed in molecule's inventory
directory, it gives the scenario's instance ``bot01`` the same variables a playbook run on the
sandbox sees (``bot_family``, ``bot_root``, ``ansible_connection: local``, ``botops_sandbox_dir`` ...).
INVENTORY is also the record of the fleet: a second ``up`` reuses its directory, ``down`` finds the
directory there, brings the fleet down, purges it and removes INVENTORY. Both are idempotent.

Each prints one JSON object: ``changed``, ``dir``, ``bots`` and fleet's ``summary``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from botops.sandbox.fleet import FAMILY_NAMES, Fleet, FleetError, write_file  # noqa: E402
from tests.integration.conftest import make_sandbox_dir, port_block  # noqa: E402

# bot port blocks are searched from here (the shared integration fleet starts at 28000)
BASE_PORT = int(os.environ.get("BOTOPS_MOLECULE_BASE_PORT", "29000"))
TRADE_INTERVAL = 0.1


def fleet_of(workdir: Path) -> Fleet:
    return Fleet(workdir / "state", workdir / "inventory")


def recorded_dir(inventory: Path) -> Path | None:
    """The fleet directory INVENTORY records (its ``botops_sandbox_dir`` is ``<dir>/state``)."""
    try:
        data = yaml.safe_load(inventory.read_text())
    except FileNotFoundError:
        return None
    return Path(data["sandbox"]["vars"]["botops_sandbox_dir"]).parent


def instance_inventory(fleet: Fleet) -> str:
    """The fleet's hosts.yml with each bot's host_vars/<bot>/secrets.yml merged into its host entry."""
    data = yaml.safe_load(fleet.hosts_file.read_text())
    for group in data["sandbox"]["children"].values():
        for name, host_vars in (group or {}).get("hosts", {}).items():
            secrets = fleet.inventory_dir / "host_vars" / name / "secrets.yml"
            host_vars.update(yaml.safe_load(secrets.read_text()) or {})
    return ("# Written by tests/molecule/fleet.py: the molecule instance's one-bot sandbox fleet, "
            "secrets included.\n" + yaml.safe_dump(data, default_flow_style=False, sort_keys=False))


def up(inventory: Path, family: str) -> dict:
    workdir = recorded_dir(inventory)
    fresh = workdir is None
    if fresh:
        workdir = make_sandbox_dir("botops-molecule-")
    fleet = None
    try:
        if fresh:
            with port_block(1, BASE_PORT) as base:
                fleet = Fleet(workdir / "state", workdir / "inventory", base_port=base)
                report = fleet.up(bots=1, families=[family], trade_interval=TRADE_INTERVAL)
        else:
            fleet = fleet_of(workdir)
            report = fleet.up(bots=1, families=[family])
        fleet.wait_ready(timeout=60)
        inventory.parent.mkdir(parents=True, exist_ok=True)
        wrote = write_file(inventory, instance_inventory(fleet), 0o600)
    except BaseException:
        if fresh:  # leave nothing behind: the next up starts over
            if fleet is not None:
                fleet.down(purge=True)
            shutil.rmtree(workdir, ignore_errors=True)
        raise
    return {"changed": report["changed"] or wrote, "dir": str(workdir), "bots": report["bots"],
            "summary": report["summary"]}


def down(inventory: Path) -> dict:
    workdir = recorded_dir(inventory)
    if workdir is None:
        return {"changed": False, "dir": None, "bots": [], "summary": f"no fleet recorded in {inventory}"}
    report = fleet_of(workdir).down(purge=True)
    shutil.rmtree(workdir, ignore_errors=True)
    inventory.unlink()
    return {"changed": True, "dir": str(workdir), "bots": [],
            "summary": "fleet stopped and purged" if report["was_up"] else "fleet was not running: purged"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", help="bring up a one-bot fleet and write INVENTORY")
    p_up.add_argument("inventory", type=Path, help="inventory file to write (molecule's inventory directory)")
    p_up.add_argument("family", choices=FAMILY_NAMES, help="the bot's family")
    p_down = sub.add_parser("down", help="bring the fleet INVENTORY records down, purge it, remove INVENTORY")
    p_down.add_argument("inventory", type=Path)
    args = parser.parse_args(argv)
    try:
        result = up(args.inventory, args.family) if args.command == "up" else down(args.inventory)
    except FleetError as exc:
        print(json.dumps({"changed": False, "failed": True, "msg": str(exc)}))
        print(exc, file=sys.stderr)
        return exc.exit_code
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
