"""botops: the front end of the fleet operations (Invoke tasks, ansible-runner, input checks)."""

import os
import warnings

from botops.layout import COLLECTION

# The front end reads inventories with Ansible in its own process (input checks, --limit, Fabric
# targets) before the playbook reads them: both must read them with the project's configuration
# (its inventory plugins, vault identities), wherever the command is run from.
os.environ["ANSIBLE_CONFIG"] = str(COLLECTION / "ansible.cfg")

# cryptography warns that DSA is deprecated whenever Ansible's SSH agent support is imported: a warning
# about a key type botops never uses, printed above every command's output (and the playbooks', through
# PYTHONWARNINGS in botops.runner). Other warnings are left as they are.
DSA_WARNING = "DSA is deprecated"
warnings.filterwarnings("ignore", message=DSA_WARNING)
