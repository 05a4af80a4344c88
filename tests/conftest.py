"""Make the project's modules and module_utils importable the way Ansible loads them."""

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
for path in (REPO, REPO / "library"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

# module_utils/<x>.py is imported by modules as ansible.module_utils.<x>
import ansible.module_utils  # noqa: E402

if str(REPO / "module_utils") not in ansible.module_utils.__path__:
    ansible.module_utils.__path__.append(str(REPO / "module_utils"))
