"""A bot is who the inventory says, through the real `invoke` CLI on a fleet of its own (six bots,
every family; bot01 and bot06 are both mojorust).

Before, a port pointing at another bot showed that bot's data under the wrong name, and an operation
acted on whatever answered there; a wrong API token passed `botops status` and was found only when a
kill switch needed it (which then fell back to stopping the process).

- An inventory copy with one bot's API port pointed at another bot's: `botops restart` of that bot
  is refused before any change (exit 2, its row says who answers there), and no bot is restarted;
  `botops status` fails that bot, saying why.
- An inventory copy with bot04's (hyperliquid) API token wrong: `botops status` fails bot04, its row
  naming the refused credentials, and only bot04.
- With the fleet's own inventory every bot is who the inventory says and bot04's token is accepted.

Port block 26000 (ops_fleet); the tests change no bot, so the fleet needs no restoring between them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from .fleet_tasks import invoke, last_summary, ops_fleet, output
from .trading_state import wait_trading

# mojorust, papertrader, solana-cli, hyperliquid, vanta, mojorust
BOTS = ["bot01", "bot02", "bot03", "bot04", "bot05", "bot06"]


@pytest.fixture(scope="module")
def ops():
    with ops_fleet("botops-identity-", len(BOTS), 26000) as fleet_ops:  # below the ephemeral ports (32768+)
        wait_trading(fleet_ops["fleet"], BOTS)
        yield fleet_ops


def api_port(ops, bot: str) -> int:
    return int(ops["fleet"].bot(bot)["ports"]["api"])


def inventory_copy(ops, name: str, change) -> str:
    """A copy of the fleet's inventory with `change(hosts by name, secrets by name)` applied; its hosts.yml."""
    source = Path(ops["inventory"]).parent
    copy = ops["dir"] / f"inventory-{name}"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(source, copy)
    document = yaml.safe_load((copy / "hosts.yml").read_text())
    hosts = {bot: group["hosts"][bot] for group in document["sandbox"]["children"].values()
             for bot in group.get("hosts") or {}}
    secrets = {bot: yaml.safe_load((copy / "host_vars" / bot / "secrets.yml").read_text()) for bot in hosts}
    change(hosts, secrets)
    (copy / "hosts.yml").write_text(yaml.safe_dump(document))
    for bot, values in secrets.items():
        (copy / "host_vars" / bot / "secrets.yml").write_text(yaml.safe_dump(values))
    return str(copy / "hosts.yml")


def pointed_at(ops, bot: str, other: str) -> str:
    """The inventory with `bot`'s API port set to `other`'s."""
    def change(hosts, secrets):
        hosts[bot]["bot_ports"] = dict(hosts[bot]["bot_ports"], api=api_port(ops, other))
    return inventory_copy(ops, f"{bot}-at-{other}", change)


def bot_pids(ops) -> dict[str, int]:
    pids = ops["fleet"].service_pids()
    return {bot: pids.get(bot) for bot in BOTS}


@pytest.mark.parametrize(("bot", "other", "cause"), [
    # the brief's case: bot03 (solana-cli) at bot02's (papertrader) port, another family's API
    ("bot03", "bot02", "bot03 does not answer as a solana-cli bot on port {port} (GET /api/status answered HTTP 404)"),
    # a bot of the same family answers there and says who it is
    pytest.param("bot06", "bot01", "bot06 answers as bot01 on port {port}: the inventory's port points at another bot",
                 marks=pytest.mark.slow),  # the default suite keeps under 15 minutes; run with -m slow
], ids=["another-family", "same-family"])
def test_restart_refuses_a_bot_whose_port_points_at_another_bot(ops, bot, other, cause):
    inventory = pointed_at(ops, bot, other)
    cause = cause.format(port=api_port(ops, other))
    before = bot_pids(ops)
    assert all(before.values()), before

    proc = invoke(ops, "restart", f"--limit={bot}", inventory=inventory)
    text = output(proc)
    assert proc.returncode == 2, f"exit {proc.returncode}, expected 2 (refused, nothing changed)\n{text}"
    assert f"restart: refused for {bot}, nothing was changed on them" in text, text[-1500:]
    summary = last_summary(ops, "restart")
    row = summary["bots"][bot]
    assert row["result"] == "refused" and row["message"].startswith(cause), row
    assert bot_pids(ops) == before, f"a bot was restarted: {before} -> {bot_pids(ops)}"
    wait_trading(ops["fleet"], [bot, other])

    # the morning check says the same, and fails that bot only
    proc = invoke(ops, "status", f"--limit={bot},{other}", inventory=inventory)
    text = output(proc)
    assert proc.returncode == 1, f"exit {proc.returncode}, expected 1\n{text}"
    assert text.rstrip().endswith(f"status: failed for {bot}"), text[-800:]
    facts = last_summary(ops, "status")["bots"]
    assert facts[bot]["identity"]["ok"] is False and facts[bot]["identity"]["message"].startswith(cause)
    assert facts[bot]["version"] is None, "another bot's data shown under this bot's name"
    assert facts[other]["identity"]["ok"] is True
    assert bot_pids(ops) == before


def test_status_fails_a_bot_whose_api_token_is_refused(ops):
    def wrong_token(hosts, secrets):
        secrets["bot04"]["bot_api_token"] = "rotated-0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e"
    inventory = inventory_copy(ops, "bot04-wrong-token", wrong_token)
    before = bot_pids(ops)

    proc = invoke(ops, "status", inventory=inventory)
    text = output(proc)
    assert proc.returncode == 1, f"exit {proc.returncode}, expected 1 (bot04's credentials are refused)\n{text}"
    assert text.rstrip().endswith("status: failed for bot04"), text[-800:]
    row = next(line for line in proc.stdout.splitlines() if line.startswith("bot04 "))
    assert "REFUSED (HTTP 401)" in row and "its API refused botops' credentials" in row, row
    summary = last_summary(ops, "status")
    credentials = summary["bots"]["bot04"]["credentials"]
    assert (credentials["checked"], credentials["ok"], credentials["status"]) == (True, False, 401), credentials
    assert "bot_api_token" in credentials["message"] and "rotated-" not in text
    assert summary["bots"]["bot04"]["ready"] is True, "the bot itself is healthy: only its credentials are wrong"
    failed = sorted(h for h, outcome in summary["hosts"].items() if outcome["failed"])
    assert failed == ["bot04"], failed
    assert bot_pids(ops) == before, "status changed a bot"


def test_with_the_right_inventory_every_bot_is_who_it_says_and_bot04s_token_is_accepted(ops):
    proc = invoke(ops, "status")
    assert proc.returncode == 0, output(proc)
    bots = last_summary(ops, "status")["bots"]
    for bot in BOTS:
        identity = bots[bot]["identity"]
        assert (identity["expected"], identity["reported"], identity["ok"]) == (bot, bot, True), (bot, identity)
    assert bots["bot04"]["credentials"] == {"checked": True, "ok": True, "status": 200, "message": None}
    assert all(bots[b]["credentials"]["checked"] is False for b in BOTS if b != "bot04")
