# Copyright: botops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The values of a bot's profile and of what the bot answers: dotted JSON paths into an answer,
'{name}' placeholders in what is sent, value maps (the bot's own spelling of a mode), numbers and
timestamps, the comparisons of a check and of an `each`'s `where`, and a probe, check or action as
the messages name it (describe_*).

Used by the Bot (plugins/module_utils/botops_bot.py and its parts) and by the modules whose messages name a
bot's actions. Stdlib only.
"""

from __future__ import annotations

import json
import math
import re
import time
import urllib.parse
from datetime import datetime, timezone

from ansible_collections.botops.fleet.plugins.module_utils.botops_errors import BotError

# the comparisons a check may make of the value it reads (all given must hold)
COMPARISONS = ("equals", "not_equals", "one_of", "less_than", "greater_than", "at_most", "at_least", "age_below")
# '{mode}', '{reason}', and dotted into a value: '{item.trade_id}', '{item.pair.base}'
PLACEHOLDER = re.compile(r"\{(\w+(?:\.\w+)*)\}")


def json_path(document, path):
    """Follow a dotted path ('a.b.0.c') into a JSON document; '' is the whole document.

    Raises KeyError naming the part that is missing."""
    if path in (None, ""):
        return document
    node = document
    for part in str(path).split("."):
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            raise KeyError(f"no '{part}' in the answer (path '{path}')")
    return node


class PlaceholderError(BotError):
    """A placeholder names a field its value does not have ({item.trade_id} of an item without trade_id)."""

    def __init__(self, name, field, value):
        self.name, self.field, self.value = name, field, value
        super().__init__(f"{{{name}}}: no '{field}' in {shown_value(value)}")


def placeholder_value(name, variables):
    """(found, value) of the placeholder `name`: a variable ('mode'), or a dotted path into one
    ('item.trade_id'). Not found: no such variable. PlaceholderError: the variable has no such field."""
    head, dot, field = name.partition(".")
    if head not in variables:
        return False, None
    if not field:
        return True, variables[head]
    try:
        return True, json_path(variables[head], field)
    except KeyError:
        raise PlaceholderError(name, field, variables[head]) from None


def substitute(value, variables, quote=False):
    """Replace '{name}' and '{name.dotted.path}' placeholders in a request body, a request path
    (`quote`: each value URL-quoted) or an action value. Unknown names are left as they are.

    A string that is exactly one placeholder takes the value's own type (true stays a bool)."""
    if isinstance(value, str):
        whole = PLACEHOLDER.fullmatch(value)
        if whole and not quote:
            found, got = placeholder_value(whole.group(1), variables)
            if found:
                return got

        def text(match):
            found, got = placeholder_value(match.group(1), variables)
            if not found:
                return match.group(0)
            return urllib.parse.quote(str(got), safe="") if quote else str(got)
        return PLACEHOLDER.sub(text, value)
    if isinstance(value, dict):
        return {k: substitute(v, variables, quote) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, variables, quote) for v in value]
    return value


def describe_request(req):
    return f"{req.get('method', 'GET')} {req['path']}"


def describe_where(where):
    """A condition on the items of a list as words: "where 'has_open_orders' equal to true"."""
    musts = [expectation(key, where[key]) for key in COMPARISONS if key in where]
    return f"where '{where.get('json', '')}' " + (" and ".join(musts) if musts else "present")


def describe_source(spec):
    """Where a probe, a check or an `each` reads, as the messages name it: the request, the Redis
    key, 'command bin/botctl' (its program only: its other arguments may hold values) or 'file status.json'."""
    if "http" in spec:
        return describe_request(spec["http"])
    if "redis" in spec:
        return f"Redis key {spec['redis']['key']}"
    if "command" in spec:
        return f"command {spec['command']['argv'][0]}"
    return f"file {spec['file']['path']}"


def describe_list(spec):
    """The list an `each` reads: its source and json path."""
    return describe_source(spec) + (f" '{spec['json']}'" if spec.get("json") else "")


def describe_action(action):
    """An action of the profile as the messages name it."""
    if "each" in action:
        spec = action["each"]
        where = f" {describe_where(spec['where'])}" if "where" in spec else ""
        return (f"for each item of {describe_list(spec)}{where}: "
                + "; ".join(describe_action(a) for a in action.get("do") or []))
    if "http" in action:
        return describe_request(action["http"])
    if "redis_merge" in action:
        return f"SET {action['redis_merge']['key']}"
    if "config_file" in action:
        return f"set {action['config_file']['key']} in {action['config_file']['path']}"
    if "service" in action:
        return f"service {action['service']}"
    if "signal" in action:
        return f"SIG{action['signal']}"
    if "command" in action:
        return f"run {action['command']['argv'][0]}"
    return str(sorted(action))


def shown_value(value, limit=80):
    """A value as a message shows it: JSON (true, "dry_run", null), cut short."""
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def describe_answer(observed, limit=240):
    """A bot's last answer as a message quotes it, in JSON, never a Python repr: an HTTP answer as
    'HTTP 503 (expected HTTP 200): {"status": "unhealthy", ...}', cut short."""
    items = observed if isinstance(observed, list) else [observed]
    parts = []
    for item in items:
        if isinstance(item, dict) and "status" in item and set(item) <= {"status", "body", "expected", "error"}:
            text = f"HTTP {item['status']}" + (f" (expected {item['expected']})" if item.get("expected") else "")
            if item.get("error"):
                text += f": {item['error']}"
            elif item.get("body") is not None:
                text += f": {shown_value(item['body'], limit)}"
            parts.append(text)
        else:
            parts.append(shown_value(item, limit))
    return "; ".join(parts) or "none"


def map_key(value):
    """The key a value map finds a value under: YAML's `true:` and JSON's `"true":` are one key
    (a profile travels to the bot's host as JSON, where every key is a string)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return json.dumps(value)
    return str(value)


def map_value(value, mapping, what):
    """The value a profile's map gives `value`; BotError naming the value and the map's keys when
    the map has no entry for it (an unmapped value is never passed through)."""
    table = {map_key(k): v for k, v in mapping.items()}
    if not isinstance(value, (dict, list)):
        key = map_key(value)
        if key in table:
            return table[key]
    raise BotError(f"{what}: {shown_value(value)} is not in the profile's map "
                   f"(expected one of: {', '.join(table)})")


def _same(a, b):
    """Equality as a check means it: true is not 1, false is not 0."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    return a == b


def as_number(value):
    """A number (int, float or a numeric string such as "12.5"), else None; true / false are not numbers."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def as_epoch(value):
    """A timestamp as epoch seconds: an ISO-8601 string ('2024-05-01T12:00:00Z', '+00:00', a space
    for the T; without an offset it is UTC), or epoch seconds, milliseconds, microseconds or
    nanoseconds (a number or a numeric string, told apart by size: epoch seconds stay below 1e11
    until the year 5138). None when it is not one."""
    number = as_number(value)
    if number is not None:
        magnitude = abs(number)
        if magnitude >= 1e17:
            return number / 1e9
        if magnitude >= 1e14:
            return number / 1e6
        if magnitude >= 1e11:
            return number / 1e3
        return float(number)
    if not isinstance(value, str) or not value.strip():
        return None
    text = re.sub(r"[zZ]$", "+00:00", value.strip())
    text = re.sub(r"([+-]\d{2})(\d{2})$", r"\1:\2", text)  # +0000 -> +00:00
    text = re.sub(r"\.(\d+)", lambda m: "." + (m.group(1) + "000000")[:6], text)  # fractions: 6 digits
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def expectation(key, operand):
    """One comparison of a check as words: what the value must be."""
    if key == "equals":
        return f"equal to {shown_value(operand)}"
    if key == "not_equals":
        return f"not equal to {shown_value(operand)}"
    if key == "one_of":
        return f"one of {shown_value(operand)}"
    if key == "age_below":
        return f"a timestamp less than {operand:g}s old"
    return f"{key.replace('_', ' ')} {operand:g}"


def compare(spec, value, now=None):
    """The comparisons of a check against the value it read: (ok, what was expected when not ok,
    extra observations: a timestamp's age in seconds)."""
    failed, extra = [], {}
    for key in COMPARISONS:
        if key not in spec:
            continue
        operand, why = spec[key], ""
        if key == "equals":
            holds = _same(value, operand)
        elif key == "not_equals":
            holds = not _same(value, operand)
        elif key == "one_of":
            holds = any(_same(value, choice) for choice in operand)
        elif key == "age_below":
            moment = as_epoch(value)
            if moment is None:
                holds, why = False, " (not a timestamp: ISO-8601, or epoch seconds / milliseconds)"
            else:
                extra["age"] = round((time.time() if now is None else now) - moment, 3)
                holds = extra["age"] < operand
        else:
            number = as_number(value)
            if number is None:
                holds, why = False, " (not a number)"
            else:
                holds = {"less_than": number < operand, "greater_than": number > operand,
                         "at_most": number <= operand, "at_least": number >= operand}[key]
        if not holds:
            failed.append(expectation(key, operand) + why)
    return not failed, " and ".join(failed) or None, extra


def item_matches(where, item, now=None):
    """Does one item of a list pass a `where` condition: the value at its `json` path ('' the item
    itself) is there and passes every comparison given? An item without that value does not match."""
    try:
        value = json_path(item, where.get("json", ""))
    except KeyError:
        return False
    return compare(where, value, now)[0]


def uses_http(action):
    """Does this action talk to the bot's HTTP API (an `each` reading its list there, or acting there)?"""
    if "each" in action:
        return "http" in action["each"] or any(uses_http(a) for a in action.get("do") or [])
    return "http" in action


PROCESS_EXPECTED = {"absent": "no process", "present": "a process", "stopped": "every process stopped (state T)",
                    "running": "a process, none stopped (state T)"}


def describe_check(spec):
    """A check as words for people: where it reads and what must hold."""
    if "process" in spec:
        return PROCESS_EXPECTED[spec["process"]]
    if "any_of" in spec:
        return "any of: " + " | ".join(describe_check(s) for s in spec["any_of"])
    if "command" in spec or "file" in spec:
        parts = [describe_source(spec)]
    else:
        parts = [describe_request(spec["http"]) if "http" in spec else f"Redis key {spec['redis']['key']}"]
    if "status" in spec:
        parts.append(f"HTTP {spec['status']}")
    if "exit_code" in spec:
        parts.append(f"exit code {spec['exit_code']}")
    elif "command" in spec and "json" not in spec:
        parts.append(f"exit code {' or '.join(map(str, ok_codes(spec['command'])))}")
    if "modified_within" in spec:
        parts.append(f"modified less than {spec['modified_within']:g}s ago")
    if "json" in spec:
        musts = [expectation(key, spec[key]) for key in COMPARISONS if key in spec]
        parts.append(f"'{spec['json']}'" + (f" {' and '.join(musts)}" if musts else " present"))
    return ", ".join(parts)


def ok_codes(command):
    """The exit codes with which a profile's program succeeded (default 0)."""
    return list(command.get("ok_codes") or [0])
