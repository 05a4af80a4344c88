"""Make the project importable the way Ansible loads it: the checkout as the botops.fleet collection.

The checkout is linked as .ansible/collections/ansible_collections/botops/fleet (botops.collection),
and that directory goes first on the import path, so the modules and module_utils under test are this
checkout's, whichever virtualenv runs the tests."""

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from botops import collection  # noqa: E402

_collections = str(collection.link(REPO))
if _collections in sys.path:
    sys.path.remove(_collections)
sys.path.insert(0, _collections)
