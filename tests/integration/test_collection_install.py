"""The botops.fleet collection as another project uses it: built with `botops build-collection`,
installed with ansible-galaxy into a scratch path, and a playbook of that project calling
botops.fleet.bot_facts (and the lookups) against a sandbox bot, with nothing of the checkout on
Ansible's collection path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

PLAY = """\
- hosts: bot01
  gather_facts: false
  tasks:
    - name: Read the bot's state with the installed collection
      botops.fleet.bot_facts:
        profile: "{{ lookup('botops.fleet.bot_profile', bot_family) }}"
        bot: "{{ lookup('botops.fleet.bot_vars', 'bot') }}"
        secrets: "{{ lookup('botops.fleet.bot_vars', 'secrets') }}"
        database: false
      register: facts
    - name: Hand the facts to the test
      ansible.builtin.copy:
        content: "{{ facts.bot | to_json }}"
        dest: "{{ out }}"
      delegate_to: localhost
"""


def test_the_built_collection_installs_and_runs_against_a_sandbox_bot(fleet, tmp_path):
    build = subprocess.run([str(BIN / "botops"), "build-collection", f"--output={tmp_path / 'dist'}"],
                           capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stdout + build.stderr
    tarball = tmp_path / "dist" / "botops-fleet-0.1.0.tar.gz"
    with tarfile.open(tarball) as tar:
        names = tar.getnames()
    assert "plugins/modules/bot_facts.py" in names and "meta/runtime.yml" in names
    assert "plugins/doc_fragments/botops_bot.py" in names
    assert not [n for n in names if n.startswith(("tests/", "sandbox/", ".venv/", ".ansible/", "botops/"))]

    installed = tmp_path / "collections"
    install = subprocess.run([str(BIN / "ansible-galaxy"), "collection", "install", "--force", str(tarball), "-p", str(installed)],
                             capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stdout + install.stderr
    assert (installed / "ansible_collections" / "botops" / "fleet" / "plugins" / "modules" / "bot_facts.py").is_file()

    (tmp_path / "ansible.cfg").write_text("[defaults]\nhost_key_checking = False\nretry_files_enabled = False\n")
    (tmp_path / "play.yml").write_text(PLAY)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(ANSIBLE_CONFIG=str(tmp_path / "ansible.cfg"), ANSIBLE_HOME=str(tmp_path / "home"),
               ANSIBLE_COLLECTIONS_PATH=str(installed), ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="False",
               PATH=os.pathsep.join((str(BIN), env.get("PATH", ""))))
    out = tmp_path / "facts.json"
    play = subprocess.run([str(BIN / "ansible-playbook"), "-i", str(fleet.hosts_file), "play.yml",
                           "-e", f"out={out}", "-vvv"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert play.returncode == 0, play.stdout[-3000:] + play.stderr[-3000:]
    # the module ran from the installed collection, never from the checkout
    assert str(installed) in play.stdout and str(REPO / ".ansible") not in play.stdout
    facts = json.loads(out.read_text())
    bot = fleet.bot("bot01")
    assert facts["release"] == os.path.basename(os.readlink(Path(bot["root"]) / "current"))
    assert facts["live"] is True
