"""The kill switch reaches every bot it can: one bot's broken inventory entry fails that bot alone.

Through the real `invoke` CLI on a fleet of its own (six bots, every family): for each kind of
broken entry, an inventory copy with that one bot broken, then `botops kill-switch --level=halt`
and `botops emergency-stop`. Each run must halt every other bot (their own ledgers stop growing),
give the broken bot a failed row that names the cause, count it failed, and exit non-zero. The
fleet is released with the good inventory after every run.

Before, an unknown family or a `bot_ports` that is not a mapping failed the fleet task before any
bot was touched; a missing root was left out of the emergency stop's summary (exit 0, "failed: 0");
a wrong port or token was halted by stopping the process and reported as a plain success.
"""

from __future__ import annotations

import json
import shutil
import tarfile
import time
from pathlib import Path

import pytest
import yaml

from .fleet_tasks import invoke, last_summary, ops_fleet, output, trades
from .trading_state import restore_fleet, wait_trading

# mojorust, papertrader, solana-cli, hyperliquid, vanta, mojorust
BOTS = ["bot01", "bot02", "bot03", "bot04", "bot05", "bot06"]


def unknown_family(host, secrets):
    host["bot_family"] = "vantax"


def missing_root(host, secrets):
    del host["bot_root"]


def ports_not_a_mapping(host, secrets):
    host["bot_ports"] = host["bot_ports"]["api"]


def wrong_port(host, secrets):
    # the last port of the bot's own block (botops.sandbox.fleet.PORT_BLOCK): free, nothing listens there
    host["bot_ports"] = {"api": host["bot_ports"]["api"] + 9}


def wrong_token(host, secrets):
    secrets["bot_api_token"] = "rotated-0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e"


# kind -> (the bot broken, how, what its row must say, whether it ends halted all the same)
CASES = {
    # nothing can be tried on these: the bot trades on, and its row says why
    "unknown-family": ("bot05", unknown_family, "no profile for bot family 'vantax'", False),
    "missing-root": ("bot01", missing_root, "its inventory sets no bot_root", False),
    "ports-not-a-mapping": ("bot03", ports_not_a_mapping, "bot_ports is of type int", False),
    # these are reached by their ladder's escalation (service stop), and fail naming the entry's fault
    "wrong-port": ("bot02", wrong_port, "nothing listens at its API's address (check bot_listen and bot_ports)", True),
    "wrong-token": ("bot04", wrong_token, "its API refused botops' credentials (check bot_api_token", True),
}
COMMANDS = {
    "kill-switch": ["kill-switch", "--level=halt", "--reason=broken inventory drill"],
    "emergency-stop": ["emergency-stop", "--reason=broken inventory drill"],
}


@pytest.fixture(scope="module")
def ops():
    """Six bots, every family, with their own artifacts, locks and audit directories."""
    with ops_fleet("botops-ksbroken-", len(BOTS), 27000) as fleet_ops:  # below the ephemeral ports (32768+)
        yield fleet_ops


@pytest.fixture
def released(ops):
    """Every bot trading before the test; released with the good inventory after it, whatever happened."""
    wait_trading(ops["fleet"], BOTS)
    yield
    proc = invoke(ops, "kill-switch", "--release")
    if proc.returncode != 0:  # the safety net works without the modules under test
        restore_fleet(ops["fleet"], BOTS)
        pytest.fail(f"the release with the good inventory failed:\n{output(proc)}")
    wait_trading(ops["fleet"], BOTS, timeout=60)


def broken_inventory(ops, kind) -> tuple[str, str]:
    """(a copy of the fleet's inventory with the case's one bot broken, that bot)."""
    bot, breaks, _, _ = CASES[kind]
    source = Path(ops["inventory"]).parent
    copy = ops["dir"] / f"inventory-{kind}"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(source, copy)
    hosts = yaml.safe_load((copy / "hosts.yml").read_text())
    host = next(group["hosts"][bot] for group in hosts["sandbox"]["children"].values() if bot in group["hosts"])
    secrets_file = copy / "host_vars" / bot / "secrets.yml"
    secrets = yaml.safe_load(secrets_file.read_text())
    breaks(host, secrets)
    (copy / "hosts.yml").write_text(yaml.safe_dump(hosts))
    secrets_file.write_text(yaml.safe_dump(secrets))
    return str(copy / "hosts.yml"), bot


def wait_quiet(ops, names, quiet=2.0, timeout=12.0) -> None:
    """Poll the bots' own trade counts until none has grown for `quiet` seconds (counted at least
    twice that far apart); fails naming the bots still trading after `timeout`."""
    counts = {n: trades(ops, n)[0] for n in names}
    since = {n: time.monotonic() for n in names}
    deadline = time.monotonic() + timeout
    while True:
        now = time.monotonic()
        if all(now - since[n] >= quiet for n in names):
            return
        trading = sorted(n for n in names if now - since[n] < quiet)
        assert now < deadline, f"still trading {timeout:.0f}s after the kill switch: {trading}"
        time.sleep(0.2)
        for n in names:
            count = trades(ops, n)[0]
            if count != counts[n]:
                counts[n], since[n] = count, time.monotonic()


def table_rows(text: str) -> dict[str, str]:
    """The rows of the report table the command printed, by bot (not the full texts printed below it)."""
    table = text.split("\nIn full:\n", 1)[0]
    return {line.split()[0]: line for line in table.splitlines() if line.split()[:1] and line.split()[0] in BOTS}


# Every kind through kill-switch; through emergency-stop (the same fleet task, then the bundle) the
# unknown family in the default suite and the other kinds in the slow tier, to keep the suite short.
PAIRS = [pytest.param(kind, command, id=f"{kind}-{command}",
                      marks=[pytest.mark.slow] if command == "emergency-stop" and kind != "unknown-family" else [])
         for kind in CASES for command in sorted(COMMANDS)]


@pytest.mark.parametrize(("kind", "command"), PAIRS)
def test_one_broken_entry_fails_that_bot_and_every_other_bot_is_halted(ops, released, kind, command):
    inventory, broken = broken_inventory(ops, kind)
    _, _, cause, halted_anyway = CASES[kind]
    others = [b for b in BOTS if b != broken]

    proc = invoke(ops, *COMMANDS[command], inventory=inventory)
    text = output(proc)
    assert proc.returncode == 1, f"{kind}: exit {proc.returncode}, expected 1 (a bot could not be halted)\n{text}"

    # the bots' own state: every other bot stopped trading; the broken one as its row says
    wait_quiet(ops, others + ([broken] if halted_anyway else []))
    if not halted_anyway:
        wait_trading(ops["fleet"], [broken])  # nothing could be tried on it: it trades on

    # the table and the summary: every bot, each with its true result
    rows = table_rows(proc.stdout)
    assert sorted(rows) == BOTS, f"the table lists {sorted(rows)}\n{text}"
    assert rows[broken].split()[1] == "failed" and cause in rows[broken], rows[broken]
    playbook = command.replace("-", "_") + ".yml"
    summary = last_summary(ops, playbook.removesuffix(".yml"))
    assert summary["playbook"] == playbook and sorted(summary["bots"]) == BOTS
    row = summary["bots"][broken]
    assert row["result"] == "failed" and cause in row["message"], row
    assert row["level"] == ("halt" if halted_anyway else None), row
    for bot in others:
        assert summary["bots"][bot]["result"] in ("changed", "ok"), (bot, summary["bots"][bot])
        assert summary["bots"][bot]["level"] == "halt", (bot, summary["bots"][bot])
    failed_hosts = sorted(h for h, outcome in summary["hosts"].items() if outcome["failed"])
    assert failed_hosts == [broken], f"the run failed {failed_hosts}, the broken bot is {broken}"
    assert text.rstrip().endswith(f"{command}: failed for {broken}"), text[-500:]

    # each bot's result is scrubbed of its own secrets, the broken one's wrong token too
    run_dir = sorted((ops["dir"] / "runs" / playbook.removesuffix(".yml")).iterdir())[-1]
    written = [text] + [p.read_text(errors="replace") for p in run_dir.rglob("*") if p.is_file()]
    for secrets_file in Path(inventory).parent.glob("host_vars/*/secrets.yml"):
        for name, value in yaml.safe_load(secrets_file.read_text()).items():
            assert not any(str(value) in blob for blob in written), f"{secrets_file.parent.name}'s {name} was written"

    if command == "emergency-stop":
        # the incident bundle's fleet result counts the broken bot failed, the others halted
        bundle = sorted((ops["dir"] / "runs" / "incidents").glob("*.tar.gz"))[-1]
        with tarfile.open(bundle) as tar:
            member = next(m for m in tar.getmembers() if m.name.endswith("/incident.json"))
            fleet = json.load(tar.extractfile(member))["fleet_kill_switch"]
        counts = fleet["summary"]
        assert (counts["total"], counts["failed"], counts["failed_bots"]) == (6, 1, [broken]), counts
        assert counts["halted"] == (6 if halted_anyway else 5), counts
