"""`invoke --list` and the tasks that do not touch the sandbox load without the sandbox's packages
(PostgreSQL and Redis clients, supervisord, Alembic, SQLAlchemy): a controller that only operates
production bots does not install them."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

BLOCKED = ("psycopg", "redis", "supervisor", "alembic", "sqlalchemy")


def test_the_tasks_load_without_the_sandboxs_packages():
    code = ("import sys\n"
            f"for name in {BLOCKED!r}:\n"
            "    sys.modules[name] = None  # an import of it fails, as when it is not installed\n"
            "import tasks\n"
            "print(sorted(tasks.ns.task_names))\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "'deploy'" in proc.stdout and "'sandbox.up'" in proc.stdout
