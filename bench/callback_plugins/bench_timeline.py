# Copyright: botops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmarks only: when $BENCH_TIMELINE names a file, write the wall-clock time of the playbook's
start, of every task's start and of the end into it (JSON), with the fleet kill switch's summary and,
per task, when each host's worker started and when its result came back (``hosts``).
Enabled by bench/bench_kill_switch.py through ANSIBLE_CALLBACK_PLUGINS / ANSIBLE_CALLBACKS_ENABLED."""

from __future__ import annotations

import json
import os
import time

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = r"""
name: bench_timeline
type: aggregate
short_description: Wall-clock timeline of a playbook run, for benchmarks
description:
  - Writes the start of the playbook, of every task and the end of the run to the file named by
    the environment variable BENCH_TIMELINE.
requirements:
  - BENCH_TIMELINE set
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "bench_timeline"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        self.loaded = time.time()
        self.events = []
        self.fleet = None
        self.hosts = {}  # task name -> host -> [started, ended]

    def v2_playbook_on_start(self, playbook):
        self.events.append(["playbook start", time.time()])

    def v2_playbook_on_task_start(self, task, is_conditional):
        self.events.append([f"task: {task.get_name()}", time.time()])

    def v2_runner_on_start(self, host, task):
        self.hosts.setdefault(task.get_name(), {})[host.get_name()] = [time.time(), None]

    def _ended(self, result):
        seen = self.hosts.get(result._task.get_name(), {}).get(result._host.get_name())
        if seen is not None:
            seen[1] = time.time()

    def v2_runner_on_skipped(self, result):
        self._ended(result)

    def v2_runner_on_unreachable(self, result):
        self._ended(result)

    def v2_runner_on_ok(self, result):
        self._ended(result)
        summary = result._result.get("summary") if isinstance(result._result, dict) else None
        if isinstance(summary, dict) and "duration" in summary and self.fleet is None:
            self.fleet = {k: summary.get(k) for k in ("total", "halted", "released", "changed", "failed", "duration")}

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self.v2_runner_on_ok(result)

    def v2_playbook_on_stats(self, stats):
        self.events.append(["end of the play", time.time()])
        path = os.environ.get("BENCH_TIMELINE")
        if path:
            with open(path, "w") as f:
                json.dump({"callback_loaded": self.loaded, "events": self.events, "fleet": self.fleet,
                           "hosts": self.hosts}, f)
