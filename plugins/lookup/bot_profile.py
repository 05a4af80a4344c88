# Copyright: botops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
name: bot_profile
short_description: Load and validate the profile of a bot family
description:
  - Reads C(profiles/<family>.yml) (or C($BOTOPS_PROFILES_DIR/<family>.yml)), validates it against
    the botops profile schema and returns it as a dict for the bot modules.
  - A missing or invalid profile fails the task with the file, the key path and what was expected.
options:
  _terms:
    description: Bot family names (the inventory variable C(bot_family)).
    required: true
"""

EXAMPLES = r"""
- name: Read the facts of a bot with its family's profile
  bot_facts:
    profile: "{{ lookup('bot_profile', bot_family) }}"
    bot: "{{ botops_bot }}"
"""

RETURN = r"""
_raw:
  description: One profile dict per family given.
  type: list
  elements: dict
"""

from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase

try:
    from botops.profiles import ProfileError, load
except ImportError as exc:  # botops is installed in the controller's environment
    load = None
    IMPORT_ERROR = exc


class LookupModule(LookupBase):
    _cache = {}

    def run(self, terms, variables=None, **kwargs):
        if load is None:
            raise AnsibleLookupError(f"bot_profile needs the botops package on the controller: {IMPORT_ERROR}")
        profiles = []
        for family in terms:
            if family not in self._cache:
                try:
                    self._cache[family] = load(family)
                except ProfileError as exc:
                    raise AnsibleLookupError(str(exc)) from None
            profiles.append(self._cache[family])
        return profiles
