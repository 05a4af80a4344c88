"""Profile loading and validation: every shipped profile is valid; bad files say what is wrong."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from botops import profiles
from botops.profiles import ProfileError

FAMILIES = ["freqtrade", "hyperliquid", "mojorust", "papertrader", "solana-cli", "vanta"]


def write(tmp_path: Path, family: str, data) -> Path:
    path = tmp_path / f"{family}.yml"
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


@pytest.fixture
def valid():
    return profiles.load("hyperliquid")


def test_every_runbook_family_has_a_valid_profile():
    assert profiles.available() == FAMILIES
    for family in FAMILIES:
        assert profiles.load(family)["family"] == family


def test_unknown_key_names_file_key_path_and_valid_keys(tmp_path, valid):
    data = copy.deepcopy(valid)
    data["health"]["readiness"]["jsonpath"] = "status"
    path = write(tmp_path, "hyperliquid", data)
    with pytest.raises(ProfileError) as info:
        profiles.load("hyperliquid", tmp_path)
    message = str(info.value)
    assert str(path) in message
    assert "health.readiness" in message
    assert "unknown key 'jsonpath'" in message
    assert "json" in message.split("expected one of:")[1]


def test_missing_endpoint_is_named(tmp_path, valid):
    data = copy.deepcopy(valid)
    del data["health"]["liveness"]
    write(tmp_path, "hyperliquid", data)
    with pytest.raises(ProfileError, match=r"health: missing required key 'liveness'"):
        profiles.load("hyperliquid", tmp_path)


def test_wrong_type_is_named(tmp_path, valid):
    data = copy.deepcopy(valid)
    data["http"]["ports"]["api"] = "eight thousand"
    write(tmp_path, "hyperliquid", data)
    with pytest.raises(ProfileError, match=r"http\.ports\.api: expected integer, got str 'eight thousand'"):
        profiles.load("hyperliquid", tmp_path)


def test_wrong_enum_lists_valid_values(tmp_path, valid):
    data = copy.deepcopy(valid)
    data["service"]["manager"] = "upstart"
    write(tmp_path, "hyperliquid", data)
    with pytest.raises(ProfileError, match=r"service\.manager: 'upstart' is not valid \(expected one of: supervisor, systemd, docker_compose\)"):
        profiles.load("hyperliquid", tmp_path)


def test_unknown_port_name_in_a_request(tmp_path, valid):
    data = copy.deepcopy(valid)
    data["health"]["liveness"]["http"]["port"] = "metrics"
    write(tmp_path, "hyperliquid", data)
    with pytest.raises(ProfileError, match=r"health\.liveness\.http\.port: unknown port name 'metrics' \(expected one of: api\)"):
        profiles.load("hyperliquid", tmp_path)


def test_family_must_match_file_name(tmp_path, valid):
    write(tmp_path, "hyperliquid2", valid)
    with pytest.raises(ProfileError, match=r"family: 'hyperliquid' does not match the file name \(expected 'hyperliquid2'\)"):
        profiles.load("hyperliquid2", tmp_path)


def test_invalid_yaml_and_non_mapping(tmp_path):
    write(tmp_path, "broken", "family: [unclosed\n")
    with pytest.raises(ProfileError, match=r"broken\.yml: not valid YAML"):
        profiles.load("broken", tmp_path)
    write(tmp_path, "alist", "- a\n- b\n")
    with pytest.raises(ProfileError, match=r"alist\.yml: expected a mapping at the top level, got list"):
        profiles.load("alist", tmp_path)


def test_unknown_family_lists_available(tmp_path):
    with pytest.raises(ProfileError, match=r"no profile for bot family 'kraken'.*expected one of: freqtrade, hyperliquid, mojorust"):
        profiles.load("kraken")
    with pytest.raises(ProfileError, match=r"invalid bot family '\.\./etc'"):
        profiles.load("../etc")


def test_a_new_family_needs_only_a_profile_file(tmp_path, valid):
    data = copy.deepcopy(valid)
    data["family"] = "newbot"
    data["auth"] = {"type": "login", "login": {"request": {"method": "POST", "path": "/login"}, "token_json": "token"}}
    write(tmp_path, "newbot", data)
    assert profiles.load("newbot", tmp_path)["auth"]["type"] == "login"


def test_login_auth_needs_its_login_request(tmp_path, valid):
    data = copy.deepcopy(valid)
    data["auth"] = {"type": "login"}
    write(tmp_path, "hyperliquid", data)
    with pytest.raises(ProfileError, match=r"auth: missing required key 'login'"):
        profiles.load("hyperliquid", tmp_path)


def test_no_secret_values_in_shipped_profiles():
    for family in FAMILIES:
        text = (profiles.profiles_dir() / f"{family}.yml").read_text().lower()
        for word in ("password:", "token:", "secret:"):
            assert word not in text, f"{family}.yml holds a secret value ({word})"


# ---------------------------------------------------------------------------- identity and credentials
def test_every_family_says_where_its_bot_reports_who_it_is():
    """A bot is who the inventory says: each profile declares the identity probe that checks it, on
    an answer the family's API already serves (the status or health document)."""
    for family in FAMILIES:
        profile = profiles.load(family)
        identity = profile.get("identity")
        assert identity and "http" in identity and identity.get("json"), family
        health = [profile["health"]["liveness"], profile["health"]["readiness"]]
        health += profile["health"]["readiness"].get("any_of", [])
        served = {check["http"]["path"] for check in health if "http" in check}
        served |= {probe["http"]["path"] for probe in profile["facts"].values() if "http" in probe}
        assert identity["http"]["path"] in served, f"{family}: the identity probe reads an answer no other probe reads"


def test_a_family_with_credentials_declares_how_they_are_checked():
    for family in FAMILIES:
        auth = profiles.load(family)["auth"]
        if auth["type"] != "none":
            assert auth["check"]["http"].get("method", "GET") == "GET", family
    assert profiles.load("hyperliquid")["auth"]["check"] == {
        "http": {"method": "GET", "path": "/api/emergency/circuit-breaker"}, "status": 200}


def test_the_credentials_check_is_a_get(tmp_path, valid):
    data = copy.deepcopy(valid)
    data["auth"]["check"] = {"http": {"method": "POST", "path": "/api/emergency/circuit-breaker"}}
    write(tmp_path, "hyperliquid", data)
    with pytest.raises(ProfileError, match=r"auth\.check\.http\.method: 'POST' is not valid \(expected one of: GET\)"):
        profiles.load("hyperliquid", tmp_path)


def test_a_credentials_check_needs_credentials(tmp_path, valid):
    data = copy.deepcopy(valid)
    data["auth"] = {"type": "none", "check": {"http": {"path": "/api/health"}}}
    write(tmp_path, "hyperliquid", data)
    with pytest.raises(ProfileError, match=r"auth\.check: needs credentials to check \(auth\.type is none\)"):
        profiles.load("hyperliquid", tmp_path)


def test_the_identity_probe_reads_one_value_from_a_known_port(tmp_path, valid):
    data = copy.deepcopy(valid)
    data["identity"] = {"http": {"path": "/api/health", "port": "metrics"}, "json": "bot_id"}
    write(tmp_path, "hyperliquid", data)
    with pytest.raises(ProfileError, match=r"identity\.http\.port: unknown port name 'metrics'"):
        profiles.load("hyperliquid", tmp_path)
    data["identity"] = {"http": {"path": "/api/health"}, "json": "bot_id", "count": True}
    write(tmp_path, "hyperliquid", data)
    with pytest.raises(ProfileError, match=r"identity\.count: an id is one value, not a count"):
        profiles.load("hyperliquid", tmp_path)
    data["identity"] = {"json": "bot_id"}
    write(tmp_path, "hyperliquid", data)
    with pytest.raises(ProfileError, match=r"identity: expected exactly one of: http, redis"):
        profiles.load("hyperliquid", tmp_path)


def test_a_family_without_an_identity_probe_still_loads(tmp_path, valid):
    """Optional: such a family's bots are reported 'not checked' (bot_facts), never refused for it."""
    data = copy.deepcopy(valid)
    del data["identity"]
    write(tmp_path, "hyperliquid", data)
    assert "identity" not in profiles.load("hyperliquid", tmp_path)


# ------------------------------------------------------------------ remembered profiles
def test_a_validated_profile_is_remembered_for_its_text_only(tmp_path, monkeypatch):
    """Each task's worker process loads the profile anew; a profile validated once is read back
    without validating, until its text (or the rules) change. An invalid one is never remembered."""
    monkeypatch.setattr(profiles, "CACHE_DIR", tmp_path / "cache")
    text = profiles.find("vanta").read_text()
    path = write(tmp_path, "vanta", text)
    first = profiles.load_file(path)
    assert len(list((tmp_path / "cache").glob("vanta-*.json"))) == 1

    def no_validation(data, source):
        raise AssertionError("validated again")

    with monkeypatch.context() as m:
        m.setattr(profiles, "validate", no_validation)
        assert profiles.load_file(path) == first
        path.write_text(text + "\n# edited\n")  # another text: validated again
        with pytest.raises(AssertionError, match="validated again"):
            profiles.load_file(path)
    broken = yaml.safe_load(text)
    del broken["kill_switch"]
    write(tmp_path, "vanta", broken)
    for _ in range(2):
        with pytest.raises(ProfileError, match="kill_switch"):
            profiles.load_file(path)


def test_a_profile_loads_when_nothing_can_be_remembered(tmp_path, monkeypatch):
    (tmp_path / "not-a-directory").write_text("")
    monkeypatch.setattr(profiles, "CACHE_DIR", tmp_path / "not-a-directory" / "profiles")
    assert profiles.load("vanta")["family"] == "vanta"


def test_a_worker_that_finds_its_profile_remembered_imports_no_validator(tmp_path):
    """Importing jsonschema and building the validator cost a worker process ~0.2 s of CPU per task."""
    env = dict(os.environ, BOTOPS_HOME=str(tmp_path))
    code = ("import sys; from botops import profiles; p = profiles.load('vanta'); "
            "print(p['family'], 'jsonschema' in sys.modules)")
    runs = [subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.split()
            for _ in range(2)]
    assert runs == [["vanta", "True"], ["vanta", "False"]]
