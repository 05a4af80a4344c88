"""botops's tasks for ``invoke`` in a checkout: the same namespace as the ``botops`` command.

``botops`` (botops.cli, installed by pip with the project) is the front door: it is Invoke's own
``Program`` with this namespace, and it refuses bad flags with exit 2 and the flag it meant. Here
Invoke's stock parser refuses them with its own message and exit 1.
"""

from botops.tasks import ns  # noqa: F401
