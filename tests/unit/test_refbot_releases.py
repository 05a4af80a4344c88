"""The reference bot's release artifacts: reproducible, complete, and honest about migrations."""

from __future__ import annotations

import ast
import hashlib
import json
import tarfile
from pathlib import Path

import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory

from botops.sandbox import releases

VERSIONS = ["1.0.0", "1.1.0", "1.2.0-broken", "2.0.0"]
EXPECTED_REVISIONS = {
    "1.0.0": ["0001_initial.py"],
    "1.1.0": ["0001_initial.py", "0002_trade_fee.py"],
    "1.2.0-broken": ["0001_initial.py", "0002_trade_fee.py"],
    "2.0.0": ["0001_initial.py", "0002_trade_fee.py", "0003_rename_qty.py"],
}
MIGRATIONS = Path(releases.SOURCE_DIR) / "migrations" / "versions"


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, list[dict]]:
    out = tmp_path_factory.mktemp("artifacts")
    return out, releases.build_artifacts(out)


def _members(path: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(path, "r:gz") as tar:
        return tar.getmembers()


def _read(path: Path, name: str) -> bytes:
    with tarfile.open(path, "r:gz") as tar:
        return tar.extractfile(name).read()


def test_releases_are_the_documented_four():
    assert [r["version"] for r in releases.RELEASES] == VERSIONS
    heads = {r["version"]: (r["alembic_head"], r["migration"]) for r in releases.RELEASES}
    assert heads == {
        "1.0.0": ("0001_initial", "initial"),
        "1.1.0": ("0002_trade_fee", "expand"),
        "1.2.0-broken": ("0002_trade_fee", "none"),
        "2.0.0": ("0003_rename_qty", "contract"),
    }


def test_sha256_is_reproducible_across_builds(built, tmp_path):
    _out, first = built
    second = releases.build_artifacts(tmp_path)
    assert [a["sha256"] for a in first] == [a["sha256"] for a in second]
    for a, b in zip(first, second):
        assert Path(a["path"]).read_bytes() == Path(b["path"]).read_bytes()


def test_rebuild_into_same_directory_changes_nothing(built):
    out, first = built
    mtimes = {p: p.stat().st_mtime_ns for p in out.iterdir()}
    again = releases.build_artifacts(out)
    assert not any(a["changed"] for a in again), "identical artifacts must not be rewritten"
    assert {p: p.stat().st_mtime_ns for p in out.iterdir()} == mtimes


def test_tar_metadata_is_fixed_and_members_sorted(built):
    _out, artifacts = built
    for artifact in artifacts:
        path = Path(artifact["path"])
        assert path.read_bytes()[4:8] == b"\0\0\0\0", "gzip header mtime must be 0"
        members = _members(path)
        names = [m.name for m in members]
        assert names == sorted(names)
        for m in members:
            assert (m.mtime, m.uid, m.gid, m.uname, m.gname) == (releases.FIXED_MTIME, 0, 0, "", "")
            assert m.mode == (0o755 if m.isdir() else 0o644)
        assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]


@pytest.mark.parametrize("version", VERSIONS)
def test_tarball_layout_and_revisions_up_to_head(built, version):
    _out, artifacts = built
    artifact = next(a for a in artifacts if a["version"] == version)
    names = {m.name for m in _members(Path(artifact["path"]))}
    for required in ("release.json", "alembic.ini", "migrations/env.py", "migrations/script.py.mako",
                     "refbot/__init__.py", "refbot/__main__.py", "refbot/app.py"):
        assert required in names, f"{version}: {required} missing"
    assert not any(n.startswith("refbot/migrations") for n in names), "migrations ship at the top level"
    revisions = sorted(n.rsplit("/", 1)[1] for n in names if n.startswith("migrations/versions/") and n.endswith(".py"))
    assert revisions == EXPECTED_REVISIONS[version]


@pytest.mark.parametrize("version", VERSIONS)
def test_alembic_head_of_extracted_release(built, version, tmp_path):
    _out, artifacts = built
    artifact = next(a for a in artifacts if a["version"] == version)
    with tarfile.open(artifact["path"], "r:gz") as tar:
        tar.extractall(tmp_path, filter="data")
    script = ScriptDirectory.from_config(Config(str(tmp_path / "alembic.ini")))
    assert script.get_current_head() == artifact["alembic_head"]


def test_manifest_fields(built):
    out, artifacts = built
    for artifact in artifacts:
        version = artifact["version"]
        manifest_path = out / f"refbot-{version}.json"
        tarball = out / f"refbot-{version}.tar.gz"
        manifest = json.loads(manifest_path.read_text())
        data = tarball.read_bytes()
        assert manifest["name"] == "refbot"
        assert manifest["sha256"] == hashlib.sha256(data).hexdigest()
        assert manifest["size"] == len(data)
        assert manifest["description"]
        inner = json.loads(_read(tarball, "release.json"))
        assert inner == {k: v for k, v in manifest.items() if k not in ("sha256", "size")}
        entry = releases.release(version)
        assert {k: manifest[k] for k in ("version", "alembic_head", "migration")} == {
            k: entry[k] for k in ("version", "alembic_head", "migration")}


def test_release_behaviour_flags():
    flags = {r["version"]: r["behaviour"] for r in releases.RELEASES}
    assert flags["1.0.0"] == {"qty_column": "qty", "writes_fee": False, "broken": False}
    assert flags["1.1.0"]["writes_fee"] and not flags["1.1.0"]["broken"]
    assert flags["1.2.0-broken"]["broken"]
    assert flags["2.0.0"]["qty_column"] == "quantity"


@pytest.mark.parametrize("filename,kind", [
    ("0001_initial.py", "initial"),
    ("0002_trade_fee.py", "expand"),
    ("0003_rename_qty.py", "contract"),
])
def test_revision_files_declare_their_kind(filename, kind):
    module = ast.parse((MIGRATIONS / filename).read_text())
    docstring = ast.get_docstring(module)
    assert docstring.splitlines()[0].split(":")[0] == kind
    assigned = {
        node.targets[0].id: node.value.value
        for node in module.body
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
        and isinstance(node.targets[0], ast.Name)
    }
    assert assigned["botops_kind"] == kind
    assert assigned["revision"] == filename[:-3]
    names = {n.name for n in module.body if isinstance(n, ast.FunctionDef)}
    assert {"upgrade", "downgrade"} <= names


def test_unknown_head_is_rejected(tmp_path):
    bad = {**releases.RELEASES[0], "alembic_head": "9999_nope"}
    with pytest.raises(ValueError, match="9999_nope"):
        releases.build_tarball(bad)


def test_cli_builds_into_directory(tmp_path, capsys):
    assert releases.main([str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f"refbot-{v}.tar.gz" for v in VERSIONS] + [f"refbot-{v}.json" for v in VERSIONS])
    assert "sha256=" in capsys.readouterr().out
