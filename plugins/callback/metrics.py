# Copyright: botops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
name: metrics
type: aggregate
short_description: Prometheus metrics of every botops run, in the node_exporter textfile format
description:
  - At the end of every botops playbook, per bot, the last operation with its result, duration and downtime,
    the kill switch level engaged, the release running, readiness and the newest verified backup; written
    atomically to O(textfile) for node_exporter's textfile collector.
  - Values a run does not see are kept from earlier runs (a state file beside the textfile), so a deploy
    does not forget the backup age that C(botops backups --verify) measured.
  - Rows come from the C(botops_report) stats the playbooks set; a playbook without them adds nothing.
options:
  textfile:
    description:
      - Where the metrics go (a C(.prom) file in node_exporter's textfile directory).
      - Default C(metrics/botops.prom) in C($BOTOPS_ARTIFACTS_DIR), else in the project's C(artifacts/).
    env:
      - name: BOTOPS_METRICS_TEXTFILE
    ini:
      - section: callback_botops_metrics
        key: textfile
    type: path
requirements:
  - enable in ansible.cfg (C(callbacks_enabled = botops.fleet.metrics)); the botops front end does
"""

import json
import os
import tempfile
import time

from ansible.plugins.callback import CallbackBase

from ansible_collections.botops.fleet.plugins.module_utils.botops_metrics import merge, render


def default_textfile():
    root = os.environ.get("BOTOPS_ARTIFACTS_DIR") or os.path.join(os.path.dirname(__file__), "..", "..", "artifacts")
    return os.path.join(root, "metrics", "botops.prom")


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "botops.fleet.metrics"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        self._started = time.time()
        self._operation = None
        self._check = False
        self._extra = {}

    def v2_playbook_on_start(self, playbook):
        self._started = time.time()
        self._operation = os.path.splitext(os.path.basename(playbook._file_name))[0]

    def v2_playbook_on_play_start(self, play):
        manager = play.get_variable_manager()
        self._extra = dict(getattr(manager, "extra_vars", {}) or {})
        self._check = bool(getattr(play, "check_mode", False)) or bool(self._extra.get("ansible_check_mode"))

    def v2_playbook_on_stats(self, stats):
        if self._check or not self._operation:
            return
        report = (stats.custom.get("_run") or {}).get("botops_report") or {}
        if not isinstance(report, dict) or not report:
            return
        try:
            path = self.get_option("textfile")
        except KeyError:
            path = None
        path = os.path.abspath(path or os.environ.get("BOTOPS_METRICS_TEXTFILE") or default_textfile())
        failed = {h for h, n in (stats.failures or {}).items() if n} | {h for h, n in (stats.dark or {}).items() if n}
        now = time.time()
        state_path = path + ".json"
        try:
            with open(state_path) as f:
                state = json.load(f)
        except (OSError, ValueError):
            state = {}
        state = merge(state, self._operation, report, failed, started=self._started, ended=now,
                      kill_state=self._extra.get("botops_kill_state"))
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            for target, text in ((state_path, json.dumps(state, sort_keys=True)), (path, render(state))):
                fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".botops-metrics-")
                with os.fdopen(fd, "w") as f:
                    f.write(text)
                os.chmod(tmp, 0o644)
                os.replace(tmp, target)
        except OSError as exc:
            self._display.warning(f"botops metrics not written to {path}: {exc}")
