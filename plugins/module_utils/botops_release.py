# Copyright: botops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Releases of one bot on its host: artifacts, installed release directories, the `current`
symlink and the release history.

Layout (docs/reference-bot.md):

    <bot_root>/releases/<version>/     one extracted artifact per installed version
    <bot_root>/releases/ledger.json    what was installed, activated and marked, by whom, when
    <bot_root>/current -> releases/<v> the running release (switched atomically)

An artifact is `<name>-<version>.tar.gz` with its manifest `<name>-<version>.json` beside it:
`{"name", "version", "sha256", "size", "alembic_head", "migration", "description"}`.
Stdlib only.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import getpass
import glob
import hashlib
import json
import os
import re
import shutil
import tarfile
import tempfile

from ansible_collections.botops.fleet.plugins.module_utils.botops_files import write_json

VERSION_RE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}$")
STATUSES = ("installed", "good", "bad", "failed")
LEDGER_FORMAT = 1
HISTORY_KEEP = 200


class ReleaseError(Exception):
    """A release operation failed; the message says which step and why."""


def check_version(version):
    """Refuse anything that is not a plain version string (no path separators, no '..')."""
    if not isinstance(version, str) or not VERSION_RE.match(version) or ".." in version:
        raise ReleaseError(f"invalid version {version!r}: expected {VERSION_RE.pattern} without '..'")
    return version


def utcnow():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


# ---------------------------------------------------------------------------- artifacts
def find_artifact(artifact, version, name=None):
    """(tarball, manifest) paths for `artifact`: a tarball, or a directory holding
    `<name>-<version>.tar.gz` (name optional when exactly one artifact of that version is there)."""
    if name is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}", name):
        raise ReleaseError(f"invalid artifact name {name!r}")
    if os.path.isdir(artifact):
        if name:
            tarball = os.path.join(artifact, f"{name}-{version}.tar.gz")
            if not os.path.isfile(tarball):
                raise ReleaseError(f"no artifact {name}-{version}.tar.gz in {artifact}")
        else:
            found = sorted(glob.glob(os.path.join(glob.escape(artifact), f"*-{glob.escape(version)}.tar.gz")))
            if not found:
                raise ReleaseError(f"no artifact *-{version}.tar.gz in {artifact}")
            if len(found) > 1:
                names = ", ".join(os.path.basename(p) for p in found)
                raise ReleaseError(f"several artifacts of version {version} in {artifact} ({names}): set artifact_name")
            tarball = found[0]
    elif os.path.isfile(artifact):
        tarball = artifact
    else:
        raise ReleaseError(f"artifact {artifact} does not exist")
    if not tarball.endswith(".tar.gz"):
        raise ReleaseError(f"artifact {tarball} is not a .tar.gz")
    return tarball, tarball[: -len(".tar.gz")] + ".json"


def read_manifest(path, version):
    """The artifact's manifest; it must name this version and carry a sha256."""
    try:
        with open(path) as f:
            manifest = json.load(f)
    except FileNotFoundError:
        raise ReleaseError(f"no manifest {path} beside the artifact: refusing an artifact without checksum") from None
    except (OSError, ValueError) as exc:
        raise ReleaseError(f"cannot read manifest {path}: {exc}") from None
    if not isinstance(manifest, dict):
        raise ReleaseError(f"manifest {path} is not a JSON object")
    if str(manifest.get("version")) != version:
        raise ReleaseError(f"manifest {path} is for version {manifest.get('version')!r}, not {version!r}")
    sha = manifest.get("sha256")
    if not isinstance(sha, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", sha):
        raise ReleaseError(f"manifest {path} has no valid sha256")
    return manifest


def sha256_file(path):
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def verify_artifact(tarball, manifest):
    """Checksum (and size) of the tarball against its manifest; raises on any mismatch."""
    sha, size = sha256_file(tarball)
    if sha.lower() != manifest["sha256"].lower():
        raise ReleaseError(f"checksum mismatch for {os.path.basename(tarball)}: sha256 {sha}, "
                           f"manifest says {manifest['sha256']}: refusing to install")
    if manifest.get("size") is not None and int(manifest["size"]) != size:
        raise ReleaseError(f"size mismatch for {os.path.basename(tarball)}: {size} bytes, manifest says {manifest['size']}")
    return sha


def _check_members(tar, dest):
    """Fallback for Pythons without extraction filters: refuse members that leave dest."""
    dest = os.path.realpath(dest)
    for member in tar.getmembers():
        target = os.path.realpath(os.path.join(dest, member.name))
        if os.path.isabs(member.name) or not (target == dest or target.startswith(dest + os.sep)):
            raise ReleaseError(f"artifact member {member.name!r} would be written outside the release")
        if member.issym() or member.islnk():
            link = os.path.realpath(os.path.join(os.path.dirname(target), member.linkname))
            if os.path.isabs(member.linkname) or not link.startswith(dest + os.sep):
                raise ReleaseError(f"artifact link {member.name!r} -> {member.linkname!r} points outside the release")
        if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
            raise ReleaseError(f"artifact member {member.name!r} is a special file")


def install_release(tarball, releases_dir, version):
    """Extract the tarball into a temporary directory beside the release, then rename it into
    place: a release directory is either complete or absent. Returns the release path."""
    final = os.path.join(releases_dir, version)
    os.makedirs(releases_dir, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".install-{version}-", dir=releases_dir)
    try:
        try:
            with tarfile.open(tarball, "r:gz") as tar:
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(tmp, filter="data")
                else:  # pragma: no cover (Python < 3.11.4)
                    _check_members(tar, tmp)
                    tar.extractall(tmp)
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise ReleaseError(f"cannot extract {os.path.basename(tarball)}: {exc.__class__.__name__}: {exc}") from None
        root = tmp
        entries = os.listdir(tmp)
        if "release.json" not in entries and len(entries) == 1 and os.path.isdir(os.path.join(tmp, entries[0])):
            root = os.path.join(tmp, entries[0])  # artifact with one top-level directory
        inner = read_release_json(root)
        if inner is not None and str(inner.get("version")) != version:
            raise ReleaseError(f"artifact's release.json says version {inner.get('version')!r}, not {version!r}")
        os.chmod(root, 0o755)
        os.rename(root, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def remove_leftovers(releases_dir):
    """Delete temporary directories an interrupted install or removal left behind (call it with
    the ledger lock held: no other run can be using them). Returns their names."""
    found = []
    for name in os.listdir(releases_dir):
        path = os.path.join(releases_dir, name)
        if name.startswith((".install-", ".remove-")) and os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
            found.append(name)
    return found


def read_release_json(path):
    try:
        with open(os.path.join(path, "release.json")) as f:
            data = json.load(f)
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


def remove_release(releases_dir, version):
    """Rename the release directory aside (instantly gone from releases/), then delete it."""
    path = os.path.join(releases_dir, version)
    trash = tempfile.mkdtemp(prefix=f".remove-{version}-", dir=releases_dir)
    os.rename(path, os.path.join(trash, version))
    shutil.rmtree(trash, ignore_errors=True)


# ---------------------------------------------------------------------------- current symlink
def current_version(root):
    """The version `current` points to, None without a symlink. A real directory is an error."""
    link = os.path.join(root, "current")
    if os.path.islink(link):
        target = os.readlink(link)
        return os.path.basename(os.path.normpath(target))
    if os.path.exists(link):
        raise ReleaseError(f"{link} exists but is not a symlink: refusing to manage it")
    return None


def switch_current(root, version):
    """Point `current` at releases/<version> atomically: new symlink, then rename over the old."""
    link = os.path.join(root, "current")
    tmp = os.path.join(root, f".current-{version}-{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    os.symlink(os.path.join("releases", version), tmp)
    try:
        os.replace(tmp, link)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def installed_versions(releases_dir):
    """Versions with a release directory (temporary install/remove directories excluded)."""
    try:
        names = os.listdir(releases_dir)
    except FileNotFoundError:
        return []
    return sorted(n for n in names
                  if not n.startswith(".") and VERSION_RE.match(n) and os.path.isdir(os.path.join(releases_dir, n)))


# ---------------------------------------------------------------------------- ledger
@contextlib.contextmanager
def ledger_lock(releases_dir):
    """Serialize the writers of one bot's releases (a second deploy on the same host waits)."""
    os.makedirs(releases_dir, exist_ok=True)
    fd = os.open(os.path.join(releases_dir, ".ledger.lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


class ReleaseHistory:
    """`<bot_root>/releases/ledger.json`: one entry per version plus the activation history."""

    def __init__(self, root, bot_name=None):
        self.root = root
        self.releases_dir = os.path.join(root, "releases")
        self.path = os.path.join(self.releases_dir, "ledger.json")
        self.bot_name = bot_name
        self.exists = os.path.exists(self.path)
        self.data = self._read()
        self.entries = self.data["releases"]
        self.history = self.data["history"]

    def _read(self):
        if not os.path.exists(self.path):
            return {"format": LEDGER_FORMAT, "bot": self.bot_name, "releases": {}, "history": []}
        try:
            with open(self.path) as f:
                data = json.load(f)
        except (OSError, ValueError) as exc:
            raise ReleaseError(f"cannot read the release history {self.path}: {exc}") from None
        if not isinstance(data, dict) or not isinstance(data.get("releases"), dict):
            raise ReleaseError(f"the release history {self.path} is not a botops ledger")
        data.setdefault("history", [])
        return data

    def adopt(self, current, installed, who):
        """Give releases found on disk (installed before botops kept a ledger) an entry.

        The release that is current when the ledger starts is recorded as good: the bot was
        running it, which makes it the baseline a rollback can return to."""
        adopted = []
        for version in installed:
            if version in self.entries:
                continue
            # what the release says about itself (alembic_head, migration) when it ships a release.json
            inner = read_release_json(os.path.join(self.releases_dir, version)) or {}
            entry = self.new_entry(version, {k: inner.get(k) for k in ("name", "alembic_head", "migration", "description")},
                                   who)
            entry["adopted"] = True
            if version == current and not self.exists:
                entry.update(status="good", activated_at=entry["installed_at"], marked_at=entry["installed_at"])
            self.entries[version] = entry
            adopted.append(version)
        return adopted

    def new_entry(self, version, manifest, who):
        manifest = manifest or {}
        return {
            "version": version,
            "name": manifest.get("name"),
            "sha256": manifest.get("sha256"),
            "size": manifest.get("size"),
            "alembic_head": manifest.get("alembic_head"),
            "migration": manifest.get("migration"),
            "description": manifest.get("description"),
            "status": "installed",
            "backup_id": None,
            "installed_at": utcnow(),
            "activated_at": None,
            "marked_at": None,
            "removed_at": None,
            "who": who,
            "previous": None,
        }

    def get(self, version):
        return self.entries.get(version)

    def record_activation(self, version, previous, backup_id, who):
        entry = self.entries[version]
        now = utcnow()
        entry.update(activated_at=now, previous=previous, who=who)
        if backup_id:
            entry["backup_id"] = backup_id
        self.history.append({"at": now, "version": version, "previous": previous, "backup_id": backup_id, "who": who})
        del self.history[:-HISTORY_KEEP]
        return entry

    def write(self):
        """Write the ledger atomically (botops_files.write_json), mode 0644: no secrets in it."""
        os.makedirs(self.releases_dir, exist_ok=True)
        self.data["bot"] = self.data.get("bot") or self.bot_name
        write_json(self.path, self.data, mode=0o644, sort_keys=False)
        self.exists = True

    # ------------------------------------------------------------ queries
    @staticmethod
    def _recency(entry):
        return entry.get("activated_at") or "", entry.get("marked_at") or "", entry.get("installed_at") or ""

    def last_good(self, installed):
        """The most recently activated release marked good that is still installed (may be current)."""
        good = [e for e in self.entries.values() if e.get("status") == "good" and e["version"] in installed]
        return max(good, key=self._recency)["version"] if good else None

    def previous_good(self, current, installed):
        """The latest good release other than current, skipping bad and failed ones: the
        rollback target of `--target=latest`."""
        good = [e for e in self.entries.values()
                if e.get("status") == "good" and e["version"] != current and e["version"] in installed]
        return max(good, key=self._recency)["version"] if good else None

    def protected(self, current, installed):
        """Releases that removal and pruning never touch: current, the last good and the
        rollback target."""
        return {v for v in (current, self.last_good(installed), self.previous_good(current, installed)) if v}

    def prune_candidates(self, current, installed, keep, also_keep=()):
        """Installed releases beyond the `keep` most recent, protected ones excluded."""
        protected = self.protected(current, installed) | {v for v in also_keep if v}
        kept = set(protected)

        def recency(version):
            entry = self.entries.get(version) or {}
            return self._recency(entry), version

        for version in sorted(installed, key=recency, reverse=True):
            if len(kept) >= keep:
                break
            kept.add(version)
        return [v for v in installed if v not in kept]

    def listing(self, current, installed):
        """Every known release (ledger and disk), most recent first."""
        versions = set(self.entries) | set(installed)
        rows = []
        for version in versions:
            entry = dict(self.entries.get(version) or {"version": version, "status": "installed"})
            entry["installed"] = version in installed
            entry["current"] = version == current
            rows.append(entry)
        rows.sort(key=lambda e: (self._recency(e), e["version"]), reverse=True)
        return rows


# ---------------------------------------------------------------------------- one bot's releases, as found
def default_who():
    """The operator a release history records: BOTOPS_USER, else who runs the module."""
    for var in ("BOTOPS_USER", "SUDO_USER", "USER", "LOGNAME"):
        if os.environ.get(var):
            return os.environ[var]
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


class BotReleases:
    """One bot's releases as they are on its host: the versions installed, the one `current` points
    to and the release history, releases found on disk without an entry adopted into it (in memory:
    nothing is written here). What bot_release changes and bot_release_info reports."""

    def __init__(self, root, bot_name, who):
        self.root = root
        self.releases_dir = os.path.join(root, "releases")
        self.ledger = ReleaseHistory(root, bot_name)
        self.installed = installed_versions(self.releases_dir)
        self.current = current_version(root)
        self.ledger.adopt(self.current, self.installed, who)

    def resolve_target(self, target):
        """The installed release a rollback to `target` (latest, or a version) would switch to; ReleaseError
        naming what the bot has when there is none."""
        installed = ", ".join(sorted(self.installed)) or "none"
        if target == "latest":
            found = self.ledger.previous_good(self.current, self.installed)
            if found is None:
                raise ReleaseError(f"no release to roll back to: no release marked good other than the current "
                                   f"{self.current} is installed (installed: {installed}); name one with --target=VERSION")
            return found
        check_version(target)
        if target not in self.installed:
            raise ReleaseError(f"release {target} is not installed (installed: {installed}); "
                               "--target takes 'latest' or one of those")
        return target

    def report(self, version=None):
        """The releases as the modules return them: current, previous_good (the rollback target),
        last_good, every release; with `version`, its ledger entry and directory."""
        found = dict(current=self.current, previous_good=self.ledger.previous_good(self.current, self.installed),
                     last_good=self.ledger.last_good(self.installed),
                     releases=self.ledger.listing(self.current, self.installed))
        if version:
            found.update(release=self.ledger.get(version), path=os.path.join(self.releases_dir, version))
        return found
