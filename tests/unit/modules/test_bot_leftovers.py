"""bot_leftovers_info lists what a crashed run left and changes nothing; bot_leftovers removes the
debris (scratch databases, unfinished sets, half-installed releases), check mode first, and is
idempotent; other runs' pauses are only listed."""

from __future__ import annotations

import json
import os

import pytest

from ansible_collections.botops.fleet.plugins.modules import bot_leftovers, bot_leftovers_info

from .fake_bot import api_profile, fake, fakes  # noqa: F401  (fixtures)
from .utils import run_module

RUN = "run-recover"
DEAD_RUN = "run-dead"


def sqlite_profile():
    profile = api_profile()
    profile["database"] = {"engine": "sqlite", "path": "data/bot.db"}
    return profile


@pytest.fixture
def crashed(fake):
    """A bot a killed run left: its pause, a scratch copy of the database, an unfinished backup set, a
    half-installed release; and the calling run's own pause, which is not a leftover."""
    root = fake.root
    os.makedirs(os.path.join(root, "data"))
    for name in ("bot.db", "bot.db.restore-20240101T000000Z"):
        with open(os.path.join(root, "data", name), "wb"):
            pass
    os.makedirs(os.path.join(root, "backups", ".tmp-20240101T000000Z"))
    os.makedirs(os.path.join(root, "releases", ".install-1.1.0-x"))
    os.makedirs(os.path.join(root, "shared", "data"))
    record = {"operations": {DEAD_RUN: {"level": "pause", "reason": "deploy", "who": "ops", "time": "2024-01-01T00:00:00Z"},
                             RUN: {"level": "pause", "reason": "recover", "who": "ops", "time": "2024-01-01T00:05:00Z"}}}
    with open(os.path.join(root, "shared", "data", "botops-kill-switch.json"), "w") as f:
        json.dump(record, f)
    return fake


def debris(root):
    return [os.path.join(root, "data", "bot.db.restore-20240101T000000Z"),
            os.path.join(root, "backups", ".tmp-20240101T000000Z"),
            os.path.join(root, "releases", ".install-1.1.0-x")]


def call(module, fake, check_mode=False, **options):
    return run_module(module.main, fake.args(profile=sqlite_profile(), run_id=RUN, **options), check_mode=check_mode)


def test_info_lists_the_leftovers_and_changes_nothing(crashed):
    res = call(bot_leftovers_info, crashed)
    assert not res.get("failed"), res["msg"]
    assert res["changed"] is False and "actions" not in res
    assert [p["run_id"] for p in res["pauses"]] == [DEAD_RUN], "the calling run's own pause is not a leftover"
    assert res["scratch_databases"] == [debris(crashed.root)[0]]
    assert res["temporary_sets"] == [debris(crashed.root)[1]] and res["installs"] == [debris(crashed.root)[2]]
    assert res["found"][0].startswith(f"pause of run {DEAD_RUN} (deploy")
    assert all(os.path.exists(path) for path in debris(crashed.root))


def test_removal_check_mode_first_then_removes_then_nothing_left(crashed):
    check = call(bot_leftovers, crashed, check_mode=True)
    assert check["changed"] and [a.split(" ", 2)[:2] for a in check["actions"]] == [["would", "remove"]] * 3
    assert all(os.path.exists(path) for path in debris(crashed.root))

    res = call(bot_leftovers, crashed)
    assert not res.get("failed"), res["msg"]
    assert res["changed"] and res["actions"][0] == f"removed scratch database {debris(crashed.root)[0]}"
    assert not any(os.path.exists(path) for path in debris(crashed.root))
    assert os.path.exists(os.path.join(crashed.root, "data", "bot.db")), "the live database is never debris"
    assert [p["run_id"] for p in res["pauses"]] == [DEAD_RUN], "pauses are listed, not released"

    again = call(bot_leftovers, crashed)
    assert again["changed"] is False and again["actions"] == []


def test_listing_is_not_a_state_of_bot_leftovers(crashed):
    res = call(bot_leftovers, crashed, state="list")
    assert res["failed"] and all(os.path.exists(path) for path in debris(crashed.root))
