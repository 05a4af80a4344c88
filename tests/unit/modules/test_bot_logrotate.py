"""bot_logrotate: copytruncate into .1.gz, shifting and keeping N, threshold, idempotency, check mode."""

from __future__ import annotations

import gzip
import os

import pytest

from ansible_collections.botops.fleet.plugins.modules import bot_logrotate

from .utils import run_module


@pytest.fixture
def logs(tmp_path):
    path = tmp_path / "bot01" / "shared" / "logs"
    path.mkdir(parents=True)
    return path


def args(logs, **kw):
    root = logs.parent.parent
    return dict(dict(profile={"family": "testfam"}, bot={"name": "bot01", "root": str(root)}, size="1K", keep=3), **kw)


def test_rotates_big_logs_into_gz_and_empties_them_in_place(logs):
    log = logs / "bot.log"
    log.write_text("line\n" * 400)  # 2000 bytes
    small = logs / "access.log"
    small.write_text("tiny\n")
    os.chmod(log, 0o640)
    with open(log, "a") as writer:  # the bot keeps its file open
        inode = os.stat(log).st_ino
        result = run_module(bot_logrotate.main, args(logs))
        writer.write("after\n")
    assert result["changed"] and [r["file"] for r in result["rotated"]] == [str(log)]
    assert os.stat(log).st_ino == inode, "copytruncate: the bot's file stays the same file"
    assert log.read_text() == "after\n"
    rotated = logs / "bot.log.1.gz"
    assert gzip.decompress(rotated.read_bytes()).decode() == "line\n" * 400
    assert rotated.stat().st_mode & 0o777 == 0o640
    assert small.read_text() == "tiny\n" and not (logs / "access.log.1.gz").exists()


def test_second_run_is_unchanged(logs):
    (logs / "bot.log").write_text("x" * 2000)
    assert run_module(bot_logrotate.main, args(logs))["changed"]
    again = run_module(bot_logrotate.main, args(logs))
    assert again["changed"] is False and again["actions"] == []


def test_shifts_copies_and_keeps_n(logs):
    log = logs / "bot.log"
    for generation in range(5):
        log.write_text(str(generation) * 2000)
        run_module(bot_logrotate.main, args(logs))
    kept = sorted(p.name for p in logs.iterdir() if p.name.startswith("bot.log."))
    assert kept == ["bot.log.1.gz", "bot.log.2.gz", "bot.log.3.gz"]
    assert gzip.decompress((logs / "bot.log.1.gz").read_bytes()) == b"4" * 2000
    assert gzip.decompress((logs / "bot.log.3.gz").read_bytes()) == b"2" * 2000


def test_copies_beyond_keep_are_removed_even_without_rotation(logs):
    (logs / "bot.log").write_text("small")
    for index in range(1, 6):
        (logs / f"bot.log.{index}.gz").write_bytes(gzip.compress(b"old"))
    result = run_module(bot_logrotate.main, args(logs))
    assert result["changed"] and result["rotated"] == []
    assert sorted(os.path.basename(p) for p in result["removed"]) == ["bot.log.4.gz", "bot.log.5.gz"]
    assert not (logs / "bot.log.4.gz").exists() and (logs / "bot.log.3.gz").exists()


def test_check_mode_changes_nothing(logs):
    (logs / "bot.log").write_text("y" * 2000)
    result = run_module(bot_logrotate.main, args(logs), check_mode=True)
    assert result["changed"] and result["rotated"][0]["size"] == 2000
    assert (logs / "bot.log").stat().st_size == 2000 and not (logs / "bot.log.1.gz").exists()


def test_uncompressed_copies(logs):
    (logs / "bot.log").write_text("z" * 2000)
    run_module(bot_logrotate.main, args(logs, compress=False))
    assert (logs / "bot.log.1").read_text() == "z" * 2000


def test_errors_name_the_bot(logs, tmp_path):
    missing = run_module(bot_logrotate.main, args(logs, path=str(tmp_path / "nowhere")))
    assert missing["failed"] and missing["msg"].startswith("Failed to rotate the logs of bot 'bot01': no log directory")
    bad_size = run_module(bot_logrotate.main, args(logs, size="lots"))
    assert bad_size["failed"] and "size 'lots'" in bad_size["msg"]
