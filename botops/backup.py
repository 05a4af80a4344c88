"""`botops backup`, `botops restore`, `botops backups`: the bots' backup sets, fleet-wide."""

from __future__ import annotations

import re

from invoke import task

from botops.fleet_task import run_operation, usage_error
from botops.deploy import BACKUP_ID_RE, COMMON_HELP, OVERRIDE_HELP, serial_plan
from botops.report import shown

LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._:+-]{0,63}$")

BACKUP_COLUMNS = [
    ("name", "bot"),
    ("result", "result"),
    ("backup_id", "backup"),
    ("size_mb", "size MiB"),
    ("duration", "duration s"),
    ("backup_release", "release"),
    ("rows", "rows"),
    ("message", "message"),
]

RESTORE_COLUMNS = [
    ("name", "bot"),
    ("result", "result"),
    ("backup_id", "backup"),
    ("rows", "rows restored"),
    ("carried_forward", "carried forward"),
    ("kept_aside", "kept aside"),
    ("ready", "ready"),
    ("downtime", "downtime s"),
    ("safety_backup_id", "safety backup"),
    ("message", "message"),
]

LIST_COLUMNS = [
    ("name", "bot"),
    ("backup_id", "backup"),
    ("created_at", "created"),
    ("release", "release"),
    ("size_mb", "size MiB"),
    ("verified", "verified"),
    ("test_restored", "test restored"),
    ("label", "label"),
    ("message", "message"),
]


def check_backup_id(task_name: str, backup_id: str | None, option: str = "--backup", latest: bool = True) -> None:
    if backup_id is None:
        return
    if (latest and backup_id == "latest") or BACKUP_ID_RE.match(backup_id):
        return
    accepted = "'latest' or a backup id" if latest else "a backup id"
    raise usage_error(task_name, f"{option} {shown(backup_id)} is not {accepted} (e.g. 20261121T020000Z-ab12cd); "
                                 "'botops backups' lists them")


def format_rows(counts: dict | None) -> str | None:
    """'trades=120 positions=4 orders=7 (max id 120)' from a {row_counts, ledger_max_id} document."""
    if not counts:
        return None
    text = " ".join(f"{table}={n}" for table, n in sorted((counts.get("row_counts") or {}).items()))
    if counts.get("ledger_max_id") is not None:
        text += f" (max id {counts['ledger_max_id']})"
    return text or None


def rows_with_counts(report: dict) -> list[dict]:
    return [dict(report[name], name=name, rows=format_rows(report[name].get("rows"))) for name in sorted(report)]


def backup_rows(report: dict) -> list[dict]:
    """One row per backup set, newest first per bot, a failed verification on its set's row; a bot
    without sets gets one row saying so. A damaged set (manifest missing or unreadable) has its row
    too, never verified, its message 'damaged: <reason>' (what a verification of it failed on), and
    says so when it is the set that keeps --backup=latest from resolving."""
    rows = []
    for name in sorted(report):
        entry = report[name]
        sets = entry.get("backups") or []
        problems = dict(entry.get("problems") or {})
        deleted = entry.get("deleted") or []
        notes = [f"retention deleted {len(deleted)} set(s)"] if deleted else []
        if entry.get("message") and not problems:
            notes.insert(0, entry["message"])
        notes += [f"{backup_id}: {msg}" for backup_id, msg in problems.items()
                  if backup_id not in {s.get("backup_id") for s in sets}]
        if not sets:
            rows.append({"name": name, "result": entry.get("result"), "message": "; ".join(notes + ["no backups"])})
            continue
        for index, backup in enumerate(sets):
            size = backup.get("size")
            label = backup.get("label") or ""
            if backup.get("safety_for"):
                label = f"safety before restoring {backup['safety_for']}"
            if backup.get("damaged"):
                message = [f"damaged: {backup['damaged']}"]
                if backup.get("backup_id") == entry.get("latest_blocked_by"):
                    message.append("blocks 'latest'")
            else:
                message = [problems[backup["backup_id"]]] if backup.get("backup_id") in problems else []
            rows.append({
                "name": name,
                "result": entry.get("result"),
                "backup_id": backup.get("backup_id"),
                "created_at": backup.get("created_at"),
                "release": backup.get("release"),
                "size_mb": round(size / 1048576, 2) if isinstance(size, int) else None,
                "verified": False if backup.get("damaged") else backup.get("verified"),
                # yes when a test restore passed; '-' when none was asked (not a capital NO)
                "test_restored": True if backup.get("test_restored") else None,
                "label": label,
                "message": "; ".join((notes if index == 0 else []) + message),
            })
    return rows


@task(
    help=dict(
        COMMON_HELP,
        label="a short label recorded in the backup's manifest (default: manual)",
    )
)
def backup(c, label=None, inventory=None, limit=None, check=False, takeover=False):
    """Back up every targeted bot now (database dump and config, checksummed); report id, size, duration."""
    if label is not None and not LABEL_RE.match(label):
        raise usage_error("backup", f"--label {shown(label)} must be 1-64 letters, digits, spaces or ._:+- "
                                    "(starting with a letter or digit)")
    extravars = {"botops_backup_label": label} if label else {}
    run_operation("backup", "backup.yml", inventory=inventory, limit=limit, check=check, extravars=extravars,
                  takeover=takeover, columns=BACKUP_COLUMNS, rows=rows_with_counts)


@task(
    help=dict(
        COMMON_HELP,
        **OVERRIDE_HELP,
        backup="'latest' (the newest set that is not a restore's safety backup; refused when that set is damaged) "
               "or a backup id (required); 'botops backups' lists them",
        batch="bots restored at once: a number or a percentage (default 100%); "
              "a batch with a failed bot stops the next ones",
        carry_forward="carry the trades made since the backup into the restored database (their ids and "
                      "content, positions and orders as the bot holds them) instead of leaving them behind",
        accept_ledger_loss="restore although the live ledger holds trades the restored database would not "
                           "(refused otherwise, naming them); the replaced database is kept",
    )
)
def restore(c, backup=None, inventory=None, limit=None, check=False, batch="100%", takeover=False,
            override_kill_switch=False, carry_forward=False, accept_ledger_loss=False):
    """Restore bots' databases from a backup: verified, safety backup first, atomic swap, readiness gate."""
    if backup is None:
        raise usage_error("restore", "--backup is required: 'latest' or a backup id ('botops backups' lists them)")
    check_backup_id("restore", backup)
    extravars = {"botops_backup_id": backup, "botops_serial": serial_plan("restore", 0, batch),
                 "botops_accept_ledger_loss": bool(accept_ledger_loss), "botops_carry_forward": bool(carry_forward)}
    run_operation("restore", "restore.yml", inventory=inventory, limit=limit, check=check, extravars=extravars,
                  takeover=takeover, columns=RESTORE_COLUMNS, rows=rows_with_counts,
                  override_kill_switch=override_kill_switch)


@task(
    help=dict(
        COMMON_HELP,
        verify="re-check the checksums and sizes of every set (or of --backup)",
        test_restore="restore the newest set (or --backup) into a scratch database and compare row counts",
        prune="apply the profile's retention (the newest verified set and sets of good releases are kept)",
        backup="with --verify or --test-restore: only this set ('latest' or a backup id)",
    )
)
def backups(c, verify=False, test_restore=False, prune=False, backup=None, inventory=None, limit=None, check=False,
            takeover=False):
    """List the bots' backup sets (created, release, size, verified); optionally verify, test-restore, prune."""
    check_backup_id("backups", backup)
    if backup is not None and not (verify or test_restore):
        raise usage_error("backups", "--backup only applies with --verify or --test-restore")
    extravars = {"botops_verify": verify, "botops_test_restore": test_restore, "botops_prune": prune}
    if backup is not None:
        extravars["botops_backup_id"] = backup
    acts = verify or test_restore or prune
    run_operation("backups", "backups.yml", inventory=inventory, limit=limit, check=check, extravars=extravars,
                  takeover=takeover, columns=LIST_COLUMNS, rows=backup_rows, lock=acts)
