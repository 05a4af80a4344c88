# Copyright: botops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""How one bot's change window (botops_deploy.Deploy) fails: a step and its cause (Failed), an
operator's kill switch level that stops the window where it is (Yielded), a step after the window
while the new release runs and is ready (AfterWindow, nothing is reverted), and the failure
bot_deploy reports with the result inside (DeployFailed).
"""

from __future__ import annotations


class Failed(Exception):
    """A step failed; `step` names it, the message is the cause."""

    def __init__(self, step, cause):
        super().__init__(str(cause))
        self.step = step


class Yielded(Failed):
    """An operator's kill switch level is engaged: the window stops where it is."""

    def __init__(self, step, engaged):
        super().__init__(step, engaged)
        self.record = engaged.record


class AfterWindow(Failed):
    """A step after the window failed: the new release runs and is ready, nothing is reverted."""


class DeployFailed(Exception):
    def __init__(self, msg, result):
        super().__init__(msg)
        self.result = result
