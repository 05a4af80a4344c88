"""botops installed with pip, used outside the checkout (kolla-ansible's model: a pip-installed command
with its playbooks as package data).

The wheel is built from this checkout and installed into a new virtualenv. The `botops` command
then runs from a scratch directory with a scratch home, against the shared sandbox fleet's
inventory: the playbooks, roles, modules, lookups and profiles it runs are the installed package's
(ansible-core finds the collection in the virtualenv's site-packages), and the checkout is on no
path. What it reports is checked against the bots themselves.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
COLLECTION = "ansible_collections/botops/fleet/"


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(wheel, virtualenv) of botops built and installed from this checkout."""
    work = tmp_path_factory.mktemp("pip-install")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check", "-q",
                           "-w", str(work / "dist"), str(REPO)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    wheel = next((work / "dist").glob("botops-*.whl"))
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    proc = subprocess.run([str(venv / "bin" / "pip"), "install", "--disable-pip-version-check", "-q", str(wheel)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return wheel, venv


def outside(venv: Path, tmp_path: Path) -> dict:
    """The environment of an operator's shell away from the checkout: a home of its own, no
    PYTHONPATH, no ANSIBLE_* or BOTOPS_* setting, the virtualenv's bin first on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "BOTOPS_", "PYTHON", "VIRTUAL_ENV"))}
    env.update(HOME=str(tmp_path / "home"), PATH=f"{venv / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}")
    (tmp_path / "home").mkdir(exist_ok=True)
    return env


def test_the_wheel_ships_the_collection_and_no_top_level_sandbox(installed):
    wheel, _ = installed
    names = zipfile.ZipFile(wheel).namelist()
    for shipped in ("botops/cli.py", "botops/sandbox/fleet.py", "botops/sandbox/refbot/alembic.ini",
                    COLLECTION + "playbooks/deploy.yml", COLLECTION + "playbooks/group_vars/all/botops.yml",
                    COLLECTION + "roles/bot_release/tasks/rollback.yml", COLLECTION + "plugins/modules/bot_facts.py",
                    COLLECTION + "plugins/module_utils/botops_bot.py", COLLECTION + "plugins/lookup/bot_profile.py",
                    COLLECTION + "profiles/freqtrade.yml", COLLECTION + "meta/runtime.yml",
                    COLLECTION + "ansible.cfg", COLLECTION + "galaxy.yml"):
        assert shipped in names, shipped
    tops = {name.split("/")[0] for name in names}
    assert tops == {"botops", "ansible_collections", next(t for t in tops if t.endswith(".dist-info"))}, tops
    assert not [n for n in names if "/tests/" in n or n.endswith(".pyc") or "/.sandbox/" in n]


def test_the_installed_command_operates_a_fleet_from_anywhere(installed, fleet, tmp_path):
    _, venv = installed
    env = outside(venv, tmp_path)
    where = tmp_path / "elsewhere"
    where.mkdir()
    listed = subprocess.run(["botops", "--list"], cwd=where, env=env, capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    assert "rollback" in listed.stdout and "sandbox.up" in listed.stdout

    proc = subprocess.run(["botops", "status", f"--inventory={fleet.hosts_file}", "--limit=bot01,bot02"],
                          cwd=where, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # the run's artifacts are in the installed botops's home, and its playbook was the package's
    runs = sorted((tmp_path / "home" / ".botops" / "artifacts").glob("*/*/command"))
    assert runs, "no run artifacts under ~/.botops/artifacts"
    command = json.loads(runs[-1].read_text())
    site = next((venv / "lib").glob("python3*/site-packages"))
    assert command["command"][-1].startswith(str(site / COLLECTION.rstrip("/") / "playbooks")) or \
        any(str(site / COLLECTION.rstrip("/") / "playbooks") in part for part in command["command"]), command
    assert not any(str(REPO) in part for part in command["command"]), command
    for bot in ("bot01", "bot02"):
        release = os.path.basename(os.readlink(Path(fleet.bot(bot)["root"]) / "current"))
        row = next(line for line in proc.stdout.splitlines() if line.lstrip().startswith(bot))
        assert release in row, proc.stdout


def test_the_installed_command_refuses_bad_input_with_exit_2(installed, tmp_path):
    _, venv = installed
    proc = subprocess.run(["botops", "deploy", "--verison=1.1.0"], cwd=tmp_path, env=outside(venv, tmp_path),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "did you mean --version?" in proc.stderr
