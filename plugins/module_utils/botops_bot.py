# Copyright: botops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Talk to one bot as its profile says: HTTP requests with auth, JSON probes, checks, actions,
the service manager, processes and signals, Redis keys, programs run and files read on the bot's
host (a bot driven by its own CLI or a message-bus client, a bot that writes its status to a file).

Used by every bot module on the managed host, and by the fleet form of the kill switch on the
controller (one `Bot` per thread). Stdlib only, so it runs on any host with Python 3. The Bot is
split by concern, each file importing only the ones below it (a module is shipped with what it imports):

- botops_errors: BotError, CredentialsError;
- botops_values: JSON paths, placeholders, value maps, comparisons, a probe, check or action as words;
- botops_http: BotHttp, requests with credentials, the login, the profile's auth.check;
- botops_host: BotHost, programs and files on the bot's host;
- botops_processes: BotProcesses, the service manager, processes and signals;
- botops_actions: BotActions, the profile's actions and `each`;
- this file: the options of every bot module (bot_argument_spec), Bot (its facts, memoized, Redis,
  probes, who it is, checks) and module_bot.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time

from ansible_collections.botops.fleet.plugins.module_utils.botops_actions import BotActions
from ansible_collections.botops.fleet.plugins.module_utils.botops_errors import BotError
from ansible_collections.botops.fleet.plugins.module_utils.botops_host import BotHost
from ansible_collections.botops.fleet.plugins.module_utils.botops_http import BotHttp
from ansible_collections.botops.fleet.plugins.module_utils.botops_processes import BotProcesses
from ansible_collections.botops.fleet.plugins.module_utils.botops_values import (
    compare, describe_check, describe_request, item_matches, json_path, map_value, shown_value)

POLL_INTERVAL = 0.05


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


class Bot(BotHttp, BotHost, BotProcesses, BotActions):
    """One bot: its profile, its inventory facts and its secrets.

    A fleet run (plugins/module_utils/botops_fleet.py) may give many Bots shared helpers; without them
    (the default) every Bot works on its own, exactly as before:
    `processes` (`.pids(pattern)`: one /proc scan serves many bots), `services` (`.run(bot, op)`,
    `.state(bot)`: bots behind one service share one operation), `redis` (`.command(url, *args)`:
    Redis without a redis-cli process), `fail_fast` (seconds: once a request to this bot timed
    out, later ones wait at most this long, so that the timeouts of a bot that does not answer
    do not add up), `http_slots` (`(host)` -> a context manager held while a request to that
    host is in flight: at most so many requests to one host at a time).

    Its parts, one file each: BotHttp (botops_http), BotHost (botops_host), BotProcesses
    (botops_processes), BotActions (botops_actions)."""

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

    def _recall(self, key, read, usable=None):
        """What `read()` answers, read once within `memoized`: its answer, or the BotError it raised,
        kept under `key` (None: not kept) for the later reads of it; `usable(answer)` False: a kept
        answer that does not do for this read, read again."""
        if key is None:
            return read()
        if key in self._memo:
            answer = self._memo[key]
            if isinstance(answer, BotError):
                raise answer
            if usable is None or usable(answer):
                return answer
        try:
            answer = read()
        except BotError as exc:
            self._memo[key] = exc
            raise
        self._memo[key] = answer
        return answer

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

    # ---------------------------------------------------------------- who the bot is
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


def _run_command(cmd):
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    return proc.returncode, proc.stdout, proc.stderr


def module_bot(module):
    """A Bot for an AnsibleModule built with bot_argument_spec()."""
    p = module.params

    def run(cmd):
        return module.run_command(cmd)

    return Bot(p["profile"], p["bot"], p.get("secrets"), run_command=run)
