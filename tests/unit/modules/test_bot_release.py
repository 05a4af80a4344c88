"""bot_release: checksum before extraction, safe extraction, atomic current switch, the ledger,
previous_good, protected releases, pruning, check mode; bot_release_info: the listing and the
rollback target."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile

import pytest

from ansible_collections.botops.fleet.plugins.modules import bot_release, bot_release_info

from .utils import run_module

PROFILE = {"family": "testfam"}


def make_artifact(out_dir, version, name="refbot", alembic_head="0001_initial", migration="initial",
                  members=None, manifest_version=None, corrupt=False):
    """A tarball laid out like the reference bot's, with its manifest beside it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    release = {"name": name, "version": manifest_version or version, "alembic_head": alembic_head,
               "migration": migration}
    files = members if members is not None else {
        "release.json": json.dumps(release).encode(),
        "refbot/__init__.py": b"VERSION = %r\n" % version.encode(),
        "alembic.ini": b"[alembic]\nscript_location = %(here)s/migrations\n",
        "migrations/versions/0001_initial.py": b'revision = "0001_initial"\ndown_revision = None\n',
    }
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for member, data in files.items():
            if isinstance(data, tarfile.TarInfo):
                tar.addfile(data)
                continue
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    blob = raw.getvalue()
    sha = hashlib.sha256(blob).hexdigest()
    if corrupt:
        blob = blob[:-8] + bytes(b ^ 0xFF for b in blob[-8:])
    tarball = out_dir / f"{name}-{version}.tar.gz"
    tarball.write_bytes(blob)
    manifest = dict(release, version=version, sha256=sha, size=len(raw.getvalue()))
    (out_dir / f"{name}-{version}.json").write_text(json.dumps(manifest))
    return tarball


@pytest.fixture
def root(tmp_path):
    path = tmp_path / "bot01"
    path.mkdir()
    return path


@pytest.fixture
def artifacts(tmp_path):
    out = tmp_path / "artifacts"
    make_artifact(out, "1.0.0")
    make_artifact(out, "1.1.0", alembic_head="0002_trade_fee", migration="expand")
    make_artifact(out, "2.0.0", alembic_head="0003_rename_qty", migration="contract")
    return out


def call(root, check_mode=False, **options):
    args = dict(profile=PROFILE, bot={"name": "bot01", "root": str(root)}, who="tester", **options)
    return run_module(bot_release.main, args, check_mode=check_mode)


def info(root, check_mode=False, **options):
    args = dict(profile=PROFILE, bot={"name": "bot01", "root": str(root)}, **options)
    return run_module(bot_release_info.main, args, check_mode=check_mode)


def ledger(root):
    return json.loads((root / "releases" / "ledger.json").read_text())


def test_present_check_mode_verifies_and_writes_nothing(root, artifacts):
    res = call(root, check_mode=True, version="1.1.0", artifact=str(artifacts))
    assert res["changed"] and not res.get("failed")
    assert res["actions"] == ["verify refbot-1.1.0.tar.gz sha256", "install 1.1.0"]
    assert not (root / "releases").exists()


def test_present_installs_then_is_unchanged(root, artifacts):
    res = call(root, version="1.1.0", artifact=str(artifacts), state="present")
    assert res["changed"] and res["path"] == str(root / "releases" / "1.1.0")
    assert (root / "releases" / "1.1.0" / "release.json").is_file()
    assert (root / "releases" / "1.1.0" / "refbot" / "__init__.py").is_file()
    entry = ledger(root)["releases"]["1.1.0"]
    assert entry["status"] == "installed" and entry["alembic_head"] == "0002_trade_fee"
    assert entry["migration"] == "expand" and entry["who"] == "tester" and len(entry["sha256"]) == 64
    assert [p for p in os.listdir(root / "releases") if p.startswith(".install")] == []
    again = call(root, version="1.1.0", artifact=str(artifacts))
    assert again["changed"] is False and again["actions"] == []
    assert res["current"] is None and not (root / "current").exists()


def test_interrupted_install_leftovers_are_cleaned(root, artifacts):
    (root / "releases" / ".install-1.1.0-abc" / "refbot").mkdir(parents=True)
    res = call(root, version="1.1.0", artifact=str(artifacts))
    assert res["changed"] and not (root / "releases" / ".install-1.1.0-abc").exists()


def test_invalid_artifact_name_is_refused(root, artifacts):
    res = call(root, version="1.1.0", artifact=str(artifacts), artifact_name="../x")
    assert res["failed"] and "invalid artifact name" in res["msg"]


def test_artifact_given_as_the_tarball_path(root, artifacts):
    res = call(root, version="1.0.0", artifact=str(artifacts / "refbot-1.0.0.tar.gz"))
    assert res["changed"] and (root / "releases" / "1.0.0").is_dir()


def test_corrupt_checksum_is_refused_before_extracting(root, tmp_path):
    bad = tmp_path / "bad"
    make_artifact(bad, "1.1.0", corrupt=True)
    res = call(root, version="1.1.0", artifact=str(bad))
    assert res["failed"] and "checksum mismatch" in res["msg"]
    assert res["msg"].startswith("Failed to install release 1.1.0 on bot 'bot01': ")
    assert not (root / "releases" / "1.1.0").exists()
    assert [p for p in os.listdir(root / "releases") if not p.startswith(".ledger.lock")] == []


def test_artifact_without_manifest_is_refused(root, artifacts):
    os.unlink(artifacts / "refbot-1.1.0.json")
    res = call(root, version="1.1.0", artifact=str(artifacts))
    assert res["failed"] and "without checksum" in res["msg"]


def test_manifest_of_another_version_is_refused(root, tmp_path):
    make_artifact(tmp_path / "a", "1.1.0", manifest_version="9.9.9")
    res = call(root, version="1.1.0", artifact=str(tmp_path / "a"))
    assert res["failed"] and "release.json says version '9.9.9'" in res["msg"]
    assert not (root / "releases" / "1.1.0").exists()


def test_path_traversal_member_is_refused(root, tmp_path):
    make_artifact(tmp_path / "evil", "6.6.6", members={"release.json": b"{}", "../../escaped.txt": b"pwned"})
    res = call(root, version="6.6.6", artifact=str(tmp_path / "evil"))
    assert res["failed"] and "cannot extract" in res["msg"]
    assert not (tmp_path / "escaped.txt").exists() and not (root / "escaped.txt").exists()
    assert not (root / "releases" / "6.6.6").exists()


def test_symlink_out_of_the_release_is_refused(root, tmp_path):
    link = tarfile.TarInfo("refbot/passwd")
    link.type = tarfile.SYMTYPE
    link.linkname = "/etc/passwd"
    make_artifact(tmp_path / "evil", "6.6.7", members={"release.json": b"{}", "refbot/passwd": link})
    res = call(root, version="6.6.7", artifact=str(tmp_path / "evil"))
    assert res["failed"] and not (root / "releases" / "6.6.7").exists()


@pytest.mark.parametrize("version", ["../1.0.0", "..", "1.0.0/../../x", "/abs", ".hidden", "a b", "x" * 65, "1..2"])
def test_invalid_versions_are_refused(root, artifacts, version):
    res = call(root, version=version, artifact=str(artifacts))
    assert res["failed"] and "invalid version" in res["msg"]


def test_installed_version_is_immutable(root, artifacts, tmp_path):
    call(root, version="1.1.0", artifact=str(artifacts))
    other = tmp_path / "other"
    make_artifact(other, "1.1.0", members={"release.json": b'{"version": "1.1.0"}', "x": b"different"})
    res = call(root, version="1.1.0", artifact=str(other))
    assert res["failed"] and "immutable" in res["msg"]


def test_current_installs_switches_and_is_idempotent(root, artifacts):
    call(root, version="1.0.0", artifact=str(artifacts), state="current")
    check = call(root, check_mode=True, version="1.1.0", artifact=str(artifacts), state="current")
    assert check["changed"] and check["current"] == "1.1.0" and check["previous"] == "1.0.0"
    assert os.readlink(root / "current") == "releases/1.0.0" and not (root / "releases" / "1.1.0").exists()

    res = call(root, version="1.1.0", artifact=str(artifacts), state="current", backup_id="bk-1")
    assert res["changed"] and res["previous"] == "1.0.0" and res["current"] == "1.1.0"
    assert res["diff"] == {"before": {"current": "1.0.0"}, "after": {"current": "1.1.0"}}
    assert os.readlink(root / "current") == "releases/1.1.0"
    assert (root / "current" / "release.json").is_file()
    entry = res["release"]
    assert entry["previous"] == "1.0.0" and entry["backup_id"] == "bk-1" and entry["activated_at"]
    assert ledger(root)["history"][-1]["version"] == "1.1.0"

    again = call(root, version="1.1.0", artifact=str(artifacts), state="current")
    assert again["changed"] is False and again["actions"] == []
    assert again["diff"] == {"before": {"current": "1.1.0"}, "after": {"current": "1.1.0"}}


def test_current_without_artifact_needs_an_installed_release(root):
    res = call(root, version="1.1.0", state="current")
    assert res["failed"] and "not installed and no artifact" in res["msg"]


def test_current_that_is_a_directory_is_refused(root, artifacts):
    (root / "current").mkdir()
    res = call(root, version="1.0.0", artifact=str(artifacts), state="current")
    assert res["failed"] and "not a symlink" in res["msg"]


def test_adopted_current_is_good_and_previous_good_skips_bad(root, artifacts):
    # A fleet installed 1.0.0 by hand before botops kept a ledger.
    call(root, version="1.0.0", artifact=str(artifacts))
    os.unlink(root / "releases" / "ledger.json")
    os.symlink("releases/1.0.0", root / "current")
    listed = info(root)
    assert listed["current"] == "1.0.0" and listed["last_good"] == "1.0.0" and listed["previous_good"] is None
    assert listed["releases"][0]["alembic_head"] == "0001_initial" and listed["releases"][0]["adopted"]
    assert not (root / "releases" / "ledger.json").exists()  # bot_release_info writes nothing

    call(root, version="1.1.0", artifact=str(artifacts), state="current")
    call(root, version="1.1.0", state="marked", status="good")
    call(root, version="2.0.0", artifact=str(artifacts), state="current")
    call(root, version="2.0.0", state="marked", status="bad", note="INC-7")
    listed = info(root)
    assert listed["current"] == "2.0.0" and listed["previous_good"] == "1.1.0"
    assert [r["version"] for r in listed["releases"]][:1] == ["2.0.0"]
    assert {r["version"]: r["status"] for r in listed["releases"]} == {"1.0.0": "good", "1.1.0": "good", "2.0.0": "bad"}
    assert [h["version"] for h in listed["history"]] == ["1.1.0", "2.0.0"]

    call(root, version="1.1.0", state="marked", status="failed")
    assert info(root)["previous_good"] == "1.0.0"


def test_marked_is_idempotent_and_diffs_the_status(root, artifacts):
    call(root, version="1.0.0", artifact=str(artifacts), state="current")
    check = call(root, check_mode=True, version="1.0.0", state="marked", status="bad")
    assert check["changed"] and ledger(root)["releases"]["1.0.0"]["status"] == "installed"
    res = call(root, version="1.0.0", state="marked", status="bad")
    assert res["changed"] and res["diff"]["before"]["status"] == "installed" and res["diff"]["after"]["status"] == "bad"
    assert res["release"]["marked_at"]
    assert call(root, version="1.0.0", state="marked", status="bad")["changed"] is False
    assert call(root, version="9.9.9", state="marked", status="bad")["failed"]


def test_absent_never_removes_current_nor_last_good(root, artifacts):
    call(root, version="1.0.0", artifact=str(artifacts), state="current")
    call(root, version="1.0.0", state="marked", status="good")
    call(root, version="1.1.0", artifact=str(artifacts), state="current")
    call(root, version="2.0.0", artifact=str(artifacts), state="present")
    cur = call(root, version="1.1.0", state="absent")
    assert cur["failed"] and "is current" in cur["msg"]
    good = call(root, version="1.0.0", state="absent")
    assert good["failed"] and "last good" in good["msg"] and (root / "releases" / "1.0.0").is_dir()

    check = call(root, check_mode=True, version="2.0.0", state="absent")
    assert check["changed"] and (root / "releases" / "2.0.0").is_dir()
    res = call(root, version="2.0.0", state="absent")
    assert res["changed"] and not (root / "releases" / "2.0.0").exists()
    assert ledger(root)["releases"]["2.0.0"]["removed_at"]
    again = call(root, version="2.0.0", state="absent")
    assert again["changed"] is False
    # reinstalling keeps nothing stale
    assert call(root, version="2.0.0", artifact=str(artifacts))["changed"]


def test_keep_prunes_oldest_but_keeps_current_and_rollback_target(root, tmp_path):
    art = tmp_path / "many"
    for v in ("1.0.0", "1.1.0", "1.2.0", "1.3.0", "1.4.0"):
        make_artifact(art, v)
    call(root, version="1.0.0", artifact=str(art), state="current")
    call(root, version="1.0.0", state="marked", status="good")
    for v in ("1.1.0", "1.2.0", "1.3.0"):
        call(root, version=v, artifact=str(art), state="current")
    call(root, version="1.1.0", state="marked", status="good")
    res = call(root, version="1.4.0", artifact=str(art), state="current", keep=2)
    # kept: 1.4.0 (current), 1.1.0 (last good = previous_good); 1.0.0 is good too but older
    assert res["changed"] and sorted(res["pruned"]) == ["1.0.0", "1.2.0", "1.3.0"]
    assert sorted(os.listdir(root / "releases")) == [".ledger.lock", "1.1.0", "1.4.0", "ledger.json"]
    assert res["previous_good"] == "1.1.0"
    again = call(root, version="1.4.0", artifact=str(art), state="current", keep=2)
    assert again["changed"] is False and again["pruned"] == []


def test_absent_with_keep_only_prunes(root, tmp_path):
    art = tmp_path / "many"
    for v in ("1.0.0", "1.1.0", "1.2.0"):
        make_artifact(art, v)
        call(root, version=v, artifact=str(art), state="current")
        if v == "1.0.0":
            call(root, version=v, state="marked", status="good")
    check = call(root, check_mode=True, state="absent", keep=1)
    assert check["changed"] and check["pruned"] == ["1.1.0"]  # 1.0.0 is the last good release
    assert (root / "releases" / "1.1.0").is_dir()
    assert call(root, state="absent", keep=1)["pruned"] == ["1.1.0"]
    assert call(root, state="absent", keep=1)["changed"] is False


def test_marking_good_then_pruning(root, tmp_path):
    art = tmp_path / "many"
    for v in ("1.0.0", "1.1.0", "1.2.0"):
        make_artifact(art, v)
        call(root, version=v, artifact=str(art), state="current")
    res = call(root, version="1.2.0", state="marked", status="good", keep=1)
    assert res["changed"] and res["pruned"] == ["1.0.0", "1.1.0"] and res["last_good"] == "1.2.0"
    assert sorted(p for p in os.listdir(root / "releases") if not p.startswith(".")) == ["1.2.0", "ledger.json"]


def test_required_options(root):
    assert call(root, state="marked", version="1.0.0")["failed"]
    assert call(root, state="absent")["failed"]
    assert call(root, state="present")["failed"]
    assert call(root, state="present", version="1.0.0", keep=0)["failed"]
    assert call(root, state="list")["failed"]  # listing is bot_release_info's


def test_info_resolves_a_rollback_target_or_refuses_it_as_input(root, artifacts):
    """A rollback resolves its target on every bot before the first change: an unknown version or no
    good release to go back to is refused (input_refused: the front end exits 2), nothing written."""
    call(root, version="1.0.0", artifact=str(artifacts), state="current")
    alone = info(root, target="latest")
    assert alone["failed"] and alone["input_refused"]
    assert "no release marked good other than the current 1.0.0 is installed (installed: 1.0.0)" in alone["msg"]
    call(root, version="1.0.0", state="marked", status="good")
    call(root, version="1.1.0", artifact=str(artifacts), state="current")
    before = (root / "releases" / "ledger.json").read_text()
    assert info(root, target="latest")["target_release"] == "1.0.0"
    assert info(root, target="1.1.0")["target_release"] == "1.1.0"  # the current one: a no-op later
    unknown = info(root, target="garbage")
    assert unknown["failed"] and unknown["input_refused"]
    assert unknown["msg"] == ("Cannot roll bot 'bot01' back to garbage: release garbage is not installed "
                              "(installed: 1.0.0, 1.1.0); --target takes 'latest' or one of those")
    assert info(root, target="../x")["input_refused"]
    assert (root / "releases" / "ledger.json").read_text() == before
