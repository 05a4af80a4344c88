"""botops: operate fleets of trading bots. `invoke --list` shows every task."""

from invoke import Collection

from botops import sandbox
from botops.status import status

ns = Collection()
ns.add_task(status)
ns.add_collection(sandbox.collection)
