"""Release helpers: versions, artifacts, the current symlink and the ledger's queries."""

from __future__ import annotations

import json
import os

import pytest

from ansible_collections.botops.fleet.plugins.module_utils.botops_release import (ReleaseHistory, ReleaseError, check_version, current_version,
                                                  find_artifact, installed_versions, read_manifest, switch_current)


@pytest.mark.parametrize("version", ["1.0.0", "2.0.0-rc.1", "1.2.0-broken", "v3", "1.0.0+build_7"])
def test_valid_versions(version):
    assert check_version(version) == version


@pytest.mark.parametrize("version", ["", "..", "../x", "a/b", "-1", ".x", "1..0", "x" * 65, None, "a\nb"])
def test_invalid_versions(version):
    with pytest.raises(ReleaseError):
        check_version(version)


def test_find_artifact(tmp_path):
    (tmp_path / "refbot-1.0.0.tar.gz").write_bytes(b"x")
    assert find_artifact(str(tmp_path), "1.0.0") == (str(tmp_path / "refbot-1.0.0.tar.gz"),
                                                     str(tmp_path / "refbot-1.0.0.json"))
    (tmp_path / "other-1.0.0.tar.gz").write_bytes(b"x")
    with pytest.raises(ReleaseError, match="several artifacts"):
        find_artifact(str(tmp_path), "1.0.0")
    assert find_artifact(str(tmp_path), "1.0.0", "other")[0].endswith("other-1.0.0.tar.gz")
    with pytest.raises(ReleaseError, match="no artifact"):
        find_artifact(str(tmp_path), "2.0.0")
    with pytest.raises(ReleaseError, match="does not exist"):
        find_artifact(str(tmp_path / "missing.tar.gz"), "2.0.0")


def test_read_manifest_checks_version_and_sha(tmp_path):
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"version": "1.0.0", "sha256": "ab" * 32}))
    assert read_manifest(str(path), "1.0.0")["sha256"] == "ab" * 32
    with pytest.raises(ReleaseError, match="is for version"):
        read_manifest(str(path), "1.1.0")
    path.write_text(json.dumps({"version": "1.0.0", "sha256": "nope"}))
    with pytest.raises(ReleaseError, match="no valid sha256"):
        read_manifest(str(path), "1.0.0")


def test_switch_current_replaces_the_symlink(tmp_path):
    (tmp_path / "releases" / "1.0.0").mkdir(parents=True)
    (tmp_path / "releases" / "1.1.0").mkdir()
    assert current_version(str(tmp_path)) is None
    switch_current(str(tmp_path), "1.0.0")
    switch_current(str(tmp_path), "1.1.0")
    assert os.readlink(tmp_path / "current") == "releases/1.1.0" and current_version(str(tmp_path)) == "1.1.0"
    assert sorted(os.listdir(tmp_path)) == ["current", "releases"]


def test_installed_versions_skip_temporary_dirs(tmp_path):
    for name in ("1.0.0", ".install-1.1.0-x", "2.0.0"):
        (tmp_path / name).mkdir()
    (tmp_path / "ledger.json").write_text("{}")
    assert installed_versions(str(tmp_path)) == ["1.0.0", "2.0.0"]
    assert installed_versions(str(tmp_path / "missing")) == []


def test_ledger_queries(tmp_path):
    ledger = ReleaseHistory(str(tmp_path), "bot01")
    ledger.adopt("1.0.0", ["1.0.0"], "ops")
    assert ledger.get("1.0.0")["status"] == "good" and ledger.get("1.0.0")["adopted"]
    for version, status in (("1.1.0", "good"), ("1.2.0", "failed"), ("2.0.0", "installed")):
        ledger.entries[version] = ledger.new_entry(version, {"sha256": "x"}, "ops")
        ledger.record_activation(version, None, None, "ops")
        ledger.entries[version]["status"] = status
    installed = ["1.0.0", "1.1.0", "1.2.0", "2.0.0"]
    assert ledger.last_good(installed) == "1.1.0"
    assert ledger.previous_good("2.0.0", installed) == "1.1.0"
    assert ledger.previous_good("1.1.0", installed) == "1.0.0"
    assert ledger.previous_good("2.0.0", ["1.0.0", "2.0.0"]) == "1.0.0"  # 1.1.0 not installed any more
    assert ledger.protected("2.0.0", installed) == {"2.0.0", "1.1.0"}
    assert ledger.prune_candidates("2.0.0", installed, 1) == ["1.0.0", "1.2.0"]
    assert ledger.prune_candidates("2.0.0", installed, 3) == ["1.0.0"]
    ledger.write()
    on_disk = ReleaseHistory(str(tmp_path), "bot01")
    assert on_disk.exists and on_disk.get("1.1.0")["status"] == "good"
    assert os.stat(tmp_path / "releases" / "ledger.json").st_mode & 0o777 == 0o644


def test_unreadable_ledger_is_an_error(tmp_path):
    (tmp_path / "releases").mkdir()
    (tmp_path / "releases" / "ledger.json").write_text("[1, 2]")
    with pytest.raises(ReleaseError, match="not a botops ledger"):
        ReleaseHistory(str(tmp_path))
