"""`botops maintenance` on the shared sandbox fleet, through the real entry point (a subprocess).

Outside its window the weekly maintenance is refused before anything runs (exit 2, the bots keep
their processes and go on trading, no backup set). At a Sunday 03:10 UTC given with --now, the
weekly window is open for mojorust (03:00-04:00) and closed for papertrader (02:00-03:00): in the
rhythm check mode -> apply -> apply again, bot01 is maintained once (backup set named after the
window occurrence, restarted, ready, trading, ledger continuous) and bot02 is left alone; the
second run changes nothing. --force then maintains bot02. A step failing after the stop starts
the bot again, fails it and stops the run. A local webhook captures the announcements. The bots end as they started: running and ready, no extra backup set, no record.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from botops.sandbox.fleet import wait_until

try:  # tests/integration as a package or as a plain directory on sys.path
    from .playbook import run_playbook
except ImportError:
    from playbook import run_playbook

REPO = Path(__file__).resolve().parents[2]
BOTOPS = REPO / ".venv" / "bin" / "botops"
BOTS = ["bot01", "bot02"]  # mojorust, papertrader
OUTSIDE = "2026-11-24T12:00:00Z"  # a Tuesday noon: no weekly window is open
SUNDAY = "2026-11-22T03:10:00Z"  # weekly: mojorust open (03:00-04:00), papertrader closed (02:00-03:00)


@pytest.fixture(scope="module")
def inventory(fleet, webhook, tmp_path_factory):
    """The fleet's inventory plus group_vars/all/notify.yml pointing at the local webhook."""
    directory = tmp_path_factory.mktemp("maint-inventory")
    shutil.copy(fleet.hosts_file, directory / "hosts.yml")
    (directory / "host_vars").symlink_to(fleet.hosts_file.parent / "host_vars")
    (directory / "group_vars" / "all").mkdir(parents=True)
    url = f"http://127.0.0.1:{webhook.server_address[1]}/hook"
    (directory / "group_vars" / "all" / "notify.yml").write_text(
        yaml.safe_dump({"botops_notify_webhook_url": url, "botops_notify_format": "generic"}))
    return directory / "hosts.yml"


def backup_sets(fleet, name) -> set[str]:
    path = Path(fleet.bot(name)["root"]) / "backups"
    return {p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")} if path.is_dir() else set()


def record_file(fleet, name, window="weekly") -> Path:
    return Path(fleet.bot(name)["root"]) / "shared" / "data" / f"botops-maintenance-{window}.json"


def ledger(fleet, name) -> tuple[int, int]:
    return tuple(fleet.db_query(name, "SELECT count(*), coalesce(max(id), 0) FROM trades")[0])


def pids(fleet) -> dict[str, int]:
    found = fleet.pids()
    return {name: found.get(name) for name in BOTS}


@pytest.fixture
def clean(fleet):
    """Leave the bots as found: running and ready, no backup set or record this test made."""
    before = {name: backup_sets(fleet, name) for name in BOTS}
    yield
    for name in BOTS:
        for extra in backup_sets(fleet, name) - before[name]:
            shutil.rmtree(Path(fleet.bot(name)["root"]) / "backups" / extra, ignore_errors=True)
        for window in ("daily", "weekly", "monthly"):
            record_file(fleet, name, window).unlink(missing_ok=True)
    stopped = [n for n, info in fleet.processes().items() if n in BOTS and info["statename"] != "RUNNING"]
    if stopped:
        fleet.supervisorctl("start", *stopped)
    fleet.wait_ready(BOTS, timeout=60)


def maintenance(inventory, tmp_path, *args) -> tuple[subprocess.CompletedProcess, dict | None]:
    env = dict(os.environ, BOTOPS_ARTIFACTS_DIR=str(tmp_path / "artifacts"), BOTOPS_LOCK_DIR=str(tmp_path / "locks"))
    proc = subprocess.run([str(BOTOPS), "maintenance", f"--inventory={inventory}", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    match = re.search(r"summary: (\S+botops-summary\.json)", proc.stdout)
    summary = json.loads(Path(match.group(1)).read_text()) if match else None
    return proc, summary


def trading_goes_on(fleet, name, since: tuple[int, int]) -> None:
    assert wait_until(lambda: ledger(fleet, name)[0] > since[0], timeout=20), f"{name} does not trade"
    count, top = ledger(fleet, name)
    assert count == top, f"{name}: trades not continuous ({count} rows, max id {top})"


def test_outside_the_window_nothing_runs(fleet, inventory, webhook, tmp_path, clean):
    before_pids, before_sets = pids(fleet), {n: backup_sets(fleet, n) for n in BOTS}
    before_ledger = {n: ledger(fleet, n) for n in BOTS}
    proc, summary = maintenance(inventory, tmp_path, "--window=weekly", f"--limit={','.join(BOTS)}", f"--now={OUTSIDE}")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "closed for every targeted bot" in proc.stderr
    assert "mojorust (bot01): every Sunday at 03:00 UTC for 1h; next opens Sun 2026-11-29 03:00 UTC" in proc.stderr
    assert "papertrader (bot02): every Sunday at 02:00 UTC for 1h; next opens Sun 2026-11-29 02:00 UTC" in proc.stderr
    assert summary is None, "no playbook may run outside the window"
    assert pids(fleet) == before_pids
    assert {n: backup_sets(fleet, n) for n in BOTS} == before_sets
    for name in BOTS:
        trading_goes_on(fleet, name, before_ledger[name])
        assert not record_file(fleet, name).exists()
    assert webhook.received == []

    unknown, _ = maintenance(inventory, tmp_path, "--window=yearly")
    assert unknown.returncode == 2 and "expected one of: daily, weekly, monthly" in unknown.stderr


def test_in_window_check_apply_apply_again(fleet, inventory, webhook, tmp_path, clean):
    limit = f"--limit={','.join(BOTS)}"
    before_pids, before_sets = pids(fleet), {n: backup_sets(fleet, n) for n in BOTS}

    check, summary = maintenance(inventory, tmp_path, "--window=weekly", limit, f"--now={SUNDAY}", "--check")
    assert check.returncode == 0, check.stdout + check.stderr
    assert summary["check"] is True and summary["bots"]["bot01"]["result"] == "maintained"
    assert pids(fleet) == before_pids, "check mode stopped a bot"
    assert {n: backup_sets(fleet, n) for n in BOTS} == before_sets and not record_file(fleet, "bot01").exists()
    assert webhook.received == [], "check mode sends no notification"

    before_ledger = ledger(fleet, "bot01")
    apply, summary = maintenance(inventory, tmp_path, "--window=weekly", limit, f"--now={SUNDAY}")
    assert apply.returncode == 0, apply.stdout + apply.stderr
    bot01, bot02 = summary["bots"]["bot01"], summary["bots"]["bot02"]
    assert bot01["result"] == "maintained" and bot01["backup_id"] == "20261122T030000Z-weekly", bot01
    assert bot01["ready"] is True and bot01["downtime"] is not None
    assert bot02["result"] == "skipped" and "window closed for papertrader" in bot02["message"], bot02
    assert backup_sets(fleet, "bot01") - before_sets["bot01"] == {"20261122T030000Z-weekly"}
    assert backup_sets(fleet, "bot02") == before_sets["bot02"]
    after_pids = pids(fleet)
    assert after_pids["bot01"] != before_pids["bot01"], "bot01 was not restarted"
    assert after_pids["bot02"] == before_pids["bot02"], "bot02 was touched outside its window"
    assert fleet.is_ready("bot01")
    trading_goes_on(fleet, "bot01", before_ledger)
    record = json.loads(record_file(fleet, "bot01").read_text())
    assert record["occurrence"] == "2026-11-22T03:00:00+00:00" and record["window"] == "weekly"
    events = [m["event"] for m in webhook.received]
    assert events == ["maintenance_started", "maintenance_finished"], events
    assert webhook.received[0]["details"]["bots"] == ["bot01"]
    assert "bot01" in webhook.received[1]["details"]["bots"]

    again, summary = maintenance(inventory, tmp_path, "--window=weekly", limit, f"--now={SUNDAY}")
    assert again.returncode == 0, again.stdout + again.stderr
    assert summary["bots"]["bot01"]["result"] == "skipped"
    assert "already completed" in summary["bots"]["bot01"]["message"]
    assert all(h["changed"] == 0 for h in summary["hosts"].values()), summary["hosts"]
    assert pids(fleet) == after_pids
    assert len(webhook.received) == 2, "nothing to announce when nothing is due"


def test_forced_outside_the_window(fleet, inventory, webhook, tmp_path, clean):
    webhook.received.clear()
    before_pid, before_sets, before_ledger = pids(fleet)["bot02"], backup_sets(fleet, "bot02"), ledger(fleet, "bot02")
    proc, summary = maintenance(inventory, tmp_path, "--window=weekly", "--limit=bot02", f"--now={OUTSIDE}", "--force")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    row = summary["bots"]["bot02"]
    assert row["result"] == "maintained" and row["ready"] is True, row
    new = backup_sets(fleet, "bot02") - before_sets
    assert new == {row["backup_id"]}, (new, row)
    manifest = json.loads((Path(fleet.bot("bot02")["root"]) / "backups" / row["backup_id"] / "manifest.json").read_text())
    assert manifest["label"] == "maintenance-weekly"
    assert pids(fleet)["bot02"] != before_pid and fleet.is_ready("bot02")
    trading_goes_on(fleet, "bot02", before_ledger)
    assert [m["event"] for m in webhook.received] == ["maintenance_started", "maintenance_finished"]
    assert "(forced)" in webhook.received[0]["message"]


def test_a_failed_step_starts_the_bot_again_and_stops_the_rollout(fleet, inventory, webhook, clean):
    """bot01 fails after its stop (a backup id the backup module refuses): the role starts it again and
    fails it, the deploy (serial 1) never reaches bot02, the lock is given back, the failure announced."""
    webhook.received.clear()
    before_pids = pids(fleet)
    out = run_playbook(inventory, (REPO / "playbooks" / "maintenance.yml").read_text(), limit="bot01,bot02",
                       extravars={"botops_maintenance_window": "weekly", "botops_maintenance_force": True,
                                  "botops_maintenance_serial": 1, "botops_run_id": "it-failure",
                                  "bot_maintenance_backup_id": "not a backup id"})
    assert out["status"] == "failed", out["stdout"][-3000:]
    failed = {host: res.get("msg", "") for (host, task), res in out["results"].items()
              if res["_event"] == "runner_on_failed" and task == "Fail the bot so the run stops"}
    assert list(failed) == ["bot01"], out["stdout"][-3000:]
    assert "failed at 'Back up the bot's database and config'" in failed["bot01"]
    assert "was started again and is ready" in failed["bot01"]
    assert pids(fleet)["bot01"] != before_pids["bot01"] and fleet.is_ready("bot01")
    assert pids(fleet)["bot02"] == before_pids["bot02"], "the deploy went on after a failed bot"
    assert not any(host == "bot02" and task == "Stop the bot gracefully" for host, task in out["results"])
    assert not (Path(fleet.bot("bot01")["root"]) / "shared" / "data" / "botops.lock").exists()
    assert [m["event"] for m in webhook.received] == ["maintenance_started", "maintenance_failed"]
    assert not record_file(fleet, "bot01").exists()
