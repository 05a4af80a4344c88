"""Where botops finds the botops.fleet collection, and where its runs write: a checkout or a pip install.

- ``COLLECTION``: the collection's root, holding ``playbooks/``, ``roles/``, ``plugins/``, ``profiles/``
  and ``ansible.cfg``. In a checkout it is the repository's root. Installed with pip, the wheel ships
  the collection as package data in ``site-packages/ansible_collections/botops/fleet``, beside the
  ``botops`` package: ansible-core finds collections installed on its Python path there (the
  ``ansible`` package ships its collections the same way), so nothing has to be linked or configured.
- ``HOME``: where runs write: ``artifacts/``, ``.locks/`` (fleet locks), ``.ansible/`` (Ansible's
  home), and the sandbox's ``.sandbox/`` and ``inventory/sandbox/``. In a checkout it is the
  repository's root, as it always was; installed, ``~/.botops``. ``BOTOPS_HOME`` overrides both.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

PACKAGE_PARENT = Path(__file__).resolve().parents[1]  # the checkout, or site-packages
CHECKOUT = (PACKAGE_PARENT / "galaxy.yml").is_file() and (PACKAGE_PARENT / "plugins" / "modules").is_dir()
COLLECTION = PACKAGE_PARENT if CHECKOUT else PACKAGE_PARENT / "ansible_collections" / "botops" / "fleet"
HOME = Path(os.path.abspath(os.path.expanduser(
    os.environ.get("BOTOPS_HOME") or (str(PACKAGE_PARENT) if CHECKOUT else "~/.botops"))))


def collections_path() -> Path:
    """The directory holding ``ansible_collections/`` with botops.fleet in it, for ANSIBLE_COLLECTIONS_PATH:
    the checkout's link (made here when missing), or the site-packages the wheel was installed into."""
    if CHECKOUT:
        from botops import collection

        return collection.link(COLLECTION)
    return COLLECTION.parents[2]


def program() -> str:
    """The command that runs botops tasks, as cron and printed hints call it: the ``botops`` console
    script beside this interpreter (a checkout's .venv has it too)."""
    beside = Path(sys.executable).with_name("botops")
    return str(beside) if beside.exists() else "botops"
