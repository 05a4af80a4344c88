# Copyright: botops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
name: maintenance_window
short_description: Tell whether a maintenance window is open for a bot family, and what it does
description:
  - Loads the maintenance windows (C(playbooks/vars/maintenance_windows.yml), or
    C($BOTOPS_WINDOWS_FILE)), validates them and returns, for the window and family given, whether
    the window is open at O(now), when the open occurrence started and closes, when it opens next,
    and its task list.
  - An unknown window name or an invalid windows file fails the task with what was expected.
options:
  _terms:
    description: Window names (daily, weekly, monthly...).
    required: true
  family:
    description: The bot family (C(bot_family)); families without their own schedule use the window's.
    type: str
  now:
    description: Evaluate at this ISO 8601 instant (naive means UTC) instead of the clock.
    type: str
"""

EXAMPLES = r"""
- name: Decide whether this bot's maintenance window is open
  ansible.builtin.set_fact:
    window: "{{ lookup('botops.fleet.maintenance_window', 'weekly', family=bot_family) }}"
"""

RETURN = r"""
_raw:
  description: One plan per window name, with C(open), C(opened_at), C(closes_at), C(next_open), C(tasks), C(schedule).
  type: list
  elements: dict
"""


from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase

try:
    from botops import maintenance_windows, profiles
except ImportError as exc:  # botops is installed in the controller's environment
    IMPORT_ERROR = exc
else:
    IMPORT_ERROR = None


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        if IMPORT_ERROR is not None:
            raise AnsibleLookupError(f"maintenance_window needs the botops package on the controller: {IMPORT_ERROR}")
        self.set_options(var_options=variables, direct=kwargs)
        try:
            now = maintenance_windows.parse_now(self.get_option("now"))
        except ValueError:
            raise AnsibleLookupError(f"maintenance_window: now={self.get_option('now')!r} is not an ISO 8601 instant") from None
        try:
            loaded = maintenance_windows.load(families=profiles.available())
            return [maintenance_windows.plan(maintenance_windows.get(loaded, name), now, self.get_option("family")) for name in terms]
        except maintenance_windows.WindowError as exc:
            raise AnsibleLookupError(str(exc)) from None
