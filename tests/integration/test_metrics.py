"""Every run leaves its metrics for Prometheus (plugins/callback/metrics.py), through the real CLI on
the shared sandbox fleet: what they say is what the bots are."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BOTOPS = Path(sys.executable).with_name("botops")


def test_a_status_run_leaves_each_bots_readiness_and_release(fleet, tmp_path):
    textfile = tmp_path / "textfile" / "botops.prom"
    env = dict(os.environ, BOTOPS_ARTIFACTS_DIR=str(tmp_path / "runs"), BOTOPS_LOCK_DIR=str(tmp_path / "locks"),
               BOTOPS_METRICS_TEXTFILE=str(textfile))
    proc = subprocess.run([str(BOTOPS), "status", f"--inventory={fleet.hosts_file}",
                           "--limit=bot01,bot02"], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = textfile.read_text()
    for bot in ("bot01", "bot02"):
        release = os.path.basename(os.readlink(Path(fleet.bot(bot)["root"]) / "current"))
        assert f'botops_release_info{{bot="{bot}",release="{release}"}} 1' in text, text
        assert f'botops_bot_ready{{bot="{bot}"}} {1 if fleet.is_ready(bot) else 0}' in text, text
        assert f'botops_operation_success{{bot="{bot}",operation="status"}} 1' in text, text
    assert "bot03" not in text
