"""The fleet lock is the targeted bots', not the inventory path's: any spelling of one inventory, and
another inventory naming the same bots, take the same lock (real inventories, real lock files)."""

from __future__ import annotations

import os

import pytest
from invoke import Exit

from botops import fleet_task
from botops.inventory import identities

INVENTORY = """all:
  hosts:
    bot01: {{ansible_connection: local, bot_family: mojorust, bot_root: {root}/bot01}}
    bot02: {{ansible_connection: local, bot_family: vanta, bot_root: {root}/bot02/}}
    far01: {{ansible_host: 10.0.0.7, bot_family: vanta, bot_root: /srv/bots/far01}}
"""

OTHER = """all:
  hosts:
    mojo-a: {{ansible_connection: local, bot_family: mojorust, bot_root: {root}/./bot01}}
"""


@pytest.fixture
def fleet(tmp_path, monkeypatch):
    monkeypatch.setenv("BOTOPS_LOCK_DIR", str(tmp_path / "locks"))
    directory = tmp_path / "inventory"
    directory.mkdir()
    (directory / "hosts.yml").write_text(INVENTORY.format(root=tmp_path))
    other = tmp_path / "other.yml"
    other.write_text(OTHER.format(root=tmp_path))
    return directory, other, tmp_path


def test_every_spelling_of_an_inventory_names_the_same_bots(fleet):
    directory, other, root = fleet
    by_dir = identities(directory, ["bot01", "bot02", "far01"])
    by_file = identities(directory / "hosts.yml", ["bot01", "bot02", "far01"])
    assert by_dir == by_file == {"bot01": f"localhost:{root}/bot01", "bot02": f"localhost:{root}/bot02",
                                 "far01": "10.0.0.7:/srv/bots/far01"}
    assert identities(other, ["mojo-a"]) == {"mojo-a": f"localhost:{root}/bot01"}


def test_a_second_run_on_overlapping_bots_is_refused_whatever_inventory_it_names(fleet):
    directory, other, _ = fleet
    locks = fleet_task.locks
    first = fleet_task.acquire_fleet_lock(locks, "deploy", identities(directory / "hosts.yml", ["bot01", "bot02"]),
                                         "run-1", takeover=False)
    assert len(first) == 2 and all(p.exists() for p in first)
    for inventory, names in ((directory, ["bot02"]), (other, ["mojo-a"])):
        with pytest.raises(Exit) as refused:
            fleet_task.acquire_fleet_lock(locks, "restart", identities(inventory, names), "run-2", takeover=False)
        assert refused.value.code == 2
        assert "refused, the fleet lock of" in refused.value.message and "held by run run-1" in refused.value.message
    # a bot the first run does not target is free; a refused run leaves no lock of its own behind
    taken = fleet_task.acquire_fleet_lock(locks, "restart", identities(directory, ["far01"]), "run-3", takeover=False)
    assert len(taken) == 1
    held = sorted(os.listdir(os.environ["BOTOPS_LOCK_DIR"]))
    assert len(held) == 3, held
    for path in first:
        locks.release(str(path), "run-1")
    again = fleet_task.acquire_fleet_lock(locks, "restart", identities(other, ["mojo-a"]), "run-2", takeover=False)
    assert len(again) == 1
