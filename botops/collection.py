"""The checkout as the botops.fleet collection.

The repository's root is a collection's root (galaxy.yml, plugins/, roles/, playbooks/). Ansible and
Python find a collection under a directory named ``ansible_collections/<namespace>/<name>``; this links
the checkout there, in the project's Ansible home (``.ansible/collections``, which ansible.cfg names as
its collections path), so the modules run by FQCN (``botops.fleet.bot_facts``) and Python imports their
module_utils as ``ansible_collections.botops.fleet.plugins.module_utils.<name>``, the same names an
installed collection has. scripts/bootstrap runs ``python -m botops.collection``, which also puts the
directory on the virtualenv's import path (a ``.pth`` file).

``run_sanity`` runs ``ansible-test sanity`` on what the built collection ships (the ``sanity`` task, and
tests/unit/test_ansible_sanity.py in the default test run).
"""

from __future__ import annotations

import os
import re
import shutil
import site
import subprocess
import sys
import tarfile
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
    import yaml

    meta = yaml.safe_load((repo / "galaxy.yml").read_text())
    output.mkdir(parents=True, exist_ok=True)
    galaxy = Path(sys.executable).with_name("ansible-galaxy")
    proc = subprocess.run([str(galaxy), "collection", "build", "--force", "--output-path", str(output), str(repo)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"ansible-galaxy collection build failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return output / f"{meta['namespace']}-{meta['name']}-{meta['version']}.tar.gz"


SANITY_PYTHON = "3.11"  # the controller's Python, and the managed hosts' here
GET_PIP_VERSION = "24.2"  # the pip ansible-test 2.19 bootstraps its virtualenvs with, when it cannot tell


def sanity_home(repo: Path = REPO) -> Path:
    """The HOME ansible-test runs with: inside the checkout's .ansible/ (gitignored), so its virtualenvs
    (~/.ansible/test/venv) and pip's cache are kept from one run to the next and nothing outside the
    checkout is needed or written."""
    return repo / ".ansible" / "sanity" / "home"


def lay_out(scratch: Path, repo: Path = REPO) -> Path:
    """Lay out what the built collection ships in ``scratch/ansible_collections/botops/fleet`` and return
    that directory: ``build()``'s tarball unpacked, so the file selection is the build's (galaxy.yml's
    build_ignore honoured, MANIFEST.json and FILES.json in place of galaxy.yml; the wheel ships the same
    files, botops.collection_content), plus ansible-test's configuration, tests/sanity/ignore-*.txt,
    which is not shipped."""
    scratch = Path(scratch)
    place = scratch / "ansible_collections" / NAMESPACE / NAME
    if place.exists():
        shutil.rmtree(place)
    place.mkdir(parents=True)
    tarball = build(scratch / "dist", repo)
    with tarfile.open(tarball) as tar:
        tar.extractall(place, filter="data")
    ignores = sorted((repo / "tests" / "sanity").glob("ignore-*.txt"))
    if ignores:
        (place / "tests" / "sanity").mkdir(parents=True, exist_ok=True)
        for path in ignores:
            shutil.copyfile(path, place / "tests" / "sanity" / path.name)
    return place


def get_pip_version() -> str:
    """The pip version ansible-test bootstraps its virtualenvs with (it names the get-pip script it looks for)."""
    from types import SimpleNamespace

    try:
        from ansible_test._internal.python_requirements import get_venv_packages

        return get_venv_packages(SimpleNamespace(version=SANITY_PYTHON))["pip"]
    except (ImportError, AttributeError, KeyError, TypeError):
        return GET_PIP_VERSION


def install_get_pip(home: Path, repo: Path = REPO) -> Path:
    """Put tests/sanity/get_pip.py where ansible-test looks for its cached pip bootstrap script under
    `home`, so it never downloads one (tests/sanity/get_pip.py says why)."""
    name = "get_pip_%s.py" % get_pip_version().replace(".", "_")
    path = Path(home) / ".ansible" / "test" / "cache" / name
    source = (repo / "tests" / "sanity" / "get_pip.py").read_bytes()
    if not path.is_file() or path.read_bytes() != source:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{name}.{os.getpid()}")
        tmp.write_bytes(source)
        os.replace(tmp, path)
    return path


def run_sanity(scratch: Path, repo: Path = REPO, home: Path | None = None, tests: tuple[str, ...] = (),
               capture: bool = True, timeout: float | None = None) -> subprocess.CompletedProcess:
    """Run ``ansible-test sanity --python 3.11`` (every default test, or only `tests`) on the built
    collection, laid out under `scratch`, with HOME at `home` (default ``sanity_home(repo)``).

    Returns the finished process: ``returncode`` 0 means no error; with `capture`, ``stdout`` holds
    ansible-test's output and errors. ansible-test is given the collection's directory as its content
    root, so a git checkout around `scratch` changes nothing about which files it tests."""
    ansible_test = Path(sys.executable).with_name("ansible-test")
    if not ansible_test.exists():
        raise RuntimeError(f"ansible-test is not installed beside {sys.executable} (it comes with ansible-core)")
    home = Path(home) if home is not None else sanity_home(repo)
    place = lay_out(scratch, repo)
    install_get_pip(home, repo)
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "ANSIBLE_CONFIG", "ANSIBLE_COLLECTIONS_PATH", "ANSIBLE_COLLECTIONS_PATHS")}
    env.update(HOME=str(home), ANSIBLE_TEST_CONTENT_ROOT=str(place), NO_COLOR="1")
    command = [str(ansible_test), "sanity", "--python", SANITY_PYTHON, "--color", "no"]
    for name in tests:
        command += ["--test", name]
    output = dict(stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) if capture else {}
    return subprocess.run(command, cwd=place, env=env, timeout=timeout, check=False, **output)


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


@task(help={"test": "run only this sanity test (ansible-test sanity --list-tests names them); repeatable",
            "scratch": "directory the collection is laid out in (default: a temporary directory, removed after)"},
      iterable=["test"])
def sanity(c, test=None, scratch=None):
    """Run ansible-test sanity (Python 3.11) on what the built collection ships; fails on any error."""
    import tempfile

    from botops.layout import CHECKOUT
    from botops.report import shown

    if not CHECKOUT:
        raise Exit("sanity: runs in a checkout of botops: it builds the collection from the repository", code=2)
    for name in test or ():
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,63}", name):
            raise Exit(f"sanity: --test {shown(name)} is not a sanity test's name (lower-case letters, digits and "
                       "dashes, e.g. --test=validate-modules; ansible-test sanity --list-tests names them)", code=2)
    if scratch is not None:
        accepted = "a directory outside the checkout it can write to, e.g. --scratch=/tmp/botops-sanity"
        if not str(scratch).strip() or "\0" in str(scratch):
            raise Exit(f"sanity: --scratch {shown(scratch)} is not a directory path ({accepted})", code=2)
        where = Path(scratch).resolve()
        if where == REPO or REPO in where.parents:
            raise Exit(f"sanity: --scratch {shown(scratch)} is inside the checkout, which the collection is "
                       f"built from ({accepted})", code=2)
        try:
            where.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise Exit(f"sanity: --scratch {shown(scratch)} cannot be created: {exc.strerror} ({accepted})",
                       code=2) from None
    try:
        if scratch:
            proc = run_sanity(Path(scratch).resolve(), tests=tuple(test or ()), capture=False)
        else:
            with tempfile.TemporaryDirectory(prefix="botops-sanity-") as tmp:
                proc = run_sanity(Path(tmp), tests=tuple(test or ()), capture=False)
    except RuntimeError as exc:
        raise Exit(f"sanity: {exc}", code=1) from None
    if proc.returncode == 2:  # ansible-test's own refusal of its arguments (an unknown --test), said above
        raise Exit("sanity: ansible-test refused the arguments (see above: --test takes the names it lists)", code=2)
    if proc.returncode != 0:
        where = f" (the collection as tested: {shown(str(scratch), 200)})" if scratch else ""
        raise Exit(f"sanity: ansible-test sanity found errors{where}", code=1)
    print("sanity: ansible-test sanity found no error")


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
