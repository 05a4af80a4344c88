# Copyright: botops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Talk to one bot as its profile says: HTTP requests with auth, JSON probes, checks, actions,
the service manager, processes and signals, Redis keys, programs run and files read on the bot's
host (a bot driven by its own CLI or a message-bus client, a bot that writes its status to a file).

Used by every bot module on the managed host, and by the fleet form of the kill switch on the
controller (one `Bot` per thread). Stdlib only, so it runs on any host with Python 3.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import http.client
import json
import os
import re
import signal as signal_mod
import shutil
import ssl
import subprocess
import sys
import time
import urllib.parse
from datetime import datetime, timezone

from ansible.module_utils.botops_files import write_json

SIGNALS = {"TERM": signal_mod.SIGTERM, "KILL": signal_mod.SIGKILL, "INT": signal_mod.SIGINT, "HUP": signal_mod.SIGHUP,
           "STOP": signal_mod.SIGSTOP, "CONT": signal_mod.SIGCONT}
POLL_INTERVAL = 0.05
# the comparisons a check may make of the value it reads (all given must hold)
COMPARISONS = ("equals", "not_equals", "one_of", "less_than", "greater_than", "at_most", "at_least", "age_below")
STOPPED_STATES = ("T", "t")  # /proc/<pid>/stat: stopped by a signal (SIGSTOP...), or by a tracer
COMMAND_TIMEOUT = 10.0  # seconds a profile's program may run when its `timeout` does not say
FILE_LIMIT = 8 << 20  # bytes of a status file read at most: a status is small, a huge file is not one
# '{mode}', '{reason}', and dotted into a value: '{item.trade_id}', '{item.pair.base}'
PLACEHOLDER = re.compile(r"\{(\w+(?:\.\w+)*)\}")


def bot_argument_spec():
    """Options every bot module takes: the profile, the bot's inventory facts and its secrets."""
    return dict(
        profile=dict(type="dict", required=True),
        bot=dict(
            type="dict",
            required=True,
            options=dict(
                name=dict(type="str", required=True),
                bot_id=dict(type="str"),
                family=dict(type="str"),
                root=dict(type="path", required=True),
                listen=dict(type="str", default="127.0.0.1"),
                ports=dict(type="dict", default={}),
                service=dict(type="dict", default={}),
                process_match=dict(type="str"),
                database=dict(type="dict", default={}),
                redis_url=dict(type="str"),
                paper_only=dict(type="bool"),
            ),
        ),
        secrets=dict(
            type="dict",
            default={},
            no_log=True,
            options=dict(
                api_token=dict(type="str", no_log=True),
                username=dict(type="str", no_log=False),
                password=dict(type="str", no_log=True),
                database_password=dict(type="str", no_log=True),
            ),
        ),
    )


class BotError(Exception):
    """An operation on a bot failed; the message names the step and the cause."""


class CredentialsError(BotError):
    """The bot's credentials are missing, or its login refused them."""


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
    head, _, field = name.partition(".")
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
        return number if number == number and abs(number) != float("inf") else None
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


def argv_text(value):
    """A placeholder's value as a program's argument: strings as they are, true / false / null and
    numbers as JSON writes them."""
    return value if isinstance(value, str) else map_key(value)


def substitute_text(text, variables):
    """Replace '{name}' placeholders in one argument (or a path): always text; a name without a
    value stays as written."""
    return re.sub(r"\{(\w+)\}", lambda m: argv_text(variables[m.group(1)]) if m.group(1) in variables
                  else m.group(0), text)


def last_line(text, limit=200):
    """The last line of a program's output that says something, cut short ('' when none)."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    if not lines:
        return ""
    return lines[-1] if len(lines[-1]) <= limit else lines[-1][:limit - 3] + "..."


def _kill_group(proc):
    """SIGKILL to the program and everything it started in its process group."""
    try:
        os.killpg(proc.pid, signal_mod.SIGKILL)
    except OSError:
        with contextlib.suppress(OSError):
            proc.kill()


def run_program(argv, cwd, timeout, name=None):
    """Run a program without a shell, stdin closed (/dev/null), the environment inherited, in a
    process group of its own; returns (exit code, stdout, stderr).

    After `timeout` seconds the program and its process group are killed: a BotError naming the
    program (`name`: argv[0] as the profile writes it; never the other arguments, they may hold
    substituted values) and the timeout. A program that cannot be started is a BotError too."""
    name = name or argv[0]
    if not os.path.isdir(cwd):
        raise BotError(f"cannot run {name}: its working directory {cwd} does not exist")
    try:
        proc = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True)
    except OSError as exc:
        where = f" ({argv[0]})" if argv[0] != name else ""
        raise BotError(f"cannot run {name}{where}: {exc.strerror or exc}") from None
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        try:
            proc.communicate(timeout=2)
        except subprocess.TimeoutExpired:  # something outside its group holds its output open
            for stream in (proc.stdout, proc.stderr):
                with contextlib.suppress(OSError):
                    stream.close()
            proc.wait()
        raise BotError(f"{name} did not finish within {timeout:g}s (killed)") from None
    except BaseException:
        _kill_group(proc)
        proc.wait()
        raise
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


def program_failed(name, code, err):
    """The message of a program that exited with a code the profile does not accept."""
    how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
    tail = last_line(err)
    return f"{name} {how}" + (f": {tail}" if tail else " (nothing on stderr)")


def process_states(pids):
    """{pid: state letter} from /proc/<pid>/stat (R running, S sleeping, T stopped...); gone ones left out."""
    states = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                raw = f.read().decode(errors="replace")
        except OSError:
            continue
        # "pid (comm) state ...": comm may hold spaces and parentheses, the state follows the last ')'
        rest = raw[raw.rfind(")") + 1:].split()
        if rest:
            states[pid] = rest[0]
    return states


class Bot:
    """One bot: its profile, its inventory facts and its secrets.

    A fleet run (module_utils/botops_fleet.py) may give many Bots shared helpers; without them
    (the default) every Bot works on its own, exactly as before:
    `processes` (`.pids(pattern)`: one /proc scan serves many bots), `services` (`.run(bot, op)`,
    `.state(bot)`: bots behind one service share one operation), `redis` (`.command(url, *args)`:
    Redis without a redis-cli process), `fail_fast` (seconds: once a request to this bot timed
    out, later ones wait at most this long, so that the timeouts of a bot that does not answer
    do not add up), `http_slots` (`(host)` -> a context manager held while a request to that
    host is in flight: at most so many requests to one host at a time)."""

    processes = None
    services = None
    redis = None
    fail_fast = None
    http_slots = None

    def __init__(self, profile, bot, secrets=None, run_command=None):
        self.profile = profile
        self.bot = bot
        self.secrets = {k: v for k, v in (secrets or {}).items() if v not in (None, "")}
        self.name = bot["name"]
        # who the inventory says this bot is: its bot_id, by default its inventory name
        self.bot_id = str(bot.get("bot_id") or bot["name"])
        self.root = bot["root"]
        http_conf = profile["http"]
        self.scheme = http_conf.get("scheme", "http")
        self.ports = dict(http_conf["ports"])
        self.ports.update(bot.get("ports") or {})
        self.default_port = "api" if "api" in self.ports else next(iter(self.ports))
        self.timeout = float(http_conf.get("timeout", 2.0))
        self.verify_tls = http_conf.get("verify_tls", True)
        self.service_conf = dict(profile["service"])
        self.service_conf.update(bot.get("service") or {})
        self.process_match = bot.get("process_match") or self.service_conf["process_match"]
        self._run_command = run_command or _run_command
        self._token = None
        self._memo = None
        self.unresponsive = False  # a request timed out
        self.last_action_at = time.monotonic()  # end of the last action done (see botops_fleet.ServiceGate)

    # ---------------------------------------------------------------- HTTP
    def _auth_headers(self, method, force=False):
        """The credentials a request of this method carries; `force`: whatever the method (auth.check)."""
        auth = self.profile["auth"]
        kind = auth["type"]
        if kind == "none":
            return {}
        if not force and method not in auth.get("methods", ["GET", "POST", "PUT", "DELETE", "PATCH"]):
            return {}
        if kind == "bearer":
            token = self.secrets.get("api_token")
            if not token:
                raise CredentialsError("the profile needs a bearer token: set bot_api_token for this bot (vault)")
            return {"Authorization": f"Bearer {token}"}
        user, password = self.secrets.get("username"), self.secrets.get("password")
        if not user or not password:
            raise CredentialsError(
                f"the profile needs {kind} credentials: set bot_api_username and bot_api_password (vault)")
        if kind == "basic":
            raw = base64.b64encode(f"{user}:{password}".encode()).decode()
            return {"Authorization": f"Basic {raw}"}
        if self._token is None:  # login: trade the credentials for a bearer token, once
            self._token = self._login(auth["login"], user, password)
        return {"Authorization": f"Bearer {self._token}"}

    def _login(self, login, user, password):
        """A bearer token for the credentials: the login request sends them as `credentials` says
        (basic: an Authorization header; json: a JSON body; form: a form body; `fields` names the
        body's keys). Its messages never hold the password or the token."""
        how = login.get("credentials", "json")
        req = login["request"]
        if how == "basic":
            raw = base64.b64encode(f"{user}:{password}".encode()).decode()
            status, doc = self._http(req, headers={"Authorization": f"Basic {raw}"})
        else:
            fields = login.get("fields") or {}
            body = {fields.get("username", "username"): user, fields.get("password", "password"): password}
            status, doc = self._http(req, body, headers={}, form=how == "form")
        if status >= 400:
            raise (CredentialsError if status in (401, 403) else BotError)(
                f"login {describe_request(req)} answered HTTP {status}")
        try:
            token = json_path(doc, login["token_json"])
        except KeyError as exc:
            raise BotError(f"login answer has no token: {exc.args[0]}") from None
        if isinstance(token, bool) or not isinstance(token, (str, int)) or token == "":
            raise BotError(f"login answer has no token: '{login['token_json']}' is not a string")
        return str(token)

    def url(self, req):
        port = self.ports[req.get("port", self.default_port)]
        return f"{self.scheme}://{self.bot.get('listen') or '127.0.0.1'}:{port}{req['path']}"

    def port(self, req):
        """The port number a request of the profile goes to."""
        return self.ports[req.get("port", self.default_port)]

    def _http(self, req, body=None, headers=None, timeout=None, authenticate=False, form=False):
        """One request: with the bot's credentials, or `headers` instead (the login's own); a
        request the profile marks `auth: none` carries none and never logs in. A login token the bot
        stops taking (HTTP 401: Freqtrade's expire after 15 minutes) is traded for a new one and the
        request sent once more. `form`: the body as application/x-www-form-urlencoded."""
        method = req.get("method", "GET")
        if headers is not None or req.get("auth") == "none":
            return self._send(req, method, body, headers or {}, timeout, form)
        held = self._token
        credentials = self._auth_headers(method, force=authenticate)
        status, doc = self._send(req, method, body, credentials, timeout, form)
        if status == 401 and credentials and held is not None and self._token == held:
            self._token = None  # a token from an earlier login that no longer works: log in once more
            status, doc = self._send(req, method, body, self._auth_headers(method, force=authenticate), timeout, form)
        return status, doc

    def _send(self, req, method, body, credentials, timeout, form=False):
        port = int(self.ports[req.get("port", self.default_port)])
        host = self.bot.get("listen") or "127.0.0.1"
        timeout = timeout or self.timeout
        if self.unresponsive and self.fail_fast:
            timeout = min(timeout, self.fail_fast)
        hdrs = {"Accept": "application/json"}
        hdrs.update(credentials)
        payload = None
        if body is not None and form:
            payload = urllib.parse.urlencode(body).encode()
            hdrs["Content-Type"] = "application/x-www-form-urlencoded"
        elif body is not None:
            payload = json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        if self.scheme == "https":
            ctx = ssl.create_default_context()
            if not self.verify_tls:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=ctx)
        else:
            conn = http.client.HTTPConnection(host, port, timeout=timeout)
        # a bot that already timed out is not counted: its requests cost its host nothing
        slot = self.http_slots(host) if self.http_slots is not None and not self.unresponsive else None
        try:
            with slot or contextlib.nullcontext():
                conn.request(method, req["path"], body=payload, headers=hdrs)
                resp = conn.getresponse()
                raw = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            if isinstance(exc, TimeoutError):
                self.unresponsive = True
            raise BotError(f"{describe_request(req)} on {host}:{port}: {exc.__class__.__name__}: {exc}") from None
        finally:
            conn.close()
        try:
            doc = json.loads(raw) if raw else None
        except ValueError:
            doc = raw.decode(errors="replace")[:200]
        return resp.status, doc

    def request(self, req, variables=None, timeout=None, authenticate=False):
        """Send one request of the profile; returns (status, parsed JSON). `authenticate`: with the
        bot's credentials whatever the method (the profile's auth.check). Placeholders in the path
        ('/trades/{item.trade_id}') take the variables' values, URL-quoted."""
        if "{" in req["path"]:
            req = dict(req, path=substitute(req["path"], variables or {}, quote=True))
        body = req.get("body")
        key = None
        if self._memo is not None and body is None and req.get("method", "GET") == "GET" and not authenticate:
            key = (req.get("port"), req["path"])
            if key in self._memo:
                answer = self._memo[key]
                if isinstance(answer, BotError):
                    raise answer
                return answer
        if body is not None:
            body = substitute(copy.deepcopy(body), variables or {})
        try:
            answer = self._http(req, body, timeout=timeout, authenticate=authenticate)
        except BotError as exc:
            if key is not None:
                self._memo[key] = exc
            raise
        if key is not None:
            self._memo[key] = answer
        return answer

    @contextlib.contextmanager
    def memoized(self):
        """Within the block, a GET (a Redis read, the process list, a file read, the program of a probe
        or check) is made once: later identical reads get the same answer. For looking at several
        checks at one moment, consistently. Nested, the outer block's moment holds."""
        if self._memo is not None:
            yield self
            return
        self._memo = {}
        try:
            yield self
        finally:
            self._memo = None

    # ---------------------------------------------------------------- Redis
    def _redis_cli(self, *args):
        url = self.bot.get("redis_url")
        if not url:
            raise BotError("the profile uses Redis but this bot has no bot_redis_url")
        if self.redis is not None:
            key = ("redis", args) if args[0] == "GET" else None
            if key is not None and self._memo is not None and key in self._memo:
                return self._memo[key]
            try:
                value = self.redis.command(url, *args)
            except (OSError, ValueError) as exc:
                raise BotError(f"Redis {args[0]} failed: {exc}") from None
            text = "" if value is None else value.decode(errors="replace") if isinstance(value, bytes) else str(value)
            if key is not None and self._memo is not None:
                self._memo[key] = text
            return text
        rc, out, err = self._run_command(["redis-cli", "-u", url, "--no-auth-warning", *args])
        if rc != 0 or out.startswith("ERR") or "Could not connect" in out + err:
            raise BotError(f"redis-cli {args[0]} failed: {(err or out).strip()}")
        return out.rstrip("\n")

    def redis_get_json(self, key):
        raw = self._redis_cli("GET", key)
        if raw == "":
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise BotError(f"Redis key {key} does not hold JSON: {raw[:80]!r}") from None

    def redis_set_json(self, key, value):
        self._redis_cli("SET", key, json.dumps(value, separators=(",", ":")))

    # ---------------------------------------------------------------- programs and files on the bot's host
    def placeholders(self, variables=None):
        """The values a program's arguments and a file's path may name: the operation's (`{mode}`,
        `{reason}`...) and the bot's own `{bot_root}`, `{bot_name}`, `{bot_id}`. Never a secret."""
        values = dict(variables or {})
        values.update(bot_root=self.root, bot_name=self.name, bot_id=self.bot_id)
        return values

    def command_argv(self, command, variables=None):
        """(argv, working directory) of a profile's program: placeholders replaced; argv[0] with a
        '/' in it and not absolute is under bot_root, without one it is looked up on PATH; cwd is
        relative to bot_root (default bot_root)."""
        values = self.placeholders(variables)
        argv = [substitute_text(str(item), values) for item in command["argv"]]
        if "/" in argv[0] and not os.path.isabs(argv[0]):
            argv[0] = os.path.join(self.root, argv[0])
        cwd = os.path.join(self.root, substitute_text(command["cwd"], values)) if command.get("cwd") else self.root
        return argv, cwd

    @staticmethod
    def command_timeout(command):
        """Seconds the program may run: its own timeout, else 10. Not the profile's http.timeout: that
        bounds one request to a bot already running (2 s in the shipped profiles), a program starts
        first (an interpreter, its imports, a message bus's connection)."""
        return float(command.get("timeout") or COMMAND_TIMEOUT)

    def command_result(self, command, variables=None, memoize=True):
        """Run a profile's program on the bot's host: (exit code, stdout, stderr). Within `memoized`
        a program a probe or check runs (`memoize`; never an action's) runs once, like a GET."""
        argv, cwd = self.command_argv(command, variables)
        key = ("command", tuple(argv), cwd) if memoize and self._memo is not None else None
        if key is not None and key in self._memo:
            answer = self._memo[key]
            if isinstance(answer, BotError):
                raise answer
            return answer
        try:
            answer = run_program(argv, cwd, self.command_timeout(command), name=command["argv"][0])
        except BotError as exc:
            if key is not None:
                self._memo[key] = exc
            raise
        if key is not None:
            self._memo[key] = answer
        return answer

    @staticmethod
    def command_output(command, out):
        """What a program printed, as its `output` says: JSON parsed, or the stripped text."""
        if command.get("output", "json") == "text":
            return out.strip()
        name = command["argv"][0]
        if not out.strip():
            raise BotError(f"{name} printed nothing (expected JSON on stdout)")
        try:
            return json.loads(out)
        except ValueError:
            raise BotError(f"{name} did not print JSON: {out.strip()[:80]!r}") from None

    def file_path(self, spec):
        """A profile's file on the bot's host: relative to bot_root (or absolute); {bot_root}, {bot_name}
        and {bot_id} replaced."""
        return os.path.join(self.root, substitute_text(spec["path"], self.placeholders()))

    def read_file(self, spec, content=True):
        """(modification time, text or None without `content`) of a profile's file on the bot's host;
        BotError naming the path when it is missing or cannot be read. Within `memoized` read once."""
        path = self.file_path(spec)
        key = ("file", path) if self._memo is not None else None
        if key is not None and key in self._memo:
            answer = self._memo[key]
            if isinstance(answer, BotError):
                raise answer
            if answer[1] is not None or not content:
                return answer
        try:
            answer = self._read_file(path, content)
        except BotError as exc:
            if key is not None:
                self._memo[key] = exc
            raise
        if key is not None:
            self._memo[key] = answer
        return answer

    @staticmethod
    def _read_file(path, content):
        try:
            with open(path, "rb") as f:
                mtime = os.fstat(f.fileno()).st_mtime
                raw = f.read(FILE_LIMIT + 1) if content else None
        except FileNotFoundError:
            raise BotError(f"file {path} is missing") from None
        except OSError as exc:
            raise BotError(f"cannot read file {path}: {exc.strerror or exc}") from None
        if raw is not None and len(raw) > FILE_LIMIT:
            raise BotError(f"file {path} is larger than {FILE_LIMIT >> 20} MiB: not a status")
        return mtime, None if raw is None else raw.decode(errors="replace")

    def file_content(self, spec, text):
        """A file's content as its `format` says: JSON parsed, or the stripped text."""
        if spec.get("format", "json") == "text":
            return text.strip()
        try:
            return json.loads(text)
        except ValueError:
            raise BotError(f"file {self.file_path(spec)} does not hold JSON: {text.strip()[:80]!r}") from None

    def read_on_host(self, spec, variables=None):
        """(document, source) of a probe that runs a program or reads a file on the bot's host; a
        program that exits with a code its `ok_codes` do not list is a BotError naming it, the code
        and the last line of its stderr."""
        if "command" in spec:
            command = spec["command"]
            code, out, err = self.command_result(command, variables)
            if code not in ok_codes(command):
                raise BotError(program_failed(command["argv"][0], code, err))
            return self.command_output(command, out), describe_source(spec)
        _, text = self.read_file(spec["file"])
        return self.file_content(spec["file"], text), describe_source(spec)

    def _check_on_host(self, spec):
        """The first part of a check on the bot's host: (ok, observed, document or None). A program's
        exit code (`exit_code`, else one of its `ok_codes`); a file there and its age (`modified_within`)."""
        observed = {}
        try:
            if "command" in spec:
                command = spec["command"]
                code, out, err = self.command_result(command)
                observed["exit_code"] = code
                wanted = [spec["exit_code"]] if "exit_code" in spec else ok_codes(command)
                if code not in wanted:
                    if last_line(err):
                        observed["stderr"] = last_line(err)
                    return False, dict(observed, expected=f"exit code {' or '.join(map(str, wanted))}"), None
                return True, observed, self.command_output(command, out) if "json" in spec else None
            mtime, text = self.read_file(spec["file"], content="json" in spec)
            observed["file_age"] = round(time.time() - mtime, 3)
            if "modified_within" in spec and not observed["file_age"] < spec["modified_within"]:
                return False, dict(observed, expected=f"{describe_source(spec)} modified less than "
                                                      f"{spec['modified_within']:g}s ago"), None
            return True, observed, self.file_content(spec["file"], text) if "json" in spec else None
        except BotError as exc:
            return False, dict(observed, error=str(exc), expected=describe_check(spec)), None

    # ---------------------------------------------------------------- probes and checks
    def probe(self, spec, variables=None):
        """Read one value as a fact probe says."""
        if "http" in spec:
            status, doc = self.request(spec["http"], variables)
            source = describe_request(spec["http"])
            if status >= 400:
                raise BotError(f"{source} answered HTTP {status}")
        elif "command" in spec or "file" in spec:
            doc, source = self.read_on_host(spec, variables)
        else:
            doc = self.redis_get_json(spec["redis"]["key"])
            source = f"Redis key {spec['redis']['key']}"
        try:
            value = json_path(doc, spec.get("json", ""))
        except KeyError as exc:
            raise BotError(f"{source}: {exc}") from None
        if spec.get("count") and "where" in spec:  # the items that match, e.g. trades with open orders
            if not isinstance(value, list):
                raise BotError(f"{source}: '{spec.get('json', '')}' is not a list: {shown_value(value)}")
            value = sum(1 for item in value if item_matches(spec["where"], item))
        elif spec.get("count"):
            value = len(value) if isinstance(value, (list, dict)) else value
        if "map" in spec:
            value = map_value(value, spec["map"], f"{source}: '{spec.get('json', '')}'")
        return value

    # ---------------------------------------------------------------- who the bot is, its credentials
    def who(self):
        """The bot as the messages name it: its inventory name, and its bot_id when that differs."""
        return self.name if self.bot_id == self.name else f"{self.name} (bot_id {self.bot_id})"

    def identity(self):
        """Who the bot at the inventory's address says it is (the profile's `identity` probe),
        compared with the inventory's bot_id: {expected, reported, ok, message}.

        ok is True when the bot reports the expected id; False when it reports another one, or when
        its address answers the probe as no bot of the family does (HTTP 404 / 405: another API);
        None when it cannot be told - no probe in the profile, no answer (a stopped bot), an error,
        an answer without an id. Never raises."""
        spec = self.profile.get("identity")
        out = {"expected": self.bot_id, "reported": None, "ok": None, "message": None}
        if not spec:
            out["message"] = f"not checked: profile '{self.profile.get('family')}' declares no identity probe"
            return out
        status = None
        try:
            if "http" in spec:
                req = spec["http"]
                where = f"port {self.port(req)}"
                status, doc = self.request(req)
                source = describe_request(req)
            elif "command" in spec or "file" in spec:
                doc, source = self.read_on_host(spec)
                where = source
            else:
                where = f"Redis key {spec['redis']['key']}"
                doc = self.redis_get_json(spec["redis"]["key"])
                source = where
        except BotError as exc:
            out["message"] = f"not checked: {exc}"
            return out
        try:
            value = json_path(doc, spec.get("json", ""))
        except (KeyError, TypeError):
            value = None
        if value is None or value == "" or isinstance(value, (dict, list, bool)):
            if status in (404, 405):
                out["ok"] = False
                out["message"] = (f"{self.who()} does not answer as a {self.profile.get('family')} bot on {where} "
                                  f"({source} answered HTTP {status}): the inventory's port points at another "
                                  "service (check bot_ports and bot_family)")
            elif status is not None and status >= 400:
                out["message"] = f"not checked: {source} answered HTTP {status}"
            else:
                out["message"] = f"not checked: {source} reports no id at '{spec.get('json', '')}'"
            return out
        out["reported"] = str(value)
        out["ok"] = out["reported"] == self.bot_id
        if not out["ok"]:
            what, fix = (("port", "bot_ports") if "http" in spec else ("Redis address", "bot_redis_url")
                         if "redis" in spec else ("bot_root", "bot_root"))
            out["message"] = (f"{self.who()} answers as {out['reported']} on {where}: the inventory's {what} "
                              f"points at another bot (check {fix}, or bot_id)")
        return out

    def credentials(self):
        """Whether the bot accepts the credentials botops holds for it, by the profile's auth.check
        (an authenticated request that changes nothing; the kill switch's API rungs need the same
        credentials): {checked, ok, status, message}.

        ok is False when the bot refused them (HTTP 401 / 403) or they are missing; True when it
        answered as the check expects; None when it could not be told (no check in the profile, no
        answer, another status). Never raises."""
        auth = self.profile.get("auth") or {}
        check = auth.get("check")
        out = {"checked": False, "ok": None, "status": None, "message": None}
        if auth.get("type", "none") == "none":
            out["message"] = "not checked: the profile's API needs no credentials"
            return out
        if not check:
            out["message"] = f"not checked: profile '{self.profile.get('family')}' declares no auth.check"
            return out
        req = check["http"]
        try:
            status, _ = self.request(req, authenticate=True)
        except CredentialsError as exc:
            out.update(checked=True, ok=False, message=f"the kill switch's API requests would fail: {exc}")
            return out
        except BotError as exc:
            out["message"] = f"not checked: {exc}"
            return out
        expected = check.get("status", 200)
        out.update(checked=True, status=status)
        if status == expected:
            out["ok"] = True
        elif status in (401, 403):
            out["ok"] = False
            out["message"] = (f"its API refused botops' credentials ({describe_request(req)} answered HTTP {status}): "
                              "the kill switch's API requests would fail too (check bot_api_token, or "
                              "bot_api_username and bot_api_password, in its vault)")
        else:
            out["message"] = f"not checked: {describe_request(req)} answered HTTP {status} (expected {expected})"
        return out

    def check(self, spec):
        """Evaluate one check; returns (ok, what was observed). A check that does not hold says what
        it expected (`expected`) beside what it saw."""
        if "process" in spec:
            return self._check_process(spec["process"])
        if "any_of" in spec:
            seen = []
            for alternative in spec["any_of"]:
                ok, observed = self.check(alternative)
                if ok:
                    return True, observed
                seen.append(observed)
            return False, {"any_of": seen, "expected": describe_check(spec)}
        if "command" in spec or "file" in spec:
            ok, observed, doc = self._check_on_host(spec)
            if not ok:
                return False, observed
        elif "http" in spec:
            try:
                status, doc = self.request(spec["http"])
            except BotError as exc:
                return False, {"error": str(exc), "expected": describe_check(spec)}
            observed = {"status": status}
            if "status" in spec and status != spec["status"]:
                return False, dict(observed, body=doc, expected=f"HTTP {spec['status']}")
            if "status" not in spec and "json" not in spec and status >= 400:
                return False, dict(observed, body=doc, expected="HTTP below 400")
        else:
            try:
                doc = self.redis_get_json(spec["redis"]["key"])
            except BotError as exc:
                return False, {"error": str(exc), "expected": describe_check(spec)}
            observed = {}
        if "json" in spec:
            try:
                value = json_path(doc, spec["json"])
            except (KeyError, TypeError) as exc:
                return False, dict(observed, error=str(exc), expected=describe_check(spec))
            observed["value"] = value
            ok, expected, extra = compare(spec, value)
            observed.update(extra)
            if not ok:
                return False, dict(observed, expected=f"'{spec['json']}' {expected}")
        return True, observed

    def _check_process(self, want):
        pids = self.pids()
        if want in ("absent", "present"):
            ok = (not pids) if want == "absent" else bool(pids)
            observed = {"pids": pids}
        else:
            states = self.process_states(pids)
            stopped = [pid for pid, state in states.items() if state in STOPPED_STATES]
            ok = bool(states) and (len(stopped) == len(states) if want == "stopped" else not stopped)
            observed = {"pids": pids, "states": {str(pid): state for pid, state in states.items()}}
        if not ok:
            observed["expected"] = PROCESS_EXPECTED[want]
        return ok, observed

    def check_all(self, specs):
        observed = []
        for spec in specs:
            ok, seen = self.check(spec)
            observed.append(seen)
            if not ok:
                return False, observed
        return True, observed

    def wait_for(self, specs, timeout):
        """Poll the checks until all hold or the deadline passes; returns (ok, last observation)."""
        deadline = time.monotonic() + timeout
        while True:
            ok, observed = self.check_all(specs)
            if ok or time.monotonic() >= deadline:
                return ok, observed
            time.sleep(POLL_INTERVAL)

    def wait_stable(self, specs, timeout, stable_for):
        """Poll until the checks hold without a break for stable_for seconds (a bot that turns
        ready and then falls over is not ready); returns (ok, last observation)."""
        deadline = time.monotonic() + timeout
        while True:
            ok, observed = self.wait_for(specs, max(0.0, deadline - time.monotonic()))
            if not ok:
                return False, observed
            held_until = time.monotonic() + stable_for
            while ok and time.monotonic() < held_until:
                time.sleep(POLL_INTERVAL)
                ok, observed = self.check_all(specs)
            if ok:
                return True, observed
            if time.monotonic() >= deadline:
                return False, observed

    # ---------------------------------------------------------------- actions
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
            code, _, err = self.command_result(command, variables, memoize=False)
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

    # ---------------------------------------------------------------- service manager and processes
    def service_command(self, op):
        conf = self.service_conf
        name = conf["name"]
        manager = conf["manager"]
        if manager == "supervisor":
            cmd = [conf.get("supervisorctl") or supervisorctl_path()]
            if conf.get("config"):
                cmd += ["-c", conf["config"]]
            return cmd + [op, name]
        if manager == "systemd":
            return ["systemctl", op, name]
        if manager == "docker_compose":
            cmd = ["docker", "compose"]
            if conf.get("compose_file"):
                cmd += ["-f", os.path.join(self.root, conf["compose_file"])]
            return cmd + [op, name]
        raise BotError(f"unknown service manager {manager!r}")

    def service(self, op):
        if self.services is not None:
            return self.services.run(self, op)
        return self.service_run(op)

    def service_run(self, op):
        """The service manager's own command for `op` (start, stop, restart)."""
        cmd = self.service_command(op)
        rc, out, err = self._run_command(cmd)
        text = (out + err).strip()
        # supervisorctl exits non-zero for "already started" / "not running": those are fine.
        if rc != 0 and not re.search(r"already started|not running|ERROR \(not running\)", text):
            raise BotError(f"{' '.join(cmd)} failed (rc={rc}): {text}")
        return text

    def service_state(self):
        """RUNNING / STOPPED / ... as the service manager reports it."""
        if self.services is not None:
            return self.services.state(self)
        return self.service_state_run()

    def service_state_run(self):
        conf = self.service_conf
        if conf["manager"] == "supervisor":
            rc, out, err = self._run_command(self.service_command("status"))
            parts = out.split()
            return parts[1] if len(parts) > 1 else "UNKNOWN"
        if conf["manager"] == "systemd":
            rc, out, err = self._run_command(["systemctl", "is-active", conf["name"]])
            return out.strip().upper() or "UNKNOWN"
        return "RUNNING" if self.pids() else "STOPPED"

    def pids(self):
        if self._memo is not None and "pids" in self._memo:
            return list(self._memo["pids"])
        if self.processes is not None:
            pids = self.processes.pids(self.process_match)
        else:
            pids = find_pids(self.process_match)
        if self._memo is not None:
            self._memo["pids"] = list(pids)
        return pids

    def process_states(self, pids=None):
        """{pid: state letter} of the bot's processes (/proc/<pid>/stat: T is stopped); within
        `memoized`, read once."""
        if self._memo is not None and "states" in self._memo:
            return dict(self._memo["states"])
        states = process_states(self.pids() if pids is None else pids)
        if self._memo is not None:
            self._memo["states"] = dict(states)
        return states

    def send_signal(self, name):
        pids = self.pids()
        for pid in pids:
            try:
                os.kill(pid, SIGNALS[name])
            except ProcessLookupError:
                pass
        return pids


def scan_processes(exclude=()):
    """[(pid, command line)] of every process (like `pgrep -f` sees them), `exclude` left out."""
    found = []
    skip = set(exclude)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        if pid in skip:
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if cmdline:
            found.append((pid, cmdline))
    return found


def find_pids(pattern):
    """PIDs whose full command line matches the pattern (like pgrep -f), this process excluded."""
    regex = re.compile(pattern)
    return sorted(pid for pid, cmdline in scan_processes(exclude=(os.getpid(),)) if regex.search(cmdline))


def supervisorctl_path():
    """supervisorctl from PATH, else the one installed beside this Python (a virtualenv)."""
    return shutil.which("supervisorctl") or os.path.join(os.path.dirname(sys.executable), "supervisorctl")


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


def _run_command(cmd):
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    return proc.returncode, proc.stdout, proc.stderr


def module_bot(module):
    """A Bot for an AnsibleModule built with bot_argument_spec()."""
    p = module.params

    def run(cmd):
        return module.run_command(cmd)

    return Bot(p["profile"], p["bot"], p.get("secrets"), run_command=run)
