"""`botops maintenance` input checks and the window check, which decide before anything runs."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
import yaml
from invoke import Context, Exit

from botops import maintenance, maintenance_windows
from botops.runner import PlaybookRun

OUTSIDE = "2026-11-24T12:00:00Z"  # Tuesday noon


@pytest.fixture
def inventory(tmp_path):
    """bot01 family as a host var, bot04 from an inventory group var, bot05 from group_vars/, bot09 unknown."""
    data = {"all": {"children": {
        "mojorust": {"hosts": {"bot01": {"bot_family": "mojorust"}}},
        "hyperliquid": {"hosts": {"bot04": {}}, "vars": {"bot_family": "hyperliquid"}},
        "vanta": {"hosts": {"bot05": {}}},
        "misc": {"hosts": {"bot09": {}}},
    }}}
    (tmp_path / "hosts.yml").write_text(yaml.safe_dump(data))
    (tmp_path / "group_vars" / "vanta").mkdir(parents=True)
    (tmp_path / "group_vars" / "vanta" / "main.yml").write_text("bot_family: vanta\n")
    return tmp_path / "hosts.yml"


@pytest.fixture
def no_run(monkeypatch):
    """Fail the test if a playbook would run."""
    def refuse(self):
        raise AssertionError(f"a playbook ran: {self.playbook}")
    monkeypatch.setattr(PlaybookRun, "run", refuse)


def test_families_come_from_host_group_and_group_vars(inventory):
    found = maintenance.bot_families(str(inventory), ["bot01", "bot04", "bot05", "bot09"])
    assert found == {"bot01": "mojorust", "bot04": "hyperliquid", "bot05": "vanta", "bot09": None}


def run(inventory, **kw):
    with pytest.raises(Exit) as info:
        maintenance.maintenance(Context(), inventory=str(inventory), **kw)
    return info.value


def test_outside_the_window_refused_with_when_it_opens(inventory, no_run):
    refused = run(inventory, window="weekly", limit="bot01,bot04", now=OUTSIDE)
    assert refused.code == 2
    text = str(refused.message)
    assert "the weekly maintenance window is closed for every targeted bot at 2026-11-24 12:00 UTC" in text
    assert "mojorust (bot01): every Sunday at 03:00 UTC for 1h; next opens Sun 2026-11-29 03:00 UTC" in text
    assert "hyperliquid (bot04): every Monday at 03:00 UTC for 1h; next opens Mon 2026-11-30 03:00 UTC" in text
    assert "--force" in text


def test_bots_of_unknown_family_count_every_family(inventory, no_run):
    refused = run(inventory, window="daily", limit="bot09", now="2026-11-24T12:00:00Z")
    assert refused.code == 2 and "papertrader" in str(refused.message)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({}, "--window is required (expected one of: daily, weekly, monthly)"),
        ({"window": "hourly"}, "unknown maintenance window 'hourly' (expected one of: daily, weekly, monthly)"),
        ({"window": "weekly", "serial": "0"}, "--serial '0' must be a number of bots or a percentage"),
        ({"window": "weekly", "tasks": "backup,defrag"}, "unknown task 'defrag'"),
        ({"window": "weekly", "tasks": "graceful_stop,backup"}, "graceful_stop needs restart"),
        ({"window": "weekly", "now": "soon"}, "--now 'soon' is not an ISO 8601 instant"),
        ({"window": "weekly", "limit": "bot42"}, "--limit 'bot42' names what is no bot or group"),
        ({"window": "weekly", "limit": "bot01;rm"}, "is not a valid host pattern"),
    ],
)
def test_bad_input_is_refused_before_anything_runs(inventory, no_run, kwargs, message):
    refused = run(inventory, **kwargs)
    assert refused.code == 2 and message in str(refused.message), refused.message


def test_window_status_per_family():
    loaded = maintenance_windows.load()
    now = datetime(2026, 11, 22, 3, 10, tzinfo=timezone.utc)  # a Sunday
    plans = maintenance.window_status(loaded["weekly"], {"bot01": "mojorust", "bot02": "papertrader"}, now)
    assert plans["mojorust"]["open"] and not plans["papertrader"]["open"]
    assert plans["papertrader"]["next_open"] == "2026-11-29T02:00:00+00:00"
