"""The checkout as the botops.fleet collection.

The repository's root is a collection's root (galaxy.yml, plugins/, roles/, playbooks/). Ansible and
Python find a collection under a directory named ``ansible_collections/<namespace>/<name>``; this links
the checkout there, in the project's Ansible home (``.ansible/collections``, which ansible.cfg names as
its collections path), so the modules run by FQCN (``botops.fleet.bot_facts``) and Python imports their
module_utils as ``ansible_collections.botops.fleet.plugins.module_utils.<name>``, the same names an
installed collection has. scripts/bootstrap runs ``python -m botops.collection``, which also puts the
directory on the virtualenv's import path (a ``.pth`` file).
"""

from __future__ import annotations

import os
import site
import sys
from pathlib import Path

from invoke import Exit, task

REPO = Path(__file__).resolve().parent.parent
NAMESPACE, NAME = "botops", "fleet"


def collections_dir(repo: Path = REPO) -> Path:
    """The directory holding ansible_collections/ for this checkout."""
    return repo / ".ansible" / "collections"


def link(repo: Path = REPO) -> Path:
    """Link the checkout as ansible_collections/botops/fleet (relative, so a moved checkout keeps
    working); idempotent. Returns the collections directory."""
    root = collections_dir(repo)
    place = root / "ansible_collections" / NAMESPACE / NAME
    target = os.path.relpath(repo, place.parent)
    if place.is_symlink() and os.readlink(place) == target:
        return root
    place.parent.mkdir(parents=True, exist_ok=True)
    if place.is_symlink() or place.exists():
        place.unlink()
    tmp = place.with_name(f".{NAME}.{os.getpid()}")
    tmp.symlink_to(target, target_is_directory=True)
    os.replace(tmp, place)  # atomic: a concurrent run never sees the link missing
    return root


def install_path_file(repo: Path = REPO) -> Path:
    """A .pth file in this interpreter's site-packages naming the collections directory."""
    path = Path(site.getsitepackages()[0]) / "botops-collection.pth"
    path.write_text(f"{collections_dir(repo)}\n")
    return path


def build(output: Path, repo: Path = REPO) -> Path:
    """Build the collection's tarball (ansible-galaxy collection build) into `output`; returns its path."""
    import subprocess

    import yaml

    meta = yaml.safe_load((repo / "galaxy.yml").read_text())
    output.mkdir(parents=True, exist_ok=True)
    galaxy = Path(sys.executable).with_name("ansible-galaxy")
    proc = subprocess.run([str(galaxy), "collection", "build", "--force", "--output-path", str(output), str(repo)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"ansible-galaxy collection build failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return output / f"{meta['namespace']}-{meta['name']}-{meta['version']}.tar.gz"


@task(help={"output": "directory the tarball is written to (default dist/)"})
def build_collection(c, output="dist"):
    """Build the botops.fleet collection (dist/botops-fleet-<version>.tar.gz) for ansible-galaxy collection install."""
    from botops.report import shown

    accepted = "a directory it can write to, e.g. --output=dist"
    if not str(output).strip() or "\0" in str(output):
        raise Exit(f"build-collection: --output {shown(output)} is not a directory path ({accepted})", code=2)
    target = Path(output).resolve()
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise Exit(f"build-collection: --output {shown(output)} cannot be created: {exc.strerror} ({accepted})",
                   code=2) from None
    try:
        path = build(target)
    except RuntimeError as exc:
        raise Exit(f"build-collection: {exc}", code=1) from None
    print(f"build-collection: {path}")
    print(f"install it with: ansible-galaxy collection install {path}")


def main() -> int:
    from botops.layout import CHECKOUT, COLLECTION

    if not CHECKOUT:
        print(f"botops.fleet is installed at {COLLECTION}: there is no checkout to link", file=sys.stderr)
        return 0
    root = link()
    pth = install_path_file()
    print(f"botops.fleet: {root / 'ansible_collections' / NAMESPACE / NAME} -> {REPO} (import path: {pth})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
