"""The same playbooks and Invoke tasks, unchanged, over real SSH with a production-shaped inventory.

Three hosts behind their own sshd (tests/ssh/conftest.py), one unprivileged bot user each, secrets
in Ansible Vault files. The tests run in file order, like an operator's day: the hosts refuse what
they must refuse, the morning status, a halt and its release, a halt engaged again while a release
runs (the kill switch wins), a deploy, the Fabric tasks (logs, exec, a last-resort kill of a bot
whose API hangs, and its restart), and at the end no secret in anything that was printed or kept.
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from .conftest import REPO, SshFleet, SshHost, close_control_masters

# The tier runs longer than the default suite's budget (a deploy over SSH in two batches is most of
# it): run it with `python -m pytest -m ssh` (or with the other slow tiers, `-m slow`).
pytestmark = [pytest.mark.ssh, pytest.mark.slow]

BOTOPS = Path(sys.executable).with_name("botops")
RECORD = Path("shared") / "data" / "botops-kill-switch.json"  # the operator's engagement, on the bot's host
OUTPUTS: list[str] = []  # everything the tier's `invoke` runs printed, checked for secrets at the end


def invoke(ssh_fleet: SshFleet, *args: str) -> subprocess.CompletedProcess:
    cmd = [str(BOTOPS), *args, f"--inventory={ssh_fleet.inventory}"]
    proc = subprocess.run(cmd, env=ssh_fleet.env, capture_output=True, text=True, timeout=900)
    OUTPUTS.append(proc.stdout + proc.stderr)
    return proc


def output(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout + proc.stderr


def wait_growth(host: SshHost, timeout: float = 60.0) -> None:
    """The bot trades: its trade count grows (polled)."""
    start = host.trades()
    deadline = time.monotonic() + timeout
    while host.trades() <= start:
        assert time.monotonic() < deadline, f"{host.name} made no trade in {timeout:.0f}s"
        time.sleep(0.1)


def assert_not_trading(host: SshHost) -> None:
    before = host.trades()
    time.sleep(0.5)  # five trade intervals: a halted bot writes none
    assert host.trades() == before, f"{host.name} still trades"


def bot_pid(host: SshHost) -> int | None:
    info = host.fleet.processes().get("bot01") or {}
    return info.get("pid") or None


def audit(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def runs(ssh_fleet: SshFleet) -> Path:
    return Path(ssh_fleet.env["BOTOPS_ARTIFACTS_DIR"])


def ssh(ssh_fleet: SshFleet, host: SshHost, user: str, *options: str) -> subprocess.CompletedProcess:
    cmd = ["ssh", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={ssh_fleet.known_hosts}",
           "-o", "StrictHostKeyChecking=yes", "-o", "ConnectTimeout=20", *options, "-p", str(host.ssh_port),
           f"{user}@{host.address}", "id -un"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def owned_by_others(host: SshHost) -> list[str]:
    uid = pwd.getpwnam(host.user).pw_uid
    return [str(p) for p in [host.root, *host.root.rglob("*")] if p.lstat().st_uid != uid]


def test_hosts_take_keys_only_and_no_root(ssh_fleet):
    host = ssh_fleet.hosts["hl-eu-1"]
    key = ("-i", str(ssh_fleet.key), "-o", "IdentitiesOnly=yes")
    assert ssh(ssh_fleet, host, host.user, *key).stdout.strip() == host.user
    root = ssh(ssh_fleet, host, "root", *key)
    assert root.returncode != 0 and "Permission denied" in root.stderr
    password = ssh(ssh_fleet, host, host.user, "-o", "PubkeyAuthentication=no",
                   "-o", "PreferredAuthentications=password,keyboard-interactive")
    assert password.returncode != 0 and "Permission denied" in password.stderr
    for h in ssh_fleet.hosts.values():  # each bot runs as its unprivileged user and owns its files
        status = Path(f"/proc/{bot_pid(h)}/status").read_text()
        uid = int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])
        assert uid == pwd.getpwnam(h.user).pw_uid != 0, h.name
        assert owned_by_others(h) == [], h.name


def test_status_over_ssh_shows_every_bot(ssh_fleet):
    proc = invoke(ssh_fleet, "status")
    assert proc.returncode == 0, output(proc)
    for name in ssh_fleet.hosts:
        line = next((line for line in proc.stdout.splitlines() if line.startswith(name + " ")), None)
        assert line is not None, f"{name} missing from the status table:\n{proc.stdout}"
        assert line.split()[1:5] == ["yes", "yes", "RUNNING", "1.0.0"], line
    for host in ssh_fleet.hosts.values():  # the playbook reached the bots through their sshd, as their user
        log = (ssh_fleet.dir / "sshd" / f"{host.name}.log").read_text()
        assert f"Accepted publickey for {host.user}" in log, host.name


def logins(ssh_fleet: SshFleet, host: SshHost) -> int:
    return (ssh_fleet.dir / "sshd" / f"{host.name}.log").read_text().count(f"Accepted publickey for {host.user}")


def test_kill_switch_halts_and_releases_over_ssh(ssh_fleet):
    close_control_masters(ssh_fleet.dir)  # no connection open: the halt logs in itself
    before = {name: logins(ssh_fleet, host) for name, host in ssh_fleet.hosts.items()}
    proc = invoke(ssh_fleet, "kill-switch", "--level=halt", "--reason=exchange incident (ssh tier)")
    assert proc.returncode == 0, output(proc)
    # every host's bots went through one SSH session to their host (plugins/plugin_utils/fleet_ssh.py),
    # not through Ansible's per-host task, which would log in again for each of its steps
    assert {name: logins(ssh_fleet, host) - before[name] for name, host in ssh_fleet.hosts.items()} == \
        {name: 1 for name in ssh_fleet.hosts}, output(proc)
    # the session left its connection open (ControlPersist, at Ansible's control path): a status
    # right after reuses it and logs in nowhere
    proc = invoke(ssh_fleet, "status")
    assert proc.returncode != 2, output(proc)
    assert {name: logins(ssh_fleet, host) - before[name] for name, host in ssh_fleet.hosts.items()} == \
        {name: 1 for name in ssh_fleet.hosts}, output(proc)
    for host in ssh_fleet.hosts.values():
        assert_not_trading(host)
        own = audit(host.root / "shared" / "data" / "botops-kill-switch.log")
        assert own and own[-1]["outcome"] == "engaged" and own[-1]["level"] == "halt", host.name
    controller = audit(runs(ssh_fleet) / "kill-switch-audit.log")
    assert {r["bot"] for r in controller if r["outcome"] == "engaged"} == set(ssh_fleet.hosts)
    assert bot_pid(ssh_fleet.hosts["mojo-1"]) is None  # mojorust halts by stopping its service, on its host

    proc = invoke(ssh_fleet, "kill-switch", "--release")
    assert proc.returncode == 0, output(proc)
    for host in ssh_fleet.hosts.values():
        wait_growth(host)


def engaged_record(host: SshHost) -> dict | None:
    path = host.root / RECORD
    return json.loads(path.read_text()).get("operator") if path.exists() else None


def session_on_host(host: SshHost) -> bool:
    """A kill switch's SSH session runs on the host: its Python, as the bot user, on the bootstrap
    (plugins/plugin_utils/fleet_ssh.py) that runs run_fleet."""
    uid = pwd.getpwnam(host.user).pw_uid
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry}").st_uid != uid:
                continue
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if b"importlib.abc" in cmdline and b"run_fleet" in cmdline:
            return True
    return False


def test_a_halt_engaged_while_a_release_runs_over_ssh_holds(ssh_fleet):
    """The kill switch wins: an operator engages halt again while the release of an earlier halt runs
    on the same bot over its SSH session. Whichever reaches the bot's host last, the bot ends halted
    and the operator's engagement stays recorded there."""
    host = ssh_fleet.hosts["mojo-1"]  # mojorust halts by stopping its service: its release starts it again
    first, again = "desk halt (ssh tier)", "halt again during the release (ssh tier)"
    proc = invoke(ssh_fleet, "kill-switch", "--level=halt", f"--reason={first}", "--limit=mojo-1")
    assert proc.returncode == 0, output(proc)
    assert bot_pid(host) is None and engaged_record(host)["reason"] == first

    release = subprocess.Popen([str(BOTOPS), "kill-switch", "--release", "--level=halt", "--limit=mojo-1",
                                f"--inventory={ssh_fleet.inventory}"], env=ssh_fleet.env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        # the release is under way on the host: its session runs there (or it has already ended)
        deadline = time.monotonic() + 120
        while not session_on_host(host) and release.poll() is None:
            assert time.monotonic() < deadline, "the release never reached its host"
            time.sleep(0.02)
        seen_on_host = release.poll() is None
        proc = invoke(ssh_fleet, "kill-switch", "--level=halt", f"--reason={again}", "--limit=mojo-1")
        halt_ended_first = release.poll() is None
        released, _ = release.communicate(timeout=600)
    finally:
        if release.poll() is None:
            release.kill()
            release.wait()
    OUTPUTS.append(released)
    order = (f"the release {'was seen on the host' if seen_on_host else 'had ended'} when the halt began; "
             f"the {'halt' if halt_ended_first else 'release'} ended first")
    assert proc.returncode == 0, f"{order}\n{output(proc)}"
    # the release may end either way (released, or left to the halt): the bot's state is what counts
    assert release.returncode in (0, 1), f"{order}\n{released}"

    assert bot_pid(host) is None, f"{order}: the bot runs after the operator's halt\n{released}\n{output(proc)}"
    assert_not_trading(host)
    record = engaged_record(host)
    assert record and record["level"] == "halt" and record["who"] == "ssh-tier", (order, record)
    assert record["reason"] in (first, again), (order, record)
    on_host = [r for r in audit(host.root / "shared" / "data" / "botops-kill-switch.log") if r["reason"] == again]
    assert not on_host or on_host[-1]["outcome"] == "engaged", (order, on_host)

    proc = invoke(ssh_fleet, "kill-switch", "--release", "--level=halt", "--limit=mojo-1")
    assert proc.returncode == 0, output(proc)
    assert engaged_record(host) is None
    wait_growth(host)


def test_deploy_over_ssh_copies_the_artifact_to_each_host(ssh_fleet):
    proc = invoke(ssh_fleet, "deploy", "--version=1.1.0", f"--artifacts={ssh_fleet.artifacts}")
    assert proc.returncode == 0, output(proc)
    tarball = ssh_fleet.artifacts / "refbot-1.1.0.tar.gz"
    head = json.loads((ssh_fleet.artifacts / "refbot-1.1.0.json").read_text())
    for host in ssh_fleet.hosts.values():
        copied = host.root / "releases" / ".incoming" / tarball.name
        assert hashlib.sha256(copied.read_bytes()).hexdigest() == head["sha256"], host.name
        assert os.readlink(host.root / "current").endswith("1.1.0"), host.name
        release = json.loads((host.root / "releases" / "1.1.0" / "release.json").read_text())
        revision = host.fleet.db_query("bot01", "SELECT version_num FROM alembic_version")[0][0]
        assert revision == release["alembic_head"], host.name
        wait_growth(host)
        assert owned_by_others(host) == [], f"{host.name}: files the bot user does not own"


def test_logs_and_exec_over_ssh(ssh_fleet):
    proc = invoke(ssh_fleet, "logs", "--bot=hl-eu-1", "--lines=5")
    assert proc.returncode == 0, output(proc)
    lines = proc.stdout.splitlines()
    assert len(lines) == 5 and all(" refbot" in line for line in lines), proc.stdout

    proc = invoke(ssh_fleet, "exec", "--limit=prod", "--command=id -un; readlink current")
    assert proc.returncode == 0, output(proc)
    for name, host in ssh_fleet.hosts.items():
        header = f"== {name} ({host.user}@{host.address}:{host.ssh_port}): exit 0"
        assert (header in proc.stdout) == (host.env == "prod"), proc.stdout
        if host.env == "prod":
            block = proc.stdout.split(header, 1)[1].split("==", 1)[0]
            assert host.user in block and "releases/1.1.0" in block

    proc = invoke(ssh_fleet, "exec", "--bot=mojo-1", "--command=echo broken >&2; exit 3")
    assert proc.returncode == 1, output(proc)
    assert "exit 3" in proc.stdout and "stderr: broken" in proc.stdout

    proc = invoke(ssh_fleet, "exec", "--bot=mojo-1", "--command=  ")
    assert proc.returncode == 2 and "must not be empty" in output(proc)


def test_last_resort_kill_over_ssh_when_the_api_hangs(ssh_fleet):
    host = ssh_fleet.hosts["vanta-stg-1"]
    pid = bot_pid(host)
    os.kill(pid, signal.SIGSTOP)  # the process lives, its API accepts connections and never answers
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://{host.address}:{host.bot['ports']['api']}/healthz", timeout=1)

    proc = invoke(ssh_fleet, "last-resort-kill", "--bot=vanta-stg-1", "--reason=API hangs (ssh tier)", "--grace=3")
    assert proc.returncode == 0, output(proc)
    row = next(line for line in proc.stdout.splitlines() if line.startswith("vanta-stg-1 "))
    assert row.split()[2] == "killed" and row.split()[4] == "stopped", proc.stdout  # and its supervisord will not restart it
    assert not Path(f"/proc/{pid}").exists() or "State:\tZ" in Path(f"/proc/{pid}/status").read_text()
    assert host.fleet.processes()["bot01"]["statename"] in ("STOPPED", "EXITED")  # not restarted behind our back
    assert_not_trading(host)
    on_host = audit(host.root / "shared" / "data" / "botops-kill-switch.log")[-1]
    assert (on_host["action"], on_host["outcome"], on_host["pids"]) == ("last-resort-kill", "killed", [pid])
    assert on_host["reason"] == "API hangs (ssh tier)"
    on_controller = audit(runs(ssh_fleet) / "kill-switch-audit.log")[-1]
    assert on_controller["bot"] == "vanta-stg-1" and on_controller["action"] == "last-resort-kill"

    service = f"{host.bot['supervisorctl']} -c {host.bot['supervisor_conf']} start bot01"
    proc = invoke(ssh_fleet, "exec", "--bot=vanta-stg-1", f"--command={service}")
    assert proc.returncode == 0, output(proc)
    wait_growth(host)


def test_no_secret_reaches_output_or_artifacts(ssh_fleet):
    assert len(OUTPUTS) >= 8, "run the whole module: this test checks what the others printed"
    secrets = ssh_fleet.secrets()
    for vault_file in (ssh_fleet.inventory / "host_vars").glob("*/vault.yml"):
        text = vault_file.read_text()
        assert text.startswith("$ANSIBLE_VAULT;"), vault_file
        assert not any(s in text for s in secrets)
    kept = [p.read_bytes() for p in runs(ssh_fleet).rglob("*") if p.is_file()]
    assert kept, "the runs kept no artifacts"
    for secret in secrets:
        assert not any(secret in out for out in OUTPUTS), "a secret was printed"
        assert not any(secret.encode() in blob for blob in kept), "a secret reached the artifacts"
