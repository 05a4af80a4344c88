# Copyright: botops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""bot_fleet_kill_switch on the controller, in the controller's own process.

The module runs on the controller anyway (``delegate_to: localhost``). Executed as a module, each
call also pays for packing the module and its module_utils into an AnsiballZ payload, a Python
process that unpacks and compiles them, and a round trip of every bot's arguments through JSON:
about half a second of CPU, a quarter of a fleet halt's budget. For a task that runs on the
controller (local connection) this plugin runs the module's own code (``run_fleet`` in
plugins/module_utils/botops_fleet_kill_switch.py, the function ``main()`` calls, with the same argument spec
and rules) in the worker process instead; for any other connection it executes the module as usual.
Ansible uses it for every task of the module, as the collection's action plugin of the same name.

Given ``hosts`` (the play's host names) instead of ``bots``, it reads each host's inventory
variables itself, once, in Python (plugins/module_utils/botops_bot_vars.py, the definition group_vars'
botops_bot uses too), and each family's profile once: at a thousand bots, templating
every bot's facts into the task's arguments costs seconds (Ansible templates, tags and pickles
every value of a task's arguments), and this costs a fraction of one. A host whose variables
cannot make an entry (one missing, of the wrong type, or a family without a loadable profile) is
that bot's failure, reported and counted with the others: the kill switch drives every other bot.

Bots on other hosts reached over SSH are driven on their hosts through one SSH session per host, every
host at once (plugins/plugin_utils/fleet_ssh.py), while the controller's own bots are driven here:
the per-host task of playbooks/tasks/fleet_kill_switch.yml is left only the hosts that need become or
another connection, and the hosts whose inventory sets ``bot_kill_switch_sessions: per_host_task``.
"""

from __future__ import annotations

import json
import os
import threading

from ansible.errors import AnsibleError
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.plugins.action import ActionBase

from ansible_collections.botops.fleet.plugins.module_utils import botops_fleet_kill_switch as fleet
from ansible_collections.botops.fleet.plugins.module_utils.botops_kill_switch import REQUIRED_IF
from ansible_collections.botops.fleet.plugins.module_utils.botops_bot_vars import (
    SECRET_VARS, MissingVariable, bot_entry, in_inventory_words, read_vars)
from ansible_collections.botops.fleet.plugins.plugin_utils import fleet_ssh

MODULE = "botops.fleet.bot_fleet_kill_switch"
LOCAL = ("local", "ansible.builtin.local")


def plain(value):
    """The value without the controller's data tags, as a module receives it (supervisord's
    XML-RPC, for one, cannot marshal tagged strings)."""
    return json.loads(json.dumps(value))


def check_entry(entry, validator):
    """(the entry as the module's entry spec makes it, None) when it is valid, else (None, why not in
    the inventory's words, its secrets masked: a message may quote a value). Each entry alone:
    validated as one list, a single bot's wrong value (bot_ports that is not a mapping, a bot_root
    that is a list) would fail the whole call, and no bot would be driven."""
    checked = validator.validate(entry)
    if not checked.error_messages:
        return checked.validated_parameters, None
    why = "; ".join(checked.error_messages)
    for secret in sorted(checked._no_log_values, key=len, reverse=True):
        why = why.replace(secret, "********")
    return None, in_inventory_words(why)


class HostReader:
    """The play's hosts, read one at a time as the kill switch asks for them (entries()).

    Each host's variables are computed once, each family's profile loaded once; a host whose
    variables are missing or wrong, or whose family has no loadable profile, is that bot's
    failure (refused), never the whole fleet's. A bot of the controller's host is handed on at once,
    so the first bots are driven while the last hosts are still being read (at a thousand bots,
    reading them takes about a second). A bot of a host reached over SSH waits in over_ssh, grouped
    by host, until every host is read (ready is then set); a host that needs the per-host task is
    listed in remote."""

    def __init__(self, action, hosts, task_vars, entry_spec, profiles):
        self.action, self.hosts, self.task_vars = action, hosts, task_vars
        self.validator = ArgumentSpecValidator(entry_spec)  # one for every host's entry
        self.profiles = profiles  # the call's own, then each family's as it is loaded
        self.unloadable = {}
        self.refused, self.remote, self.over_ssh = {}, [], {}
        self.ready = threading.Event()
        self._ssh = None
        self._lookup = action._shared_loader_obj.lookup_loader.get(
            "botops.fleet.bot_profile", loader=action._loader, templar=action._templar)

    def entries(self):
        try:
            for name in self.hosts:
                try:
                    entry = self._entry(name)
                except Exception as exc:  # pylint: disable=broad-exception-caught
                    # one host's unforeseen error is its bot's failure: the bots driven already, and
                    # every other, are still reported
                    self.refused[name] = f"its inventory variables cannot be read: {type(exc).__name__}: {exc}"
                    continue
                if entry is not None:
                    yield entry
        finally:
            self.ready.set()

    def _profile(self, family):
        if family not in self.profiles and family not in self.unloadable:
            try:
                self.profiles[family] = plain(self._lookup.run([family], variables=self.task_vars)[0])
            except AnsibleError as exc:  # an unknown family, an invalid profile: its bots fail, not the fleet
                self.unloadable[family] = exc.message
        return self.profiles.get(family), self.unloadable.get(family)

    def _entry(self, name):
        """The host's entry if it is driven here, now; None if it is refused, or driven elsewhere."""
        host_vars = self.task_vars["hostvars"][name]
        session = None
        if host_vars.get("ansible_connection", "ssh") not in LOCAL:
            if not fleet_ssh.reachable_by_ssh(host_vars):
                self.remote.append(name)
                return None
            try:
                if self._ssh is None:  # one ssh plugin, given each host's variables in turn
                    self._ssh = self.action._shared_loader_obj.connection_loader.get(
                        "ssh", self.action._play_context, None)
                options = fleet_ssh.connection_options(self._ssh, host_vars)
            except AnsibleError as exc:  # an ssh setting of the host that Ansible itself refuses
                self.refused[name] = f"its SSH settings cannot be read: {exc.message}"
                return None
            if not fleet_ssh.reachable_by_ssh(host_vars, options):
                self.remote.append(name)
                return None
            session = fleet_ssh.destination(options, host_vars)
        try:
            bot = bot_entry(host_vars, name)
            secrets = read_vars(host_vars, SECRET_VARS)
        except MissingVariable as exc:
            self.refused[name] = str(exc)
            return None
        except AnsibleError as exc:  # a variable templated from an undefined one, a vars file that fails
            self.refused[name] = f"its inventory variables cannot be read: {exc.message}"
            return None
        entry, why = check_entry(plain({"local": True, "bot": bot, "secrets": secrets}), self.validator)
        if why is not None:
            self.refused[name] = why
            return None
        profile, why = self._profile(entry["bot"]["family"])
        if why is not None:
            self.refused[name] = why  # names the family and the profiles directory
            return None
        if session is not None:
            self.over_ssh.setdefault(session, []).append(entry)  # local there; its profile goes with the call
            return None
        entry["profile"] = profile
        return entry


class ActionModule(ActionBase):
    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        if self._connection.transport not in LOCAL:
            result.update(self._execute_module(module_name=MODULE, task_vars=task_vars))
            return result
        args = plain({k: v for k, v in self._task.args.items() if k != "hosts"})
        hosts = self._task.args.get("hosts")
        spec = fleet.argument_spec()
        if hosts is not None:
            if args.get("bots") is not None:
                result.update(failed=True, changed=False, msg=f"{MODULE}: give hosts or bots, not both")
                return result
            args["bots"] = []  # the hosts' entries come from the reader, checked one by one
        validated = ArgumentSpecValidator(spec, required_if=REQUIRED_IF).validate(args)
        if validated.error_messages:
            result.update(failed=True, changed=False, msg=f"Invalid arguments for {MODULE}: "
                                                          + "; ".join(validated.error_messages))
            return result
        params = validated.validated_parameters
        check_mode = bool(self._play_context.check_mode)
        if hosts is None:
            out, failure = fleet.run_fleet(params, check_mode)
        else:
            reader = HostReader(self, plain(hosts), task_vars, spec["bots"]["options"], params["profiles"])
            away_names = []  # known once every host is read

            def drive_away():
                reader.ready.wait()
                if not reader.over_ssh:
                    return {}
                away_names.extend(e["bot"]["name"] for group in reader.over_ssh.values() for e in group)
                payload = fleet_ssh.module_utils_payload(os.path.dirname(fleet.__file__))
                shared = {k: v for k, v in params.items() if k != "bots"}
                return fleet_ssh.drive_hosts(reader.over_ssh, payload, shared, check_mode)

            # every targeted bot is in the result and the summary, the ones refused here too
            out, failure = fleet.run_fleet(params, check_mode, refused=reader.refused,
                                           elsewhere=(away_names, drive_away), arriving=reader.entries())
            result["remote_hosts"] = reader.remote
        result.update(out)
        if failure:
            result.update(failed=True, msg=failure)
        return result
