"""What every fleet task does around its playbook: check the input, hold the fleet lock, run the
playbook through ansible-runner, print the per-bot table, exit with the right code.

Nothing in here differs between a person's run, a cron run and an AWX run of the same playbook,
except that AWX runs the playbook directly and relies on the per-bot locks the playbooks take.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

from ansible_collections.botops.fleet.plugins.module_utils import botops_lock as locks
from invoke import Exit

from botops.layout import HOME
from botops.inventory import InventoryError, hosts, identities
from botops.progress import Progress
from botops.report import shown, table
from botops.runner import EXIT_KILL_SWITCH, EXIT_OK, EXIT_USAGE, PlaybookRun

RESULT_COLUMNS = [
    ("name", "bot"),
    ("result", "result"),
    ("changed", "changed"),
    ("release_before", "before"),
    ("release_after", "after"),
    ("duration", "duration s"),
    ("downtime", "downtime s"),
    ("message", "message"),
]


def lock_dir() -> Path:
    return Path(os.environ.get("BOTOPS_LOCK_DIR", HOME / ".locks"))


def fleet_lock_paths(bots: dict[str, str]) -> dict[str, Path]:
    """The fleet lock of a run: one controller lock file per targeted bot, keyed by what the bot is
    (botops.inventory.identities: its address and root), not by the inventory's path or spelling.
    Two runs that target an overlapping set of bots, through any inventories, cannot both hold it."""
    return {name: lock_dir() / f"fleet-bot-{hashlib.sha256(identity.encode()).hexdigest()[:16]}.lock"
            for name, identity in bots.items()}


def acquire_fleet_lock(locks, task: str, bots: dict[str, str], run_id: str, takeover: bool) -> list[Path]:
    """Take the fleet lock (every targeted bot's controller lock, in name order); all or none.
    Returns the lock files taken; raises Exit (2) naming the bot and the run holding it."""
    taken = []
    for name, path in sorted(fleet_lock_paths(bots).items()):
        try:
            locks.acquire(str(path), run_id, task, ttl=6 * 3600, owner_pid=os.getpid(), takeover=takeover)
        except (locks.LockError, OSError) as exc:
            for held in taken:
                locks.release(str(held), run_id)
            raise Exit(f"{task}: refused, the fleet lock of {name} ({bots[name]}, {path}) is taken: {exc}",
                       code=EXIT_USAGE) from None
        taken.append(path)
    return taken


def usage_error(task: str, message: str) -> Exit:
    return Exit(f"{task}: {message}", code=EXIT_USAGE)


def announce_failure(task: str, inventory_path: Path, run_id: str, bots: list[str], why: dict, what: str,
                     check: bool) -> None:
    """Post '<task> failed' (or interrupted) to the inventory's webhook (playbooks/notify.yml, the bot_notify
    role): the run id, the bots that failed and why, how many were targeted. Check runs change nothing and
    announce nothing; a notification that cannot be sent is said on the console, never a reason to fail."""
    if check:
        return
    failed = sorted(why)
    listed = "; ".join(f"{bot}: {why[bot]}" for bot in failed[:20]) + (" ..." if len(failed) > 20 else "")
    message = (f"botops: {task} {what} on {len(failed)} of {len(bots)} bot(s) (run {run_id})"
               + (f": {listed}" if listed else ""))
    try:
        notice = PlaybookRun("notify.yml", inventory=str(inventory_path), progress=lambda *a: None, extravars={
            "bot_notify_event": f"{task.replace('-', '_')}_{what}",
            "bot_notify_message": message,
            "bot_notify_details": {"task": task, "run_id": run_id, "result": what, "failed": why,
                                   "targeted": len(bots)},
        }).run()
    except (OSError, ValueError) as exc:
        print(f"{task}: the {what} notification was not sent: {exc}", flush=True)
        return
    if notice.exit_code != EXIT_OK:
        print(f"{task}: the {what} notification was not sent (see {notice.artifact_dir})", flush=True)


def number_flag(task: str, flag: str, value, unit: str, high: float, low: int = 1, seconds: bool = False):
    """The value of a numeric flag, or exit 2 saying what is accepted: a whole number from `low` to
    `high`, or with `seconds` a duration (a number, more than 0, at most `high`).

    Numeric flags are declared with string defaults and read here, so that `--canary=abc` gets this
    message and exit code 2 rather than the parser's traceback."""
    text = str(value).strip()
    try:
        number = float(text) if seconds else int(text)
    except ValueError:
        number = None
    if seconds:
        fits = number is not None and 0 < number <= high  # NaN compares false: refused
        accepted = f"a number of {unit}, more than 0, at most {high:g}"
    else:
        fits = number is not None and low <= number <= high
        accepted = f"a whole number of {unit} from {low} to {int(high)}"
    if not fits:
        raise usage_error(task, f"--{flag.replace('_', '-')} {shown(value)} must be {accepted}")
    return number


def run_operation(
    task: str,
    playbook: str,
    *,
    inventory: str | None = None,
    limit: str | None = None,
    check: bool = False,
    extravars: dict | None = None,
    takeover: bool = False,
    columns: list[tuple[str, str]] | None = None,
    lock: bool = True,
    rows: Callable[[dict], list[dict]] | None = None,
    check_vars: bool = True,
    override_kill_switch: bool = False,
    before: Callable[[Path, list[str]], None] | None = None,
    first_batch: str | None = None,
) -> dict:
    """Run one fleet operation end to end; raises Exit with the exit code when it did not fully succeed.

    `rows` turns the playbook's report (keyed by bot) into the table's rows, each with the bot's
    `name`, when one bot needs several rows (its backups, its checks); default: one row per bot.
    `check_vars` checks every targeted bot's inventory variables first (the emergency tasks skip
    it: at 3 a.m. the per-bot results name a bad bot without holding up the others).
    `override_kill_switch`: the operator's explicit go-ahead for this run on bots whose operator
    engaged a kill switch level (the level is put back on each bot once it is ready).
    `before(inventory path, targeted bots)` checks more input once the bots are known, before
    anything runs (it raises the task's usage error)."""
    try:
        inventory_path, bots = hosts(inventory, limit, check_vars=check_vars)
    except InventoryError as exc:
        raise usage_error(task, str(exc)) from None
    if before is not None:
        before(inventory_path, bots)
    mode = " (check mode: nothing will change)" if check else ""
    print(f"{task}: {len(bots)} bot(s) from {inventory_path}{mode}", flush=True)

    try:
        run = PlaybookRun(playbook, inventory=str(inventory_path), limit=limit, check=check,
                          extravars=dict(extravars or {}), progress=Progress(total=len(bots), first_batch=first_batch))
    except ValueError as exc:
        raise usage_error(task, str(exc)) from None
    run.extravars.update(botops_run_id=run.ident, botops_owner_pid=os.getpid(), botops_takeover=takeover,
                         botops_override_kill_switch=bool(override_kill_switch))
    held = []
    if lock and not check:
        try:
            targeted = identities(inventory_path, bots)
        except InventoryError as exc:
            raise usage_error(task, str(exc)) from None
        held = acquire_fleet_lock(locks, task, targeted, run.ident, takeover)
    try:
        result = run.run()
    except KeyboardInterrupt:
        announce_failure(task, inventory_path, run.ident, bots, {}, "interrupted", check)
        raise
    finally:
        for path in held:
            locks.release(str(path), run.ident)

    if rows is not None:
        lines = rows(result.report)
    else:
        lines = [dict(result.report[name], name=name) for name in sorted(result.report)]
    reported = {line["name"] for line in lines}
    for host in result.failed_hosts:
        if host not in reported:
            outcome = result.hosts[host]
            word = (outcome.kill_switch.split(":", 1)[0] if outcome.kill_switch
                    else "refused" if outcome.refused else "failed")
            lines.append({"name": host, "result": word,
                          "message": outcome.kill_switch or outcome.refused or outcome.last_error})
    if result.exit_code != EXIT_OK:
        # every targeted bot has a row: one the run never reached says so (a failed canary, --max-fail)
        reported |= {line["name"] for line in lines}
        batches = getattr(run.progress, "seen", {})
        at_canary = first_batch == "canary" and result.failed_hosts and all(
            batches.get(h) == 1 for h in result.failed_hosts)
        stopped = "the deploy stopped at the canary" if at_canary else "the run stopped before it"
        lines += [{"name": name, "result": "not started", "message": f"not started: {stopped}"}
                  for name in bots if name not in reported]
    if lines:
        print()
        print(table(lines, columns or RESULT_COLUMNS))
    if result.exit_code not in (EXIT_OK, EXIT_USAGE, EXIT_KILL_SWITCH):
        why = {name: outcome.refused or outcome.kill_switch or outcome.last_error or "failed"
               for name, outcome in result.hosts.items() if outcome.failed or outcome.unreachable}
        for line in lines:  # a row the playbook failed without a failed task (a bot it reported failed)
            if line.get("result") in ("failed", "refused") and line["name"] not in why:
                why[line["name"]] = line.get("message") or line["result"]
        announce_failure(task, inventory_path, run.ident, bots, why,
                         "interrupted" if result.status == "canceled" else "failed", check)
    for note in result.notes:
        print(f"{task}: {note}")
    print(f"\n{task}: {result.status}; summary: {result.artifact_dir / 'botops-summary.json'}")
    if result.error:
        print(result.error)
    if result.exit_code == EXIT_KILL_SWITCH:
        held = ", ".join(sorted(h for h, o in result.hosts.items() if o.kill_switch))
        raise Exit(f"{task}: stopped by the kill switch an operator engaged on {held} (release it with "
                   "'botops kill-switch --release --level=LEVEL', or pass --override-kill-switch to go ahead "
                   "and keep it engaged)", code=result.exit_code)
    if result.exit_code == EXIT_USAGE:
        refused = ", ".join(h for h in result.failed_hosts if result.hosts[h].refused)
        raise Exit(f"{task}: refused for {refused}, nothing was changed on them (the table says why)",
                   code=result.exit_code)
    if result.exit_code != EXIT_OK:
        failed = ", ".join(result.failed_hosts) or "see the summary"
        raise Exit(f"{task}: failed for {failed}", code=result.exit_code)
    return result.report
