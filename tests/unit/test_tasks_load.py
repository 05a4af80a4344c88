"""`botops --list` and the tasks that do not touch the sandbox load without the sandbox's packages
(PostgreSQL and Redis clients, supervisord, Alembic, SQLAlchemy): a controller that only operates
production bots does not install them."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

BLOCKED = ("psycopg", "redis", "supervisor", "alembic", "sqlalchemy")


def botops_without_the_sandboxs_packages(*argv: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    code = ("import sys\n"
            f"for name in {BLOCKED!r}:\n"
            "    sys.modules[name] = None  # an import of it fails, as when it is not installed\n"
            "from botops.cli import main\n"
            f"main(['botops', *{list(argv)!r}])\n")
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_the_tasks_load_without_the_sandboxs_packages(tmp_path):
    proc = botops_without_the_sandboxs_packages("--list", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "deploy" in proc.stdout and "sandbox.up" in proc.stdout


def test_the_sandbox_says_what_to_install(tmp_path):
    proc = botops_without_the_sandboxs_packages("sandbox.status", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "pip install 'botops[sandbox]'" in proc.stderr and "psycopg" in proc.stderr


def test_invoke_in_a_checkout_loads_the_same_tasks():
    code = "import tasks\nprint(sorted(tasks.ns.task_names))\n"
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "'deploy'" in proc.stdout and "'sandbox.up'" in proc.stdout
