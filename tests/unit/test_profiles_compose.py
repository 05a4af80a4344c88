"""Profiles compose: user directories searched before the built-in profiles/, one search path for
botops.profiles, the bot_profile lookup, the playbooks the front end runs and the maintenance
windows; the release artifact's name from the profile or the inventory."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from invoke import Context, Exit

from botops import maintenance, profiles, deploy, maintenance_windows
from botops.runner import PlaybookRun
from botops.layout import COLLECTION

BUILTIN = ["freqtrade", "hyperliquid", "mojorust", "papertrader", "solana-cli", "vanta"]
OUTSIDE = "2026-11-24T12:00:00Z"  # Tuesday noon: every shipped window is closed


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    monkeypatch.delenv("BOTOPS_PROFILES_DIR", raising=False)
    monkeypatch.delenv("BOTOPS_PROFILES_PATH", raising=False)
    monkeypatch.delenv("BOTOPS_WINDOWS_FILE", raising=False)


def family_file(directory: Path, family: str, based_on: str = "hyperliquid", **changes) -> Path:
    """A real profile: a shipped one under another family name (or the same), with changes."""
    data = yaml.safe_load((profiles.BUILTIN_DIR / f"{based_on}.yml").read_text())
    data["family"] = family
    data.update(changes)
    data = {k: v for k, v in data.items() if v is not None}  # key=None: without that key
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{family}.yml"
    path.write_text(yaml.safe_dump(data))
    return path


# ------------------------------------------------------------------ the search path
def test_search_path_is_dir_then_path_then_builtin(tmp_path, monkeypatch):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    monkeypatch.setenv("BOTOPS_PROFILES_PATH", os.pathsep.join([str(b), "", str(c), str(b)]))
    monkeypatch.setenv("BOTOPS_PROFILES_DIR", str(a))
    assert profiles.search_path() == [a, b, c, profiles.BUILTIN_DIR]
    monkeypatch.setenv("BOTOPS_PROFILES_PATH", str(profiles.BUILTIN_DIR))
    monkeypatch.delenv("BOTOPS_PROFILES_DIR")
    assert profiles.search_path() == [profiles.BUILTIN_DIR], "the built-in directory is listed once"


def test_a_user_directory_adds_families_and_keeps_the_builtin_ones(tmp_path, monkeypatch):
    family_file(tmp_path / "mine", "tradebot")
    monkeypatch.setenv("BOTOPS_PROFILES_PATH", str(tmp_path / "mine"))
    assert profiles.available() == sorted(BUILTIN + ["tradebot"])
    assert profiles.load("tradebot")["family"] == "tradebot"
    assert profiles.load("papertrader")["family"] == "papertrader"


def test_the_first_directory_shadows_later_ones_and_the_builtin(tmp_path, monkeypatch):
    first = family_file(tmp_path / "first", "vanta", based_on="vanta", description="ours, first")
    family_file(tmp_path / "second", "vanta", based_on="vanta", description="ours, second")
    monkeypatch.setenv("BOTOPS_PROFILES_PATH", os.pathsep.join([str(tmp_path / "first"), str(tmp_path / "second")]))
    assert profiles.find("vanta") == first
    assert profiles.load("vanta")["description"] == "ours, first"
    assert profiles.available().count("vanta") == 1
    monkeypatch.delenv("BOTOPS_PROFILES_PATH")
    assert profiles.load("vanta")["description"] != "ours, first"


def test_profiles_dir_is_one_more_directory_in_front_not_a_replacement(tmp_path, monkeypatch):
    family_file(tmp_path / "dir", "mojorust", based_on="mojorust", description="from BOTOPS_PROFILES_DIR")
    family_file(tmp_path / "path", "mojorust", based_on="mojorust", description="from BOTOPS_PROFILES_PATH")
    monkeypatch.setenv("BOTOPS_PROFILES_DIR", str(tmp_path / "dir"))
    monkeypatch.setenv("BOTOPS_PROFILES_PATH", str(tmp_path / "path"))
    assert profiles.available() == BUILTIN
    assert profiles.load("mojorust")["description"] == "from BOTOPS_PROFILES_DIR"


def test_an_invalid_user_profile_is_refused_naming_its_file(tmp_path, monkeypatch):
    path = family_file(tmp_path / "mine", "vanta", based_on="vanta")
    path.write_text(path.read_text().replace("family: vanta", "family: vanta\nnot_a_key: 1"))
    monkeypatch.setenv("BOTOPS_PROFILES_PATH", str(tmp_path / "mine"))
    with pytest.raises(profiles.ProfileError, match=rf"{path}: \(top level\): unknown key 'not_a_key'"):
        profiles.load("vanta")


def test_an_unknown_family_names_every_directory_searched(tmp_path, monkeypatch):
    monkeypatch.setenv("BOTOPS_PROFILES_PATH", str(tmp_path / "mine"))
    with pytest.raises(profiles.ProfileError) as info:
        profiles.load("kraken")
    assert f"in {tmp_path / 'mine'}, {profiles.BUILTIN_DIR} (expected one of: freqtrade, hyperliquid" in str(info.value)


def test_the_lookup_plugin_searches_the_same_path(tmp_path, monkeypatch):
    from plugins.lookup.bot_profile import LookupModule

    family_file(tmp_path / "mine", "hyperliquid", description="shadowing hyperliquid")
    family_file(tmp_path / "mine", "tradebot")
    lookup = LookupModule()
    assert lookup.run(["hyperliquid"])[0]["description"] != "shadowing hyperliquid"
    monkeypatch.setenv("BOTOPS_PROFILES_PATH", str(tmp_path / "mine"))
    found = lookup.run(["hyperliquid", "tradebot", "papertrader"])
    assert [p["family"] for p in found] == ["hyperliquid", "tradebot", "papertrader"]
    assert found[0]["description"] == "shadowing hyperliquid"


def test_the_front_end_hands_the_playbooks_the_same_path(tmp_path, monkeypatch):
    family_file(tmp_path / "dir", "tradebot")
    monkeypatch.setenv("BOTOPS_PROFILES_DIR", str(tmp_path / "dir"))
    monkeypatch.setenv("BOTOPS_PROFILES_PATH", str(tmp_path / "path"))
    (tmp_path / "play.yml").write_text("- hosts: all\n  tasks: []\n")
    (tmp_path / "hosts.yml").write_text("all: {hosts: {b1: {}}}\n")
    env = PlaybookRun(str(tmp_path / "play.yml"), inventory=str(tmp_path / "hosts.yml"),
                      progress=lambda *a: None).params()["envvars"]
    assert env["BOTOPS_PROFILES_PATH"].split(os.pathsep) == [
        str(tmp_path / "dir"), str(tmp_path / "path"), str(profiles.BUILTIN_DIR)]
    assert env["BOTOPS_PROFILES_DIR"] == ""
    child = dict(os.environ, **env)  # what the lookup plugin sees in ansible-playbook
    assert [p.resolve() for p in profiles.search_path(child)] == [p.resolve() for p in profiles.search_path()]


def test_the_lookup_finds_a_user_family_in_a_real_ansible_run(tmp_path, monkeypatch):
    """ansible-playbook through ansible-runner, the way every task runs: the lookup loads the user's profile."""
    family_file(tmp_path / "mine", "tradebot", description="found by the lookup")
    monkeypatch.setenv("BOTOPS_PROFILES_PATH", str(tmp_path / "mine"))
    monkeypatch.setenv("BOTOPS_ARTIFACTS_DIR", str(tmp_path / "runs"))
    (tmp_path / "play.yml").write_text(
        "- hosts: all\n  gather_facts: false\n  tasks:\n"
        "    - ansible.builtin.set_stats:\n"
        "        data: {botops_report: {b1: {description: \"{{ lookup('botops.fleet.bot_profile', 'tradebot').description }}\"}}}\n")
    (tmp_path / "hosts.yml").write_text("all: {hosts: {b1: {ansible_connection: local}}}\n")
    result = PlaybookRun(str(tmp_path / "play.yml"), inventory=str(tmp_path / "hosts.yml"),
                         progress=lambda *a: None).run()
    assert result.exit_code == 0, result.error
    assert result.report == {"b1": {"description": "found by the lookup"}}


# ------------------------------------------------------------------ maintenance windows
def test_windows_accept_every_family_of_the_search_path(tmp_path, monkeypatch):
    """The reported failure: BOTOPS_PROFILES_DIR with one family made papertrader unknown."""
    family_file(tmp_path / "mine", "tradebot")
    monkeypatch.setenv("BOTOPS_PROFILES_DIR", str(tmp_path / "mine"))
    loaded = maintenance_windows.load(families=profiles.available())
    assert "papertrader" in loaded["weekly"].families


def test_a_window_naming_a_family_no_directory_has_is_still_an_error(tmp_path, monkeypatch):
    text = (maintenance_windows.DEFAULT_FILE.read_text()
            + "")  # the shipped file, plus one override for a family nobody has
    data = yaml.safe_load(text)
    data["windows"]["weekly"].setdefault("families", {})["kraken"] = {"tasks": ["backup"]}
    (tmp_path / "maintenance_windows.yml").write_text(yaml.safe_dump(data))
    with pytest.raises(maintenance_windows.WindowError, match=r"windows\.weekly\.families\.kraken: unknown bot family: "
                                                  r"no profile directory of the search path has kraken\.yml"):
        maintenance_windows.load(tmp_path / "maintenance_windows.yml", families=profiles.available())
    family_file(tmp_path / "mine", "kraken")
    monkeypatch.setenv("BOTOPS_PROFILES_PATH", str(tmp_path / "mine"))
    assert "kraken" in maintenance_windows.load(tmp_path / "maintenance_windows.yml", families=profiles.available())["weekly"].families


@pytest.fixture
def no_run(monkeypatch):
    def refuse(self):
        raise AssertionError(f"a playbook ran: {self.playbook}")
    monkeypatch.setattr(PlaybookRun, "run", refuse)


def test_maintenance_with_a_user_family_and_windows_for_families_without_bots(tmp_path, monkeypatch, no_run):
    """botops maintenance with a user profile directory: the shipped windows name papertrader (no bot
    here): not an error. The user's family gets the window's default schedule."""
    family_file(tmp_path / "mine", "tradebot")
    monkeypatch.setenv("BOTOPS_PROFILES_DIR", str(tmp_path / "mine"))
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {"t1": {"bot_family": "tradebot", "bot_root": "/opt/t1"}}}}))
    with pytest.raises(Exit) as info:
        maintenance.maintenance(Context(), window="weekly", inventory=str(inventory), now=OUTSIDE)
    assert info.value.code == 2
    text = str(info.value.message)
    assert "unknown bot family" not in text
    assert "the weekly maintenance window is closed for every targeted bot" in text and "tradebot (t1)" in text


def test_maintenance_refuses_a_window_for_a_family_no_directory_has(tmp_path, monkeypatch, no_run):
    data = yaml.safe_load(maintenance_windows.DEFAULT_FILE.read_text())
    data["windows"]["daily"].setdefault("families", {})["kraken"] = {"tasks": ["backup"]}
    (tmp_path / "maintenance_windows.yml").write_text(yaml.safe_dump(data))
    monkeypatch.setenv("BOTOPS_WINDOWS_FILE", str(tmp_path / "maintenance_windows.yml"))
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {"m1": {"bot_family": "mojorust", "bot_root": "/opt/m1"}}}}))
    with pytest.raises(Exit) as info:
        maintenance.maintenance(Context(), window="daily", inventory=str(inventory), now=OUTSIDE)
    assert info.value.code == 2 and "windows.daily.families.kraken: unknown bot family" in str(info.value.message)


# ------------------------------------------------------------------ release artifacts
def test_artifact_name_from_inventory_then_profile_then_family():
    shipped = profiles.load("vanta")
    assert "release" not in shipped, "a shipped profile names no sandbox artifact (the sandbox's inventory does)"
    assert profiles.artifact_name(shipped) == "vanta"
    assert profiles.artifact_name(shipped, "refbot") == "refbot"
    assert profiles.artifact_name(dict(shipped, release={"artifact": "vanta-engine"})) == "vanta-engine"
    assert profiles.artifact_name(dict(shipped, release={"artifact": "vanta-engine"}), "refbot") == "refbot"


def test_the_release_artifact_key_is_validated(tmp_path, monkeypatch):
    family_file(tmp_path / "mine", "tradebot", release={"artifact": "../etc/passwd"})
    monkeypatch.setenv("BOTOPS_PROFILES_PATH", str(tmp_path / "mine"))
    with pytest.raises(profiles.ProfileError, match=r"release\.artifact: '\.\./etc/passwd'"):
        profiles.load("tradebot")


def write_release(directory: Path, name: str, version: str, manifest: dict | None = None) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}-{version}.tar.gz").write_bytes(b"not read by the front end")
    (directory / f"{name}-{version}.json").write_text(json.dumps(
        manifest if manifest is not None else {"name": name, "version": version, "sha256": "0" * 64}))


@pytest.fixture
def fleet(tmp_path, monkeypatch):
    """Real profiles and a real inventory: tradebot (a user family, artifact 'tradebot-core' in its
    profile), vanta (shipped: named after the family) and one vanta bot overriding its artifact in the inventory."""
    family_file(tmp_path / "mine", "tradebot", release={"artifact": "tradebot-core"})
    family_file(tmp_path / "mine", "plainbot", release=None)  # no release key: artifacts named after the family
    monkeypatch.setenv("BOTOPS_PROFILES_PATH", str(tmp_path / "mine"))
    inventory = tmp_path / "inventory"
    (inventory / "group_vars" / "vanta").mkdir(parents=True)
    (inventory / "group_vars" / "vanta" / "main.yml").write_text("bot_family: vanta\n")
    (inventory / "hosts.yml").write_text(yaml.safe_dump({"all": {"children": {
        "tradebot": {"hosts": {"t1": {}, "t2": {}}, "vars": {"bot_family": "tradebot", "bot_root": "/opt/t"}},
        "plainbot": {"hosts": {"p1": {"bot_family": "plainbot", "bot_root": "/opt/p1"}}},
        "vanta": {"hosts": {"v1": {"bot_root": "/opt/v1"},
                            "v2": {"bot_root": "/opt/v2", "bot_release_artifact": "vanta-special"}}},
    }}}))
    return inventory / "hosts.yml"


def test_deploy_looks_for_each_bots_artifact_name(fleet):
    names = deploy.artifact_names(fleet, ["t1", "t2", "p1", "v1", "v2"])
    assert names == {"tradebot-core": ["t1", "t2"], "plainbot": ["p1"], "vanta": ["v1"], "vanta-special": ["v2"]}


def test_deploy_refuses_a_missing_artifact_naming_it_and_its_bots(fleet, tmp_path, no_run):
    artifacts = tmp_path / "artifacts"
    write_release(artifacts, "tradebot-core", "2.0.0")
    write_release(artifacts, "tradebot-core", "2.1.0")
    write_release(artifacts, "vanta", "2.1.0")
    with pytest.raises(Exit) as info:
        deploy.deploy(Context(), version="2.1.0", inventory=str(fleet), limit="tradebot,plainbot",
                       artifacts=str(artifacts))
    text = str(info.value.message)
    assert info.value.code == 2
    assert ("no release 2.1.0 of artifact 'plainbot' (plainbot-2.1.0.tar.gz + .json) in "
            f"{artifacts.resolve()} for p1 (available: none)") in text
    assert "tradebot-core" not in text, text
    with pytest.raises(Exit) as info:
        deploy.deploy(Context(), version="2.0.0", inventory=str(fleet), limit="vanta", artifacts=str(artifacts))
    text = str(info.value.message)
    assert "artifact 'vanta'" in text and "for v1 (available: 2.1.0)" in text
    assert "artifact 'vanta-special'" in text and "for v2 (available: none)" in text


def test_deploy_runs_when_every_artifact_is_there(fleet, tmp_path, monkeypatch):
    artifacts = tmp_path / "artifacts"
    for name in ("tradebot-core", "plainbot"):
        write_release(artifacts, name, "2.1.0")
    ran = []
    monkeypatch.setattr(PlaybookRun, "run", lambda self: ran.append(self.extravars) or (_ for _ in ()).throw(
        RuntimeError("stop here")))
    monkeypatch.setenv("BOTOPS_ARTIFACTS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("BOTOPS_LOCK_DIR", str(tmp_path / "locks"))
    with pytest.raises(RuntimeError, match="stop here"):
        deploy.deploy(Context(), version="2.1.0", inventory=str(fleet), limit="tradebot,plainbot",
                       artifacts=str(artifacts))
    assert ran and ran[0]["botops_version"] == "2.1.0" and ran[0]["botops_artifacts_dir"] == str(artifacts.resolve())


def test_a_manifest_without_checksum_is_refused(fleet, tmp_path, no_run):
    artifacts = tmp_path / "artifacts"
    write_release(artifacts, "plainbot", "2.1.0", manifest={"name": "plainbot"})
    with pytest.raises(Exit) as info:
        deploy.deploy(Context(), version="2.1.0", inventory=str(fleet), limit="p1", artifacts=str(artifacts))
    assert info.value.code == 2 and "is not a release manifest (no sha256)" in str(info.value.message)


def test_the_role_default_resolves_the_name_the_same_way(fleet):
    """roles/bot_release/defaults: bot_release_artifact, else the profile's deploy.artifact, else the family."""
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar, trust_as_template

    expression = trust_as_template(yaml.safe_load((COLLECTION / "roles/bot_release/defaults/main.yml").read_text())[
        "bot_release_artifact_name"])
    cases = [
        ({"bot_family": "tradebot", "botops_profile": profiles.load("tradebot")}, "tradebot-core"),
        ({"bot_family": "plainbot", "botops_profile": profiles.load("plainbot")}, "plainbot"),
        ({"bot_family": "vanta", "botops_profile": profiles.load("vanta")}, "vanta"),
        ({"bot_family": "vanta", "botops_profile": profiles.load("vanta"), "bot_release_artifact": "vanta-special"},
         "vanta-special"),
    ]
    for variables, expected in cases:
        assert Templar(loader=DataLoader(), variables=variables).template(expression).strip() == expected
