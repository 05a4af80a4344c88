"""Releases of the reference bot and their reproducible artifacts.

Every release ships the same source tree (``botops/sandbox/refbot``); what differs is its
``release.json`` (behaviour flags the bot reads at start) and the Alembic revisions it
carries (only those up to its head). Artifacts are byte-for-byte reproducible: the same
sources give the same sha256 on every build and every machine.

    python -m botops.sandbox.releases OUT_DIR
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import re
import sys
import tarfile
import tempfile
from pathlib import Path

SOURCE_DIR = Path(__file__).resolve().parent / "refbot"
NAME = "refbot"

# Fixed tar metadata: 2024-01-01T00:00:00Z, root-owned, no user/group names.
FIXED_MTIME = 1704067200
FILE_MODE = 0o644
DIR_MODE = 0o755

RELEASES: list[dict] = [
    {
        "version": "1.0.0",
        "alembic_head": "0001_initial",
        "migration": "initial",
        "description": "baseline: trades, positions, orders, bot_state",
        "behaviour": {"qty_column": "qty", "writes_fee": False, "broken": False},
    },
    {
        "version": "1.1.0",
        "alembic_head": "0002_trade_fee",
        "migration": "expand",
        "description": "adds trades.fee (expand-only: 1.0.0 still runs on this schema)",
        "behaviour": {"qty_column": "qty", "writes_fee": True, "broken": False},
    },
    {
        "version": "1.2.0-broken",
        "alembic_head": "0002_trade_fee",
        "migration": "none",
        "description": "broken build: starts and answers liveness, never becomes ready "
                       "(price feed never connects)",
        "behaviour": {"qty_column": "qty", "writes_fee": True, "broken": True},
    },
    {
        "version": "2.0.0",
        "alembic_head": "0003_rename_qty",
        "migration": "contract",
        "description": "renames trades.qty to trades.quantity (contract: 1.x code cannot "
                       "write trades on this schema)",
        "behaviour": {"qty_column": "quantity", "writes_fee": True, "broken": False},
    },
]

_REVISION_RE = re.compile(r"^revision\s*=\s*['\"]([^'\"]+)['\"]", re.MULTILINE)
_DOWN_RE = re.compile(r"^down_revision\s*=\s*(?:['\"]([^'\"]+)['\"]|None)", re.MULTILINE)
_EXCLUDED_PARTS = {"__pycache__", ".pytest_cache"}
_EXCLUDED_SUFFIXES = (".pyc", ".pyo", ".swp", "~")


def release(version: str) -> dict:
    for entry in RELEASES:
        if entry["version"] == version:
            return entry
    raise KeyError(f"unknown refbot release {version!r}")


def release_manifest(entry: dict) -> dict:
    """The ``release.json`` shipped inside the tarball."""
    return {"name": NAME, **entry}


def revision_files(versions_dir: Path) -> list[tuple[str, Path]]:
    """(revision id, file) for every revision in ``versions_dir``, oldest first."""
    parents: dict[str, str | None] = {}
    files: dict[str, Path] = {}
    for path in sorted(versions_dir.glob("*.py")):
        text = path.read_text()
        rev = _REVISION_RE.search(text)
        if rev is None:
            continue
        down = _DOWN_RE.search(text)
        parents[rev.group(1)] = down.group(1) if down else None
        files[rev.group(1)] = path
    children: dict[str | None, str] = {}
    for rev, parent in parents.items():
        if parent in children:
            raise ValueError(f"{versions_dir}: branched history at {parent!r}")
        children[parent] = rev
    chain: list[tuple[str, Path]] = []
    current = children.get(None)
    while current is not None:
        chain.append((current, files[current]))
        current = children.get(current)
    if len(chain) != len(files):
        raise ValueError(f"{versions_dir}: revisions not in one linear chain")
    return chain


def revisions_up_to(head: str, versions_dir: Path) -> list[tuple[str, Path]]:
    chain = revision_files(versions_dir)
    ids = [rev for rev, _path in chain]
    if head not in ids:
        raise ValueError(f"alembic head {head!r} not found in {versions_dir}")
    return chain[: ids.index(head) + 1]


def _source_files(source_dir: Path) -> list[tuple[str, Path]]:
    """(archive name, file) of everything the artifact ships, except release.json."""
    members: list[tuple[str, Path]] = []
    for path in sorted(source_dir.rglob("*")):
        rel = path.relative_to(source_dir)
        if not path.is_file() or _EXCLUDED_PARTS & set(rel.parts) or path.name.endswith(_EXCLUDED_SUFFIXES):
            continue
        if rel.parts[0] in ("migrations", "alembic.ini"):
            continue  # shipped at the top level, below
        members.append((f"refbot/{rel.as_posix()}", path))
    members.append(("alembic.ini", source_dir / "alembic.ini"))
    migrations = source_dir / "migrations"
    members.append(("migrations/env.py", migrations / "env.py"))
    members.append(("migrations/script.py.mako", migrations / "script.py.mako"))
    return members


def _tarinfo(name: str, size: int = 0, directory: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    info.mode = DIR_MODE if directory else FILE_MODE
    info.size = 0 if directory else size
    info.mtime = FIXED_MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def build_tarball(entry: dict, source_dir: Path = SOURCE_DIR) -> bytes:
    """The artifact's bytes: a gzip'd tar with sorted members and fixed metadata."""
    contents: dict[str, bytes] = {
        "release.json": (json.dumps(release_manifest(entry), indent=2, sort_keys=True) + "\n").encode(),
    }
    for name, path in _source_files(source_dir):
        contents[name] = path.read_bytes()
    for _rev, path in revisions_up_to(entry["alembic_head"], source_dir / "migrations" / "versions"):
        contents[f"migrations/versions/{path.name}"] = path.read_bytes()

    directories = set()
    for name in contents:
        parts = name.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            directories.add("/".join(parts[:i]))

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(directories | set(contents)):
            if name in directories:
                tar.addfile(_tarinfo(name, directory=True))
            else:
                data = contents[name]
                tar.addfile(_tarinfo(name, len(data)), io.BytesIO(data))
    compressed = io.BytesIO()
    # mtime=0 and no file name in the gzip header: the header is the same on every build.
    with gzip.GzipFile(filename="", mode="wb", fileobj=compressed, mtime=0, compresslevel=9) as gz:
        gz.write(raw.getvalue())
    return compressed.getvalue()


def _write_if_changed(path: Path, data: bytes) -> bool:
    """Atomically write ``data`` unless ``path`` already holds exactly it."""
    try:
        if path.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return True


def build_artifacts(out_dir: Path, source_dir: Path = SOURCE_DIR) -> list[dict]:
    """Build ``refbot-<version>.tar.gz`` and its manifest ``refbot-<version>.json`` per release.

    Idempotent: a file whose content is already identical is not rewritten. Returns one
    dict per release: the manifest plus ``path`` (tarball), ``manifest_path`` and
    ``changed`` (whether either file was written).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    built = []
    for entry in RELEASES:
        data = build_tarball(entry, source_dir)
        manifest = {
            **release_manifest(entry),
            "sha256": hashlib.sha256(data).hexdigest(),
            "size": len(data),
        }
        tarball = out_dir / f"{NAME}-{entry['version']}.tar.gz"
        manifest_path = out_dir / f"{NAME}-{entry['version']}.json"
        changed = _write_if_changed(tarball, data)
        changed |= _write_if_changed(
            manifest_path, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
        built.append({**manifest, "path": str(tarball), "manifest_path": str(manifest_path),
                      "changed": changed})
    return built


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m botops.sandbox.releases",
        description="Build the reference bot's release artifacts (reproducible tarballs + manifests).",
    )
    parser.add_argument("out_dir", type=Path, help="directory to write refbot-<version>.{tar.gz,json} into")
    args = parser.parse_args(argv)
    for item in build_artifacts(args.out_dir):
        state = "built" if item["changed"] else "unchanged"
        print(f"{state:9} {item['path']}  sha256={item['sha256']}  size={item['size']}  "
              f"head={item['alembic_head']} ({item['migration']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
