"""ansible-lint's production profile finds nothing in the playbooks, roles, plugins and collection
metadata (.ansible-lint holds the configuration and says why each excluded path is excluded)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from botops import collection

REPO = Path(__file__).resolve().parents[2]


def test_ansible_lint_production_profile_finds_nothing(tmp_path):
    lint = Path(sys.executable).with_name("ansible-lint")
    # HOME is an empty directory: ansible-lint puts ~/.ansible/collections before every other collection path,
    # so a botops.fleet installed there (ansible-galaxy collection install, or ansible-lint's own install of
    # the project) would be linted against in place of this checkout's modules.
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(collection.link(REPO)), NO_COLOR="1", HOME=str(tmp_path),
               PATH=os.pathsep.join((str(lint.parent), os.environ.get("PATH", ""))))
    env.pop("ANSIBLE_CONFIG", None)  # ansible.cfg at the repository's root, as a user's checkout has it
    proc = subprocess.run([str(lint), "-q", "--nocolor", "-f", "pep8", "--offline"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)
    findings = [line for line in proc.stdout.splitlines() if line.strip()]
    assert proc.returncode == 0 and not findings, "\n".join(findings[:60]) + "\n" + proc.stderr[-3000:]
