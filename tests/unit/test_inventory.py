"""Inventory checks before a run: malformed files, unknown bots, wrong bot variables, all named."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from botops.inventory import InventoryError, hosts

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "inventory" / "production.example"


@pytest.fixture
def inventory(tmp_path):
    shutil.copytree(EXAMPLE, tmp_path / "inv")
    return tmp_path / "inv"


def test_the_production_example_is_valid(inventory):
    path, bots = hosts(str(inventory / "hosts.yml"), check_vars=True)
    assert bots == ["hl-eu-1", "hl-eu-2", "mojo-1", "vanta-1"]


def test_limit_selects_bots_and_groups(inventory):
    assert hosts(str(inventory / "hosts.yml"), "hyperliquid")[1] == ["hl-eu-1", "hl-eu-2"]
    with pytest.raises(InventoryError, match=r"--limit 'nope' names what is no bot or group of the inventory: nope "
                                             r"\(bots: hl-eu-1, hl-eu-2, mojo-1"):
        hosts(str(inventory / "hosts.yml"), "nope")
    with pytest.raises(InventoryError, match="is not a valid host pattern"):
        hosts(str(inventory / "hosts.yml"), "a;rm -rf /")


def test_wrong_bot_variables_are_each_named(inventory):
    vanta = inventory / "group_vars" / "vanta" / "main.yml"
    vanta.write_text(vanta.read_text() + 'bot_ports: {api: "80x", metrics: 9000}\nbot_paper_only: "yes"\n'
                     'bot_ops_nice: 20\n')
    hl = inventory / "group_vars" / "hyperliquid" / "main.yml"
    hl.write_text(hl.read_text().replace("bot_root: /opt/trading-bot", "bot_root: /opt/../etc"))
    mojo = inventory / "group_vars" / "mojorust" / "main.yml"
    mojo.write_text(mojo.read_text().replace("bot_family: mojorust", "bot_family: mojo"))
    with pytest.raises(InventoryError) as info:
        hosts(str(inventory / "hosts.yml"), check_vars=True)
    lines = str(info.value).splitlines()[1:]
    assert "  hl-eu-1: bot_root: '/opt/../etc' is not an absolute path without '..'" in lines
    assert "  mojo-1: bot_family: no profile 'mojo' (expected one of: freqtrade, hyperliquid, mojorust, papertrader, solana-cli, vanta)" in lines
    assert "  vanta-1: bot_ports.api: expected integer, got str '80x'" in lines
    assert "  vanta-1: bot_ports.metrics: not a port of vanta (expected one of: api)" in lines
    assert "  vanta-1: bot_paper_only: expected boolean, got str 'yes'" in lines
    assert "  vanta-1: bot_ops_nice: 20 is out of range (expected 0 to 19)" in lines
    assert len(lines) == len(set(lines))


def test_malformed_and_empty_inventories(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text("all: [this is: not an inventory\n")
    with pytest.raises(InventoryError, match="malformed or holds no bots|cannot be parsed"):
        hosts(str(bad))
    with pytest.raises(InventoryError, match="does not exist"):
        hosts(str(tmp_path / "missing.yml"))


def test_botops_yaml_parses_as_the_yaml_plugin_does(inventory):
    """ansible.cfg reads YAML inventories with plugins/inventory/botops_yaml (the yaml plugin without
    its loader's deep copy): the same groups, hosts and variables as the yaml plugin."""
    from ansible import constants
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader
    from ansible.vars.manager import VariableManager

    assert "botops_yaml" in constants.INVENTORY_ENABLED and "yaml" not in constants.INVENTORY_ENABLED
    (inventory / "hosts.yml").write_text((inventory / "hosts.yml").read_text()
                                         + "    extra:\n      hosts:\n        x-1: {bot_port: 1, nested: {a: [1, 2]}}\n")

    def parse(plugin):
        original = constants.INVENTORY_ENABLED
        constants.INVENTORY_ENABLED = ["host_list", plugin, "auto"]
        try:
            loader = DataLoader()
            manager = InventoryManager(loader=loader, sources=[str(inventory / "hosts.yml")])
            variables = VariableManager(loader=loader, inventory=manager)
            return ({g: sorted(h.name for h in manager.groups[g].get_hosts()) for g in manager.groups},
                    {h.name: variables.get_vars(host=h) for h in manager.get_hosts()})
        finally:
            constants.INVENTORY_ENABLED = original

    ours, theirs = parse("botops_yaml"), parse("yaml")
    assert ours[0]["extra"] == ["x-1"] and ours[1]["x-1"]["nested"] == {"a": [1, 2]}
    assert ours == theirs


def test_a_broken_profile_of_the_targeted_bots_is_named_once_with_its_bots(inventory, tmp_path, monkeypatch):
    profiles_dir = tmp_path / "profiles"
    shutil.copytree(REPO / "profiles", profiles_dir)
    hl = profiles_dir / "hyperliquid.yml"
    text = hl.read_text()
    assert "timeout:" in text
    hl.write_text(text.replace("timeout:", "timeout: -1\n  ignored_timeout:", 1))
    monkeypatch.setenv("BOTOPS_PROFILES_DIR", str(profiles_dir))
    with pytest.raises(InventoryError) as exc:
        hosts(str(inventory / "hosts.yml"), check_vars=True)
    message = str(exc.value)
    assert "the profiles of the targeted bots are invalid" in message, message
    assert message.count("hl-eu-1, hl-eu-2: bot_family 'hyperliquid':") >= 1, message
    assert "mojo-1" not in message and "vanta-1" not in message, message


@pytest.mark.parametrize("limit, unknown", [
    ("hl-eu-1,hl-eu-9", "hl-eu-9; did you mean hl-eu-2 or hl-eu-1 for hl-eu-9?"),
    ("hyperliquid:!vanta-2", "vanta-2; did you mean vanta-1 or vanta for vanta-2?"),
    ("mojo*,kraken*", "kraken*"),
    ("hyperliquid,hyperliqid", "hyperliqid; did you mean hyperliquid for hyperliqid?"),
])
def test_every_name_of_a_limit_must_match(inventory, limit, unknown):
    """A typo inside a list used to be dropped: the run went ahead on the other bots."""
    with pytest.raises(InventoryError) as info:
        hosts(str(inventory / "hosts.yml"), limit)
    assert f"names what is no bot or group of the inventory: {unknown}" in str(info.value)


def test_a_limit_of_known_names_and_patterns_selects_them(inventory):
    path = str(inventory / "hosts.yml")
    assert hosts(path, "hl-eu-1,mojo-1")[1] == ["hl-eu-1", "mojo-1"]
    assert hosts(path, "hyperliquid:!hl-eu-2")[1] == ["hl-eu-1"]
    assert hosts(path, "hl-eu-*")[1] == ["hl-eu-1", "hl-eu-2"]
    assert hosts(path, "all:&vanta")[1] == ["vanta-1"]
