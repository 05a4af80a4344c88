"""plugins/plugin_utils/fleet_ssh.py: one SSH session per host carries the fleet kill switch of its bots.

The SSH tier (tests/ssh, `-m ssh`) drives real bots behind real sshd this way; here, the parts alone:
the bootstrap the host's Python runs (fed to a local Python, as sshd would hand it on), the ssh
command made from a host's inventory settings, and a host ssh cannot reach.
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from ansible_collections.botops.fleet.plugins.module_utils import botops_fleet_kill_switch as fleet
from ansible_collections.botops.fleet.plugins.plugin_utils import fleet_ssh

MODULE_UTILS = os.path.dirname(fleet.__file__)


def params(bots):
    checked = ArgumentSpecValidator(fleet.argument_spec()).validate(
        {"bots": bots, "state": "engaged", "level": "halt", "reason": "unit test", "audit_log": "/dev/null"})
    assert not checked.error_messages, checked.error_messages
    return checked.validated_parameters


def entry(name, root="/srv/bots/x"):
    return {"local": True, "bot": {"name": name, "family": "nosuchfamily", "root": root}, "secrets": {}}


def test_the_bootstrap_runs_run_fleet_from_the_zip_it_is_given():
    p = params([entry("bot01"), entry("bot02", root="relative/root")])
    payload = fleet_ssh.module_utils_payload(MODULE_UTILS)
    result, failure = fleet_ssh.drive_host([sys.executable, "-E", "-I", "-c", fleet_ssh.BOOTSTRAP], payload,
                                           dict(p, audit_log=""), False, timeout=60)
    assert set(result["bots"]) == {"bot01", "bot02"}
    for name in ("bot01", "bot02"):  # each judged on the host, by run_fleet, as the module would
        assert f"on bot '{name}': it has no profile (bot_family 'nosuchfamily')" in result["bots"][name]["msg"]
    assert result["summary"]["failed"] == 2 and failure


def test_the_payload_holds_only_module_utils_and_is_the_same_each_time():
    first = fleet_ssh.module_utils_payload(MODULE_UTILS)
    assert first == fleet_ssh.module_utils_payload(MODULE_UTILS)
    import io
    import zipfile

    names = zipfile.ZipFile(io.BytesIO(first)).namelist()
    assert names and all(n.startswith(fleet_ssh.PAYLOAD_PACKAGE) and n.endswith(".py") for n in names)
    assert fleet_ssh.PAYLOAD_PACKAGE + "botops_fleet_kill_switch.py" in names


def test_the_ssh_command_follows_the_inventory_and_carries_no_secret(tmp_path):
    host_vars = {"ansible_host": "10.0.1.11", "ansible_port": 2222, "ansible_user": "bot",
                 "ansible_ssh_private_key_file": "~/.ssh/fleet", "ansible_python_interpreter": "/opt/bot/bin/python",
                 "ansible_ssh_common_args": "-o UserKnownHostsFile=/etc/botops/known_hosts -o StrictHostKeyChecking=yes",
                 "bot_api_token": "s3cret-token"}
    command = fleet_ssh.ssh_command(fleet_ssh.destination(host_vars, "hl-eu-1"), str(tmp_path))
    assert command[0] == "ssh" and "BatchMode=yes" in command and "ControlMaster=auto" in command
    assert command[command.index("-p") + 1] == "2222" and command[command.index("-l") + 1] == "bot"
    assert command[command.index("-i") + 1] == os.path.expanduser("~/.ssh/fleet")
    assert "UserKnownHostsFile=/etc/botops/known_hosts" in command
    assert command[-2] == "10.0.1.11" and command[-1].startswith("/opt/bot/bin/python -E -c ")
    assert "StrictHostKeyChecking=no" not in command
    assert not any("s3cret" in part for part in command)
    assert "StrictHostKeyChecking=no" in fleet_ssh.ssh_command(fleet_ssh.destination({}, "h"), str(tmp_path),
                                                               host_key_checking=False)


def test_become_and_other_connections_are_left_to_the_per_host_task():
    assert fleet_ssh.reachable_by_ssh({})
    assert fleet_ssh.reachable_by_ssh({"ansible_connection": "ssh"})
    assert not fleet_ssh.reachable_by_ssh({"ansible_connection": "ssh", "ansible_become": True})
    assert not fleet_ssh.reachable_by_ssh({"ansible_connection": "community.docker.docker"})


def test_a_host_ssh_cannot_reach_fails_each_of_its_bots_and_no_other(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "ssh"
    fake.write_text("#!/bin/sh\ncat >/dev/null\n"
                    "echo 'ssh: connect to host 10.9.9.9 port 22: No route to host (token s3cret-token)' >&2\nexit 255\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    key = fleet_ssh.destination({"ansible_host": "10.9.9.9"}, "far")
    p = params([dict(entry("far1"), secrets={"api_token": "s3cret-token"}), entry("far2")])
    found = fleet_ssh.drive_hosts({key: p["bots"]}, b"", {k: v for k, v in p.items() if k != "bots"}, False,
                                  str(tmp_path / "cp"))
    assert set(found) == {"far1", "far2"}
    for result in found.values():
        assert result["failed"] and result["unreachable"]
        assert "its host 10.9.9.9 unreachable over SSH: ssh: connect to host 10.9.9.9 port 22: No route" in result["msg"]
        assert "s3cret" not in result["msg"] and "(token ********)" in result["msg"], result["msg"]


def test_run_fleet_counts_the_bots_driven_elsewhere_and_logs_their_audit(tmp_path):
    log = tmp_path / "audit.log"
    p = dict(params([entry("here", root="relative")]), audit_log=str(log))
    away = {"there": dict(changed=True, bot="there", failed=False, steps=[], actions=["engaged"],
                          audit={"bot": "there", "outcome": "engaged", "level": "halt"})}
    result, failure = fleet.run_fleet(p, False, elsewhere=(["there"], lambda: away))
    assert set(result["bots"]) == {"here", "there"}
    assert result["summary"]["total"] == 2 and result["summary"]["halted"] == 1 and result["summary"]["failed"] == 1
    assert '"bot":"there"' in Path(log).read_text() and "audit" not in result["bots"]["there"]
    assert failure and "here" in failure
