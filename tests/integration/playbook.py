"""Run a playbook text against a sandbox inventory through ansible-runner; return per-task results."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import ansible_runner

from botops import collection

REPO = Path(__file__).resolve().parents[2]


def run_playbook(inventory: Path | str, text: str, extravars: dict | None = None, limit: str | None = None,
                 check: bool = False) -> dict:
    """Run the playbook; returns {"status", "rc", "results": {(host, task name): res}, "stdout"}.

    The run's private data directory is removed afterwards: a test run leaves nothing in /tmp."""
    workdir = Path(tempfile.mkdtemp(prefix="botops-play-"))
    try:
        return _run(workdir, inventory, text, extravars, limit, check)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _run(workdir: Path, inventory, text, extravars, limit, check) -> dict:
    play = workdir / "play.yml"
    play.write_text(text)
    # group_vars next to the playbook: the same botops_bot / botops_profile the real playbooks use
    (workdir / "group_vars").symlink_to(REPO / "playbooks" / "group_vars")
    results: dict = {}

    def on_event(event):
        data = event.get("event_data") or {}
        if event.get("event") in ("runner_on_ok", "runner_on_failed", "runner_on_unreachable"):
            res = dict(data.get("res") or {})
            res["_event"] = event["event"]
            res.setdefault("failed", event["event"] != "runner_on_ok")
            results[(data.get("host"), data.get("task"))] = res
        return True

    env = {
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_HOME": str(workdir / ".ansible"),
        "ANSIBLE_COLLECTIONS_PATH": str(collection.link(REPO)),
        "ANSIBLE_ROLES_PATH": str(REPO / "roles"),
        "PYTHONPATH": str(REPO),
        # ansible-playbook from the same environment as the tests
        "PATH": os.pathsep.join((str(Path(sys.executable).parent), os.environ.get("PATH", ""))),
    }
    runner = ansible_runner.run(
        private_data_dir=str(workdir),
        playbook=str(play),
        inventory=str(inventory),
        extravars=extravars or {},
        limit=limit,
        cmdline="--check" if check else None,
        envvars=env,
        quiet=True,
        event_handler=on_event,
        suppress_env_files=True,
    )
    stdout = runner.stdout.read() if runner.stdout else ""
    return {"status": runner.status, "rc": runner.rc, "results": results, "stdout": stdout}
