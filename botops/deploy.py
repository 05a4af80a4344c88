"""`botops deploy`, `botops rollback`, `botops releases`: code and data move together, fleet-wide."""

from __future__ import annotations

import glob
import json
import os
import re
from pathlib import Path

from invoke import task

from botops import profiles
from botops.inventory import InventoryError, bot_variables
from botops.fleet_task import number_flag, run_operation, usage_error
from botops.report import shown
from botops.layout import HOME

VERSION_RE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}$")
BACKUP_ID_RE = re.compile(r"^[0-9]{8}T[0-9]{6}Z-[A-Za-z0-9][A-Za-z0-9._-]{0,47}$")
BATCH_RE = re.compile(r"^([1-9][0-9]{0,5}|([1-9][0-9]?|100)%)$")
POSITION_POLICIES = ("refuse", "wait", "flatten", "carry")

DEPLOY_COLUMNS = [
    ("name", "bot"),
    ("result", "result"),
    ("release_before", "before"),
    ("release_after", "after"),
    ("ready", "ready"),
    ("downtime", "downtime s"),
    ("backup_id", "backup taken"),
    ("restored_backup_id", "backup restored"),
    ("carried_forward", "carried forward"),
    ("kept_aside", "kept aside"),
    ("message", "message"),
]


def artifacts_dir(given: str | None) -> Path:
    if given is not None:
        if not given.strip():
            raise usage_error("deploy", "--artifacts is empty: give the directory holding the release artifacts "
                                        "(or leave --artifacts out for the sandbox's)")
        try:
            return Path(given).resolve()
        except OSError as exc:
            raise usage_error("deploy", f"--artifacts {shown(given)} cannot be used: {exc.strerror} "
                                        "(pass --artifacts=DIR)") from None
    sandbox = Path(os.environ.get("BOTOPS_SANDBOX_DIR", HOME / ".sandbox"))
    return (sandbox / "artifacts").resolve()


def available_versions(directory: Path, name: str) -> list[str]:
    """The versions of artifact `name` in the directory (those with a manifest)."""
    prefix = f"{name}-"
    return sorted(p.name[len(prefix):-len(".json")] for p in directory.glob(f"{glob.escape(prefix)}*.json")
                  if VERSION_RE.match(p.name[len(prefix):-len(".json")]))


def check_version(task_name: str, version: str, directory: Path) -> None:
    """The version is a version and the artifacts directory exists (which artifacts it must hold
    depends on the targeted bots: check_artifacts)."""
    if not version or not VERSION_RE.match(version) or ".." in version:
        raise usage_error(task_name, f"--version {shown(version)} is not a release version: letters, digits and "
                                     "._+- (at most 64, no '..'), e.g. --version=1.1.0")
    try:
        found = directory.is_dir()
    except OSError as exc:  # a name too long for the file system
        raise usage_error(task_name, f"--artifacts {shown(str(directory))} cannot be used: {exc.strerror} "
                                     "(pass --artifacts=DIR)") from None
    if not found:
        raise usage_error(task_name, f"artifacts directory {directory} does not exist (pass --artifacts=DIR)")


def artifact_names(inventory: Path, bots: list[str]) -> dict[str, list[str]]:
    """The artifact name each targeted bot is deployed from, {name: [bots]}: the inventory's
    bot_release_artifact, else its family profile's release.artifact, else the family name
    (botops.profiles.artifact_name). Bots whose family or name the inventory leaves to a template
    or a vault the front end cannot read are left to the playbook."""
    try:
        found = bot_variables(inventory, bots, ("bot_family", "bot_release_artifact"))
    except InventoryError:
        return {}
    names: dict[str, list[str]] = {}
    loaded: dict[str, dict | None] = {}
    for bot in bots:
        family, override = found[bot]["bot_family"], found[bot]["bot_release_artifact"]
        if not isinstance(family, str):
            continue
        if family not in loaded:
            try:
                loaded[family] = profiles.load(family)
            except profiles.ProfileError:
                loaded[family] = None  # reported by the inventory check
        if loaded[family] is None:
            continue
        name = profiles.artifact_name(loaded[family], override if isinstance(override, str) else None)
        names.setdefault(name, []).append(bot)
    return names


def check_artifacts(task_name: str, version: str, directory: Path, names: dict[str, list[str]]) -> None:
    """Every artifact the targeted bots need is in the directory: <name>-<version>.tar.gz and its
    manifest with a sha256. Refuses naming the artifact, its bots and the versions there are."""
    problems = []
    for name, bots in sorted(names.items()):
        who = ", ".join(bots[:5]) + (f" and {len(bots) - 5} more" if len(bots) > 5 else "")
        manifest = directory / f"{name}-{version}.json"
        tarball = directory / f"{name}-{version}.tar.gz"
        if not manifest.is_file() or not tarball.is_file():
            known = ", ".join(available_versions(directory, name)) or "none"
            problems.append(f"no release {version} of artifact {name!r} ({name}-{version}.tar.gz + .json) "
                            f"in {directory} for {who} (available: {known})")
            continue
        try:
            json.loads(manifest.read_text())["sha256"]
        except (ValueError, KeyError, TypeError):
            problems.append(f"manifest {manifest} is not a release manifest (no sha256)")
    if problems:
        raise usage_error(task_name, f"--version {version}: " + "; ".join(problems))


def serial_plan(task_name: str, canary, batch: str) -> list:
    canary = number_flag(task_name, "canary", canary, "bots (0: no canary)", high=999_999, low=0)
    if not BATCH_RE.match(str(batch)):
        raise usage_error(task_name, f"--batch {shown(batch)} must be a number of bots or a percentage, e.g. 5 or 25%")
    size = batch if str(batch).endswith("%") else int(batch)
    return [canary, size] if canary else [size]


def check_max_fail(task_name: str, max_fail) -> int:
    return number_flag(task_name, "max_fail", max_fail, "percent", high=100, low=0)


COMMON_HELP = {
    "inventory": "inventory file or directory (default: the sandbox)",
    "limit": "only these bots or groups, e.g. bot01,vanta",
    "check": "dry run: report what would change, change nothing",
    "takeover": "take over a stale lock left by a crashed run (never a live one)",
}
# for the tasks that start bots: restart, deploy, rollback, restore, maintenance
OVERRIDE_HELP = {
    "override_kill_switch": "go ahead on bots whose operator engaged a kill switch level (they are skipped "
                            "otherwise); the level is put back on each bot as soon as it is ready",
}


@task(
    help=dict(
        COMMON_HELP,
        **OVERRIDE_HELP,
        version="release version to deploy, e.g. 1.1.0 (required)",
        artifacts="directory holding <name>-<version>.tar.gz and .json, <name> being each bot's artifact name "
                  "(inventory bot_release_artifact, else the profile's release.artifact, else the family; "
                  "default: the sandbox's artifacts)",
        canary="bots in the first batch (default 1; 0: no canary)",
        batch="bots per batch after the canary: a number or a percentage (default 100%)",
        max_fail="percentage of failed bots in a batch that stops the run (default 0: the first failure)",
        positions="open positions policy: refuse | wait | flatten | carry (default carry)",
    )
)
def deploy(c, version, inventory=None, limit=None, check=False, artifacts=None, canary="1", batch="100%",
           max_fail="0", positions="carry", takeover=False, override_kill_switch=False):
    """Deploy a release: canary first, backup, pause, stop, switch, migrate, start, readiness gate."""
    directory = artifacts_dir(artifacts)
    check_version("deploy", version, directory)
    if positions not in POSITION_POLICIES:
        raise usage_error("deploy", f"--positions {shown(positions)} is not a policy "
                                    f"(expected one of: {', '.join(POSITION_POLICIES)})")
    extravars = {
        "botops_version": version,
        "botops_artifacts_dir": str(directory),
        "botops_serial": serial_plan("deploy", canary, batch),
        "botops_max_fail_percentage": check_max_fail("deploy", max_fail),
        "bot_guard_positions_policy": positions,
    }

    def artifacts_there(inventory_path: Path, bots: list[str]) -> None:
        check_artifacts("deploy", version, directory, artifact_names(inventory_path, bots))

    run_operation("deploy", "deploy.yml", inventory=inventory, limit=limit, check=check, extravars=extravars,
                  takeover=takeover, columns=DEPLOY_COLUMNS, override_kill_switch=override_kill_switch,
                  before=artifacts_there, first_batch="canary" if len(extravars["botops_serial"]) > 1 else None)


@task(
    help=dict(
        COMMON_HELP,
        **OVERRIDE_HELP,
        target="'latest' (the previous good release in the ledger, skipping bad ones) or a version",
        backup="roll back to this backup id instead (code of the release it was taken on, data of the backup)",
        accept_ledger_loss="when the data comes back from a backup, go ahead although the live ledger holds "
                           "trades the backup does not (refused otherwise, naming them); the replaced database is kept",
        batch="bots rolled back at once: a number or a percentage (default 100%)",
    )
)
def rollback(c, target="latest", backup=None, inventory=None, limit=None, check=False, batch="100%", takeover=False,
             override_kill_switch=False, accept_ledger_loss=False):
    """Roll bots back to the previous good release (or a version, or a backup): code and data together."""
    if backup is not None:
        if not BACKUP_ID_RE.match(backup):
            raise usage_error("rollback", f"--backup {shown(backup)} is not a backup id "
                                          "(e.g. 20261121T020000Z-1.0.0-ab12); "
                                          "'botops backups' lists them")
        if target != "latest":
            raise usage_error("rollback", "give --target or --backup, not both")
    elif target != "latest" and (not VERSION_RE.match(target) or ".." in target):
        raise usage_error("rollback", f"--target {shown(target)} is not 'latest' or a release version "
                                      "(letters, digits and ._+-, at most 64, no '..'; e.g. --target=1.0.0)")
    extravars = {
        "botops_target": target,
        "botops_serial": serial_plan("rollback", 0, batch),
        "botops_accept_ledger_loss": bool(accept_ledger_loss),
    }
    if backup is not None:
        extravars["botops_backup_id"] = backup
    run_operation("rollback", "rollback.yml", inventory=inventory, limit=limit, check=check, extravars=extravars,
                  takeover=takeover, columns=DEPLOY_COLUMNS, override_kill_switch=override_kill_switch)
