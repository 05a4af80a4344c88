# Copyright: botops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""How a bot's inventory variables become the ``bot`` and ``secrets`` options of every bot module.

The one definition: the playbooks build ``botops_bot`` and ``botops_secrets`` from it (group_vars,
through the ``botops.fleet.bot_vars`` lookup) and the fleet kill
switch's action plugin reads each host's variables with it. Stdlib only (controller side).
"""

from __future__ import annotations

import copy

REQUIRED = object()

# option key -> (inventory variable, default); REQUIRED when the inventory must set it. The database
# and its password verify a flatten when the bot's API is dead.
BOT_VARS = {
    "bot_id": ("bot_id", None),  # the modules take the inventory name when none is set
    "family": ("bot_family", REQUIRED),
    "root": ("bot_root", REQUIRED),
    "listen": ("bot_listen", "127.0.0.1"),
    "ports": ("bot_ports", {}),
    "service": ("bot_service", {}),
    "process_match": ("bot_process_match", None),
    "database": ("bot_database", {}),
    "redis_url": ("bot_redis_url", None),
    "paper_only": ("bot_paper_only", None),
}
SECRET_VARS = {
    "api_token": ("bot_api_token", None),
    "username": ("bot_api_username", None),
    "password": ("bot_api_password", None),
    "database_password": ("bot_database_password", None),
}


class MissingVariable(KeyError):
    """A required inventory variable is not set (or set to nothing)."""

    @property
    def variable(self):
        return self.args[0]

    def __str__(self):
        return f"its inventory sets no {self.variable}"


def read_vars(host_vars, wanted):
    """{key: value} of the variables in `wanted` (BOT_VARS or SECRET_VARS) from a host's variables.
    Raises MissingVariable for a required one not set, or set to nothing: `bot_root:` alone in YAML is
    null, and an empty root would be the working directory."""
    out = {}
    for key, (name, default) in wanted.items():
        if name in host_vars and (default is not REQUIRED or host_vars[name] not in (None, "")):
            out[key] = host_vars[name]
        elif default is REQUIRED:
            raise MissingVariable(name)
        else:
            out[key] = copy.deepcopy(default)
    return out


def bot_entry(host_vars, name):
    """The ``bot`` option of a host: its facts, under its inventory name."""
    return dict(read_vars(host_vars, BOT_VARS), name=name)


def in_inventory_words(message):
    """A validation message of the modules' options in the inventory's variable names:
    "argument 'ports' is of type int found in 'bot'." -> "bot_ports is of type int"."""
    for wanted, found_in in ((BOT_VARS, "bot"), (SECRET_VARS, "secrets")):
        for key, (variable, default) in wanted.items():
            message = message.replace(f"argument '{key}' is of type", f"{variable} is of type")
        message = message.replace(f" found in '{found_in}'.", "")
    return message
