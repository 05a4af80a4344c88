"""The wheel carries the botops.fleet collection as package data.

pyproject.toml declares the project; this adds one build step. The wheel installs the ``botops``
package (the ``botops`` command and the sandbox) and, beside it in site-packages,
``ansible_collections/botops/fleet``: the collection's files (botops.collection_content, the same
files ``ansible-galaxy collection build`` packs) plus ansible.cfg and galaxy.yml, which the front end
reads. ansible-core finds a collection installed on its Python path there, so an installed botops
runs its playbooks, roles, modules and profiles from the package, with an inventory anywhere.
An editable install (a checkout's ``pip install -e .``) copies nothing: the checkout is linked as the
collection instead (``python -m botops.collection``).
"""

import shutil
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
PLACE = Path("ansible_collections", "botops", "fleet")
ALSO = ["ansible.cfg", "galaxy.yml"]


class build_py_with_collection(build_py):  # noqa: N801 - setuptools names commands so
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        sys.path.insert(0, str(ROOT))
        from botops import collection_content

        for rel in collection_content.files(ROOT) + ALSO:
            target = Path(self.build_lib) / PLACE / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, target)


setup(cmdclass={"build_py": build_py_with_collection})
