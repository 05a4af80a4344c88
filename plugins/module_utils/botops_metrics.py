# Copyright: botops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The fleet's metrics for Prometheus, from the rows every botops run reports (the metrics callback).

`merge` folds one run's per-bot rows into what is known of each bot (the last run of each operation,
the release, readiness, the kill switch level an operator holds, the newest verified backup); `render`
writes that in the node_exporter textfile format. Stdlib only; controller side.
"""

from __future__ import annotations

from datetime import datetime

FAILED = ("failed", "refused", "rolled back", "not started")

METRICS = (
    ("botops_operation_last_run_timestamp_seconds", "gauge", "When the bot's last run of the operation ended."),
    ("botops_operation_success", "gauge", "1 when the bot's last run of the operation succeeded, else 0."),
    ("botops_operation_duration_seconds", "gauge", "How long the bot's last run of the operation took."),
    ("botops_operation_downtime_seconds", "gauge", "How long the bot was down in its last run of the operation."),
    ("botops_kill_switch_engaged", "gauge", "1 for the kill switch level engaged on the bot (none: no series)."),
    ("botops_kill_switch_engaged_since_timestamp_seconds", "gauge", "Since when the bot's level is engaged."),
    ("botops_release_info", "gauge", "1 for the release the bot runs."),
    ("botops_bot_ready", "gauge", "1 when the bot passed its readiness checks at its last status, else 0."),
    ("botops_backup_verified_timestamp_seconds", "gauge", "When the bot's newest verified backup set was taken."),
)


def _number(value):
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _epoch(text):
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def merge(state, operation, report, failed, started, ended, kill_state=None):
    """The state with one run's rows folded in. `report`: {bot: row} (the playbook's botops_report);
    `failed`: the bots Ansible counted failed or unreachable."""
    bots = state.setdefault("bots", {})
    for bot, row in sorted(report.items()):
        if not isinstance(row, dict):
            continue
        known = bots.setdefault(bot, {})
        result = row.get("result")
        run = {"time": round(ended, 3),
               "success": int(bot not in failed and result not in FAILED),
               "duration": _number(row.get("duration")) or round(ended - started, 3)}
        if _number(row.get("downtime")) is not None:
            run["downtime"] = row["downtime"]
        known.setdefault("operations", {})[operation] = run
        release = row.get("release_after") or row.get("release")
        if isinstance(release, str) and release:
            known["release"] = release
        if isinstance(row.get("ready"), bool):
            known["ready"] = int(row["ready"])
        level, since = _kill_switch(operation, row, kill_state, ended)
        if level is not False:
            if level is None:
                known.pop("kill_switch", None)
            elif (known.get("kill_switch") or {}).get("level") != level:
                known["kill_switch"] = {"level": level, "since": since}
        verified = [_epoch(s.get("created_at")) for s in row.get("backups") or []
                    if isinstance(s, dict) and s.get("verified") and not s.get("damaged")]
        verified = [t for t in verified if t is not None]
        if verified:
            known["verified_backup"] = max(verified)
    return state


def _kill_switch(operation, row, kill_state, now):
    """(level or None, since) this row shows of the operator's kill switch; (False, None) when it shows
    nothing: the status shows the record, a kill switch run the level it left."""
    record = row.get("kill_switch", False)
    if record is None:
        return None, None
    if isinstance(record, dict):
        return record.get("level"), _epoch(record.get("time")) or now
    if operation in ("kill_switch", "emergency_stop") and row.get("result") != "failed":
        if kill_state == "released":
            return (row.get("level") or None), now
        return row.get("level") or "halt", now
    return False, None


def _labels(**labels):
    def quote(value):
        return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    return "{" + ",".join(f'{k}="{quote(v)}"' for k, v in labels.items()) + "}"


def render(state):
    """The state in the node_exporter textfile format."""
    samples = {name: [] for name, kind, text in METRICS}
    for bot, known in sorted((state.get("bots") or {}).items()):
        for operation, run in sorted((known.get("operations") or {}).items()):
            labels = _labels(bot=bot, operation=operation)
            samples["botops_operation_last_run_timestamp_seconds"].append((labels, run["time"]))
            samples["botops_operation_success"].append((labels, run["success"]))
            samples["botops_operation_duration_seconds"].append((labels, run["duration"]))
            if run.get("downtime") is not None:
                samples["botops_operation_downtime_seconds"].append((labels, run["downtime"]))
        engaged = known.get("kill_switch")
        if engaged:
            labels = _labels(bot=bot, level=engaged["level"])
            samples["botops_kill_switch_engaged"].append((labels, 1))
            samples["botops_kill_switch_engaged_since_timestamp_seconds"].append((labels, engaged["since"]))
        if known.get("release"):
            samples["botops_release_info"].append((_labels(bot=bot, release=known["release"]), 1))
        if "ready" in known:
            samples["botops_bot_ready"].append((_labels(bot=bot), known["ready"]))
        if known.get("verified_backup") is not None:
            samples["botops_backup_verified_timestamp_seconds"].append((_labels(bot=bot), known["verified_backup"]))
    lines = []
    for name, kind, text in METRICS:
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
        lines += [f"{name}{labels} {value}" for labels, value in samples[name]]
    return "\n".join(lines) + "\n"
