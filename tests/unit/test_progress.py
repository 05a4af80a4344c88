"""What an operator sees while a task runs: bots and the steps that ran on them, batches counted,
the canary marked, each failure once and as a sentence; a status line in place on a terminal."""

import io

from botops.progress import Progress
from botops.report import one_line


def run(progress, events):
    for event in events:
        progress(*event)
    return progress.stream.getvalue()


def deploy_events():
    ok, failed = "runner_on_ok", "runner_on_failed"
    return [
        (None, "Deploy release 1.1.0", "playbook_on_play_start", {}),
        ("bot01", "Install the release", ok, {"changed": True}),
        ("bot01", "Move the bot to release 1.1.0 in one window", ok, {"changed": True}),
        (None, "Deploy release 1.1.0", "playbook_on_play_start", {}),
        ("bot02", "Install the release", ok, {"changed": False}),
        ("bot03", "Move the bot to release 1.1.0 in one window", failed,
         {"msg": "Failed to deploy release 1.1.0 on bot 'bot03': start: not ready within 60s"}),
        ("bot03", "Fail the bot", failed,
         {"msg": "deploy of bot03 failed: Failed to deploy release 1.1.0 on bot 'bot03': start: not ready within 60s"}),
        (None, "", "playbook_on_stats", {}),
    ]


def test_plain_lines_name_the_bot_its_batch_and_the_canary():
    out = run(Progress(total=4, first_batch="canary", stream=io.StringIO(), tty=False), deploy_events())
    assert out.splitlines() == [
        "Deploy release 1.1.0 (batch 1: canary)",
        "  bot01 [canary]: Install the release: changed",
        "  bot01 [canary]: Move the bot to release 1.1.0 in one window: changed",
        "batch 2: done 1, failed 0, waiting 3 of 4",
        "  bot02 [batch 2]: Install the release: ok",
        "bot03 [batch 2]: Move the bot to release 1.1.0 in one window: FAILED: "
        "Failed to deploy release 1.1.0 on bot 'bot03': start: not ready within 60s",
        "done 2, failed 1, waiting 1 of 4",
    ]


def test_a_terminal_gets_one_status_line_in_place_and_failures_whole():
    out = run(Progress(total=4, first_batch="canary", stream=io.StringIO(), tty=True), deploy_events())
    assert "\r\x1b[K[done 0, running 1, failed 0, waiting 3 of 4] bot01 [canary]: Install the release: changed" in out
    assert "  bot01 [canary]" not in out  # no step line of its own on a terminal
    assert out.count("FAILED") == 1
    assert out.endswith("done 2, failed 1, waiting 1 of 4\n")


def test_a_single_batch_names_no_batch_and_a_failure_is_a_sentence():
    progress = Progress(total=1, stream=io.StringIO(), tty=False)
    out = run(progress, [(None, "Restart (graceful)", "playbook_on_play_start", {}),
                         ("bot01", "Check the bot", "runner_on_failed",
                          {"msg": {"ready": False, "why": ["disk full", "no answer"]}})])
    assert out.splitlines()[-1] == "bot01: Check the bot: FAILED: ready: False; why: disk full; no answer"
    assert one_line("a\n  b") == "a b" and one_line(None) == ""


def test_the_report_counts_every_bot_of_a_fleet_task():
    """The fleet kill switch is one task on one host for every bot: its bots are counted from the
    run's report (a halt of 1000 bots ended 'done 1, waiting 999 of 1000'); the play that fails the
    bots that failed is named only when it has one."""
    report = {"b1": {"result": "changed"}, "b2": {"result": "failed", "message": "no answer"},
              "b3": {"result": "ok"}}
    events = [(None, "Drive the kill switch", "playbook_on_play_start", {}),
              ("b1", "Drive the kill switch of every bot", "runner_on_ok", {"changed": True}),
              (None, "Fail the bots whose kill switch failed", "playbook_on_play_start", {}),
              ("b2", "Fail the bot", "runner_on_failed", {"msg": "no answer"}),
              (None, "", "playbook_on_stats", {"botops_report": report})]
    out = run(Progress(total=4, stream=io.StringIO(), tty=False), events)
    assert out.splitlines() == ["Drive the kill switch", "  b1: Drive the kill switch of every bot: changed",
                                "Fail the bots whose kill switch failed", "b2: Fail the bot: FAILED: no answer",
                                "done 2, failed 1, waiting 1 of 4"]
    quiet = [e for e in events if e[0] != "b2"]
    quiet[-1] = (None, "", "playbook_on_stats", {"botops_report": dict(report, b2={"result": "ok"})})
    out = run(Progress(total=3, stream=io.StringIO(), tty=False), quiet)
    assert "Fail the bots" not in out and out.splitlines()[-1] == "done 3, failed 0, waiting 0 of 3"
