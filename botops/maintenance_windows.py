"""Maintenance windows as data: load and validate them, tell whether one is open, when it opens
next, and how cron and AWX schedule it.

The windows live in `playbooks/vars/maintenance_windows.yml` (BOTOPS_WINDOWS_FILE overrides).
All times are UTC. Every function takes an aware or naive `datetime`; naive means UTC.

    windows = load()
    weekly = windows["weekly"]
    is_open(weekly, now, family="papertrader")     # -> bool
    next_open(weekly, now, family="papertrader")   # -> datetime (UTC) of the next opening
    weekly.schedule_for("papertrader").rrule()     # -> "DTSTART:...Z RRULE:FREQ=WEEKLY;BYDAY=SU"
    weekly.schedule_for("papertrader").cron()      # -> CronSpec("0 2 * * 0", guard=None)
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path

import yaml

from botops.layout import COLLECTION

DEFAULT_FILE = COLLECTION / "playbooks" / "vars" / "maintenance_windows.yml"

# What a window can do, in the order the maintenance role does it.
TASKS = (
    "graceful_stop",
    "backup",
    "vacuum_analyze",
    "reindex",
    "log_rotation",
    "backup_retention",
    "restart",
    "verify",
)
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
RRULE_DAYS = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")
MAX_DURATION = timedelta(hours=24)
# DTSTART of every generated RRULE: the first occurrence on or after this instant, so that
# regenerating the AWX files gives the same text.
RRULE_ANCHOR = datetime(2025, 1, 1, tzinfo=timezone.utc)


class WindowError(ValueError):
    """The windows file is missing or invalid, or a window name is unknown."""


def windows_file() -> Path:
    return Path(os.environ.get("BOTOPS_WINDOWS_FILE", DEFAULT_FILE))


def utc(moment: datetime) -> datetime:
    """The same instant as an aware UTC datetime (naive means UTC already)."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


@dataclass(frozen=True)
class CronSpec:
    """A crontab time field and, when cron cannot say it alone, a shell test that must pass."""

    expression: str
    guard: str | None = None


@dataclass(frozen=True)
class Schedule:
    start: time
    duration: timedelta
    weekday: int | None = None  # 0 = Monday ... 6 = Sunday
    nth: int | None = None  # with weekday: 1..5, -1 = last of the month
    monthday: int | None = None

    @property
    def frequency(self) -> str:
        if self.monthday is not None or self.nth is not None:
            return "monthly"
        return "weekly" if self.weekday is not None else "daily"

    def matches(self, day: date) -> bool:
        """Does a window of this schedule open on this (UTC) day?"""
        if self.monthday is not None:
            return day.day == self.monthday
        if self.weekday is not None and day.weekday() != self.weekday:
            return False
        if self.nth is None:
            return True
        if self.nth == -1:
            return (day + timedelta(days=7)).month != day.month
        return (day.day - 1) // 7 + 1 == self.nth

    def _start_on(self, day: date) -> datetime:
        return datetime.combine(day, self.start, tzinfo=timezone.utc)

    def occurrence(self, now: datetime) -> tuple[datetime, datetime] | None:
        """(opens, closes) of the occurrence open at `now`, or None when the window is closed."""
        now = utc(now)
        for back in (0, 1):  # a window of at most 24 h opened today or yesterday
            day = now.date() - timedelta(days=back)
            if self.matches(day):
                opens = self._start_on(day)
                if opens <= now < opens + self.duration:
                    return opens, opens + self.duration
        return None

    def next_start(self, now: datetime) -> datetime:
        """The first opening strictly after `now`."""
        now = utc(now)
        day = now.date()
        for _ in range(0, 6 * 366):  # a 5th weekday or the 31st occurs within a year; stay generous
            if self.matches(day) and self._start_on(day) > now:
                return self._start_on(day)
            day += timedelta(days=1)
        raise WindowError(f"schedule {self.describe()} never opens")  # pragma: no cover - validated

    def describe(self) -> str:
        hours, rest = divmod(int(self.duration.total_seconds()) // 60, 60)
        length = f"{hours}h{rest:02d}m" if hours and rest else (f"{hours}h" if hours else f"{rest}m")
        at = f"{self.start:%H:%M} UTC for {length}"
        if self.monthday is not None:
            return f"day {self.monthday} of every month at {at}"
        if self.nth is not None:
            which = "last" if self.nth == -1 else ("first", "second", "third", "fourth", "fifth")[self.nth - 1]
            return f"{which} {WEEKDAYS[self.weekday].capitalize()} of every month at {at}"
        if self.weekday is not None:
            return f"every {WEEKDAYS[self.weekday].capitalize()} at {at}"
        return f"every day at {at}"

    # ------------------------------------------------------------------ scheduling
    def rrule(self, anchor: datetime = RRULE_ANCHOR) -> str:
        """The schedule as AWX takes it: 'DTSTART:<first opening, UTC> RRULE:...' (RFC 5545)."""
        first = self.next_start(utc(anchor) - timedelta(seconds=1))
        parts = {"daily": ["FREQ=DAILY"], "weekly": ["FREQ=WEEKLY"], "monthly": ["FREQ=MONTHLY"]}[self.frequency]
        parts.append("INTERVAL=1")
        if self.monthday is not None:
            parts.append(f"BYMONTHDAY={self.monthday}")
        elif self.weekday is not None:
            parts.append(f"BYDAY={RRULE_DAYS[self.weekday]}")
            if self.nth is not None:
                parts.append(f"BYSETPOS={self.nth}")
        return f"DTSTART:{first:%Y%m%dT%H%M%S}Z RRULE:{';'.join(parts)}"

    def cron(self) -> CronSpec:
        """Crontab time fields (UTC) and, for 'nth weekday of the month', a `date -u` guard."""
        minute, hour = self.start.minute, self.start.hour
        if self.monthday is not None:
            return CronSpec(f"{minute} {hour} {self.monthday} * *")
        if self.weekday is None:
            return CronSpec(f"{minute} {hour} * * *")
        cron_dow = (self.weekday + 1) % 7  # cron: 0 = Sunday
        if self.nth is None:
            return CronSpec(f"{minute} {hour} * * {cron_dow}")
        # cron ORs day-of-month and day-of-week: restrict the days of the month, test the weekday.
        weekday_test = f'[ "$(date -u +\\%u)" = {self.weekday + 1} ]'
        if self.nth == -1:
            last_week = '[ "$(date -u -d +7days +\\%d)" -le 7 ]'
            return CronSpec(f"{minute} {hour} 22-31 * *", f"{weekday_test} && {last_week}")
        first = (self.nth - 1) * 7 + 1
        return CronSpec(f"{minute} {hour} {first}-{first + 6} * *", weekday_test)

    def as_dict(self) -> dict:
        data = {"start": f"{self.start:%H:%M}", "duration_minutes": int(self.duration.total_seconds() // 60)}
        if self.weekday is not None:
            data["weekday"] = WEEKDAYS[self.weekday]
        for key in ("nth", "monthday"):
            if getattr(self, key) is not None:
                data[key] = getattr(self, key)
        data["frequency"] = self.frequency
        return data


@dataclass(frozen=True)
class Override:
    schedule: Schedule | None = None
    tasks: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Window:
    name: str
    description: str
    schedule: Schedule
    tasks: tuple[str, ...]
    families: dict[str, Override] = field(default_factory=dict)

    def schedule_for(self, family: str | None = None) -> Schedule:
        override = self.families.get(family or "")
        return override.schedule if override and override.schedule else self.schedule

    def tasks_for(self, family: str | None = None) -> tuple[str, ...]:
        override = self.families.get(family or "")
        return override.tasks if override and override.tasks is not None else self.tasks

    def schedules(self) -> list[tuple[Schedule, list[str] | None]]:
        """Each distinct schedule with the families that use it (None: every family without its own)."""
        found: list[tuple[Schedule, list[str] | None]] = [(self.schedule, None)]
        for family in sorted(self.families):
            own = self.families[family].schedule
            if own is None or own == self.schedule:
                continue
            for i, (sched, fams) in enumerate(found):
                if sched == own and fams is not None:
                    fams.append(family)
                    break
            else:
                found.append((own, [family]))
        return found


def is_open(window: Window, now: datetime, family: str | None = None) -> bool:
    """Is the window open at `now` for this family (None: the window's own schedule)?"""
    return window.schedule_for(family).occurrence(now) is not None


def occurrence(window: Window, now: datetime, family: str | None = None) -> tuple[datetime, datetime] | None:
    """(opens, closes) of the occurrence open at `now` for this family, or None."""
    return window.schedule_for(family).occurrence(now)


def next_open(window: Window, now: datetime, family: str | None = None) -> datetime:
    """When the window next opens (strictly after `now`) for this family, in UTC."""
    return window.schedule_for(family).next_start(now)


# ---------------------------------------------------------------------- loading and validation
DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?$")
START = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
SCHEDULE_KEYS = {"start", "duration", "weekday", "nth", "monthday"}
WINDOW_KEYS = {"description", "schedule", "tasks", "families"}
OVERRIDE_KEYS = {"schedule", "tasks"}
NAME = re.compile(r"^[a-z][a-z0-9_-]*$")


def _parse_duration(value, where: str, problems: list[str]) -> timedelta | None:
    minutes = None
    if isinstance(value, int) and not isinstance(value, bool):
        minutes = value
    elif isinstance(value, str):
        match = DURATION.match(value.strip())
        if match and any(match.groups()):
            minutes = int(match.group(1) or 0) * 60 + int(match.group(2) or 0)
    if minutes is None:
        problems.append(f"{where}.duration: expected minutes or a length like 30m, 1h, 1h30m, got {value!r}")
        return None
    duration = timedelta(minutes=minutes)
    if not timedelta(minutes=1) <= duration <= MAX_DURATION:
        problems.append(f"{where}.duration: {value!r} is out of range (1 minute to 24 hours)")
        return None
    return duration


def _parse_schedule(data, where: str, problems: list[str]) -> Schedule | None:
    if not isinstance(data, dict):
        problems.append(f"{where}: expected a mapping with start and duration, got {type(data).__name__}")
        return None
    before = len(problems)
    unknown = sorted(set(data) - SCHEDULE_KEYS)
    if unknown:
        problems.append(f"{where}: unknown key {', '.join(map(repr, unknown))} "
                        f"(expected: {', '.join(sorted(SCHEDULE_KEYS))})")
    for key in ("start", "duration"):
        if key not in data:
            problems.append(f"{where}: missing required key {key!r}")
    start = None
    if "start" in data:
        match = START.match(str(data["start"])) if isinstance(data["start"], str) else None
        if match:
            start = time(int(match.group(1)), int(match.group(2)))
        else:
            problems.append(f"{where}.start: expected \"HH:MM\" (UTC, quoted), got {data['start']!r}")
    duration = _parse_duration(data["duration"], where, problems) if "duration" in data else None
    weekday = None
    if "weekday" in data:
        name = str(data["weekday"]).lower()
        matches = [i for i, day in enumerate(WEEKDAYS) if day == name or day[:3] == name]
        if matches:
            weekday = matches[0]
        else:
            problems.append(f"{where}.weekday: {data['weekday']!r} is not a day (expected one of: {', '.join(WEEKDAYS)})")
    nth = data.get("nth")
    if nth is not None:
        if isinstance(nth, bool) or nth not in (1, 2, 3, 4, 5, -1):
            problems.append(f"{where}.nth: expected 1..5 or -1 (the last), got {nth!r}")
        elif "weekday" not in data:
            problems.append(f"{where}.nth: needs weekday (nth: 1 with weekday: sunday is the first Sunday)")
    monthday = data.get("monthday")
    if monthday is not None:
        if isinstance(monthday, bool) or not isinstance(monthday, int) or not 1 <= monthday <= 31:
            problems.append(f"{where}.monthday: expected a day of the month 1..31, got {monthday!r}")
        elif "weekday" in data:
            problems.append(f"{where}: monthday and weekday exclude each other "
                            "(use weekday + nth for 'the first Sunday')")
    if len(problems) > before:
        return None
    return Schedule(start=start, duration=duration, weekday=weekday, nth=nth, monthday=monthday)


def _parse_tasks(data, where: str, problems: list[str]) -> tuple[str, ...] | None:
    if not isinstance(data, list) or not data or not all(isinstance(t, str) for t in data):
        problems.append(f"{where}: expected a non-empty list of task names (from: {', '.join(TASKS)})")
        return None
    before = len(problems)
    unknown = [t for t in data if t not in TASKS]
    if unknown:
        problems.append(f"{where}: unknown task {', '.join(map(repr, unknown))} (expected: {', '.join(TASKS)})")
    duplicated = sorted({t for t in data if data.count(t) > 1})
    if duplicated:
        problems.append(f"{where}: task {', '.join(map(repr, duplicated))} listed twice")
    if "graceful_stop" in data and "restart" not in data:
        problems.append(f"{where}: graceful_stop needs restart (a stopped bot must be started again)")
    if len(problems) > before:
        return None
    return tuple(t for t in TASKS if t in data)


def check_tasks(names: list[str], where: str = "tasks") -> tuple[str, ...]:
    """Validate a task list given by a person (--tasks); returns it in role order or raises WindowError."""
    problems: list[str] = []
    parsed = _parse_tasks(names, where, problems)
    if problems:
        raise WindowError("; ".join(problems))
    return parsed


def validate(data, source: str = "windows", families: list[str] | None = None) -> dict[str, Window]:
    """Parse loaded YAML into windows; raise WindowError naming every problem (file, key, expected).

    `families`, when given, is the list of known bot families (those of the profiles search path,
    botops.profiles.available()): an override for another is an error. An override for a family
    that has no bot in the inventory at hand is not one - it just applies to no bot."""
    if not isinstance(data, dict) or set(data) != {"windows"}:
        got = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise WindowError(f"{source}: expected a mapping with the single key 'windows', got {got}")
    raw = data["windows"]
    if not isinstance(raw, dict) or not raw:
        raise WindowError(f"{source}: windows: expected a mapping of window names to windows")
    problems: list[str] = []
    windows: dict[str, Window] = {}
    for name, spec in raw.items():
        where = f"{source}: windows.{name}"
        if not isinstance(name, str) or not NAME.match(name):
            problems.append(f"{where}: invalid window name (lower case letters, digits, - and _)")
            continue
        if not isinstance(spec, dict):
            problems.append(f"{where}: expected a mapping with schedule and tasks")
            continue
        unknown = sorted(set(spec) - WINDOW_KEYS)
        if unknown:
            problems.append(f"{where}: unknown key {', '.join(map(repr, unknown))} "
                            f"(expected: {', '.join(sorted(WINDOW_KEYS))})")
        missing = [k for k in ("schedule", "tasks") if k not in spec]
        if missing:
            problems.append(f"{where}: missing required key {', '.join(map(repr, missing))}")
            continue
        schedule = _parse_schedule(spec["schedule"], f"{where}.schedule", problems)
        tasks = _parse_tasks(spec["tasks"], f"{where}.tasks", problems)
        overrides: dict[str, Override] = {}
        fams = spec.get("families") or {}
        if not isinstance(fams, dict):
            problems.append(f"{where}.families: expected a mapping of family names to schedule / tasks")
            fams = {}
        for family, override in fams.items():
            fwhere = f"{where}.families.{family}"
            if families is not None and family not in families:
                problems.append(f"{fwhere}: unknown bot family: no profile directory of the search path has "
                                f"{family}.yml (expected one of: {', '.join(families)})")
                continue
            if not isinstance(override, dict) or not override or set(override) - OVERRIDE_KEYS:
                problems.append(f"{fwhere}: expected a mapping with schedule and/or tasks")
                continue
            osched = _parse_schedule(override["schedule"], f"{fwhere}.schedule", problems) if "schedule" in override else None
            otasks = _parse_tasks(override["tasks"], f"{fwhere}.tasks", problems) if "tasks" in override else None
            overrides[family] = Override(schedule=osched, tasks=otasks)
        if schedule is not None and tasks is not None:
            windows[name] = Window(name=name, description=str(spec.get("description") or ""),
                                   schedule=schedule, tasks=tasks, families=overrides)
    if problems:
        raise WindowError("invalid maintenance windows\n  " + "\n  ".join(problems))
    return windows


def load(path: Path | str | None = None, families: list[str] | None = None) -> dict[str, Window]:
    """Load and validate the windows file (default: playbooks/vars/maintenance_windows.yml)."""
    path = Path(path) if path else windows_file()
    try:
        text = path.read_text()
    except OSError as exc:
        raise WindowError(f"{path}: cannot read the maintenance windows: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise WindowError(f"{path}: not valid YAML: {exc}") from None
    return validate(data, str(path), families)


def get(windows: dict[str, Window], name: str) -> Window:
    """The window of this name; WindowError lists the valid names otherwise."""
    if name not in windows:
        raise WindowError(f"unknown maintenance window {name!r} (expected one of: {', '.join(windows)})")
    return windows[name]


def plan(window: Window, now: datetime, family: str | None = None) -> dict:
    """Everything a playbook needs about this window for one family at `now` (JSON-friendly)."""
    schedule = window.schedule_for(family)
    current = schedule.occurrence(now)
    return {
        "window": window.name,
        "family": family,
        "open": current is not None,
        "opened_at": current[0].isoformat() if current else None,
        "occurrence_id": f"{current[0]:%Y%m%dT%H%M%SZ}" if current else None,
        "closes_at": current[1].isoformat() if current else None,
        "next_open": schedule.next_start(now).isoformat(),
        "schedule": schedule.as_dict(),
        "schedule_text": schedule.describe(),
        "tasks": list(window.tasks_for(family)),
        "now": utc(now).isoformat(),
    }


def parse_now(value: str | None) -> datetime:
    """The current time, or the ISO 8601 instant given (naive means UTC); ValueError if unparsable."""
    if not value:
        return datetime.now(timezone.utc)
    text = value.strip().replace("Z", "+00:00")
    return utc(datetime.fromisoformat(text))
