"""`botops schedule`: the crontab block (text, day tests run under sh on fixed dates, idempotent
install / uninstall through a scratch crontab program) and the AWX assets (job template, survey,
RRULE schedules), from the shipped window definitions."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import signal
import time
from datetime import date
from pathlib import Path

import pytest
import yaml
from invoke import Context, Exit

from botops import profiles, schedule, maintenance_windows

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def loaded():
    return maintenance_windows.load(families=profiles.available())


def entries(lines):
    return [line for line in lines if line and not line.startswith("#") and not line.startswith("CRON_TZ")]


def test_block_is_marked_and_in_utc(loaded, tmp_path):
    lines = schedule.cron_lines(loaded, repo=tmp_path, log=tmp_path / "m.log", lock=tmp_path / "m.lock")
    assert lines[0] == f"# BEGIN botops maintenance ({tmp_path})"
    assert lines[-1] == f"# END botops maintenance ({tmp_path})"
    assert "CRON_TZ=UTC" in lines
    # one entry per start time: 01:00 (papertrader monthly), 02:00, 03:00
    assert [e.split()[:2] for e in entries(lines)] == [["0", "1"], ["0", "2"], ["0", "3"]]
    for entry in entries(lines):
        assert f"flock -n {tmp_path / 'm.lock'}" in entry
        assert f"cd {tmp_path} && " in entry
        assert entry.endswith(f">> {tmp_path / 'm.log'} 2>&1")
        assert "%" not in entry.replace("\\%", ""), "every % must be escaped for cron"


def test_single_schedule_uses_cron_fields_and_a_weekday_guard(loaded, tmp_path):
    first = entries(schedule.cron_lines(loaded, repo=tmp_path))[0]
    assert first.startswith('0 1 1-7 * * [ "$(date -u +\\%u)" = 7 ] && cd ')
    assert first.count("--window=monthly") == 1 and "--window=daily" not in first


def test_inventory_and_limit_are_passed_on(loaded, tmp_path):
    lines = schedule.cron_lines(loaded, repo=tmp_path, inventory="/srv/inv/hosts.yml", limit="mojorust")
    assert all("--inventory=/srv/inv/hosts.yml --limit=mojorust" in e for e in entries(lines))


# ------------------------------------------------------------------ the entries, run under sh
FAKE_DATE = """#!/bin/sh
# date -u [-d +7days] +FORMAT, answered for $FAKE_DATE
fmt=""; offset=""
for a in "$@"; do case "$a" in +7days) offset=" +7 days";; +*) fmt="$a";; esac; done
exec /bin/date -u -d "$FAKE_DATE$offset" "$fmt"
"""


def executable(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def fake_repo(tmp_path):
    """A home, a botops program that only says which window it was asked for, and a date that lies."""
    repo = tmp_path / "repo"
    (repo / ".venv" / "bin").mkdir(parents=True)
    executable(repo / ".venv" / "bin" / "botops", '#!/bin/sh\necho "$2"\n')
    bindir = tmp_path / "bin"
    bindir.mkdir()
    executable(bindir / "date", FAKE_DATE)
    return repo, bindir


def cron_fires(fields: list[str], day: date) -> bool:
    """Does cron fire on this day? (day of month and day of week as this generator writes them)"""
    dom, dow = fields[2], fields[4]
    if dom != "*":
        low, _, high = dom.partition("-")
        if not int(low) <= day.day <= int(high or low):
            return False
    return dow == "*" or int(dow) == (day.weekday() + 1) % 7


def run_entry(entry: str, bindir: Path, when: str, log: Path) -> list[str]:
    if not cron_fires(entry.split()[:5], date.fromisoformat(when)):
        return []
    command = " ".join(entry.split()[5:]).replace("\\%", "%")  # what cron hands to sh
    log.unlink(missing_ok=True)
    env = dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}", FAKE_DATE=when)
    subprocess.run(["/bin/sh", "-c", command], env=env, check=False, timeout=30)
    return log.read_text().split() if log.exists() else []


@pytest.mark.parametrize(
    "when, at_0100, at_0200, at_0300",
    [
        # the first Sunday: papertrader's monthly at 01:00; monthly, weekly and daily at 02:00; weekly at 03:00
        ("2026-12-06", ["--window=monthly"], ["--window=monthly", "--window=weekly", "--window=daily"],
         ["--window=weekly"]),
        # Tuesday the 1st: hyperliquid's monthly
        ("2026-12-01", [], ["--window=monthly", "--window=daily"], []),
        # Monday the 7th: inside days 1-7 but not a Sunday; hyperliquid's weekly at 03:00
        ("2026-12-07", [], ["--window=daily"], ["--window=weekly"]),
        # the second Sunday
        ("2026-12-13", [], ["--window=weekly", "--window=daily"], ["--window=weekly"]),
        ("2026-12-09", [], ["--window=daily"], []),
    ],
)
def test_entries_run_the_windows_of_the_day(loaded, fake_repo, tmp_path, when, at_0100, at_0200, at_0300):
    repo, bindir = fake_repo
    log = tmp_path / "cron.log"
    lines = entries(schedule.cron_lines(loaded, repo=repo, log=log, lock=tmp_path / "cron.lock",
                                         command=str(repo / ".venv" / "bin" / "botops")))
    by_hour = {int(e.split()[1]): e for e in lines}
    assert run_entry(by_hour[1], bindir, when, log) == at_0100
    assert run_entry(by_hour[2], bindir, when, log) == at_0200
    assert run_entry(by_hour[3], bindir, when, log) == at_0300


def test_a_held_lock_skips_the_run(loaded, fake_repo, tmp_path):
    repo, bindir = fake_repo
    log, lock = tmp_path / "cron.log", tmp_path / "cron.lock"
    entry = [e for e in entries(schedule.cron_lines(loaded, repo=repo, log=log, lock=lock,
                                                           command=str(repo / ".venv" / "bin" / "botops"))) if e.startswith("0 2 ")][0]
    holder = subprocess.Popen(["flock", str(lock), "sleep", "30"], start_new_session=True)
    try:
        held = lambda: subprocess.run(["flock", "-n", str(lock), "true"]).returncode != 0  # noqa: E731
        deadline = time.monotonic() + 10
        while not held():
            assert time.monotonic() < deadline, "the holder never took the lock"
            time.sleep(0.02)
        assert run_entry(entry, bindir, "2026-12-09", log) == []
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait()
        assert run_entry(entry, bindir, "2026-12-09", log) == ["--window=daily"]
    finally:
        if holder.poll() is None:
            os.killpg(holder.pid, signal.SIGKILL)
            holder.wait()


# ------------------------------------------------------------------ install / uninstall
FAKE_CRONTAB = """#!/bin/sh
case "$1" in
  -l) if [ -f "$CRONTAB_FILE" ]; then cat "$CRONTAB_FILE"; else echo "no crontab for tester" >&2; exit 1; fi;;
  -) cat > "$CRONTAB_FILE";;
  *) exit 2;;
esac
"""


@pytest.fixture
def scratch_crontab(tmp_path, monkeypatch):
    program = executable(tmp_path / "crontab", FAKE_CRONTAB)
    store = tmp_path / "crontab.txt"
    monkeypatch.setenv("BOTOPS_CRONTAB", str(program))
    monkeypatch.setenv("CRONTAB_FILE", str(store))
    monkeypatch.setenv("BOTOPS_ARTIFACTS_DIR", str(tmp_path / "artifacts"))
    monkeypatch.setenv("BOTOPS_LOCK_DIR", str(tmp_path / "locks"))
    return store


def test_install_keeps_other_entries_and_is_idempotent(scratch_crontab, capsys):
    scratch_crontab.write_text("MAILTO=ops@example.com\n*/5 * * * * /usr/local/bin/heartbeat\n")
    schedule.schedule(Context(), install=True)
    first = scratch_crontab.read_text()
    assert first.startswith("MAILTO=ops@example.com\n*/5 * * * * /usr/local/bin/heartbeat\n\n# BEGIN botops")
    assert first.count("# BEGIN botops maintenance") == 1 and first.rstrip().endswith(f"# END botops maintenance ({REPO})")
    assert "installed 3 cron entries" in capsys.readouterr().out
    schedule.schedule(Context(), install=True)
    assert scratch_crontab.read_text() == first
    assert "nothing changed" in capsys.readouterr().out

    schedule.schedule(Context(), uninstall=True)
    assert scratch_crontab.read_text() == "MAILTO=ops@example.com\n*/5 * * * * /usr/local/bin/heartbeat\n"
    schedule.schedule(Context(), uninstall=True)
    assert "nothing to remove" in capsys.readouterr().out


def test_install_into_an_empty_crontab_and_remove_it(scratch_crontab):
    schedule.schedule(Context(), install=True)
    assert scratch_crontab.read_text().startswith("# BEGIN botops maintenance")
    schedule.schedule(Context(), uninstall=True)
    assert scratch_crontab.read_text() == ""


def test_replace_block_replaces_a_changed_block():
    begin, end = schedule.block_markers()
    old = f"A\n{begin}\n0 9 * * * old\n{end}\nB\n"
    new = schedule.replace_block(old, ["# BEGIN x", "new", "# END x"])
    assert "old" not in new and new == "A\nB\n\n# BEGIN x\nnew\n# END x\n"


def test_print_changes_nothing_and_one_action_is_required(scratch_crontab, capsys):
    schedule.schedule(Context(), print_=True)
    assert "# BEGIN botops maintenance" in capsys.readouterr().out and not scratch_crontab.exists()
    with pytest.raises(Exit) as info:
        schedule.schedule(Context(), install=True, print_=True)
    assert info.value.code == 2


def test_missing_crontab_program_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("BOTOPS_CRONTAB", str(tmp_path / "no-such-crontab"))
    with pytest.raises(Exit) as info:
        schedule.read_crontab()
    assert info.value.code == 2 and "apt-get install cron" in str(info.value.message)


# ------------------------------------------------------------------ AWX
def test_awx_assets(loaded):
    assets = schedule.awx_assets(loaded)
    template = assets["job_templates"][0]  # the maintenance template; the operations: tests/unit/test_awx_assets.py
    assert template["playbook"] == "playbooks/maintenance.yml"
    assert template["project"] == {"name": "botops", "type": "project",
                                   "organization": {"name": "Default", "type": "organization"}}
    assert template["survey_enabled"] and template["ask_limit_on_launch"]
    survey = {q["variable"]: q for q in template["related"]["survey_spec"]["spec"]}
    assert survey["botops_maintenance_window"]["choices"] == ["daily", "weekly", "monthly"]
    assert survey["botops_hosts"]["default"] == "all"
    schedules = {s["name"]: s for s in template["related"]["schedules"]}
    assert len(schedules) == 7  # daily; weekly default, hyperliquid, papertrader; monthly the same
    weekly_pt = schedules["botops weekly maintenance (papertrader)"]
    assert weekly_pt["rrule"] == "DTSTART:20250105T020000Z RRULE:FREQ=WEEKLY;INTERVAL=1;BYDAY=SU"
    assert weekly_pt["extra_data"] == {"botops_maintenance_window": "weekly"}
    assert schedules["botops monthly maintenance (default)"]["rrule"].endswith("BYDAY=SU;BYSETPOS=1")
    for item in schedules.values():
        assert re.fullmatch(r"DTSTART:\d{8}T\d{6}Z RRULE:FREQ=(DAILY|WEEKLY|MONTHLY);INTERVAL=1(;[A-Z]+=[-\w]+)*",
                            item["rrule"]), item["rrule"]
        assert item["natural_key"]["unified_job_template"] == template["natural_key"]


def test_awx_files_are_written_once(loaded, tmp_path):
    assets = schedule.awx_assets(loaded)
    written = schedule.write_awx(assets, tmp_path)
    assert sorted(p.name for p in written) == ["job_templates.json", "job_templates.yml"]
    assert schedule.write_awx(assets, tmp_path) == []
    assert yaml.safe_load((tmp_path / "job_templates.yml").read_text()) == assets
    assert json.loads((tmp_path / "job_templates.json").read_text()) == assets


def test_committed_awx_files_match_the_windows(loaded):
    """awx/ is generated: after editing the windows, run `botops schedule --awx`."""
    assets = schedule.awx_assets(loaded)
    assert yaml.safe_load((REPO / "awx" / "job_templates.yml").read_text()) == assets
    assert json.loads((REPO / "awx" / "job_templates.json").read_text()) == assets
