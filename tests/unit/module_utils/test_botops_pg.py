"""plugins/module_utils/botops_pg: the psql command lines every caller runs, the password in the environment only."""

from __future__ import annotations

from ansible_collections.botops.fleet.plugins.module_utils import botops_pg
from ansible_collections.botops.fleet.plugins.module_utils.botops_pg import Database

CONN = ["-h", "db.example", "-p", "5433", "-U", "bot", "-d"]


def test_psql_command_lines(monkeypatch):
    monkeypatch.setattr(botops_pg, "pg_bin", lambda name: f"/usr/bin/{name}")
    db = Database({"host": "db.example", "port": 5433, "name": "trading", "user": "bot"}, "pw")
    assert db.psql() == ["/usr/bin/psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", *CONN, "trading"]
    assert db.psql("postgres", rows=True, binary="/opt/psql") == [
        "/opt/psql", "-X", "-q", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1", *CONN, "postgres"]
    assert "pw" not in " ".join(db.psql()) and db.env()["PGPASSWORD"] == "pw"
    assert "PGPASSWORD" not in Database({"name": "trading"}).env()


def test_run_into_a_file_returns_stderr_as_text(tmp_path):
    db = Database({"name": "trading"})
    with open(tmp_path / "out", "wb") as out:
        rc, stdout, err = db.run(["sh", "-c", "printf rows; printf 'bad \\377' >&2; exit 3"], stdout=out)
    assert (rc, stdout, err) == (3, None, "bad \ufffd")
    assert (tmp_path / "out").read_bytes() == b"rows"
