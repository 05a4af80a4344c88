"""plugins/plugin_utils/fleet_ssh.py: one SSH session per host carries the fleet kill switch of its bots.

The SSH tier (tests/ssh, `-m ssh`) drives real bots behind real sshd this way; here, the parts alone:
the bootstrap the host's Python runs (fed to a local Python, as sshd would hand it on), the ssh
command made from the ssh connection plugin's options for a host, a host ssh cannot reach, and a
host whose sshd accepts and whose Python never answers (waited for as long as its bots' ladders can take).
"""

from __future__ import annotations

import copy
import importlib.util
import json
import marshal
import math
import os
import stat
import subprocess
import sys
import time
import zlib
from pathlib import Path

from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.playbook.play_context import PlayContext
from ansible.plugins.connection.ssh import Connection as SshConnection
from ansible.plugins.loader import connection_loader

from ansible_collections.botops.fleet.plugins.module_utils import botops_fleet_kill_switch as fleet
from ansible_collections.botops.fleet.plugins.module_utils.botops_kill_switch import DEFAULT_RUNG_TIMEOUT, START_TIMEOUT
from ansible_collections.botops.fleet.plugins.module_utils.botops_kill_switch_checks import LEVELS
from ansible_collections.botops.fleet.plugins.plugin_utils import fleet_ssh
from botops import profiles

MODULE_UTILS = os.path.dirname(fleet.__file__)


def params(bots):
    checked = ArgumentSpecValidator(fleet.argument_spec()).validate(
        {"bots": bots, "state": "engaged", "level": "halt", "reason": "unit test", "audit_log": "/dev/null"})
    assert not checked.error_messages, checked.error_messages
    return checked.validated_parameters


def entry(name, root="/srv/bots/x"):
    return {"local": True, "bot": {"name": name, "family": "nosuchfamily", "root": root}, "secrets": {}}


def ssh_key(host_vars, tmp_path):
    """The session key for a host, from the ssh connection plugin's options as the action plugin reads them."""
    connection = connection_loader.get("ssh", PlayContext(), None)
    host_vars = dict({"ansible_control_path_dir": str(tmp_path / "cp")}, **host_vars)
    return fleet_ssh.destination(fleet_ssh.connection_options(connection, host_vars), host_vars)


def run_bootstrap(payload, p):
    return fleet_ssh.drive_host([sys.executable, "-E", "-I", "-c", fleet_ssh.BOOTSTRAP], payload,
                                dict(p, audit_log=""), False, timeout=60)


def test_the_bootstrap_runs_run_fleet_from_the_payload_it_is_given():
    p = params([entry("bot01"), entry("bot02", root="relative/root")])
    result, failure = run_bootstrap(fleet_ssh.module_utils_payload(MODULE_UTILS), p)
    assert set(result["bots"]) == {"bot01", "bot02"}
    for name in ("bot01", "bot02"):  # each judged on the host, by run_fleet, as the module would
        assert f"on bot '{name}': it has no profile (bot_family 'nosuchfamily')" in result["bots"][name]["msg"]
    assert result["summary"]["failed"] == 2 and failure


def payload_parts(payload):
    parts, at = [], 0
    for _ in range(2):
        size = int(payload[at:at + 16])
        parts.append(zlib.decompress(payload[at + 16:at + 16 + size]))
        at += 16 + size
    assert at == len(payload)
    return json.loads(parts[0]), parts[1]


def test_a_host_python_of_another_bytecode_compiles_the_sources():
    """The compiled code is used only by a Python of the controller's bytecode: another one (another
    version on the host) compiles the sources, and runs the same."""
    sources, compiled = payload_parts(fleet_ssh.module_utils_payload(MODULE_UTILS))
    assert compiled[:4] == importlib.util.MAGIC_NUMBER
    other = b"".join(b"%016d" % len(blob) + blob for blob in (
        zlib.compress(json.dumps(sources).encode()), zlib.compress(b"\0\0\r\n" + b"not marshal data")))
    result, failure = run_bootstrap(other, params([entry("bot01")]))
    assert "it has no profile (bot_family 'nosuchfamily')" in result["bots"]["bot01"]["msg"] and failure


def test_the_payload_holds_what_the_kill_switch_imports_and_is_the_same_each_time():
    first = fleet_ssh.module_utils_payload(MODULE_UTILS)
    assert first == fleet_ssh.module_utils_payload(MODULE_UTILS)
    sources, compiled = payload_parts(first)
    package = "ansible_collections.botops.fleet.plugins.module_utils"
    modules = {n.rsplit(".", 1)[1] for n, text in sources.items() if text}
    assert all(n.startswith(package + ".") for n, text in sources.items() if text)
    # every module_utils a fresh Python imports for the kill switch, and none of the others
    probe = subprocess.run([sys.executable, "-c", "import sys; import " + package + ".botops_fleet_kill_switch; "
                            "print(' '.join(m.rsplit('.', 1)[1] for m in sys.modules if m.startswith('"
                            + package + ".')))"], capture_output=True, text=True, check=True)
    assert modules == set(probe.stdout.split())
    assert "botops_backup" not in modules and set(marshal.loads(compiled[4:])) == {
        n for n, text in sources.items() if text}


def test_the_ssh_command_is_the_ssh_plugins_for_the_host_and_carries_no_secret(tmp_path):
    host_vars = {"ansible_host": "10.0.1.11", "ansible_port": 2222, "ansible_user": "bot",
                 "ansible_ssh_private_key_file": "~/.ssh/fleet", "ansible_python_interpreter": "/opt/bot/bin/python",
                 "ansible_ssh_common_args": "-o UserKnownHostsFile=/etc/botops/known_hosts -o StrictHostKeyChecking=yes",
                 "bot_api_token": "s3cret-token"}
    command = fleet_ssh.ssh_command(ssh_key(host_vars, tmp_path))
    assert command[0] == "ssh" and "BatchMode=yes" in command
    assert "Port=2222" in command and 'User="bot"' in command and "ConnectTimeout=10" in command
    assert f'IdentityFile="{os.path.expanduser("~/.ssh/fleet")}"' in command
    assert "UserKnownHostsFile=/etc/botops/known_hosts" in command
    assert command[-2] == "10.0.1.11" and command[-1].startswith("/opt/bot/bin/python -E -c ")
    assert "StrictHostKeyChecking=no" not in command
    assert not any("s3cret" in part for part in command)
    # ansible.cfg's ssh_args, and the control path Ansible's own tasks on this host use: one shared connection
    assert "ControlPersist=60s" in command
    ansible_path = SshConnection._create_control_path("10.0.1.11", 2222, "bot") % {"directory": str(tmp_path / "cp")}
    assert f'ControlPath="{ansible_path}"' in command
    relaxed = fleet_ssh.ssh_command(ssh_key({"ansible_host_key_checking": False}, tmp_path))
    assert "StrictHostKeyChecking=no" in relaxed


def test_a_password_or_a_key_as_content_is_left_to_the_per_host_task(tmp_path):
    connection = connection_loader.get("ssh", PlayContext(), None)
    for host_vars in ({"ansible_password": "pw"}, {"ansible_private_key": "-----BEGIN KEY-----"}):
        options = fleet_ssh.connection_options(connection, host_vars)
        assert fleet_ssh.reachable_by_ssh(host_vars) and not fleet_ssh.reachable_by_ssh(host_vars, options)
    assert fleet_ssh.reachable_by_ssh({}, fleet_ssh.connection_options(connection, {}))


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
    key = ssh_key({"ansible_host": "10.9.9.9"}, tmp_path)
    p = params([dict(entry("far1"), secrets={"api_token": "s3cret-token"}), entry("far2")])
    found = fleet_ssh.drive_hosts({key: p["bots"]}, b"", {k: v for k, v in p.items() if k != "bots"}, False)
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


def rung_timeouts(rungs):
    return sum(float(rung.get("timeout", DEFAULT_RUNG_TIMEOUT)) for rung in rungs)


def test_a_ladder_s_bound_is_finite_above_its_rungs_timeouts_and_grows_with_them():
    paper = profiles.load("papertrader")
    ks = paper["kill_switch"]
    for state in ("engaged", "released"):
        for level in LEVELS:
            assert math.isfinite(fleet.ladder_seconds(paper, state, level)), (state, level)
    # an engage may walk the level's rungs and the whole escalation, each to its timeout
    halt = fleet.ladder_seconds(paper, "engaged", "halt")
    assert halt > rung_timeouts(ks["levels"]["halt"]["engage"] + ks["escalation"])
    assert fleet.ladder_seconds(paper, "engaged", "halt", escalate=False) < halt
    # a release may start the bot its escalation stopped and wait for it, then walk its release rungs,
    # then put back a stronger level the operator engaged meanwhile
    release = fleet.ladder_seconds(paper, "released", "halt")
    flatten = fleet.ladder_seconds(paper, "engaged", "flatten")
    assert release > rung_timeouts(ks["levels"]["halt"]["release"]) + 2 * START_TIMEOUT + flatten
    assert fleet.ladder_seconds(paper, "released", "pause", force=True) > release

    slower = copy.deepcopy(paper)
    slower["kill_switch"]["escalation"][-1]["timeout"] += 100  # SIGKILL's wait for the process to go
    assert fleet.ladder_seconds(slower, "engaged", "halt") >= halt + 100
    # the service stop of the escalation waits as long as the service's stop timeout, the bot's own first
    assert fleet.ladder_seconds(paper, "engaged", "halt", service={"stop_timeout": 300}) >= halt + 300 - 30
    slower["http"]["timeout"] = 20
    assert fleet.ladder_seconds(slower, "engaged", "halt") > halt + 100 + 3 * (20 - 2)


def papertrader_bot(name, root, service=None):
    return {"local": True, "bot": {"name": name, "family": "papertrader", "root": str(root), "service": service or {}},
            "secrets": {}}


CONNECT = 10  # the ssh plugin's timeout: the SSH connect's part of a host's wait


def test_a_host_is_waited_for_its_connect_its_longest_ladder_once_a_wave_and_its_python():
    paper = profiles.load("papertrader")
    slow = papertrader_bot("slow", "/srv/bots/slow", service={"stop_timeout": 300})
    p = dict(params([papertrader_bot(f"b{i}", f"/srv/bots/b{i}") for i in range(4)] + [slow]),
             profiles={"papertrader": paper}, max_requests_per_host=2)
    longest = fleet.ladder_seconds(paper, "engaged", "halt", service={"stop_timeout": 300})
    assert longest > fleet.ladder_seconds(paper, "engaged", "halt")
    # five bots, two at a time: three waves of the slowest bot's ladder
    assert fleet_ssh.host_wait(p["bots"], p, CONNECT) == CONNECT + 3 * longest + fleet_ssh.PYTHON_START
    assert fleet_ssh.host_wait(p["bots"][:2], p, CONNECT) == (CONNECT + fleet_ssh.PYTHON_START
                                                     + fleet.ladder_seconds(paper, "engaged", "halt"))
    # a bot without a profile fails on its host before anything is tried
    assert fleet_ssh.host_wait([entry("lost")], p, CONNECT) == CONNECT + fleet_ssh.PYTHON_START
    # one whose profile's ladder cannot be read here is judged on its host, given the most time
    broken = dict(entry("odd"), profile={"family": "odd", "kill_switch": {"levels": "none"}})
    assert fleet_ssh.host_wait([broken], p, CONNECT) == CONNECT + fleet_ssh.UNREAD_LADDER + fleet_ssh.PYTHON_START


def quick_papertrader(process_match):
    """papertrader's profile with every timeout a fraction of a second (its ladders' bound a few
    seconds), its halt a rung that a bot whose process is gone verifies at once."""
    profile = copy.deepcopy(profiles.load("papertrader"))
    profile["http"]["timeout"] = 0.2
    profile["service"].update(stop_timeout=0.2, process_match=process_match)
    ks = profile["kill_switch"]
    for rung in [r for level in ks["levels"].values() for key in ("engage", "release") for r in level[key]] + ks["escalation"]:
        rung["timeout"] = 0.2
    ks["levels"]["halt"]["engage"] = [{"name": "process gone", "do": [{"signal": "CONT"}],
                                       "verify": [{"process": "absent"}], "timeout": 0.2}]
    return profile


def running(pid):
    """The process is there and not a zombie (dead, waiting for its parent to reap it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def test_a_host_that_accepts_and_never_answers_fails_its_bots_at_their_bound_and_no_other(tmp_path, monkeypatch):
    hung, near = "127.0.1.5", "127.0.1.6"
    started_pids = tmp_path / "hung.pids"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "ssh"
    # ssh as the hosts answer it: the hung host's sshd accepts and its Python reads its input, then never
    # answers (a child that sleeps, as a hung ProxyCommand or Python would); the other host runs the command
    fake.write_text(f"""#!/bin/sh
host=; remote=
for arg; do host=$remote; remote=$arg; done
if [ "$host" = "{hung}" ]; then
    echo $$ >>"{started_pids}"
    cat >/dev/null
    sleep 600 &
    echo $! >>"{started_pids}"
    wait
    exit 0
fi
exec /bin/sh -c "$remote"
""")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    profile = quick_papertrader(f"botops-unit-no-such-process-{os.getpid()}-{time.monotonic_ns()}")
    p = dict(params([papertrader_bot(n, tmp_path / n) for n in ("hung1", "hung2", "near1")]),
             profiles={"papertrader": profile})
    shared = {k: v for k, v in p.items() if k != "bots"}
    python = {"ansible_python_interpreter": sys.executable, "ansible_ssh_timeout": 1}  # a 1 s connect: a shorter bound
    hung_key = ssh_key(dict(python, ansible_host=hung), tmp_path)
    groups = {hung_key: p["bots"][:2], ssh_key(dict(python, ansible_host=near), tmp_path): p["bots"][2:]}
    connect = dict(hung_key)["timeout"]
    bound = fleet_ssh.host_wait(p["bots"][:2], shared, connect)
    assert bound < connect + 30, bound

    began = time.monotonic()
    try:
        found = fleet_ssh.drive_hosts(groups, fleet_ssh.module_utils_payload(MODULE_UTILS), shared, False)
        took = time.monotonic() - began
        pids = [int(line) for line in started_pids.read_text().split()]
        deadline = time.monotonic() + 5  # a killed process is reaped by its parent (or init) at once
        while any(running(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(pids) == 2 and not any(running(pid) for pid in pids), "the hung session's processes live on"
    finally:
        for pid in [int(line) for line in started_pids.read_text().split()] if started_pids.exists() else []:
            if running(pid):
                os.kill(pid, 9)

    assert bound - 0.5 <= took < bound + 10, (took, bound)
    assert set(found) == {"hung1", "hung2", "near1"}
    for name in ("hung1", "hung2"):
        result = found[name]
        assert result["failed"] and result["unreachable"], result
        assert result["msg"] == (
            f"Failed to engage kill switch level 'halt' on bot '{name}': its host {hung} gave no answer over SSH "
            f"within {bound:.0f} s (the bound of its bots' kill-switch ladders plus the SSH connect): the bots' state "
            "there is unknown; check them on the host"), result["msg"]
    # the host that answered: its bot's own ladder, on its host, as if the other host were not there
    assert not found["near1"]["failed"] and "unreachable" not in found["near1"], found["near1"]
    assert found["near1"]["msg"] == "kill switch 'halt' engaged on bot 'near1' by rung 'process gone'"
