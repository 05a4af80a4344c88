# Copyright: botops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: botops_yaml
short_description: Ansible's YAML inventory, without the copy that makes large ones slow
description:
  - The C(ansible.builtin.yaml) inventory plugin - the same files, the same format, the same
    option - except that it hands the parsed file to the inventory as parsed. C(DataLoader) deep-copies
    every file it loads unless told the data is not shared, and the C(yaml) plugin reads its file
    uncached, so that nothing else ever holds the data - the copy protects nothing and is more than half
    of parsing a large static inventory (a thousand bots' hosts, on every C(ansible-playbook) run).
  - botops' C(ansible.cfg) enables it in place of C(yaml).
options:
  yaml_extensions:
    description: File name extensions of YAML inventories (the C(yaml) plugin's setting).
    type: list
    elements: string
    default: ['.yaml', '.yml', '.json']
    env:
      - name: ANSIBLE_YAML_FILENAME_EXT
      - name: ANSIBLE_INVENTORY_PLUGIN_EXTS
    ini:
      - key: yaml_valid_extensions
        section: defaults
      - section: inventory_plugin_yaml
        key: yaml_valid_extensions
"""

from ansible.plugins.inventory.yaml import InventoryModule as YamlInventory


class _Uncopied:
    """The loader, except that a file read uncached is returned without the deep copy."""

    def __init__(self, loader):
        self._loader = loader

    def __getattr__(self, name):
        return getattr(self._loader, name)

    def load_from_file(self, file_name, cache="all", unsafe=False, **kwargs):
        return self._loader.load_from_file(file_name, cache=cache, unsafe=unsafe or cache == "none", **kwargs)


class InventoryModule(YamlInventory):
    NAME = "botops_yaml"

    def parse(self, inventory, loader, path, cache=True):
        super().parse(inventory, _Uncopied(loader), path, cache)
