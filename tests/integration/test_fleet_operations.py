"""The fleet tasks an infra team runs, end to end through the real `invoke` CLI on a fleet of their
own (one bot per family): check mode, deploy, a broken canary, concurrent runs, a rollback across
a contract migration, an emergency stop.

The tests run in file order and build on each other, like an operator's day.
"""

from __future__ import annotations

import json
import re
import tarfile
import time
from pathlib import Path

import pytest
import yaml

from .fleet_tasks import (
    assert_continuous, backups, current, invoke, last_summary, ops_fleet, output, revision, root, trades, wait_growth,
)

BOTS = ["bot01", "bot02", "bot03", "bot04", "bot05"]  # mojorust, papertrader, solana-cli, hyperliquid, vanta


@pytest.fixture(scope="module")
def ops():
    """A fleet of five bots, one per family, with its own artifacts, locks and audit directories."""
    with ops_fleet("botops-ops-", len(BOTS), 32000) as fleet_ops:  # below the ephemeral ports (32768+)
        yield fleet_ops


def test_check_mode_changes_nothing(ops):
    pids = ops["fleet"].service_pids()
    proc = invoke(ops, "deploy", "--version=1.1.0", "--check")
    assert proc.returncode == 0, output(proc)
    assert "check mode" in proc.stdout
    for bot in BOTS:
        assert current(ops, bot) == "1.0.0"
        assert revision(ops, bot) == "0001_initial"
        assert backups(ops, bot) == []
        assert not (Path(ops["fleet"].bot(bot)["root"]) / "releases" / "1.1.0").exists()
        wait_growth(ops, bot)
    assert ops["fleet"].service_pids() == pids


def test_bad_input_fails_before_anything_changes(ops):
    for args, expected in [
        (["deploy", "--version=9.9.9"], "no release 9.9.9"),
        (["deploy", "--version=../../etc"], "is not a release version"),
        (["deploy", "--version=1.1.0", "--positions=yolo"], "not a policy"),
        (["deploy", "--version=1.1.0", "--limit=nosuchbot"], "is no bot or group"),
        (["rollback", "--target=latest", "--backup=../x"], "is not a backup id"),
        # resolved on every bot before the first change: no backup taken, no bot paused
        (["rollback", "--target=garbage"], "release garbage is not installed (installed: 1.0.0)"),
        (["rollback", "--target=latest"], "no release marked good other than the current 1.0.0"),
        (["kill-switch", "--level=nuke", "--reason=x"], "is not a level"),
        (["kill-switch", "--level=halt"], "--reason is required"),
    ]:
        proc = invoke(ops, *args)
        assert proc.returncode == 2, (args, output(proc))
        assert expected in output(proc), (args, output(proc))
    assert all(current(ops, bot) == "1.0.0" for bot in BOTS)
    assert all(backups(ops, bot) == [] for bot in BOTS)


def test_deploy_expand_release_to_every_family(ops):
    proc = invoke(ops, "deploy", "--version=1.1.0", "--canary=1", "--batch=100%")
    assert proc.returncode == 0, output(proc)
    summary = last_summary(ops, "deploy")
    assert summary["exit_code"] == 0
    for bot in BOTS:
        row = summary["bots"][bot]
        assert (row["result"], row["release_before"], row["release_after"]) == ("ok", "1.0.0", "1.1.0"), row
        assert row["backup_id"] in backups(ops, bot)
        assert current(ops, bot) == "1.1.0"
        assert revision(ops, bot) == "0002_trade_fee"
        wait_growth(ops, bot)
        assert_continuous(ops, bot)
        fee_rows = ops["fleet"].db_query(bot, "SELECT count(*) FROM trades WHERE fee IS NOT NULL")[0][0]
        assert int(fee_rows) > 0, f"{bot} is not running 1.1.0 code (no fee written)"
        ledger = json.loads((Path(ops["fleet"].bot(bot)["root"]) / "releases" / "ledger.json").read_text())
        assert "good" in json.dumps(ledger)


@pytest.mark.slow  # 70 s; the fault suite (test_broken_release_in_the_canary) proves it too
def test_broken_release_stops_at_the_canary_which_rolls_itself_back(ops):
    before = {bot: current(ops, bot) for bot in BOTS}  # 1.1.0 after the deploy above; 1.0.0 run alone (-m slow)
    proc = invoke(ops, "deploy", "--version=1.2.0-broken", "--canary=1")
    assert proc.returncode == 1, output(proc)
    summary = last_summary(ops, "deploy")
    touched = [bot for bot, row in summary["bots"].items() if row["result"] != "ok" or row.get("backup_id")]
    assert len(touched) == 1, summary["bots"]
    canary = touched[0]
    assert summary["bots"][canary]["result"] == "rolled back"
    assert current(ops, canary) == before[canary]
    ledger = (Path(ops["fleet"].bot(canary)["root"]) / "releases" / "ledger.json").read_text()
    assert '"bad"' in ledger
    for bot in BOTS:
        assert current(ops, bot) == before[bot]
        wait_growth(ops, bot)
        assert_continuous(ops, bot)
        if bot != canary:
            assert not (Path(ops["fleet"].bot(bot)["root"]) / "releases" / "1.2.0-broken").exists(), bot


def test_second_deploy_is_refused_while_one_runs_and_contract_rollback_loses_nothing(ops):
    first = invoke(ops, "deploy", "--version=2.0.0", "--batch=100%", background=True)
    locks = ops["dir"] / "locks"
    deadline = time.monotonic() + 60
    while not (locks.exists() and any(locks.glob("fleet-*.lock"))):
        assert first.poll() is None, first.stdout.read()
        assert time.monotonic() < deadline, "the first deploy never took the fleet lock"
        time.sleep(0.05)
    second = invoke(ops, "deploy", "--version=1.1.0")
    assert second.returncode == 2, output(second)
    assert "fleet lock" in output(second) and "held by run" in output(second)
    out, _ = first.communicate(timeout=600)
    assert first.returncode == 0, out
    assert not any(locks.glob("fleet-*.lock")), "the fleet lock was not given back"
    for bot in BOTS:
        assert current(ops, bot) == "2.0.0"
        assert revision(ops, bot) == "0003_rename_qty"
        wait_growth(ops, bot)

    # botops releases tells what the rollback would cost: a contract migration crossed, the trades carried
    listed = invoke(ops, "releases")
    assert listed.returncode == 0, output(listed)
    for bot in BOTS:
        cost = last_summary(ops, "releases")["bots"][bot]["rollback"]
        assert cost["target"] == "1.1.0" and cost["restore"], cost
        assert cost["ledger"]["carried"]["trades"] > 0 and cost["ledger"]["kept_aside"] == [], cost
    assert "(crosses a contract migration): carry forward " in listed.stdout, listed.stdout

    # a release that declares no ledger map for its contract change: the trades made on it cannot be
    # carried back onto the older schema, so the rollback refuses, naming them, and changes nothing
    nomap = root(ops, "bot01") / "releases" / "2.0.0" / "migrations" / "versions" / "0003_rename_qty.py"
    declared = nomap.read_text()
    nomap.write_text("\n".join(line for line in declared.splitlines() if not line.startswith("botops_ledger_map")))
    try:
        refused = invoke(ops, "rollback", "--target=latest", "--limit=bot01")
    finally:
        nomap.write_text(declared)
    assert refused.returncode == 2, output(refused)
    assert "trades.qty has no value" in output(refused) and "--accept-ledger-loss" in output(refused)
    assert re.search(r"\d+ trades row\(s\) \(ids \d+-\d+", output(refused)), output(refused)
    assert current(ops, "bot01") == "2.0.0" and revision(ops, "bot01") == "0003_rename_qty"
    wait_growth(ops, "bot01")

    # with the map (the reference bot's 2.0.0 declares it) every trade made on 2.0.0 comes back
    before = {bot: trades(ops, bot)[1] for bot in BOTS}
    proc = invoke(ops, "rollback", "--target=latest")
    assert proc.returncode == 0, output(proc)
    summary = last_summary(ops, "rollback")
    for bot in BOTS:
        row = summary["bots"][bot]
        assert (row["release_before"], row["release_after"]) == ("2.0.0", "1.1.0"), row
        assert row["downtime"] is not None
        assert current(ops, bot) == "1.1.0"
        assert revision(ops, bot) == "0002_trade_fee"
        assert row["restored_backup_id"] and row["restored_backup_id"] != row["backup_id"], row
        assert row["kept_aside"] == "none", row
        carried = row["ledger"]["carried"]
        assert carried["trades"] > 0 and " trades" in row["carried_forward"], row
        kept = kept_database(ops, bot)
        # in the live ledger: every trade of the replaced database, same id, same content (qty mapped)
        kept_rows = kept_query(ops, bot, kept, "SELECT id, ts, symbol, side, quantity, price, fee FROM trades ORDER BY id")
        assert len(kept_rows) >= before[bot] and kept_rows[-1][0] == len(kept_rows), f"{bot}: kept ledger not continuous"
        live_rows = ops["fleet"].db_query(bot, "SELECT id, ts, symbol, side, qty, price, fee FROM trades WHERE id <= %s "
                                               "ORDER BY id", (kept_rows[-1][0],))
        assert live_rows == kept_rows, f"{bot}: the live ledger differs from the replaced database's"
        assert carried["trades"] == sum(1 for r in kept_rows if r[0] > row["ledger"]["backup_max_id"])
        # the positions the bot held at the stop are the ones it holds now (none lost, none reopened)
        kept_positions = kept_query(ops, bot, kept, "SELECT id, symbol, side, qty, entry_price, status FROM positions "
                                                    "ORDER BY id")
        live_positions = {r[0]: r for r in ops["fleet"].db_query(
            bot, "SELECT id, symbol, side, qty, entry_price, status FROM positions WHERE id <= %s",
            (max([r[0] for r in kept_positions], default=0),))}
        for position in kept_positions:
            now = live_positions[position[0]]
            assert now[:5] == position[:5], (bot, position, now)
            assert now[5] == position[5] or position[5] == "open", (bot, position, now)
        wait_growth(ops, bot)  # new trades on 1.1.0 get fresh ids: the ledger stays continuous
        assert_continuous(ops, bot)
        assert trades(ops, bot)[1] > kept_rows[-1][0]


def kept_database(ops, bot: str) -> str:
    """The newest database a restore replaced and kept (<db>_pre_restore_<time>)."""
    rows = ops["fleet"].db_query(bot, "SELECT datname FROM pg_database WHERE datname LIKE %s ORDER BY datname DESC",
                                 (f"{bot}_pre_restore_%",))
    assert rows, f"{bot}: the database replaced by the restore was not kept"
    return rows[0][0]


def kept_query(ops, bot: str, dbname: str, query: str) -> list[tuple]:
    import psycopg
    from psycopg.conninfo import make_conninfo

    url = make_conninfo(ops["fleet"].bot(bot)["database_url"], dbname=dbname)
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        return conn.execute(query).fetchall()


def test_deploys_and_rollbacks_cost_at_most_10_module_calls_per_bot(ops):
    """Counted by the front end from ansible-runner's events of every run above (set_fact, assert
    and the like run no module and are not counted)."""
    counted = 0
    for playbook in ("deploy", "rollback"):
        for path in sorted((ops["dir"] / "runs" / playbook).glob("*/botops-summary.json")):
            summary = json.loads(path.read_text())
            if summary["check"]:
                continue
            for bot, host in summary["hosts"].items():
                assert host["module_calls"] <= 10, f"{playbook} {path.parent.name}: {bot} cost {host['module_calls']} module calls"
                counted += host["module_calls"] > 0
    assert counted >= 2 * len(BOTS), "no run was counted"


def test_emergency_stop_halts_every_bot_and_writes_a_redacted_bundle(ops):
    proc = invoke(ops, "emergency-stop", "--reason=drawdown limit hit")
    assert proc.returncode == 0, output(proc)
    for bot in BOTS:
        before = trades(ops, bot)[0]
        time.sleep(0.5)  # several trade intervals: a halted bot writes none
        assert trades(ops, bot)[0] == before, f"{bot} still trades after the emergency stop"
    bundles = sorted((ops["dir"] / "runs" / "incidents").glob("*.tar.gz"))
    assert len(bundles) == 1
    assert bundles[0].stat().st_mode & 0o777 == 0o600
    with tarfile.open(bundles[0]) as tar:
        names = tar.getnames()
        text = b"".join(tar.extractfile(m).read() for m in tar.getmembers() if m.isfile())
    for bot in BOTS:
        assert any(n.endswith(f"/{bot}/status.json") for n in names), bot
        assert any(n.endswith(f"/{bot}/logs/bot.log") for n in names), bot
    secrets = []
    for path in (Path(ops["inventory"]).parent / "host_vars").glob("*/secrets.yml"):
        secrets += [str(v) for v in yaml.safe_load(path.read_text()).values() if v]
    assert secrets
    written = [text] + [p.read_bytes() for p in (ops["dir"] / "runs").rglob("*") if p.is_file()]
    for secret in secrets:
        assert not any(secret.encode() in blob for blob in written), "a secret reached the artifacts"

    proc = invoke(ops, "kill-switch", "--release")
    assert proc.returncode == 0, output(proc)
    for bot in BOTS:
        wait_growth(ops, bot, timeout=60)
