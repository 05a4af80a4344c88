"""A fleet task that fails is announced to the inventory's webhook (playbooks/notify.yml): the task,
the run id, each failed bot and why; never a secret. A task that succeeds, or is refused as bad
input, or runs in check mode, announces nothing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
BOTOPS = Path(sys.executable).with_name("botops")


def invoke(inventory, tmp_path, *args):
    env = dict(os.environ, BOTOPS_ARTIFACTS_DIR=str(tmp_path / "runs"), BOTOPS_LOCK_DIR=str(tmp_path / "locks"))
    return subprocess.run([str(BOTOPS), *args, f"--inventory={inventory}"], env=env,
                          capture_output=True, text=True, timeout=600)


def test_a_failed_promote_is_announced_with_its_bots_and_reasons(fleet, webhook, tmp_path):
    inventory = tmp_path / "inventory"
    inventory.mkdir()
    shutil.copy(fleet.hosts_file, inventory / "hosts.yml")
    (inventory / "host_vars").symlink_to(fleet.hosts_file.parent / "host_vars")
    (inventory / "group_vars" / "all").mkdir(parents=True)
    url = f"http://127.0.0.1:{webhook.server_address[1]}/hook"
    (inventory / "group_vars" / "all" / "notify.yml").write_text(
        yaml.safe_dump({"botops_notify_webhook_url": url, "botops_notify_format": "generic"}))
    hosts = inventory / "hosts.yml"
    webhook.received.clear()

    # bot02 is a papertrader bot, paper-only: promoting it to LIVE is refused and fails the run
    proc = invoke(hosts, tmp_path, "promote", "--to=live", "--limit=bot02")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert len(webhook.received) == 1, webhook.received
    notice = webhook.received[0]
    text = json.dumps(notice)
    assert notice["event"] == "promote_failed", notice
    summary = sorted((tmp_path / "runs" / "promote").glob("*/botops-summary.json"))[-1]
    run_id = summary.parent.name
    assert run_id in notice["message"] and "1 of 1 bot(s)" in notice["message"] and "bot02" in notice["message"]
    assert notice["details"]["failed"]["bot02"], notice
    secrets = yaml.safe_load((fleet.hosts_file.parent / "host_vars" / "bot02" / "secrets.yml").read_text())
    assert not [v for v in secrets.values() if isinstance(v, str) and len(v) > 3 and v in text]

    # bad input, check mode: nothing changed, nothing announced
    assert invoke(hosts, tmp_path, "promote", "--to=live", "--limit=bot02", "--check").returncode == 1
    assert invoke(hosts, tmp_path, "promote", "--to=paper", "--limit=bot02").returncode == 2
    assert len(webhook.received) == 1, webhook.received[1:]
