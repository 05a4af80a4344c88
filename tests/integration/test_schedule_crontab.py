"""`botops schedule --install / --uninstall` with the real crontab program, when the host has one.

The current user's crontab is saved first and put back afterwards whatever happens; the default
suite does not need cron (the crontab text is unit-tested through a scratch crontab program).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BOTOPS = REPO / ".venv" / "bin" / "botops"

pytestmark = pytest.mark.skipif(shutil.which("crontab") is None, reason="no crontab program (apt package cron)")


def crontab_text() -> str | None:
    proc = subprocess.run(["crontab", "-l"], capture_output=True, text=True)
    return proc.stdout if proc.returncode == 0 else None


def test_install_and_uninstall_with_the_real_crontab(tmp_path):
    saved = crontab_text()
    env_dirs = {"BOTOPS_ARTIFACTS_DIR": str(tmp_path / "artifacts"), "BOTOPS_LOCK_DIR": str(tmp_path / "locks")}
    env = dict(os.environ, **env_dirs)

    def run(*args):
        return subprocess.run([str(BOTOPS), "schedule", *args], cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=60)

    try:
        first = run("--install")
        assert first.returncode == 0, first.stderr
        installed = crontab_text()
        assert installed is not None and installed.count("# BEGIN botops maintenance") == 1
        assert "--window=weekly" in installed and "flock -n" in installed
        again = run("--install")
        assert again.returncode == 0 and "nothing changed" in again.stdout
        assert crontab_text() == installed
        removed = run("--uninstall")
        assert removed.returncode == 0, removed.stderr
        assert "# BEGIN botops" not in (crontab_text() or "")
    finally:
        if saved is None:
            subprocess.run(["crontab", "-r"], capture_output=True)
        else:
            subprocess.run(["crontab", "-"], input=saved, text=True, check=True)
