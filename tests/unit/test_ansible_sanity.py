"""ansible-test sanity (Python 3.11, every default test) finds no error in what the built collection ships.

botops.collection.run_sanity lays the built tarball out as ansible_collections/botops/fleet under this
test's temporary directory, with tests/sanity/ignore-*.txt beside it, and runs ansible-test there with
HOME in the checkout's .ansible/ (gitignored): the first run creates ansible-test's virtualenvs, later
runs reuse them (tests/sanity/README.md)."""

from __future__ import annotations

import tarfile
from pathlib import Path

from botops import collection, collection_content

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 1800  # a first run creates ten virtualenvs; a warm one takes about a minute and a half


def test_ansible_test_sanity_finds_no_error(tmp_path):
    proc = collection.run_sanity(tmp_path, repo=REPO, timeout=TIMEOUT)
    errors = [line for line in proc.stdout.splitlines() if line.startswith(("ERROR:", "FATAL:"))]
    assert proc.returncode == 0 and not errors, (
        f"ansible-test sanity exited {proc.returncode} (the collection as tested: {tmp_path}):\n"
        + "\n".join(errors[:80]) + "\n" + proc.stdout[-3000:])


def test_the_tree_checked_is_what_the_tarball_and_the_wheel_ship(tmp_path):
    """The sanity run checks the unpacked galaxy tarball; the wheel ships botops.collection_content's files."""
    with tarfile.open(collection.build(tmp_path, repo=REPO)) as tar:
        shipped = {m.name for m in tar.getmembers() if m.isfile()} - {"MANIFEST.json", "FILES.json"}
    wheel = set(collection_content.files(REPO))
    assert shipped == wheel, f"only in the tarball: {sorted(shipped - wheel)}; only in the wheel: {sorted(wheel - shipped)}"
