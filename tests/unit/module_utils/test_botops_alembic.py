"""Reading Alembic migrations without running them: revision files, the contract marker,
target resolution, the paths between two revisions, the database URL."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ansible_collections.botops.fleet.plugins.module_utils.botops_alembic import (MigrationError, RevisionGraph, alembic_command, database_url,
                                                  parse_revision_file, version_dirs)
from ansible_collections.botops.fleet.plugins.module_utils.botops_pg import Database

REPO = Path(__file__).resolve().parents[3]
REFBOT_INI = REPO / "botops" / "sandbox" / "refbot" / "alembic.ini"


def write_rev(directory, name, body):
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.py"
    path.write_text(body)
    return path


def test_reference_bot_revisions_and_kinds():
    graph = RevisionGraph.from_config(str(REFBOT_INI))
    assert graph.head == "0003_rename_qty"
    kinds = {r: graph.revisions[r]["kind"] for r in graph.revisions}
    assert kinds == {"0001_initial": "initial", "0002_trade_fee": "expand", "0003_rename_qty": "contract"}
    assert graph.revisions["0003_rename_qty"]["doc"].startswith("contract:")


def test_contract_marker_from_the_docstring_alone(tmp_path):
    path = write_rev(tmp_path, "a1", '"""Contract: drop legacy column\n\nmore"""\nrevision = "a1"\ndown_revision = None\n')
    assert parse_revision_file(str(path))["kind"] == "contract"
    other = write_rev(tmp_path, "a2", '"""add contracts table"""\nrevision = "a2"\ndown_revision = "a1"\n')
    assert parse_revision_file(str(other))["kind"] is None


def test_annotated_assignments_and_merge_revisions(tmp_path):
    versions = tmp_path / "migrations" / "versions"
    write_rev(versions, "base", 'revision: str = "r0"\ndown_revision: str | None = None\n')
    write_rev(versions, "left", 'revision: str = "r1a"\ndown_revision = "r0"\n')
    write_rev(versions, "right", 'revision = "r1b"\ndown_revision = ("r0",)\n')
    write_rev(versions, "merge", 'revision = "r2"\ndown_revision = ("r1a", "r1b")\nbotops_kind = "expand"\n')
    (versions / "__init__.py").write_text("")
    (versions / "helpers.py").write_text("X = 1\n")  # not a revision
    ini = tmp_path / "alembic.ini"
    ini.write_text("[alembic]\nscript_location = migrations\n")
    graph = RevisionGraph.from_config(str(ini), cwd=str(tmp_path))
    assert graph.head == "r2"
    assert graph.upgrade_path(None, "r2") == ["r0", "r1a", "r1b", "r2"]
    assert graph.downgrade_path("r2", "r0") == ["r2", "r1b", "r1a"]
    with pytest.raises(MigrationError, match="merge point"):
        graph.resolve("-1", "r2")


def test_resolve_targets():
    graph = RevisionGraph.from_config(str(REFBOT_INI))
    assert graph.resolve("head", "0001_initial") == "0003_rename_qty"
    assert graph.resolve("base", "0002_trade_fee") is None
    assert graph.resolve("-1", "0002_trade_fee") == "0001_initial"
    assert graph.resolve("-2", "0002_trade_fee") is None
    assert graph.resolve("+1", "0001_initial") == "0002_trade_fee"
    assert graph.resolve("+1", None) == "0001_initial"
    assert graph.resolve("0002", None) == "0002_trade_fee"
    with pytest.raises(MigrationError, match="base reached"):
        graph.resolve("-3", "0002_trade_fee")
    with pytest.raises(MigrationError, match="head reached"):
        graph.resolve("+1", "0003_rename_qty")
    with pytest.raises(MigrationError, match="ambiguous"):
        graph.resolve("000", None)
    with pytest.raises(MigrationError, match="unknown revision"):
        graph.resolve("zzz", None)


def test_paths_and_contracts():
    graph = RevisionGraph.from_config(str(REFBOT_INI))
    assert graph.upgrade_path("0001_initial", "0003_rename_qty") == ["0002_trade_fee", "0003_rename_qty"]
    down = graph.downgrade_path("0003_rename_qty", None)
    assert down == ["0003_rename_qty", "0002_trade_fee", "0001_initial"]
    assert graph.contracts(down) == ["0003_rename_qty"]
    assert graph.is_ancestor(None, "0001_initial") and graph.is_ancestor("0001_initial", "0002_trade_fee")
    assert not graph.is_ancestor("0003_rename_qty", "0002_trade_fee")


def test_multiple_heads_and_dangling_parent(tmp_path):
    versions = tmp_path / "v"
    write_rev(versions, "a", 'revision = "a"\ndown_revision = None\n')
    write_rev(versions, "b", 'revision = "b"\ndown_revision = "a"\n')
    write_rev(versions, "c", 'revision = "c"\ndown_revision = "a"\n')
    ini = tmp_path / "alembic.ini"
    ini.write_text(f"[alembic]\nscript_location = .\nversion_locations = {versions}\n")
    graph = RevisionGraph.from_config(str(ini))
    with pytest.raises(MigrationError, match="2 heads"):
        graph.head
    write_rev(versions, "d", 'revision = "d"\ndown_revision = "zz"\n')
    with pytest.raises(MigrationError, match="not in the release"):
        RevisionGraph.from_config(str(ini))


def test_version_dirs_and_missing_config(tmp_path):
    ini = tmp_path / "alembic.ini"
    ini.write_text("[alembic]\nscript_location = %(here)s/migrations\n"
                   "version_path_separator = os\nversion_locations = /a/v:rel/v\n")
    assert version_dirs(str(ini)) == ["/a/v", str(tmp_path / "rel" / "v")]
    with pytest.raises(MigrationError, match="no alembic config"):
        version_dirs(str(tmp_path / "nope.ini"))
    (tmp_path / "bad.ini").write_text("[other]\n")
    with pytest.raises(MigrationError, match="cannot read"):
        version_dirs(str(tmp_path / "bad.ini"))


def test_database_url_quotes_credentials():
    db = Database({"host": "127.0.0.1", "port": 5433, "name": "bot db", "user": "u@x"}, "p@ss:w/rd")
    assert database_url(db) == "postgresql://u%40x:p%40ss%3Aw%2Frd@127.0.0.1:5433/bot%20db"
    assert database_url(Database({"name": "d"})) == "postgresql://d@127.0.0.1:5432/d"


def test_alembic_command_is_found():
    cmd = alembic_command()
    assert os.path.basename(cmd[-1]) == "alembic" or cmd[-2:] == ["-m", "alembic"]
