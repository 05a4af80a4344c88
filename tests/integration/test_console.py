"""What the operator's console says, through the real `invoke` CLI on a fleet of its own: the bots and
the steps that ran on them (never steps that were skipped), the canary marked, a failure once and in
full, every targeted bot in the table, check mode showing the change, a refusal naming the command
that goes ahead, and no third-party warning above it all."""

from __future__ import annotations

import re

import pytest

from .fleet_tasks import current, invoke, last_summary, ops_fleet, output

# A fleet of its own and a dozen runs: about three minutes, so in the slow tier (-m slow tests/integration)
pytestmark = pytest.mark.slow

BOTS = ["bot01", "bot02", "bot03", "bot04", "bot05"]  # mojorust, papertrader, solana-cli, hyperliquid, vanta


@pytest.fixture(scope="module")
def ops():
    with ops_fleet("botops-console-", len(BOTS), 24000) as fleet_ops:  # its own port block
        yield fleet_ops


def rows(text: str) -> dict[str, str]:
    """The table's row of each bot (the line that starts with its name)."""
    return {line.split()[0]: line for line in text.splitlines() if re.match(r"bot\d\d\s", line)}


def test_a_restart_shows_bots_and_the_steps_that_ran_not_the_skipped_ones(ops):
    proc = invoke(ops, "restart", "--limit=bot01,bot02")
    text = output(proc)
    assert proc.returncode == 0, text
    assert "DSA is deprecated" not in text
    # --positions=carry (the default) flattens nothing: the step is not shown
    assert "Flatten the bot's positions" not in text
    for bot in ("bot01", "bot02"):
        steps = [line for line in proc.stderr.splitlines() if line.strip().startswith(f"{bot}:")]
        assert steps, text
        assert all(line.rstrip().endswith((": ok", ": changed")) for line in steps), steps
    assert "done 2, failed 0, waiting 0 of 2" in proc.stderr


def test_check_mode_shows_the_release_a_rollback_would_go_to(ops):
    assert invoke(ops, "deploy", "--version=1.1.0", "--limit=bot01").returncode == 0
    proc = invoke(ops, "rollback", "--target=1.0.0", "--limit=bot01", "--check")
    assert proc.returncode == 0, output(proc)
    row = rows(proc.stdout)["bot01"].split()
    assert row[:4] == ["bot01", "ok", "1.1.0", "1.0.0"], proc.stdout  # bot, result, before, after
    assert current(ops, "bot01") == "1.1.0"


def test_check_mode_shows_the_mode_a_promote_would_set(ops):
    """vanta's go/no-go passes with a verified backup and a kill switch engaged and released just now;
    the check run showed DRY -> DRY for the bot the real run takes LIVE."""
    assert invoke(ops, "backup", "--limit=bot05").returncode == 0
    assert invoke(ops, "backups", "--verify", "--limit=bot05").returncode == 0
    assert invoke(ops, "kill-switch", "--level=halt", "--reason=go/no-go drill", "--limit=bot05").returncode == 0
    assert invoke(ops, "kill-switch", "--release", "--level=halt", "--limit=bot05").returncode == 0
    proc = invoke(ops, "promote", "--to=live", "--limit=bot05", "--check")
    assert proc.returncode == 0, output(proc)
    row = last_summary(ops, "promote")["bots"]["bot05"]
    assert (row["result"], row["mode_before"], row["mode_after"]) == ("changed", "DRY", "LIVE"), row
    assert "DRY -> LIVE" in proc.stdout, proc.stdout
    persisted = ops["fleet"].db_query("bot05", "SELECT value #>> '{}' FROM bot_state WHERE key = 'execution_mode'")
    assert persisted[0][0] == "DRY"  # check mode set nothing


def test_a_failed_canary_lists_every_bot_and_says_each_failure_once_in_full(ops):
    proc = invoke(ops, "deploy", "--version=1.2.0-broken", "--canary=1", "--limit=bot02,bot03,bot04")
    text = output(proc)
    assert proc.returncode == 1, text
    assert "[canary]" in proc.stderr
    failures = [line for line in proc.stderr.splitlines() if "FAILED" in line]
    assert len(failures) == 1 and "[canary]" in failures[0], failures
    table = rows(proc.stdout)
    assert set(table) == {"bot02", "bot03", "bot04"}, proc.stdout
    assert sum("not started: the deploy stopped at the canary" in line for line in table.values()) == 2
    assert "{'" not in text  # no Python repr
    canary = next(bot for bot, line in table.items() if "not started" not in line)
    assert current(ops, canary) == "1.0.0"


def test_a_refusal_names_the_command_that_goes_ahead(ops):
    fleet = ops["fleet"]
    fleet.supervisorctl("stop", "bot03", check=True)
    try:
        proc = invoke(ops, "restart", "--limit=bot03")
        text = output(proc)
        assert proc.returncode != 0, text
        assert "bring it back with botops restart --limit=bot03 --mode=recover" in text
        assert "In full:" in proc.stdout or "--mode=recover" in rows(proc.stdout)["bot03"]
        again = invoke(ops, "restart", "--limit=bot03", "--mode=recover")
        assert again.returncode == 0, output(again)
    finally:
        invoke(ops, "restart", "--limit=bot03", "--mode=recover")


def test_backups_do_not_shout_about_test_restores_nobody_asked_for(ops):
    assert invoke(ops, "backup", "--limit=bot02").returncode == 0
    proc = invoke(ops, "backups", "--verify", "--limit=bot02")
    assert proc.returncode == 0, output(proc)
    assert " NO " not in rows(proc.stdout)["bot02"] + " ", proc.stdout


def audit(ops, bot: str) -> list[dict]:
    import json

    path = f"{ops['fleet'].bot(bot)['root']}/shared/data/botops-kill-switch.log"
    try:
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []


def test_a_graceful_restart_of_a_bot_whose_pause_stops_it_does_not_pause_it_first(ops):
    """mojorust's pause is its process stopped: pausing it first stopped it through the kill switch's
    ladder and then restarted it (14-18 s down, against 1-3 s in a deploy). The graceful stop is the pause."""
    before = len(audit(ops, "bot01"))
    proc = invoke(ops, "restart", "--limit=bot01")
    assert proc.returncode == 0, output(proc)
    engaged = [r for r in audit(ops, "bot01")[before:] if r.get("action") == "engage"]
    assert engaged == [], engaged
    assert last_summary(ops, "restart")["bots"]["bot01"]["ready"] is True


def test_redeploying_a_release_marked_bad_says_so(ops):
    """bot01 runs 1.1.0 (deployed above): a rollback marks 1.1.0 bad; deploying it again goes ahead, saying so."""
    assert invoke(ops, "rollback", "--target=1.0.0", "--limit=bot01").returncode == 0
    proc = invoke(ops, "deploy", "--version=1.1.0", "--limit=bot01")
    assert proc.returncode == 0, output(proc)
    assert "release 1.1.0 is marked bad in the release history" in proc.stdout, proc.stdout
    assert current(ops, "bot01") == "1.1.0"
