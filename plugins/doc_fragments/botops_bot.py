# Copyright: botops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The options every bot module takes (plugins/module_utils/botops_bot.py, bot_argument_spec()).

A module that builds its argument spec on bot_argument_spec() documents them with
`extends_documentation_fragment: [botops.fleet.botops_bot]` and never by hand (tests/unit/test_module_docs.py
compares this text with the spec).

The fleet kill switch takes `bot` and `secrets` once per bot, as the entries of its `bots` list, and
documents those entries with `extends_documentation_fragment: [botops.fleet.botops_bot.fleet]` (FLEET). A
fragment is literal YAML (ansible-test reads it without running Python), so FLEET repeats the `bot` and
`secrets` of DOCUMENTATION word for word; tests/unit/test_module_docs.py fails when they differ.
"""

from __future__ import annotations


class ModuleDocFragment:

    DOCUMENTATION = r"""
options:
  profile:
    description:
      - The bot family's profile, as C(lookup('botops.fleet.bot_profile', bot_family)) returns it (C(botops_profile));
        see C(docs/profiles.md).
    type: dict
    required: true
  bot:
    description:
      - The bot's inventory facts (C(botops_bot) in C(playbooks/group_vars/all/botops.yml), built from
        its C(bot_*) inventory variables). Each module reads the keys its operation needs.
    type: dict
    required: true
    suboptions:
      name:
        description: The bot's inventory name, which messages, records and locks name it by.
        type: str
        required: true
      bot_id:
        description:
          - The id the bot must report through the profile's C(identity) probe (inventory C(bot_id)).
            Default its inventory name (C(name) beside it).
        type: str
      family:
        description: The bot's family, the name of its profile (inventory C(bot_family)).
        type: str
      root:
        description:
          - The bot's directory on its host, an absolute path (inventory C(bot_root)); the profile's
            paths on the host are relative to it.
        type: path
        required: true
      listen:
        description: The address the bot's API listens on (inventory C(bot_listen)).
        type: str
        default: "127.0.0.1"
      ports:
        description:
          - "Port numbers by the profile's port names, e.g. C({api: 9001}) (inventory C(bot_ports));
            they override the profile's C(http.ports)."
        type: dict
        default: {}
      service:
        description:
          - How the bot runs - C(manager) (V(supervisor), V(systemd) or V(docker_compose)), C(name),
            C(config), C(supervisorctl), C(compose_file) (inventory C(bot_service)); overrides the profile's C(service).
        type: dict
        default: {}
      process_match:
        description:
          - Regular expression matched against full command lines that finds the bot's processes
            (inventory C(bot_process_match)). Default the profile's C(service.process_match).
        type: str
      database:
        description:
          - C(host), C(port), C(name) and C(user) of the bot's PostgreSQL database (inventory
            C(bot_database)); C(name) and C(user) override the profile's C(database).
        type: dict
        default: {}
      redis_url:
        description: A C(redis://) or C(rediss://) URL, for families whose profile reads Redis keys (inventory C(bot_redis_url)).
        type: str
      paper_only:
        description:
          - V(true) - the bot never trades LIVE nor leaves paper trading (inventory C(bot_paper_only));
            the profile's C(mode.paper_only) is enough too.
        type: bool
  secrets:
    description:
      - The bot's secrets (C(botops_secrets), from vaulted inventory variables); every value is kept out
        of results and logs (C(no_log)). Each module uses those its operation needs.
    type: dict
    default: {}
    suboptions:
      api_token:
        description: Bearer token of the bot's API (inventory C(bot_api_token)).
        type: str
      username:
        description: User name for the API's basic or login auth (inventory C(bot_api_username)).
        type: str
      password:
        description: Password for the API's basic or login auth (inventory C(bot_api_password)).
        type: str
      database_password:
        description:
          - Password of the bot's database role (inventory C(bot_database_password)); it reaches C(psql),
            C(pg_dump), C(pg_restore) and alembic through their environment only.
        type: str
"""

    # bot_fleet_kill_switch's `bots` (plugins/module_utils/botops_fleet_kill_switch.py, argument_spec()): the module
    # documents the list, this its entries: bot_argument_spec() with the profile optional, and what the fleet form adds.
    FLEET = r"""
options:
  bots:
    suboptions:
      bot:
        description:
          - The bot's inventory facts (C(botops_bot) in C(playbooks/group_vars/all/botops.yml), built from
            its C(bot_*) inventory variables). Each module reads the keys its operation needs.
        type: dict
        required: true
        suboptions:
          name:
            description: The bot's inventory name, which messages, records and locks name it by.
            type: str
            required: true
          bot_id:
            description:
              - The id the bot must report through the profile's C(identity) probe (inventory C(bot_id)).
                Default its inventory name (C(name) beside it).
            type: str
          family:
            description: The bot's family, the name of its profile (inventory C(bot_family)).
            type: str
          root:
            description:
              - The bot's directory on its host, an absolute path (inventory C(bot_root)); the profile's
                paths on the host are relative to it.
            type: path
            required: true
          listen:
            description: The address the bot's API listens on (inventory C(bot_listen)).
            type: str
            default: "127.0.0.1"
          ports:
            description:
              - "Port numbers by the profile's port names, e.g. C({api: 9001}) (inventory C(bot_ports));
                they override the profile's C(http.ports)."
            type: dict
            default: {}
          service:
            description:
              - How the bot runs - C(manager) (V(supervisor), V(systemd) or V(docker_compose)), C(name),
                C(config), C(supervisorctl), C(compose_file) (inventory C(bot_service)); overrides the profile's C(service).
            type: dict
            default: {}
          process_match:
            description:
              - Regular expression matched against full command lines that finds the bot's processes
                (inventory C(bot_process_match)). Default the profile's C(service.process_match).
            type: str
          database:
            description:
              - C(host), C(port), C(name) and C(user) of the bot's PostgreSQL database (inventory
                C(bot_database)); C(name) and C(user) override the profile's C(database).
            type: dict
            default: {}
          redis_url:
            description: A C(redis://) or C(rediss://) URL, for families whose profile reads Redis keys (inventory C(bot_redis_url)).
            type: str
          paper_only:
            description:
              - V(true) - the bot never trades LIVE nor leaves paper trading (inventory C(bot_paper_only));
                the profile's C(mode.paper_only) is enough too.
            type: bool
      secrets:
        description:
          - The bot's secrets (C(botops_secrets), from vaulted inventory variables); every value is kept out
            of results and logs (C(no_log)). Each module uses those its operation needs.
        type: dict
        default: {}
        suboptions:
          api_token:
            description: Bearer token of the bot's API (inventory C(bot_api_token)).
            type: str
          username:
            description: User name for the API's basic or login auth (inventory C(bot_api_username)).
            type: str
          password:
            description: Password for the API's basic or login auth (inventory C(bot_api_password)).
            type: str
          database_password:
            description:
              - Password of the bot's database role (inventory C(bot_database_password)); it reaches C(psql),
                C(pg_dump), C(pg_restore) and alembic through their environment only.
            type: str
      profile:
        description: The bot family's profile. Default the entry of O(profiles) named by the bot's C(family).
        type: dict
      local:
        description: The bot runs on the controller's host (C(ansible_connection=local)) - host rungs run and its own audit log is written too.
        type: bool
        default: false
      audit_log:
        description: The bot's own audit log, for C(local) bots. Default C(<bot root>/shared/data/botops-kill-switch.log).
        type: path
"""
