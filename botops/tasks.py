"""The botops tasks: the namespace the ``botops`` command (botops.cli) runs, and ``invoke`` in a checkout
(the repository's tasks.py imports it). ``botops --list`` shows every task."""

from invoke import Collection

from botops import (
    backup, bench, collection, deploy, host_commands, kill_switch, maintenance, promote, recover, releases, restart, schedule,
)
from botops.sandbox import tasks as sandbox
from botops.status import status

ns = Collection()
ns.add_task(status)
ns.add_task(deploy.deploy)
ns.add_task(deploy.rollback)
ns.add_task(releases.releases)
ns.add_task(restart.restart)
ns.add_task(recover.recover)
ns.add_task(backup.backup)
ns.add_task(backup.restore)
ns.add_task(backup.backups)
ns.add_task(promote.promote)
ns.add_task(kill_switch.kill_switch)
ns.add_task(kill_switch.emergency_stop)
ns.add_task(host_commands.last_resort_kill)
ns.add_task(host_commands.logs)
ns.add_task(host_commands.exec_)
ns.add_task(maintenance.maintenance)
ns.add_task(schedule.schedule)
ns.add_task(bench.bench)
ns.add_task(collection.build_collection)
ns.add_task(collection.sanity)
ns.add_collection(sandbox.collection)

# Long flags only: Invoke's automatic short flags gave -l four meanings (--limit, --label, --level,
# --lines), so `invoke backup -l bot01` backed up every bot under the label "bot01".
for _collection in (ns, sandbox.collection):
    for _task in _collection.tasks.values():
        _task.auto_shortflags = False
