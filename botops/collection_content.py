"""What the botops.fleet collection holds: the files ``ansible-galaxy collection build`` packs.

One definition for the three places that ship the collection: the galaxy tarball
(``botops build-collection``), the wheel, which carries the collection as package data in
``ansible_collections/botops/fleet`` (setup.py), and the tree ``ansible-test sanity`` checks. It walks
the collection's root as ansible-galaxy does: galaxy.yml's ``build_ignore`` patterns and
ansible-galaxy's own (``*.pyc``, version control directories, built tarballs) are matched with
fnmatch against each path relative to the root. Standard library and PyYAML only: setup.py imports
it while building the wheel.
"""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path

import yaml

# ansible-galaxy's own ignore list (ansible.galaxy.collection._build_files_manifest_walk)
GALAXY_IGNORED = ["MANIFEST.json", "FILES.json", "galaxy.yml", "galaxy.yaml", ".git", "*.pyc", "*.retry",
                  "tests/output"]
IGNORED_DIRS = frozenset({"CVS", ".bzr", ".hg", ".git", ".svn", "__pycache__", ".tox"})


def metadata(root: Path) -> dict:
    return yaml.safe_load((root / "galaxy.yml").read_text())


def files(root: Path, keep_galaxy_yml: bool = False) -> list[str]:
    """Paths, relative to `root`, of every file the collection built from `root` holds. galaxy.yml is
    left out as ansible-galaxy leaves it out (it writes MANIFEST.json instead), unless asked for."""
    meta = metadata(root)
    patterns = GALAXY_IGNORED + [f"{meta['namespace']}-{meta['name']}-*.tar.gz"] + list(meta.get("build_ignore") or [])
    if keep_galaxy_yml:
        patterns = [p for p in patterns if p != "galaxy.yml"]
    found: list[str] = []

    def ignored(rel: str) -> bool:
        return any(fnmatch.fnmatch(rel, pattern) for pattern in patterns)

    def walk(directory: Path, rel_dir: str) -> None:
        for entry in sorted(os.listdir(directory)):
            path, rel = directory / entry, os.path.join(rel_dir, entry)
            if path.is_dir():
                if entry in IGNORED_DIRS or ignored(rel):
                    continue
                if path.is_symlink() and not path.resolve().is_relative_to(root.resolve()):
                    continue  # ansible-galaxy skips a link out of the collection too
                if not path.is_symlink():
                    walk(path, rel)
            elif not ignored(rel):
                found.append(rel)

    walk(root, "")
    return found
