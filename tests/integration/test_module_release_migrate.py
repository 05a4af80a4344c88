"""bot_release and bot_migrate on the shared sandbox fleet, through real Ansible.

Two bots of two families make the whole round trip: install 1.1.0 (a corrupt artifact is
refused), switch `current`, stop, migrate the expand revision, start and see the new column
written, then downgrade it, go up to 2.0.0's contract head, see the downgrade refused, and go
back. Every step in the rhythm check mode -> apply -> apply again, then the real state (symlinks,
alembic_version, columns, trades). The bots end as they started: release 1.0.0, revision
0001_initial, running and ready, with the release history they had (a fixture restores that
even when a step fails).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest

try:  # tests/integration as a package or as a plain directory on sys.path
    from .playbook import run_playbook
except ImportError:
    from playbook import run_playbook

from botops.sandbox.fleet import wait_until

BOTS = ["bot04", "bot05"]  # hyperliquid, vanta
BASE = "1.0.0"
BASE_REVISION = "0001_initial"
ALEMBIC = str(Path(sys.executable).parent / "alembic")

COMMON = """\
profile: "{{ botops_profile }}"
        bot: "{{ botops_bot }}"
        secrets: "{{ botops_secrets }}"\
"""


def play(tasks: str) -> str:
    return f"- hosts: all\n  gather_facts: false\n  tasks:\n{tasks}"


def revision(fleet, name):
    return fleet.db_query(name, "SELECT version_num FROM alembic_version")[0][0]


def columns(fleet, name):
    rows = fleet.db_query(name, "SELECT column_name FROM information_schema.columns WHERE table_name = 'trades'")
    return {r[0] for r in rows}


def service(fleet, op, names):
    proc = fleet.supervisorctl(op, *names)
    state = "RUNNING" if op == "start" else "STOPPED"
    ok = wait_until(lambda: all(fleet.processes()[n]["statename"] == state for n in names), timeout=30)
    assert ok, f"supervisorctl {op} {names}: {proc.stdout} {proc.stderr}"


def restore(fleet, names, ledgers):
    """Put the bots back on release 1.0.0 at revision 0001_initial, running and ready, with the
    ledger they had (or none)."""
    artifacts = fleet.artifacts_dir
    for name in names:
        b = fleet.bot(name)
        root = Path(b["root"])
        if revision(fleet, name) != BASE_REVISION:
            service(fleet, "stop", [name])
            with tempfile.TemporaryDirectory() as tmp:  # 2.0.0 knows every revision
                with tarfile.open(artifacts / "refbot-2.0.0.tar.gz") as tar:
                    tar.extractall(tmp, filter="data")
                env = dict(os.environ, DATABASE_URL=b["database_url"], PYTHONDONTWRITEBYTECODE="1")
                subprocess.run([ALEMBIC, "-c", f"{tmp}/alembic.ini", "downgrade", BASE_REVISION],
                               cwd=tmp, env=env, check=True, capture_output=True, timeout=120)
        if os.readlink(root / "current") != f"releases/{BASE}":
            tmp_link = root / ".current-restore"
            tmp_link.unlink(missing_ok=True)
            tmp_link.symlink_to(f"releases/{BASE}")
            os.replace(tmp_link, root / "current")
            if fleet.processes()[name]["statename"] == "RUNNING":
                service(fleet, "stop", [name])
        for entry in (root / "releases").iterdir():
            if entry.name != BASE:
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        if ledgers.get(name) is not None:
            (root / "releases" / "ledger.json").write_bytes(ledgers[name])
    stopped = [n for n in names if fleet.processes()[n]["statename"] != "RUNNING"]
    if stopped:
        service(fleet, "start", stopped)
    fleet.wait_ready(names, timeout=60)


@pytest.fixture(autouse=True)
def venv_on_path(monkeypatch):
    """ansible-runner looks for ansible-playbook on PATH: use the one of this Python's environment."""
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")


@pytest.fixture
def bots(fleet):
    """The two bots, on 1.0.0 at 0001_initial; a ledger other tests left is set aside meanwhile."""
    ledgers = {}
    for name in BOTS:
        root = Path(fleet.bot(name)["root"])
        assert os.readlink(root / "current") == f"releases/{BASE}", f"{name} is not on {BASE}"
        assert revision(fleet, name) == BASE_REVISION, name
        others = sorted(p.name for p in (root / "releases").iterdir() if p.is_dir() and not p.name.startswith("."))
        assert others == [BASE], f"{name}: releases other than {BASE} are installed: {others}"
    for name in BOTS:
        ledger = Path(fleet.bot(name)["root"]) / "releases" / "ledger.json"
        ledgers[name] = ledger.read_bytes() if ledger.exists() else None
        ledger.unlink(missing_ok=True)
    yield BOTS
    restore(fleet, BOTS, ledgers)


@pytest.fixture
def corrupt_artifacts(fleet, tmp_path):
    """A copy of the 2.0.0 artifact whose tarball no longer matches its manifest's sha256."""
    out = tmp_path / "corrupt"
    out.mkdir()
    shutil.copy(fleet.artifacts_dir / "refbot-2.0.0.json", out)
    data = bytearray((fleet.artifacts_dir / "refbot-2.0.0.tar.gz").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (out / "refbot-2.0.0.tar.gz").write_bytes(bytes(data))
    return out


def run(fleet, tasks, **extravars):
    return run_playbook(fleet.hosts_file, play(tasks), extravars=extravars, limit=",".join(BOTS))


def results(out, task):
    found = {host: res for (host, name), res in out["results"].items() if name == task}
    assert sorted(found) == BOTS, f"task {task!r} did not run on every bot:\n{out['stdout'][-3000:]}"
    return found


def failed(res):
    return res.get("_event") == "runner_on_failed"


@pytest.mark.slow  # the default suite keeps under 15 minutes; run with -m slow
def test_release_switch_and_migration_round_trip(fleet, bots, corrupt_artifacts):
    artifacts = str(fleet.artifacts_dir)

    # ------------------------------------------------------------ install and switch (bots running)
    out = run(fleet, f"""\
    - name: Install 1.1.0 in check mode
      botops.fleet.bot_release:
        {COMMON}
        version: 1.1.0
        artifact: "{{{{ artifacts }}}}"
      check_mode: true
    - name: Look for the 1.1.0 release directory
      ansible.builtin.stat: {{path: "{{{{ bot_root }}}}/releases/1.1.0"}}
    - name: Install a corrupt 2.0.0
      botops.fleet.bot_release:
        {COMMON}
        version: 2.0.0
        artifact: "{{{{ corrupt }}}}"
      ignore_errors: true
    - name: Install 1.1.0
      botops.fleet.bot_release:
        {COMMON}
        version: 1.1.0
        artifact: "{{{{ artifacts }}}}"
    - name: Install 1.1.0 again
      botops.fleet.bot_release:
        {COMMON}
        version: 1.1.0
        artifact: "{{{{ artifacts }}}}"
    - name: Switch current to 1.1.0 in check mode
      botops.fleet.bot_release:
        {COMMON}
        version: 1.1.0
        state: current
      check_mode: true
    - name: Read current after the check
      ansible.builtin.stat: {{path: "{{{{ bot_root }}}}/current"}}
    - name: Switch current to 1.1.0
      botops.fleet.bot_release:
        {COMMON}
        version: 1.1.0
        state: current
        backup_id: "it-{{{{ inventory_hostname }}}}"
    - name: Switch current to 1.1.0 again
      botops.fleet.bot_release:
        {COMMON}
        version: 1.1.0
        state: current
""", artifacts=artifacts, corrupt=str(corrupt_artifacts))
    for host, res in results(out, "Install 1.1.0 in check mode").items():
        assert res["changed"] and res["actions"] == ["verify refbot-1.1.0.tar.gz sha256", "install 1.1.0"], host
    for host, res in results(out, "Look for the 1.1.0 release directory").items():
        assert res["stat"]["exists"] is False, f"{host}: check mode installed 1.1.0"
    for host, res in results(out, "Install a corrupt 2.0.0").items():
        assert failed(res) and "checksum mismatch" in res["msg"], (host, res.get("msg"))
        assert res["msg"].startswith(f"Failed to install release 2.0.0 on bot '{host}'")
    for host, res in results(out, "Install 1.1.0").items():
        assert res["changed"] and res["release"]["alembic_head"] == "0002_trade_fee", host
    for host, res in results(out, "Install 1.1.0 again").items():
        assert res["changed"] is False and res["actions"] == [], host
    for host, res in results(out, "Switch current to 1.1.0 in check mode").items():
        assert res["changed"] and res["previous"] == BASE and res["current"] == "1.1.0", host
    for host, res in results(out, "Read current after the check").items():
        assert res["stat"]["lnk_target"] == f"releases/{BASE}", f"{host}: check mode switched current"
    for host, res in results(out, "Switch current to 1.1.0").items():
        assert res["changed"] and res["diff"] == {"before": {"current": BASE}, "after": {"current": "1.1.0"}}, host
        assert res["release"]["previous"] == BASE and res["release"]["backup_id"] == f"it-{host}"
    for host, res in results(out, "Switch current to 1.1.0 again").items():
        assert res["changed"] is False and res["actions"] == [], host
    for name in BOTS:
        root = Path(fleet.bot(name)["root"])
        assert os.readlink(root / "current") == "releases/1.1.0", name
        assert (root / "current" / "release.json").is_file() and not (root / "releases" / "2.0.0").exists(), name
        assert revision(fleet, name) == BASE_REVISION, name

    # ------------------------------------------------------------ expand migration (bots stopped)
    service(fleet, "stop", BOTS)
    out = run(fleet, f"""\
    - name: Plan the migration
      botops.fleet.bot_migrate:
        {COMMON}
      check_mode: true
    - name: Migrate to head
      botops.fleet.bot_migrate:
        {COMMON}
        state: upgraded
    - name: Migrate to head again
      botops.fleet.bot_migrate:
        {COMMON}
        state: upgraded
""")
    for host, res in results(out, "Plan the migration").items():
        assert res["changed"] and res["pending"] == ["0002_trade_fee"] and res["executed"] == [], host
        assert "ADD COLUMN fee" in res["sql"] and res["release"] == "1.1.0", host
    for host, res in results(out, "Migrate to head").items():
        assert res["changed"] and res["executed"] == ["0002_trade_fee"], (host, res.get("msg"))
        assert res["current_before"] == BASE_REVISION and res["current"] == "0002_trade_fee", host
        password = fleet.bot(host)["database"]["password"]
        assert password not in repr(res), f"{host}: the database password is in the result"
    for host, res in results(out, "Migrate to head again").items():
        assert res["changed"] is False and res["pending"] == [] and res["commands"] == [], host
    assert password not in out["stdout"]
    for name in BOTS:
        assert revision(fleet, name) == "0002_trade_fee", name
        assert "fee" in columns(fleet, name), name

    service(fleet, "start", BOTS)
    fleet.wait_ready(BOTS, timeout=60)
    for name in BOTS:
        wrote_fee = wait_until(
            lambda: fleet.db_query(name, "SELECT count(*) FROM trades WHERE fee IS NOT NULL")[0][0] > 0, timeout=30)
        assert wrote_fee, f"{name} on 1.1.0 wrote no trade with a fee"

    # ------------------------------------------------------------ down, contract, guard, back
    service(fleet, "stop", BOTS)
    out = run(fleet, f"""\
    - name: Downgrade the expand migration in check mode
      botops.fleet.bot_migrate:
        {COMMON}
        state: downgraded
        revision: {BASE_REVISION}
      check_mode: true
    - name: Downgrade the expand migration
      botops.fleet.bot_migrate:
        {COMMON}
        state: downgraded
        revision: {BASE_REVISION}
    - name: Downgrade the expand migration again
      botops.fleet.bot_migrate:
        {COMMON}
        state: downgraded
        revision: {BASE_REVISION}
    - name: Install 2.0.0
      botops.fleet.bot_release:
        {COMMON}
        version: 2.0.0
        artifact: "{{{{ artifacts }}}}"
    - name: Upgrade to the head of 2.0.0
      botops.fleet.bot_migrate:
        {COMMON}
        release: 2.0.0
    - name: Downgrade across the contract migration
      botops.fleet.bot_migrate:
        {COMMON}
        state: downgraded
        revision: {BASE_REVISION}
        release: 2.0.0
      ignore_errors: true
    - name: Force the contract downgrade
      botops.fleet.bot_migrate:
        {COMMON}
        state: downgraded
        revision: {BASE_REVISION}
        force_contract_downgrade: true
    - name: Switch current back to {BASE}
      botops.fleet.bot_release:
        {COMMON}
        version: {BASE}
        state: current
    - name: Remove 1.1.0 and 2.0.0
      botops.fleet.bot_release:
        {COMMON}
        state: absent
        keep: 1
    - name: List releases
      botops.fleet.bot_release_info:
        {COMMON}
""", artifacts=artifacts)
    for host, res in results(out, "Downgrade the expand migration in check mode").items():
        assert res["changed"] and res["pending"] == ["0002_trade_fee"] and "DROP COLUMN fee" in res["sql"], host
    for host, res in results(out, "Downgrade the expand migration").items():
        assert res["changed"] and res["executed"] == ["0002_trade_fee"] and res["current"] == BASE_REVISION, host
    for host, res in results(out, "Downgrade the expand migration again").items():
        assert res["changed"] is False and res["commands"] == [], host
    for host, res in results(out, "Upgrade to the head of 2.0.0").items():
        assert res["executed"] == ["0002_trade_fee", "0003_rename_qty"] and res["current"] == "0003_rename_qty", host
        assert res["contract"] == ["0003_rename_qty"], host
    for host, res in results(out, "Downgrade across the contract migration").items():
        assert failed(res), f"{host}: a downgrade across a contract migration was not refused"
        assert "refusing to downgrade across contract migration 0003_rename_qty" in res["msg"], res["msg"]
        assert "restore" in res["msg"] and "2.0.0" in res["msg"], res["msg"]
        assert res["executed"] == [] and res["current"] == "0003_rename_qty", host
    for host, res in results(out, "Force the contract downgrade").items():
        # current (1.1.0) does not know 0003: the installed release that does (2.0.0) runs it
        assert res["release"] == "2.0.0" and res["current"] == BASE_REVISION, (host, res.get("msg"))
        assert res["executed"] == ["0003_rename_qty", "0002_trade_fee"], host
    for host, res in results(out, f"Switch current back to {BASE}").items():
        assert res["changed"] and res["previous"] == "1.1.0" and res["current"] == BASE, host
    for host, res in results(out, "Remove 1.1.0 and 2.0.0").items():
        assert sorted(res["pruned"]) == ["1.1.0", "2.0.0"] and res["changed"], host
    for host, res in results(out, "List releases").items():
        statuses = {r["version"]: (r["status"], r["installed"]) for r in res["releases"]}
        assert statuses == {BASE: ("good", True), "1.1.0": ("installed", False),
                            "2.0.0": ("installed", False)}, host
        assert res["current"] == BASE and res["previous_good"] is None, host
        assert [h["version"] for h in res["history"]] == ["1.1.0", BASE], host
    for name in BOTS:
        root = Path(fleet.bot(name)["root"])
        assert revision(fleet, name) == BASE_REVISION and "fee" not in columns(fleet, name), name
        assert {"qty"} <= columns(fleet, name) and "quantity" not in columns(fleet, name), name
        assert os.readlink(root / "current") == f"releases/{BASE}", name
        assert sorted(p.name for p in (root / "releases").iterdir() if not p.name.startswith(".")) == [
            BASE, "ledger.json"], name
