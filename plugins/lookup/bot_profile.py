# Copyright: botops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
name: bot_profile
short_description: Load and validate the profile of a bot family
description:
  - Finds C(<family>.yml) on the profiles search path, validates it against the botops profile
    schema and returns it as a dict for the bot modules.
  - The search path, first match wins - a family in a user directory shadows the built-in profile
    of the same name - is C($BOTOPS_PROFILES_DIR) (one directory), then the directories of
    C($BOTOPS_PROFILES_PATH) (separated by C(:)), then the built-in C(profiles/) of botops. The
    Invoke front end passes the same path to the playbooks it runs.
  - A missing or invalid profile fails the task with the file, the key path and what was expected.
options:
  _terms:
    description: Bot family names (the inventory variable C(bot_family)).
    required: true
"""

EXAMPLES = r"""
- name: Read the facts of a bot with its family's profile
  botops.fleet.bot_facts:
    profile: "{{ lookup('botops.fleet.bot_profile', bot_family) }}"
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
    from botops.profiles import ProfileError, load, search_path
except ImportError as exc:  # botops is installed in the controller's environment
    IMPORT_ERROR = exc
else:
    IMPORT_ERROR = None


class LookupModule(LookupBase):
    _cache = {}

    def run(self, terms, variables=None, **kwargs):
        if IMPORT_ERROR is not None:
            raise AnsibleLookupError(f"bot_profile needs the botops package on the controller: {IMPORT_ERROR}")
        profiles = []
        where = tuple(str(d) for d in search_path())  # the same family may be another file on another path
        for family in terms:
            key = (where, family)
            if key not in self._cache:
                try:
                    self._cache[key] = load(family)
                except ProfileError as exc:
                    raise AnsibleLookupError(str(exc)) from None
            profiles.append(self._cache[key])
        return profiles
