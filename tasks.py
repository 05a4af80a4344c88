"""botops: operate fleets of trading bots. `invoke --list` shows every task."""

from invoke import Collection

from botops import (
    backup, bench, maintenance, promote, recover, release, releases, remote, restart, safety, sandbox, schedule,
)
from botops.operation import parser_errors_exit_2
from botops.status import status

parser_errors_exit_2()

ns = Collection()
ns.add_task(status)
ns.add_task(release.deploy)
ns.add_task(release.rollback)
ns.add_task(releases.releases)
ns.add_task(restart.restart)
ns.add_task(recover.recover)
ns.add_task(backup.backup)
ns.add_task(backup.restore)
ns.add_task(backup.backups)
ns.add_task(promote.promote)
ns.add_task(safety.kill_switch)
ns.add_task(safety.emergency_stop)
ns.add_task(remote.last_resort_kill)
ns.add_task(remote.logs)
ns.add_task(remote.exec_)
ns.add_task(maintenance.maintenance)
ns.add_task(schedule.schedule)
ns.add_task(bench.bench)
ns.add_collection(sandbox.collection)
