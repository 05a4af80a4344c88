"""botops/host_commands.py: connection facts from a production-shaped inventory (vault included), input
checks, and the last-resort kill script run against real local processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import yaml
from invoke import Context, Exit

from botops import host_commands

VAULT_PASSWORD = "unit-vault-password"


@pytest.fixture
def vault_file(tmp_path, monkeypatch):
    """The vault password file, configured as ANSIBLE_VAULT_PASSWORD_FILE would configure it."""
    from ansible import constants
    from ansible.parsing.vault import VaultSecretsContext

    path = tmp_path / "vault-pass"
    path.write_text(VAULT_PASSWORD + "\n")
    monkeypatch.setattr(constants, "DEFAULT_VAULT_PASSWORD_FILE", str(path))
    monkeypatch.setattr(VaultSecretsContext, "_current", None)
    return path


@pytest.fixture
def inventory(tmp_path):
    """prod/staging and family groups, ssh settings in group_vars/all, a vault file per host."""
    from ansible.parsing.vault import VaultLib, VaultSecret

    inv = tmp_path / "inventory"
    files = {
        "hosts.yml": {"all": {"children": {
            "prod": {"hosts": {"hl-1": {"ansible_host": "10.0.1.11", "ansible_port": 2222, "ansible_user": "trading"},
                               "mojo-1": {"ansible_host": "10.0.1.21"}}},
            "staging": {"hosts": {"local-1": {"ansible_connection": "local"}}},
            "hyperliquid": {"hosts": {"hl-1": None}},
            "mojorust": {"hosts": {"mojo-1": None, "local-1": None}},
        }}},
        "group_vars/all/main.yml": {
            "ansible_user": "botops",
            "ansible_ssh_private_key_file": "~/.ssh/botops_ed25519",
            "ansible_ssh_common_args": "-o UserKnownHostsFile=/etc/botops/known_hosts -o StrictHostKeyChecking=yes",
        },
        "group_vars/hyperliquid/main.yml": {"bot_family": "hyperliquid",
                                            "bot_service": {"manager": "systemd", "name": "trading-bot-backend"}},
        "group_vars/mojorust/main.yml": {"bot_family": "mojorust", "bot_root": "/home/{{ ansible_user }}/trading-bot"},
        "host_vars/hl-1/main.yml": {"bot_root": "/opt/trading-bot", "bot_process_match": "uvicorn src.main:app --port 8080"},
        "host_vars/local-1/main.yml": {"bot_root": str(tmp_path / "local-bot"),
                                       "bot_service": {"manager": "supervisor", "name": "bot01",
                                                       "config": "/tmp/sup.conf", "supervisorctl": "/venv/bin/supervisorctl"}},
    }
    for name, data in files.items():
        (inv / name).parent.mkdir(parents=True, exist_ok=True)
        (inv / name).write_text(yaml.safe_dump(data))
    vault = VaultLib([("default", VaultSecret(VAULT_PASSWORD.encode()))])
    (inv / "host_vars" / "hl-1" / "vault.yml").write_bytes(
        vault.encrypt(yaml.safe_dump({"bot_api_token": "s3cr3t-token", "bot_database_password": "s3cr3t-db"})))
    return inv


def test_ssh_options_are_read_like_ssh_reads_them():
    options = host_commands._ssh_options("-o UserKnownHostsFile=/a/known -oStrictHostKeyChecking=no",
                                  "-C -o 'UserKnownHostsFile /b/one /b/two' -o ControlPersist=60s")
    assert options["userknownhostsfile"] == "/b/one /b/two"
    assert options["stricthostkeychecking"] == "no"
    assert options["controlpersist"] == "60s"


def test_connection_facts_come_from_groups_hosts_and_vault_files(inventory, vault_file):
    path, bots = host_commands.targets("exec", str(inventory), limit="all")
    by_name = {b.name: b for b in bots}
    assert sorted(by_name) == ["hl-1", "local-1", "mojo-1"]

    hl = by_name["hl-1"]
    assert (hl.host, hl.port, hl.user, hl.local) == ("10.0.1.11", 2222, "trading", False)
    assert hl.key_file == os.path.expanduser("~/.ssh/botops_ed25519")
    assert hl.known_hosts == ["/etc/botops/known_hosts"]
    assert hl.strict_host_keys
    assert hl.process_match == "uvicorn src.main:app --port 8080"  # the inventory's, over the profile's
    assert hl.service_stop == ["systemctl", "stop", "--no-block", "trading-bot-backend"]
    assert hl.where == "trading@10.0.1.11:2222"

    mojo = by_name["mojo-1"]
    assert (mojo.host, mojo.port, mojo.user) == ("10.0.1.21", 22, "botops")
    assert mojo.root == "/home/botops/trading-bot"  # templated as a playbook sees it
    assert mojo.process_match == "mojo run"  # the profile's default
    assert mojo.service_stop == ["systemctl", "stop", "--no-block", "trading-bot"]

    local = by_name["local-1"]
    assert local.local and local.where == "local"
    assert local.service_stop == ["/venv/bin/supervisorctl", "-c", "/tmp/sup.conf", "stop", "bot01"]


def test_a_vault_file_without_its_password_is_named(inventory, monkeypatch):
    from ansible import constants
    from ansible.parsing.vault import VaultSecretsContext

    monkeypatch.setattr(constants, "DEFAULT_VAULT_PASSWORD_FILE", None)
    monkeypatch.setattr(VaultSecretsContext, "_current", None)
    with pytest.raises(Exit) as exc:
        host_commands.targets("exec", str(inventory), bot="hl-1")
    assert exc.value.code == 2
    assert "ANSIBLE_VAULT_PASSWORD_FILE" in str(exc.value.message)


@pytest.mark.parametrize("kwargs, expected", [
    ({}, "give --bot=NAME or --limit=PATTERN"),
    ({"bot": "hl-1", "limit": "prod"}, "not both"),
    ({"bot": "prod"}, "is not one bot of the inventory"),
    ({"bot": "nosuchbot"}, "is no bot or group"),
    ({"bot": "a;rm -rf /"}, "is not a bot name"),
])
def test_targets_refuse_unclear_input(inventory, vault_file, kwargs, expected):
    with pytest.raises(Exit) as exc:
        host_commands.targets("exec", str(inventory), **kwargs)
    assert exc.value.code == 2
    assert expected in str(exc.value.message)


@pytest.mark.parametrize("command", [None, "", "   "])
def test_exec_refuses_an_empty_command(command):
    with pytest.raises(Exit) as exc:
        host_commands.exec_(Context(), command=command, bot="b1")
    assert exc.value.code == 2
    assert "--command is required" in exc.value.message


def test_exec_runs_in_the_bot_root_and_reports_each_exit_code(inventory, vault_file, capsys):
    root = Path(yaml.safe_load((inventory / "host_vars" / "local-1" / "main.yml").read_text())["bot_root"])
    root.mkdir()
    (root / "marker").write_text("here\n")
    host_commands.exec_(Context(), command="cat marker", bot="local-1", inventory=str(inventory))
    out = capsys.readouterr().out
    assert "== local-1 (local): exit 0" in out and "here" in out
    with pytest.raises(Exit) as exc:
        host_commands.exec_(Context(), command="echo oops >&2; exit 3", bot="local-1", inventory=str(inventory))
    assert exc.value.code == 1
    out = capsys.readouterr().out
    assert "exit 3" in out and "stderr: oops" in out


def test_logs_refuses_bad_input():
    for kwargs, expected in [({}, "--bot=NAME is required"), ({"bot": "b1", "lines": "many"}, "--lines")]:
        with pytest.raises(Exit) as exc:
            host_commands.logs(Context(), **kwargs)
        assert exc.value.code == 2 and expected in exc.value.message


def test_last_resort_kill_needs_a_reason():
    with pytest.raises(Exit) as exc:
        host_commands.last_resort_kill(Context(), bot="b1")
    assert exc.value.code == 2 and "--reason is required" in exc.value.message


# ----------------------------------------------------------------------------- the kill script
class Dummy:
    """A process whose command line ends with a unique marker, reaped in the background."""

    def __init__(self, code: str = "import time; time.sleep(300)", stop: bool = False, env: dict | None = None):
        self.marker = f"botops-unit-{uuid.uuid4().hex}"
        self.proc = subprocess.Popen([sys.executable, "-c", code, self.marker], env=env)
        threading.Thread(target=self.proc.wait, daemon=True).start()
        deadline = time.monotonic() + 10
        while not self.matches():
            assert time.monotonic() < deadline, "the dummy process did not start"
            time.sleep(0.02)
        if stop:
            os.kill(self.proc.pid, signal.SIGSTOP)

    def matches(self) -> list[int]:
        out = subprocess.run(["pgrep", "-f", "--", f"{self.marker}$"], capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]

    def target(self, root: Path, service_stop=None) -> host_commands.BotHost:
        return host_commands.BotHost(name="b1", family="vanta", root=str(root), process_match=f"{self.marker}$", local=True,
                              service_stop=service_stop)

    def close(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)


def kill(target, reason="unit test", grace=0.3, dry=False, settle=0.2):
    outcome = host_commands.run_on(target, "sh -s", stdin=host_commands.kill_script(target, reason, "tester", grace, dry,
                                                                        settle=settle), timeout=60)
    assert outcome.exit_code == 0, outcome
    return host_commands.parse_kill(outcome)


def audit_lines(root: Path) -> list[dict]:
    path = root / host_commands.AUDIT_LOG
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.parametrize("code, stop, signals", [
    ("import time; time.sleep(300)", False, ["TERM"]),
    ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)", False, ["TERM", "KILL"]),
    ("import time; time.sleep(300)", True, ["TERM"]),  # stopped: SIGCONT lets it act on SIGTERM
], ids=["term", "term-ignored", "stopped"])
def test_kill_escalates_only_as_far_as_needed_and_audits(tmp_path, code, stop, signals):
    dummy = Dummy(code, stop=stop)
    try:
        pid = dummy.matches()
        reason = "it's 100% stuck \\o/ \"quoted\""
        result = kill(dummy.target(tmp_path), reason=reason)
        record = result["record"]
        assert record["outcome"] == "killed"
        assert record["signals"] == signals
        assert record["pids"] == pid and record["remaining"] == []
        assert dummy.matches() == []
        assert result["audit_written"] is True
        assert audit_lines(tmp_path) == [record]
        assert record["reason"] == reason and record["bot"] == "b1" and record["who"] == "tester"
    finally:
        dummy.close()


def test_check_mode_kills_nothing_and_writes_nothing(tmp_path):
    dummy = Dummy()
    try:
        result = kill(dummy.target(tmp_path), dry=True)
        assert result["record"]["outcome"] == "would kill"
        assert result["record"]["pids"] == dummy.matches() != []
        assert not (tmp_path / host_commands.AUDIT_LOG).exists()
    finally:
        dummy.close()


def test_nothing_running_is_reported_and_audited(tmp_path):
    target = host_commands.BotHost(name="b1", family="vanta", root=str(tmp_path), process_match=f"nothing-{uuid.uuid4().hex}$",
                            local=True)
    record = kill(target)["record"]
    assert record["outcome"] == "not running" and record["signals"] == []
    assert audit_lines(tmp_path) == [record]


def test_a_restart_by_a_process_manager_is_caught(tmp_path):
    respawner = ("import os, subprocess, sys\n"
                 "while True:\n"
                 "    subprocess.run([sys.executable, '-c', 'import time; time.sleep(300)', os.environ['MARK']])\n")
    marker = f"botops-unit-{uuid.uuid4().hex}"
    parent = subprocess.Popen([sys.executable, "-c", respawner], env=dict(os.environ, MARK=marker))
    try:
        target = host_commands.BotHost(name="b1", family="vanta", root=str(tmp_path), process_match=f"{marker}$", local=True)
        deadline = time.monotonic() + 10
        while not subprocess.run(["pgrep", "-f", f"{marker}$"], capture_output=True).stdout:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        record = kill(target, settle=1.0)["record"]
        assert record["outcome"] == "respawned"
        assert record["remaining"] and not set(record["remaining"]) & set(record["pids"])
    finally:
        parent.kill()
        parent.wait()
        subprocess.run(["pkill", "-KILL", "-f", f"{marker}$"])


def test_the_service_manager_is_asked_to_stop_the_bot(tmp_path):
    dummy = Dummy()
    asked = tmp_path / "asked"
    try:
        record = kill(dummy.target(tmp_path, service_stop=["touch", str(asked)]))["record"]
        assert record["outcome"] == "killed" and record["service_stop"] == "stopped"
        assert asked.exists()
    finally:
        dummy.close()


def test_last_resort_kill_task_on_a_local_bot(inventory, vault_file, tmp_path, monkeypatch, capsys):
    root = Path(yaml.safe_load((inventory / "host_vars" / "local-1" / "main.yml").read_text())["bot_root"])
    dummy = Dummy()
    try:
        host_vars = inventory / "host_vars" / "local-1" / "main.yml"
        data = yaml.safe_load(host_vars.read_text())
        data.update(bot_process_match=f"{dummy.marker}$", bot_service={"manager": "none-here", "name": "x"})
        host_vars.write_text(yaml.safe_dump(data))
        monkeypatch.setenv("BOTOPS_ARTIFACTS_DIR", str(tmp_path / "runs"))
        monkeypatch.setattr(host_commands, "SETTLE_SECONDS", 0.2)
        results = host_commands.last_resort_kill(Context(), reason="unit", bot="local-1", grace=1, inventory=str(inventory))
        assert results["local-1"]["outcome"] == "killed"
        assert dummy.matches() == []
        controller = [json.loads(line) for line in (tmp_path / "runs" / "kill-switch-audit.log").read_text().splitlines()]
        assert controller[-1]["bot"] == "local-1" and controller[-1]["where"] == "local"
        assert audit_lines(root)[-1]["outcome"] == "killed"
        assert "killed" in capsys.readouterr().out
    finally:
        dummy.close()


def test_a_stopped_bot_is_continued_once_its_managers_sigterm_waits(tmp_path):
    dummy = Dummy(stop=True)
    pid = dummy.proc.pid
    # a service manager's stop: SIGTERM, then wait for the process to be gone (as supervisorctl does)
    manager = ["sh", "-c", f"sleep 0.3; kill -TERM {pid}; while kill -0 {pid} 2>/dev/null; do sleep 0.05; done"]
    try:
        record = kill(dummy.target(tmp_path, service_stop=manager), grace=5)["record"]
        assert (record["outcome"], record["signals"], record["service_stop"]) == ("killed", [], "stopped")
        assert dummy.proc.wait(5) == -signal.SIGTERM  # the manager's SIGTERM, acted on once continued
    finally:
        dummy.close()


def test_the_log_file_is_the_profiles():
    """Freqtrade's profile puts its log under user_data/; a family without `logs` has the default layout."""
    assert host_commands.log_file("freqtrade") == "user_data/freqtrade.log"
    assert host_commands.log_file("mojorust") == f"{host_commands.LOG_DIRECTORY}/{host_commands.LOG_FILE}"
    assert host_commands.log_file("no-such-family") == f"{host_commands.LOG_DIRECTORY}/{host_commands.LOG_FILE}"
