"""The metrics every run leaves for Prometheus, the alert rules on them and the Grafana dashboard:
folded from runs as a bot's state, in the textfile format promtool accepts, and nothing in the rules or
the dashboard that botops does not export."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from ansible_collections.botops.fleet.plugins.module_utils.botops_metrics import METRICS, merge, render

REPO = Path(__file__).resolve().parents[2]
NAMES = {name for name, _, _ in METRICS}
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="no promtool (apt package prometheus; scripts/bootstrap)")


def sample(text, name, **labels):
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    found = [line.split()[-1] for line in text.splitlines() if line.startswith(f"{name}{{{want}}}")]
    return float(found[0]) if found else None


def fleet_runs():
    state = {}
    state = merge(state, "status", {"bot01": {"ready": True, "release": "1.0.0", "kill_switch": None},
                                    "bot02": {"ready": False, "release": "1.0.0",
                                              "kill_switch": {"level": "halt", "who": "ops",
                                                              "time": "2026-12-07T09:00:00Z"}}},
                  failed={"bot02"}, started=100.0, ended=104.0)
    state = merge(state, "backups", {"bot01": {"result": "ok", "backups": [
        {"backup_id": "a", "created_at": "2026-12-07T01:00:00Z", "verified": True},
        {"backup_id": "b", "created_at": "2026-12-07T02:00:00Z", "verified": False},
        {"backup_id": "c", "created_at": "2026-12-07T03:00:00Z", "verified": True, "damaged": "checksum"}]}},
        failed=set(), started=200.0, ended=201.5)
    state = merge(state, "deploy", {"bot01": {"result": "ok", "release_after": "1.1.0", "downtime": 1.8,
                                              "duration": 12.5}}, failed=set(), started=300.0, ended=320.0)
    state = merge(state, "kill_switch", {"bot01": {"result": "changed", "level": "pause"}}, failed=set(),
                  started=400.0, ended=401.0, kill_state="engaged")
    return state


def test_runs_fold_into_each_bots_state_and_render_as_textfile_samples():
    text = render(fleet_runs())
    assert sample(text, "botops_bot_ready", bot="bot01") == 1 and sample(text, "botops_bot_ready", bot="bot02") == 0
    assert sample(text, "botops_release_info", bot="bot01", release="1.1.0") == 1
    assert sample(text, "botops_release_info", bot="bot01", release="1.0.0") is None
    assert sample(text, "botops_operation_success", bot="bot02", operation="status") == 0
    assert sample(text, "botops_operation_downtime_seconds", bot="bot01", operation="deploy") == 1.8
    assert sample(text, "botops_operation_duration_seconds", bot="bot01", operation="deploy") == 12.5
    assert sample(text, "botops_operation_duration_seconds", bot="bot01", operation="backups") == 1.5
    # the newest verified set that is not damaged: 01:00
    assert sample(text, "botops_backup_verified_timestamp_seconds", bot="bot01") == 1796605200.0
    assert sample(text, "botops_kill_switch_engaged", bot="bot01", level="pause") == 1
    assert sample(text, "botops_kill_switch_engaged_since_timestamp_seconds", bot="bot02", level="halt") == 1796634000.0
    released = merge(fleet_runs(), "kill_switch", {"bot01": {"result": "changed", "level": None}}, failed=set(),
                     started=500.0, ended=501.0, kill_state="released")
    assert sample(render(released), "botops_kill_switch_engaged", bot="bot01", level="pause") is None
    check = merge(fleet_runs(), "status", {"bot02": {"ready": True, "kill_switch": None}}, failed=set(),
                  started=600.0, ended=601.0)
    assert "botops_kill_switch_engaged{bot=\"bot02\"" not in render(check)


def test_label_values_are_escaped():
    text = render(merge({}, "status", {'bot"x\\': {"ready": True}}, failed=set(), started=0.0, ended=1.0))
    assert 'botops_bot_ready{bot="bot\\"x\\\\"} 1' in text


@needs_promtool
def test_promtool_accepts_the_textfile():
    proc = subprocess.run([PROMTOOL, "check", "metrics"], input=render(fleet_runs()), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@needs_promtool
def test_promtool_accepts_the_alert_rules():
    proc = subprocess.run([PROMTOOL, "check", "rules", str(REPO / "monitoring" / "alerts.yml")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: 5 rules found" in proc.stdout


def used_metrics(expr):
    return set(re.findall(r"\b(botops_[a-z_]+)\b", expr))


def test_the_rules_and_the_dashboard_read_only_what_botops_exports():
    rules = yaml.safe_load((REPO / "monitoring" / "alerts.yml").read_text())["groups"][0]["rules"]
    names = {r["alert"] for r in rules}
    assert {"BotopsNoVerifiedBackup", "BotopsKillSwitchEngagedTooLong", "BotopsBotNotReady", "BotopsRolloutFailed"} <= names
    for rule in rules:
        assert used_metrics(rule["expr"]) and used_metrics(rule["expr"]) <= NAMES, rule
    dashboard = json.loads((REPO / "monitoring" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert exprs and all(used_metrics(e) and used_metrics(e) <= NAMES for e in exprs), exprs
    assert {used for e in exprs for used in used_metrics(e)} >= NAMES - {"botops_operation_last_run_timestamp_seconds"}
