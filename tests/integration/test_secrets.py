"""Secrets never reach what botops writes: every task runs, through the real `invoke` CLI, against
a fleet whose secrets are known values chosen here and kept in Ansible Vault encrypted files; then
everything the runs wrote is searched for them.

The fleet (one bot per family) is its own: each bot's database role gets a known password (ALTER
ROLE, as the role itself), the hyperliquid bot a known API token (its shared/config/bot.json, read
when the bot starts), and each bot's inventory ``host_vars/<bot>/secrets.yml`` is rewritten as a
vault file whose password file is given through ANSIBLE_VAULT_PASSWORD_FILE. The first test proves
the bots really use the known values (the old password is refused, the old token answered 401).

What is searched: the output of every run (crontab text included), and every regular file under the
fleet's work directory (the runs' artifacts and summaries, the audit logs, incident bundles, locks,
the bots' roots with their logs, data, ledgers and backup sets, supervisord's and PostgreSQL's
logs, Redis, the inventory), archives opened and compressed files (the zstd database dumps, gzip)
decompressed. Left out, by design: the places whose job is to hold the secrets (the sandbox's own
record state.json, each bot's shared/config/bot.json and its copy inside a backup set's
files.tar.gz, the vault password file) and the PostgreSQL cluster's data files (binary; a role's
password is stored there as a SCRAM verifier, never in the clear).
"""

from __future__ import annotations

import gzip
import io
import json
import os
import stat
import subprocess
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import psycopg
import pytest
import yaml
from psycopg import sql

from .fleet_tasks import BOTOPS, REPO, invoke, last_summary, ops_fleet, root, wait_growth

# slow tier: some thirty task runs through the CLI on a fleet of its own take 4.5 to 6 minutes on 2 cores
pytestmark = pytest.mark.slow

BOTS = ["bot01", "bot02", "bot03", "bot04", "bot05"]  # mojorust, papertrader, solana-cli, hyperliquid, vanta
TOKEN_BOT = "bot04"  # hyperliquid: the family whose API takes a bearer token
LIVE_BOT = "bot05"  # vanta: not paper-only, passes the go/no-go checklist once tested
PAPER_BOT = "bot02"  # papertrader: paper-only, its promotion to LIVE is refused
KILL_BOT = "bot02"  # the bot the last-resort kill takes down (and the test brings back)
BASE_PORT = 31000  # below the ephemeral ports; 28000+ shared fleet, 29000 molecule, 30000 faults, 32000 ops

# Known values, URL-safe so that they read the same in a URL, JSON or YAML.
DB_PASSWORDS = {bot: f"Kn0wn-dbpass-{bot}-x7Qm2Zr9Lw" for bot in BOTS}
API_TOKEN = "Kn0wn-apitoken-hl-Vb3Nc8Tp1Ks6Yd4"
VAULT_PASSWORD = "Kn0wn-vaultpass-Rt5Gh2Jw9Ea"
SECRETS = {**{f"{bot} database password": pw for bot, pw in DB_PASSWORDS.items()},
           f"{TOKEN_BOT} API token": API_TOKEN, "vault password": VAULT_PASSWORD}

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
GZIP_MAGIC = b"\x1f\x8b"


# ----------------------------------------------------------------------------- the fleet
def _set_known_secrets(ops) -> dict[str, dict]:
    """Give every bot its known database password (and the hyperliquid bot its token); restart the
    bots on them. Returns the values they had before, to prove they are no longer accepted."""
    fleet = ops["fleet"]
    before = {bot: fleet.bot(bot) for bot in BOTS}
    for bot in BOTS:  # a role may change its own password
        fleet.db_query(bot, sql.SQL("ALTER ROLE {} PASSWORD {}").format(
            sql.Identifier(before[bot]["database"]["user"]), sql.Literal(DB_PASSWORDS[bot])))
    # the sandbox's record of its bots (what Fleet.bot(), db_query and sandbox.status connect with)
    state = json.loads(fleet.state_file.read_text())
    for bot in BOTS:
        state["bots"][bot]["database"]["password"] = DB_PASSWORDS[bot]
    assert state["bots"][TOKEN_BOT]["api_token"], f"{TOKEN_BOT} has no API token to replace"
    state["bots"][TOKEN_BOT]["api_token"] = API_TOKEN
    fleet.state_file.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    for bot in BOTS:  # what the bot itself reads when it starts
        path = Path(fleet.bot(bot)["config_path"])
        config = json.loads(path.read_text())
        config["database_url"] = fleet.bot(bot)["database_url"]
        if bot == TOKEN_BOT:
            config["api_token"] = API_TOKEN
        path.write_text(json.dumps(config, indent=2) + "\n")
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    proc = fleet.supervisorctl("restart", *BOTS)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    fleet.wait_ready(BOTS, timeout=60)
    return before


def _vault_inventory(ops) -> Path:
    """host_vars/<bot>/secrets.yml as vault files holding the known values; the password file's path."""
    from ansible.parsing.vault import VaultLib, VaultSecret

    vault = VaultLib([("default", VaultSecret(VAULT_PASSWORD.encode()))])
    for bot in BOTS:
        path = Path(ops["inventory"]).parent / "host_vars" / bot / "secrets.yml"
        secrets = {"bot_database_password": DB_PASSWORDS[bot]}
        if bot == TOKEN_BOT:
            secrets["bot_api_token"] = API_TOKEN
        path.write_bytes(vault.encrypt(yaml.safe_dump(secrets)))
        path.chmod(0o600)
    password_file = ops["dir"] / "vault-password"
    password_file.write_text(VAULT_PASSWORD + "\n")
    password_file.chmod(0o600)
    return password_file


@pytest.fixture(scope="module")
def ops():
    """Five bots, one per family, on known secrets kept in vault files; every run's output in ops['outputs']."""
    with ops_fleet("botops-secrets-", len(BOTS), BASE_PORT) as fleet_ops:
        fleet_ops["before"] = _set_known_secrets(fleet_ops)
        fleet_ops["vault_password_file"] = _vault_inventory(fleet_ops)
        fleet_ops["env"] = dict(fleet_ops["env"], ANSIBLE_VAULT_PASSWORD_FILE=str(fleet_ops["vault_password_file"]),
                                BOTOPS_OPERATOR="secrets-test")
        fleet_ops["outputs"] = []
        yield fleet_ops


def hide(text: str) -> str:
    """Text with the known secrets masked: what an assertion message may show."""
    for label, value in SECRETS.items():
        text = text.replace(value, f"<{label}>")
    return text


def run(ops, *args, expect: int = 0, sandbox_task: bool = False) -> str:
    """Run one task through the CLI, keep its output for the search, assert its exit code; the stdout."""
    if sandbox_task:  # sandbox.* tasks take no --inventory: BOTOPS_SANDBOX_DIR names the fleet
        proc = subprocess.run([str(BOTOPS), *args], env=ops["env"], capture_output=True,
                              text=True, timeout=600)
    else:
        proc = invoke(ops, *args)
    ops["outputs"].append((" ".join(args), proc.stdout + "\n" + proc.stderr))
    code = proc.returncode
    assert code == expect, f"{' '.join(args)}: exit {code}, expected {expect}\n" + hide(
        proc.stdout[-4000:] + "\n" + proc.stderr[-3000:])
    return proc.stdout


def _post(port: int, path: str, token: str | None) -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=b"{}", method="POST",
                                     headers={"Content-Type": "application/json",
                                              **({"Authorization": f"Bearer {token}"} if token else {})})
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


# ----------------------------------------------------------------------------- the values are the real ones
def test_the_bots_run_on_the_known_secrets_kept_in_vault_files(ops):
    fleet = ops["fleet"]
    for bot in BOTS:
        old = ops["before"][bot]["database_url"]
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(old, connect_timeout=5).close()
        user = ops["before"][bot]["database"]["user"]  # (an assertion shows plain strings, never a secret)
        assert fleet.db_query(bot, "SELECT current_user")[0][0] == user
        wait_growth(ops, bot)  # the bot writes its trades with the known password
        text = (Path(ops["inventory"]).parent / "host_vars" / bot / "secrets.yml").read_text()
        assert text.startswith("$ANSIBLE_VAULT;"), f"{bot}: secrets.yml is not vault-encrypted"
    port = fleet.bot(TOKEN_BOT)["ports"]["api"]
    reset = "/api/emergency/circuit-breaker/reset"
    assert _post(port, reset, ops["before"][TOKEN_BOT]["api_token"]) == 401, "the generated token is still accepted"
    assert _post(port, reset, API_TOKEN) == 200, "the known token is refused"


# ----------------------------------------------------------------------------- every task, as an operator runs them
def test_status_releases_deploy_and_rollback(ops):
    run(ops, "status")
    run(ops, "releases")
    run(ops, "releases", "--check")
    run(ops, "deploy", "--version=1.1.0", "--check")
    run(ops, "deploy", "--version=1.1.0", "--canary=1")
    run(ops, "rollback", "--target=latest", "--check")
    run(ops, "rollback", "--target=latest")
    for bot in BOTS:
        assert Path(os.path.realpath(root(ops, bot) / "current")).name == "1.0.0", bot


def test_backup_backups_and_restore(ops):
    run(ops, "backup", "--check")
    run(ops, "backup", "--label=secrets test")
    run(ops, "backups", "--verify")
    run(ops, "backups", "--test-restore")
    run(ops, "backups", "--check")
    run(ops, "restore", "--backup=latest", "--check", "--accept-ledger-loss")
    run(ops, "restore", "--backup=latest", "--accept-ledger-loss")


def test_restart_kill_switch_promote_and_emergency_stop(ops):
    run(ops, "restart", "--check")
    run(ops, "restart")
    run(ops, "kill-switch", "--level=halt", "--reason=secrets test", "--check")
    run(ops, "kill-switch", "--level=halt", "--reason=secrets test")
    run(ops, "kill-switch", "--release")
    run(ops, "promote", "--to=live", f"--limit={LIVE_BOT}", "--check")
    # a refusal too (its failure path prints the whole result): the paper-only bot stays DRY, the other goes LIVE
    run(ops, "promote", "--to=live", f"--limit={PAPER_BOT},{LIVE_BOT}", expect=1)
    report = last_summary(ops, "promote")["bots"]
    assert (report[PAPER_BOT]["result"], report[LIVE_BOT]["result"]) == ("refused", "changed"), hide(str(report))
    run(ops, "promote", "--to=dry", f"--limit={PAPER_BOT},{LIVE_BOT}")
    run(ops, "emergency-stop", "--reason=secrets test", "--check")
    run(ops, "emergency-stop", "--reason=secrets test")
    run(ops, "kill-switch", "--release")
    for bot in BOTS:
        wait_growth(ops, bot, timeout=60)


def test_maintenance_and_schedule(ops):
    run(ops, "maintenance", "--window=weekly", "--force", "--check")
    run(ops, "maintenance", "--window=weekly", "--force", "--serial=100%")
    crontab = run(ops, "schedule", "--print")
    assert "botops" in crontab and "maintenance" in crontab, hide(crontab)


def test_logs_exec_last_resort_kill_and_sandbox_status(ops):
    fleet = ops["fleet"]
    run(ops, "logs", f"--bot={TOKEN_BOT}", "--lines=500")
    run(ops, "exec", "--limit=all", "--command=env; readlink current; ls -la shared/config shared/data")
    run(ops, "last-resort-kill", f"--bot={KILL_BOT}", "--reason=secrets test", "--check")
    try:
        run(ops, "last-resort-kill", f"--bot={KILL_BOT}", "--reason=secrets test", "--grace=5")
        assert fleet.processes()[KILL_BOT]["statename"] in ("STOPPED", "EXITED")
    finally:
        fleet.supervisorctl("start", KILL_BOT)
    fleet.wait_ready([KILL_BOT], timeout=60)
    wait_growth(ops, KILL_BOT, timeout=60)
    run(ops, "sandbox.status", sandbox_task=True)


# ----------------------------------------------------------------------------- the search
def _decompress_zstd(data: bytes) -> bytes:
    proc = subprocess.run(["zstd", "-q", "-d", "-c"], input=data, capture_output=True, timeout=120)
    assert proc.returncode == 0, f"zstd -d failed: {proc.stderr.decode(errors='replace')[-500:]}"
    return proc.stdout


def _blobs(name: str, data: bytes):
    """(name, bytes) of a file and of everything inside it: gzip and zstd payloads, tar members (an
    uncompressed tar as its member names and members, so that an exempt member is left out whole)."""
    if len(data) > 262 and data[257:262] == b"ustar":
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            members = tar.getmembers()
            yield f"{name} (member names)", "\n".join(m.name for m in members).encode()
            for member in members:
                if member.isfile():
                    yield from _blobs(f"{name}!{member.name}", tar.extractfile(member).read())
        return
    yield name, data
    if data.startswith(ZSTD_MAGIC):
        yield from _blobs(f"{name}!zstd", _decompress_zstd(data))
    elif data.startswith(GZIP_MAGIC):
        yield from _blobs(f"{name}!gunzip", gzip.decompress(data))


def _written_files(ops) -> list[Path]:
    fleet = ops["fleet"]
    pg_data = Path(json.loads(fleet.state_file.read_text())["postgres"]["dir"]) / "data"
    skip = {fleet.state_file, ops["vault_password_file"]} | {Path(fleet.bot(b)["config_path"]) for b in BOTS}
    found = []
    for dirpath, dirnames, filenames in os.walk(ops["dir"]):
        if Path(dirpath) == pg_data:
            dirnames[:] = []
            continue
        for name in filenames:
            path = Path(dirpath) / name
            if path not in skip and stat.S_ISREG(path.lstat().st_mode):
                found.append(path)
    return found


def test_a_killed_run_leaves_no_secret_on_disk(ops):
    """The controller is SIGKILLed (its whole tree) while a module that carries the database password
    runs: nothing written since, in the temporary directories and Ansible's, holds a secret (modules
    run from stdin, pipelining: no AnsiballZ file with their arguments is ever written)."""
    from tests.faults.faults import kill_tree, poll

    started = time.time()
    tmp = Path(tempfile.gettempdir())
    before = set(tmp.glob("ansible_*bot_backup_payload_*"))
    proc = invoke(ops, "backup", f"--limit={TOKEN_BOT}", "--label=killed", background=True)
    try:
        poll(lambda: set(tmp.glob("ansible_*bot_backup_payload_*")) - before, 120, "the backup module to run", proc,
             interval=0.005)
    finally:
        kill_tree(proc.pid)
        proc.wait()
    places = [tmp, Path.home() / ".ansible", REPO / ".ansible"]
    leaks = []
    for place in places:
        for dirpath, dirnames, filenames in os.walk(place):
            if Path(dirpath) == tmp:
                dirnames[:] = [d for d in dirnames if not str(tmp / d).startswith(str(ops["dir"]))]
            for name in filenames:
                path = Path(dirpath, name)
                try:
                    if not path.is_file() or path.is_symlink() or path.stat().st_mtime < started - 1:
                        continue
                    data = path.read_bytes()
                except OSError:
                    continue
                leaks += [f"{label}: {path}" for label, value in SECRETS.items() if value.encode() in data]
    assert not leaks, "secrets left on disk by the killed run:\n" + "\n".join(leaks)


def test_no_secret_in_any_output_artifact_log_backup_or_bundle(ops):
    assert len(ops["outputs"]) >= 30, "the task runs did not all happen"
    leaks = []

    def search(where: str, data: bytes) -> None:
        leaks.extend((label, where) for label, value in SECRETS.items() if value.encode() in data)

    for args, text in ops["outputs"]:
        search(f"output of `invoke {args}`", text.encode())

    def exempt(name: str) -> bool:  # a backup set's copy of the bot's config, which holds its secrets
        return "/backups/" in name and name.endswith("files.tar.gz!gunzip!shared/config/bot.json")

    files = _written_files(ops)
    kinds = {"botops-summary.json", "stdout", "kill-switch-audit.log", "botops-kill-switch.log", "manifest.json",
             "verified.json", "database.dump.zst", "files.tar.gz", "supervisord.log", "postgresql.log", "bot.log"}
    assert kinds <= {p.name for p in files}, f"nothing written of: {sorted(kinds - {p.name for p in files})}"
    assert any(p.parent.name == "incidents" and p.name.endswith(".tar.gz") for p in files), "no incident bundle"
    exempted = []
    for path in files:
        for name, data in _blobs(str(path.relative_to(ops["dir"])), path.read_bytes()):
            if exempt(name):
                exempted.append((name, data))
            else:
                search(name, data)
    # the search sees a secret where it is by design: every bot's config inside its backup sets
    assert exempted, "no backup set holds the bot's config"
    for name, data in exempted:
        bot = Path(name).parts[2]
        seen = DB_PASSWORDS[bot].encode() in data
        assert seen, f"{name}: the search does not see {bot}'s password in its config"
    assert not leaks, "secrets found (secret: where):\n" + "\n".join(f"{label}: {where}" for label, where in leaks)


def test_backup_sets_and_incident_bundles_are_private(ops):
    sets = [d for bot in BOTS for d in (root(ops, bot) / "backups").iterdir()
            if d.is_dir() and not d.name.startswith(".")]
    assert len(sets) >= 2 * len(BOTS), [d.name for d in sets]  # the backup, the restore's safety sets, maintenance
    wrong = []
    for backup_set in sets:
        for dirpath, _, filenames in os.walk(backup_set):
            if stat.S_IMODE(os.stat(dirpath).st_mode) != 0o700:
                wrong.append(f"{dirpath}: {oct(stat.S_IMODE(os.stat(dirpath).st_mode))}, want 0o700")
            for name in filenames:
                mode = stat.S_IMODE(os.lstat(os.path.join(dirpath, name)).st_mode)
                if mode != 0o600:
                    wrong.append(f"{os.path.join(dirpath, name)}: {oct(mode)}, want 0o600")
    bundles = sorted((ops["dir"] / "runs" / "incidents").glob("*.tar.gz"))
    assert bundles, "no incident bundle"
    wrong += [f"{b}: {oct(stat.S_IMODE(b.stat().st_mode))}, want 0o600" for b in bundles
              if stat.S_IMODE(b.stat().st_mode) != 0o600]
    assert not wrong, "\n".join(wrong)
