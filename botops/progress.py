"""What a running task shows while its playbook runs: bots and their steps, never task lists.

One line per bot per step that ran on it (a module call that returned), named with the bot, its
batch and, for a deploy, the canary; a step skipped on a bot is not shown. A failure is shown once per
bot: a later failure that repeats it (a rescue failing the bot again) is not printed again. When a new
batch starts, a line counts the bots done, failed and waiting.

On a terminal the step lines give way to one status line rewritten in place (batch, counts, the last
step); failures and batch lines are still printed whole. Under cron, AWX or a pipe every line is
plain, one event per line.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from botops.report import one_line



@dataclass
class Progress:
    """A PlaybookRun's progress callback: progress(host, name, kind, res)."""

    total: int | None = None  # bots targeted, for the counts
    first_batch: str | None = None  # what the first batch is called ("canary" for a deploy)
    stream: object = None
    tty: bool | None = None
    play: str | None = None
    batch: int = 0
    seen: dict = field(default_factory=dict)  # bot -> batch it ran in
    failed: dict = field(default_factory=dict)  # bot -> the failure messages shown
    _status: bool = False
    _pending: str | None = None  # the play's name, until its first bot

    def __post_init__(self):
        self.stream = self.stream or sys.stderr
        if self.tty is None:
            self.tty = bool(getattr(self.stream, "isatty", lambda: False)())

    # ------------------------------------------------------------------ callback
    def __call__(self, host, name, kind, res):
        if kind == "playbook_on_play_start":
            self._play_start(name)
        elif kind == "playbook_on_stats":
            self._end((res or {}).get("botops_report"))
        elif host and kind in ("runner_on_ok", "runner_on_failed", "runner_on_unreachable"):
            self._result(host, name, kind, res or {})

    def _where(self, host) -> str:
        batch = self.seen.get(host, self.batch)
        if self.first_batch and batch == 1:
            return f"{host} [{self.first_batch}]"
        return f"{host} [batch {batch}]" if batch > 1 or self.first_batch else host

    def _play_start(self, name):
        if name != self.play:
            # shown with its first bot: a play that has none (the kill switch's play that fails the
            # bots that failed, when none did) says nothing
            self.play, self.batch = name, 1
            self._pending = f"{name}" + (f" (batch 1: {self.first_batch})" if self.first_batch else "")
            return
        self._name_play()  # its first batch had no bot to show: the play is named before its second
        self.batch += 1
        self._line(f"batch {self.batch}: {self._counts()}")

    def _counts(self, final: bool = False) -> str:
        """'done 2, running 1, failed 0, waiting 3 of 6': a bot is running in the current batch, done
        once a later batch starts (or the run ends) without a failure."""
        ok = [h for h in self.seen if h not in self.failed]
        running = 0 if final else sum(1 for h in ok if self.seen[h] == self.batch)
        parts = [f"done {len(ok) - running}"] + ([f"running {running}"] if running else [])
        parts.append(f"failed {len(self.failed)}")
        if self.total:
            parts.append(f"waiting {max(self.total - len(self.seen), 0)} of {self.total}")
        return ", ".join(parts)

    def _name_play(self):
        if self._pending:
            self._line(self._pending)
            self._pending = None

    def _result(self, host, name, kind, res):
        self._name_play()
        self.seen.setdefault(host, self.batch or 1)
        if kind == "runner_on_ok":
            word = "changed" if res.get("changed") else "ok"
            self._step(f"{self._where(host)}: {name}: {word}")
            return
        message = one_line(res.get("msg") or res.get("stderr") or "failed")
        shown = self.failed.setdefault(host, [])
        if any(earlier and earlier in message for earlier in shown):
            return  # the bot failed again for the same reason (a rescue's "Fail the bot")
        shown.append(message)
        word = "FAILED" if kind == "runner_on_failed" else "UNREACHABLE"
        self._line(f"{self._where(host)}: {name}: {word}: {message}")

    def _end(self, report=None):
        """The final count. The run's report (botops_report: one row per bot) counts every bot it
        has a row for: the fleet kill switch drives every bot in one task on one host."""
        for bot, row in (report or {}).items():
            self.seen.setdefault(bot, self.batch or 1)
            if isinstance(row, dict) and row.get("result") == "failed":
                self.failed.setdefault(bot, [one_line(row.get("message")) or "failed"])
        if self.seen:
            self._line(self._counts(final=True))

    # ------------------------------------------------------------------ output
    def _step(self, text):
        if not self.tty:
            print(f"  {text}", file=self.stream, flush=True)
            return
        status = f"[{self._counts()}] {text}"
        width = 120
        self.stream.write("\r\x1b[K" + (status if len(status) <= width else status[:width - 3] + "..."))
        self.stream.flush()
        self._status = True

    def _line(self, text):
        if self._status:
            self.stream.write("\r\x1b[K")
            self._status = False
        print(text, file=self.stream, flush=True)
