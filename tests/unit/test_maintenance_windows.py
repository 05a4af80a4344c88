"""Maintenance windows: loading, validation, open / next open at fixed instants, RRULE and cron."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest
import yaml

from botops import profiles, maintenance_windows
from botops.maintenance_windows import WindowError, is_open, next_open

UTC = timezone.utc


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.fixture(scope="module")
def fleet_windows():
    return maintenance_windows.load(families=profiles.available())


def load_text(text: str, families=None):
    return maintenance_windows.validate(yaml.safe_load(text), "w.yml", families)


# ------------------------------------------------------------------ the shipped file
def test_shipped_windows_are_valid_and_complete(fleet_windows):
    assert list(fleet_windows) == ["daily", "weekly", "monthly"]
    assert fleet_windows["monthly"].tasks == maintenance_windows.TASKS
    assert "reindex" not in fleet_windows["weekly"].tasks
    assert "graceful_stop" not in fleet_windows["daily"].tasks


@pytest.mark.parametrize(
    "window, family, inside, outside",
    [
        # mojorust.md 10: daily 02:00-02:30, weekly Sunday 03:00-04:00, monthly first Sunday 02:00-06:00
        ("daily", "mojorust", "2026-11-18T02:00:00", "2026-11-18T02:30:00"),
        ("weekly", "mojorust", "2026-11-22T03:59:59", "2026-11-22T04:00:00"),
        ("monthly", "mojorust", "2026-12-06T05:59:00", "2026-12-13T02:00:00"),
        # papertrader.md: weekly Sunday 02:00, monthly first Sunday 01:00
        ("weekly", "papertrader", "2026-11-22T02:10:00", "2026-11-22T03:10:00"),
        ("monthly", "papertrader", "2026-12-06T01:00:00", "2026-12-06T03:00:00"),
        # hyperliquid.md: weekly on Monday, monthly on the 1st
        ("weekly", "hyperliquid", "2026-11-23T03:30:00", "2026-11-22T03:30:00"),
        ("monthly", "hyperliquid", "2026-12-01T02:00:00", "2026-12-06T02:00:00"),
        # families without their own times take the window's (mojorust's) schedule
        ("weekly", "vanta", "2026-11-22T03:30:00", "2026-11-22T02:30:00"),
        ("monthly", "solana-cli", "2026-12-06T02:00:00", "2026-12-01T02:00:00"),
    ],
)
def test_runbook_windows(fleet_windows, window, family, inside, outside):
    w = fleet_windows[window]
    assert is_open(w, at(inside), family), f"{window} should be open for {family} at {inside}"
    assert not is_open(w, at(outside), family), f"{window} should be closed for {family} at {outside}"


def test_tasks_per_family_default_to_the_window(fleet_windows):
    assert fleet_windows["weekly"].tasks_for("papertrader") == fleet_windows["weekly"].tasks


# ------------------------------------------------------------------ the first-Sunday rule and edges
FIRST_SUNDAY = load_text("""
windows:
  monthly:
    schedule: {weekday: sunday, nth: 1, start: "02:00", duration: 4h}
    tasks: [backup]
""")["monthly"]


@pytest.mark.parametrize(
    "day, expected",
    [
        ("2026-11-01", True),   # Sunday the 1st is the first Sunday
        ("2026-11-08", False),  # the second Sunday
        ("2026-12-06", True),   # Sunday the 6th
        ("2026-12-07", False),  # a Monday in the first week
        ("2027-02-07", True),   # Sunday the 7th: still the first Sunday
        ("2027-02-14", False),
        ("2026-11-29", False),  # the last Sunday of November
    ],
)
def test_first_sunday_rule(day, expected):
    assert FIRST_SUNDAY.schedule.matches(date.fromisoformat(day)) is expected
    assert is_open(FIRST_SUNDAY, at(f"{day}T03:00:00")) is expected


def test_window_edges_are_half_open():
    assert not is_open(FIRST_SUNDAY, at("2026-12-06T01:59:59"))
    assert is_open(FIRST_SUNDAY, at("2026-12-06T02:00:00"))
    assert is_open(FIRST_SUNDAY, at("2026-12-06T05:59:59"))
    assert not is_open(FIRST_SUNDAY, at("2026-12-06T06:00:00"))


def test_next_open_of_the_first_sunday_skips_to_next_month():
    assert next_open(FIRST_SUNDAY, at("2026-12-06T02:00:00")) == at("2027-01-03T02:00:00")
    assert next_open(FIRST_SUNDAY, at("2026-12-06T01:59:00")) == at("2026-12-06T02:00:00")
    assert next_open(FIRST_SUNDAY, at("2026-11-02T00:00:00")) == at("2026-12-06T02:00:00")


def test_occurrence_reports_when_it_opened_and_closes():
    opened, closes = maintenance_windows.occurrence(FIRST_SUNDAY, at("2026-12-06T03:00:00"))
    assert (opened, closes) == (at("2026-12-06T02:00:00"), at("2026-12-06T06:00:00"))


def test_window_crossing_midnight():
    late = load_text("""
windows:
  late:
    schedule: {weekday: saturday, start: "23:30", duration: 1h}
    tasks: [backup]
""")["late"]
    assert is_open(late, at("2026-11-21T23:45:00"))  # Saturday
    assert is_open(late, at("2026-11-22T00:15:00"))  # Sunday, still Saturday's window
    assert not is_open(late, at("2026-11-22T00:30:00"))
    assert not is_open(late, at("2026-11-22T23:45:00"))  # Sunday evening


def test_last_weekday_and_missing_monthdays():
    data = load_text("""
windows:
  last:
    schedule: {weekday: friday, nth: -1, start: "04:00", duration: 30m}
    tasks: [backup]
  thirty_first:
    schedule: {monthday: 31, start: "04:00", duration: 30}
    tasks: [backup]
""")
    assert next_open(data["last"], at("2026-11-01T00:00:00")) == at("2026-11-27T04:00:00")
    assert not is_open(data["last"], at("2026-11-20T04:10:00"))
    assert next_open(data["thirty_first"], at("2026-11-01T00:00:00")) == at("2026-12-31T04:00:00")


def test_aware_datetimes_in_other_zones_are_converted():
    berlin = timezone(timedelta(hours=1))
    assert is_open(FIRST_SUNDAY, datetime(2026, 12, 6, 4, 0, tzinfo=berlin))  # 03:00 UTC
    assert not is_open(FIRST_SUNDAY, datetime(2026, 12, 6, 2, 30, tzinfo=berlin))  # 01:30 UTC


def test_plan_is_json_friendly():
    plan = maintenance_windows.plan(FIRST_SUNDAY, at("2026-12-06T03:00:00"))
    assert plan["open"] is True
    assert plan["opened_at"] == "2026-12-06T02:00:00+00:00"
    assert plan["occurrence_id"] == "20261206T020000Z"
    assert plan["next_open"] == "2027-01-03T02:00:00+00:00"
    assert plan["tasks"] == ["backup"]
    assert plan["schedule"] == {"start": "02:00", "duration_minutes": 240, "weekday": "sunday", "nth": 1,
                                "frequency": "monthly"}


def test_parse_now():
    assert maintenance_windows.parse_now("2026-12-06T03:00:00Z") == at("2026-12-06T03:00:00")
    assert maintenance_windows.parse_now("2026-12-06T03:00") == at("2026-12-06T03:00:00")
    with pytest.raises(ValueError):
        maintenance_windows.parse_now("next sunday")


# ------------------------------------------------------------------ RRULE and cron
@pytest.mark.parametrize(
    "window, family, rrule",
    [
        ("daily", None, "DTSTART:20250101T020000Z RRULE:FREQ=DAILY;INTERVAL=1"),
        ("weekly", None, "DTSTART:20250105T030000Z RRULE:FREQ=WEEKLY;INTERVAL=1;BYDAY=SU"),
        ("weekly", "hyperliquid", "DTSTART:20250106T030000Z RRULE:FREQ=WEEKLY;INTERVAL=1;BYDAY=MO"),
        ("monthly", None, "DTSTART:20250105T020000Z RRULE:FREQ=MONTHLY;INTERVAL=1;BYDAY=SU;BYSETPOS=1"),
        ("monthly", "papertrader", "DTSTART:20250105T010000Z RRULE:FREQ=MONTHLY;INTERVAL=1;BYDAY=SU;BYSETPOS=1"),
        ("monthly", "hyperliquid", "DTSTART:20250101T020000Z RRULE:FREQ=MONTHLY;INTERVAL=1;BYMONTHDAY=1"),
    ],
)
def test_rrules(fleet_windows, window, family, rrule):
    assert fleet_windows[window].schedule_for(family).rrule() == rrule


@pytest.mark.parametrize(
    "window, family, expression, guard",
    [
        ("daily", None, "0 2 * * *", None),
        ("weekly", None, "0 3 * * 0", None),
        ("weekly", "hyperliquid", "0 3 * * 1", None),
        ("monthly", None, "0 2 1-7 * *", '[ "$(date -u +\\%u)" = 7 ]'),
        ("monthly", "hyperliquid", "0 2 1 * *", None),
    ],
)
def test_cron(fleet_windows, window, family, expression, guard):
    assert fleet_windows[window].schedule_for(family).cron() == maintenance_windows.CronSpec(expression, guard)


def test_cron_of_the_last_weekday():
    spec = maintenance_windows.Schedule(start=maintenance_windows.time(4, 5), duration=timedelta(minutes=30), weekday=4, nth=-1).cron()
    assert spec.expression == "5 4 22-31 * *"
    assert "date -u +\\%u" in spec.guard and "+7days" in spec.guard


def test_distinct_schedules_group_the_families(fleet_windows):
    groups = fleet_windows["weekly"].schedules()
    assert [fams for _, fams in groups] == [None, ["hyperliquid"], ["papertrader"]]


# ------------------------------------------------------------------ validation errors
@pytest.mark.parametrize(
    "text, message",
    [
        ("windows: {}", "expected a mapping of window names"),
        ("[1, 2]", "single key 'windows'"),
        ("windows: {w: {schedule: {start: '02:00', duration: 30}}}", "missing required key 'tasks'"),
        ("windows: {w: {schedule: {start: '2:00', duration: 30}, tasks: [backup]}}", "start: expected \"HH:MM\""),
        ("windows: {w: {schedule: {start: '02:00', duration: 25h}, tasks: [backup]}}", "out of range"),
        ("windows: {w: {schedule: {start: '02:00', duration: soon}, tasks: [backup]}}", "expected minutes"),
        ("windows: {w: {schedule: {start: '02:00', duration: 30, weekday: sundy}, tasks: [backup]}}",
         "'sundy' is not a day"),
        ("windows: {w: {schedule: {start: '02:00', duration: 30, nth: 1}, tasks: [backup]}}", "nth: needs weekday"),
        ("windows: {w: {schedule: {start: '02:00', duration: 30, weekday: sunday, nth: 6}, tasks: [backup]}}",
         "expected 1..5 or -1"),
        ("windows: {w: {schedule: {start: '02:00', duration: 30, monthday: 1, weekday: sunday}, tasks: [backup]}}",
         "exclude each other"),
        ("windows: {w: {schedule: {start: '02:00', duration: 30}, tasks: [backup, defrag]}}", "unknown task 'defrag'"),
        ("windows: {w: {schedule: {start: '02:00', duration: 30}, tasks: [graceful_stop, backup]}}",
         "graceful_stop needs restart"),
        ("windows: {w: {schedule: {start: '02:00', duration: 30, every: day}, tasks: [backup]}}", "unknown key 'every'"),
        ("windows: {w: {schedule: {start: '02:00', duration: 30}, tasks: [backup], families: {nope: {tasks: [backup]}}}}",
         "w.yml: windows.w.families.nope: unknown bot family"),
    ],
)
def test_invalid_windows_are_refused_with_the_key_path(text, message):
    with pytest.raises(WindowError) as info:
        load_text(text, families=["mojorust", "papertrader"])
    assert message in str(info.value)


def test_every_problem_is_reported_at_once():
    with pytest.raises(WindowError) as info:
        load_text("windows: {a: {schedule: {start: 'x', duration: 30}, tasks: [backup]},"
                  " b: {schedule: {start: '02:00', duration: 30}, tasks: [zap]}}")
    assert "windows.a.schedule.start" in str(info.value) and "windows.b.tasks" in str(info.value)


def test_unknown_window_name_lists_the_valid_ones(fleet_windows):
    with pytest.raises(WindowError, match="expected one of: daily, weekly, monthly"):
        maintenance_windows.get(fleet_windows, "yearly")


def test_missing_file(tmp_path):
    with pytest.raises(WindowError, match="cannot read"):
        maintenance_windows.load(tmp_path / "none.yml")


def test_tasks_are_put_in_role_order():
    w = load_text("windows: {w: {schedule: {start: '02:00', duration: 30}, tasks: [verify, restart, backup, graceful_stop]}}")
    assert w["w"].tasks == ("graceful_stop", "backup", "restart", "verify")


# ------------------------------------------------------------------ the lookup playbooks use
def lookup(*terms, **kwargs):
    from ansible.plugins.loader import lookup_loader

    lookup_loader.add_directory(str(maintenance_windows.COLLECTION / "plugins" / "lookup"))
    return lookup_loader.get("maintenance_window").run(list(terms), variables={}, **kwargs)


def test_lookup_plans_the_window_for_a_family():
    [plan] = lookup("weekly", family="papertrader", now="2026-11-22T02:30:00Z")
    assert plan["open"] is True and plan["occurrence_id"] == "20261122T020000Z"
    assert plan["tasks"] == list(maintenance_windows.load()["weekly"].tasks)
    [closed] = lookup("weekly", family="mojorust", now="2026-11-22T02:30:00Z")
    assert closed["open"] is False and closed["next_open"] == "2026-11-22T03:00:00+00:00"


def test_lookup_errors_name_what_is_expected():
    from ansible.errors import AnsibleLookupError

    with pytest.raises(AnsibleLookupError, match="expected one of: daily, weekly, monthly"):
        lookup("yearly", family="mojorust")
    with pytest.raises(AnsibleLookupError, match="not an ISO 8601 instant"):
        lookup("weekly", family="mojorust", now="tomorrow")
