"""bot_db_maintenance, bot_logrotate and the bot_notify role through real Ansible on the shared fleet.

Rhythm for each module: check mode (nothing done) -> apply -> apply again (not changed) -> the real
state: pg_stat_user_tables and the indexes' new files for VACUUM / REINDEX CONCURRENTLY on the
running bots, the log rotated while
the bot keeps the same file open. The role posts to a real local HTTP server. The fleet is left as
found: no record file, the bot's log content put back, no rotated copy.
"""

from __future__ import annotations

import gzip
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

try:  # tests/integration as a package or as a plain directory on sys.path
    from .playbook import run_playbook
except ImportError:
    from playbook import run_playbook

ALL = ["bot01", "bot02", "bot03", "bot04", "bot05", "bot06"]
COMMON = """\
profile: "{{ botops_profile }}"
        bot: "{{ botops_bot }}"
        secrets: "{{ botops_secrets }}"\
"""


def play(tasks: str) -> str:
    return f"- hosts: all\n  gather_facts: false\n  tasks:\n{tasks}"


def results(out, task, bots):
    found = {host: res for (host, name), res in out["results"].items() if name == task}
    assert set(found) == set(bots), (sorted(found), out["stdout"][-3000:])
    return found


def ok(out) -> bool:
    return out["status"] == "successful"


def why(out) -> str:
    failed = {host: res.get("msg") for (host, _), res in out["results"].items() if res.get("_event") != "runner_on_ok"}
    return f"failed: {failed}" if failed else out["stdout"][-3000:]


def vacuum_stats(fleet, name) -> dict[str, tuple]:
    rows = fleet.db_query(name, "SELECT relname, last_vacuum, last_analyze FROM pg_stat_user_tables")
    return {r[0]: (r[1], r[2]) for r in rows}


def index_files(fleet, name) -> dict[str, int]:
    rows = fleet.db_query(name, "SELECT indexrelid::regclass::text, pg_relation_filenode(indexrelid) "
                                "FROM pg_index JOIN pg_class c ON c.oid = indrelid WHERE c.relname = 'trades'")
    return dict(rows)


DB_TASK = """\
    - name: Maintain the database
      botops.fleet.bot_db_maintenance:
        {common}
        vacuum_analyze: true
        reindex: true
        concurrently: true
        min_interval: 3600
""".format(common=COMMON)


@pytest.fixture
def no_record(fleet):
    yield
    for name in ALL:
        (Path(fleet.bot(name)["root"]) / "shared" / "data" / "botops-db-maintenance.json").unlink(missing_ok=True)


def test_db_maintenance_check_apply_again(fleet, no_record):
    before_stats = {n: vacuum_stats(fleet, n) for n in ALL}
    before_index = {n: index_files(fleet, n) for n in ALL}

    check = run_playbook(fleet.hosts_file, play(DB_TASK), check=True)
    assert ok(check), why(check)
    for host, res in results(check, "Maintain the database", ALL).items():
        assert res["changed"] and "trades" in res["tables_done"]["reindex"], (host, res)
        # a VACUUM is planned, unless (auto)vacuum ran less than min_interval ago (another test's window)
        assert any(q.startswith("VACUUM (ANALYZE)") for q in res["queries"]) or \
            res["tables_skipped"]["vacuum_analyze"], (host, res)
    for name in ALL:
        assert index_files(fleet, name) == before_index[name], f"check mode reindexed {name}"
        assert vacuum_stats(fleet, name)["trades"][0] == before_stats[name]["trades"][0]

    apply = run_playbook(fleet.hosts_file, play(DB_TASK))
    assert ok(apply), why(apply)
    for host, res in results(apply, "Maintain the database", ALL).items():
        assert res["changed"] and set(res["tables_done"]["reindex"]) >= {"trades", "positions", "orders"}, (host, res)
        assert fleet.bot(host)["database"]["password"] not in json.dumps(res), host
    for name in ALL:
        assert index_files(fleet, name) != before_index[name], f"{name}: trades' indexes were not rebuilt"
        record = json.loads((Path(fleet.bot(name)["root"]) / "shared" / "data" / "botops-db-maintenance.json").read_text())
        assert "trades" in record["reindex"]
        # VACUUM ran now, or autovacuum did less than min_interval ago (then the table was skipped)
        last_vacuum, last_analyze = vacuum_stats(fleet, name)["trades"]
        done = [r for r in apply["results"].values() if r.get("tables_done")]
        assert last_vacuum is not None or any("trades" in r["tables_skipped"]["vacuum_analyze"] for r in done)

    again = run_playbook(fleet.hosts_file, play(DB_TASK))
    assert ok(again), why(again)
    for host, res in results(again, "Maintain the database", ALL).items():
        assert res["changed"] is False and res["queries"] == [], (host, res)


LOG_TASK = """\
    - name: Rotate the logs
      botops.fleet.bot_logrotate:
        {common}
        size: "{{{{ rotate_size }}}}"
        keep: 2
""".format(common=COMMON)


def open_log_fds(pid: int, path: Path) -> list[str]:
    found = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(path)):
            found.append(target)
    return found


@pytest.fixture
def logs_restored(fleet):
    bots = ["bot01", "bot04"]
    yield bots
    for name in bots:
        logs = Path(fleet.bot(name)["root"]) / "shared" / "logs"
        rotated = logs / "bot.log.1.gz"
        if rotated.exists():
            old = gzip.decompress(rotated.read_bytes())
            with open(logs / "bot.log", "r+b") as log:  # the bot appends (O_APPEND): put the old lines first
                new = log.read()
                log.seek(0)
                log.write(old + new)
                log.truncate()
        for copy in logs.glob("*.log.*"):
            copy.unlink()


def test_logrotate_check_apply_again_on_a_running_bot(fleet, logs_restored):
    bots = logs_restored
    limit = ",".join(bots)
    sizes = {n: (Path(fleet.bot(n)["root"]) / "shared" / "logs" / "bot.log").stat().st_size for n in bots}
    assert all(size > 100 for size in sizes.values()), sizes

    check = run_playbook(fleet.hosts_file, play(LOG_TASK), extravars={"rotate_size": "100"}, limit=limit, check=True)
    for host, res in results(check, "Rotate the logs", bots).items():
        assert res["changed"] and res["rotated"][0]["file"].endswith("/shared/logs/bot.log"), (host, res)
    for name in bots:
        logs = Path(fleet.bot(name)["root"]) / "shared" / "logs"
        assert (logs / "bot.log").stat().st_size >= sizes[name] and not (logs / "bot.log.1.gz").exists()

    apply = run_playbook(fleet.hosts_file, play(LOG_TASK), extravars={"rotate_size": "100"}, limit=limit)
    assert ok(apply), why(apply)
    pids = fleet.pids()
    for name in bots:
        logs = Path(fleet.bot(name)["root"]) / "shared" / "logs"
        assert len(gzip.decompress((logs / "bot.log.1.gz").read_bytes())) >= sizes[name]
        assert (logs / "bot.log").stat().st_size < sizes[name]
        fds = open_log_fds(pids[name], logs / "bot.log")
        assert fds and all(not fd.endswith("(deleted)") for fd in fds), f"{name} lost its log file: {fds}"

    again = run_playbook(fleet.hosts_file, play(LOG_TASK), extravars={"rotate_size": "10M"}, limit=limit)
    for host, res in results(again, "Rotate the logs", bots).items():
        assert res["changed"] is False and res["actions"] == [], (host, res)


@pytest.fixture
def webhook():
    received = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            received.append({"path": self.path, "json": json.loads(self.rfile.read(int(self.headers["Content-Length"])))})
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    server.received = received
    yield server
    server.shutdown()
    server.server_close()


NOTIFY = """\
- hosts: all
  gather_facts: false
  tasks:
    - name: Tell the team
      ansible.builtin.include_role:
        name: bot_notify
      vars:
        bot_notify_event: maintenance_started
        bot_notify_message: "maintenance starts on {{ ansible_play_hosts | length }} bots"
        bot_notify_details: {bots: "{{ ansible_play_hosts }}"}
"""


def test_notify_role_posts_once_per_play(fleet, webhook):
    url = f"http://127.0.0.1:{webhook.server_address[1]}/hooks/secret-token"
    out = run_playbook(fleet.hosts_file, NOTIFY, extravars={"botops_notify_webhook_url": url,
                                                           "botops_notify_format": "slack"}, limit="bot01,bot02")
    assert ok(out), why(out)
    assert webhook.received == [{"path": "/hooks/secret-token", "json": {"text": "maintenance starts on 2 bots"}}]
    assert "secret-token" not in out["stdout"]

    quiet = run_playbook(fleet.hosts_file, NOTIFY, limit="bot01,bot02")
    assert ok(quiet), why(quiet)
    assert len(webhook.received) == 1, "no webhook configured: nothing is sent"
