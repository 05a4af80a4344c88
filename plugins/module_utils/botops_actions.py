# Copyright: botops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The actions of a bot's profile (BotActions, a part of botops_bot.Bot): an HTTP request, a merge
into a Redis key, a key of a JSON config file (set_json_key), the service manager, a signal, a
program on the bot's host, and `each`: actions once for each item of a list. Stdlib only.
"""

from __future__ import annotations

import copy
import json
import os
import time

from ansible_collections.botops.fleet.plugins.module_utils.botops_errors import BotError, CredentialsError
from ansible_collections.botops.fleet.plugins.module_utils.botops_files import write_json
from ansible_collections.botops.fleet.plugins.module_utils.botops_host import program_failed
from ansible_collections.botops.fleet.plugins.module_utils.botops_values import (
    PlaceholderError, describe_action, describe_list, describe_request, describe_where, item_matches, json_path,
    map_value, ok_codes, shown_value, substitute)


class BotActions:
    """The actions of a Bot. It uses the other parts (request, redis_get_json, redis_set_json,
    service, send_signal, command_result) and what Bot.__init__ sets (root, last_action_at)."""

    def do(self, action, variables=None):
        """Carry out one action of the profile; returns a short description of what was done."""
        try:
            return self._do(action, variables or {})
        finally:
            self.last_action_at = time.monotonic()

    def _do(self, action, variables):
        if "map" in action:
            # the values this action sends, as the bot spells them ({mode}: DRY -> dry_run)
            variables = dict(variables)
            for name, mapping in action["map"].items():
                if name in variables:
                    what = f"{{{name}}} of action {describe_action(action)}"
                    variables[name] = map_value(variables[name], mapping, what)
        if "each" in action:
            return self._each(action, variables)
        if "http" in action:
            req = action["http"]
            status, doc = self.request(req, variables)
            if status >= 400:
                raise BotError(f"{describe_request(req)} answered HTTP {status}: {doc}")
            return f"{describe_request(req)} -> {status}"
        if "redis_merge" in action:
            spec = action["redis_merge"]
            current = self.redis_get_json(spec["key"]) or {}
            if not isinstance(current, dict):
                raise BotError(f"Redis key {spec['key']} does not hold a JSON object")
            current.update(substitute(copy.deepcopy(spec["set"]), variables))
            self.redis_set_json(spec["key"], current)
            return f"SET {spec['key']}"
        if "config_file" in action:
            spec = action["config_file"]
            path = os.path.join(self.root, spec["path"])
            set_json_key(path, spec["key"], substitute(spec["value"], variables))
            return f"set {spec['key']} in {spec['path']}"
        if "service" in action:
            self.service(action["service"])
            return f"service {action['service']}"
        if "signal" in action:
            pids = self.send_signal(action["signal"])
            return f"SIG{action['signal']} to {pids or 'no process'}"
        if "command" in action:
            command = action["command"]
            code, out, err = self.command_result(command, variables, memoize=False)
            if code not in ok_codes(command):
                raise BotError(program_failed(command["argv"][0], code, err))
            return f"ran {command['argv'][0]} -> {code}"
        raise BotError(f"unknown action {sorted(action)}")

    def items(self, spec, variables=None):
        """The list an `each` reads (its http or redis source and json path): (items, source as words)."""
        source = describe_list(spec)
        if "http" in spec:
            status, doc = self.request(spec["http"], variables)
            if status >= 400:
                raise BotError(f"{describe_request(spec['http'])} answered HTTP {status}")
        else:
            doc = self.redis_get_json(spec["redis"]["key"])
        try:
            value = json_path(doc, spec.get("json", ""))
        except KeyError as exc:
            raise BotError(f"{source}: {exc}") from None
        if not isinstance(value, list):
            raise BotError(f"{source} is not a list: {shown_value(value)}")
        return value, source

    def _each(self, action, variables):
        """The actions of `do`, once for each item of the list that passes `where`, {item...} set to
        it. An item whose actions fail does not keep the others from theirs; the error names it."""
        spec = action["each"]
        items, source = self.items(spec, variables)
        chosen = [(i, item) for i, item in enumerate(items) if "where" not in spec or item_matches(spec["where"], item)]
        where = f" {describe_where(spec['where'])}" if "where" in spec else ""
        if not chosen:
            return f"no item of {source}{where}"
        failed = []
        for index, item in chosen:
            scoped = dict(variables, item=item)
            for sub in action["do"]:
                try:
                    self._do(sub, scoped)
                except PlaceholderError as exc:
                    failed.append(f"item {index} {shown_value(item)} has no '{exc.field}' for {{{exc.name}}} "
                                  f"of {describe_action(sub)}")
                    break
                except CredentialsError:
                    raise  # no item can be acted on without them
                except BotError as exc:
                    failed.append(f"item {index} {shown_value(item)}: {describe_action(sub)}: {exc}")
                    break
        done = len(chosen) - len(failed)
        what = "; ".join(describe_action(a) for a in action["do"])
        if failed:
            raise BotError(f"{what} done for {done} of {len(chosen)} items of {source}{where}; "
                           + "; ".join(failed))
        return f"{what} for {done} item{'s' if done != 1 else ''} of {source}{where}"


def set_json_key(path, key, value):
    """Set one key of a JSON file atomically, keeping its mode; returns True when it changed."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError) as exc:
        raise BotError(f"cannot read JSON config {path}: {exc}") from None
    if data.get(key) == value:
        return False
    data[key] = value
    write_json(path, data, mode=os.stat(path).st_mode & 0o7777, sort_keys=False)
    return True
