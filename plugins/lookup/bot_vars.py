# Copyright: botops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
name: bot_vars
short_description: A bot's inventory variables as the bot and secrets options of the bot modules
description:
  - Builds the C(bot) option (V(bot)) or the C(secrets) option (V(secrets)) of the bot modules from
    the current host's inventory variables (C(bot_family), C(bot_root), C(bot_ports), ...; C(bot_api_token), ...).
  - The one definition of which variable is which option, and their defaults, is
    C(plugins/module_utils/botops_bot_vars.py); the fleet kill switch's action plugin reads the same.
  - A required variable that is not set (C(bot_family), C(bot_root)) fails with its name.
options:
  _terms:
    description: V(bot) or V(secrets).
    required: true
"""

EXAMPLES = r"""
botops_bot: "{{ lookup('botops.fleet.bot_vars', 'bot') }}"
botops_secrets: "{{ lookup('botops.fleet.bot_vars', 'secrets') }}"
"""

RETURN = r"""
_raw:
  description: The option's value, one dict.
  type: list
  elements: dict
"""

from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase

from ansible_collections.botops.fleet.plugins.module_utils.botops_bot_vars import (
    BOT_VARS, SECRET_VARS, MissingVariable, read_vars)


class _Templated:
    """The host's variables, each templated when read (an inventory value may be a template)."""

    def __init__(self, variables, templar):
        self._variables, self._templar = variables, templar

    def __contains__(self, name):
        return name in self._variables

    def __getitem__(self, name):
        return self._templar.template(self._variables[name])


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        host = _Templated(variables or {}, self._templar)
        out = []
        for term in terms:
            try:
                if term == "bot":
                    out.append(dict(read_vars(host, BOT_VARS), name=host["inventory_hostname"]))
                elif term == "secrets":
                    out.append(read_vars(host, SECRET_VARS))
                else:
                    raise AnsibleLookupError(f"bot_vars: unknown term {term!r}: give 'bot' or 'secrets'")
            except MissingVariable as exc:
                raise AnsibleLookupError(f"bot {variables.get('inventory_hostname')}: {exc}") from None
        return out
