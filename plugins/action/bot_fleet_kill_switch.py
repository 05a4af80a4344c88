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

from ansible import constants as C
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


def check_entries(entries, spec):
    """(the entries valid against the module's entry spec, {bot: why not} for the others).

    Each entry alone: validated as one list, a single bot's wrong value (bot_ports that is not a
    mapping, a bot_root that is a list) would fail the whole call, and no bot would be driven."""
    validator = ArgumentSpecValidator(spec)
    valid, wrong = [], {}
    for entry in entries:
        checked = validator.validate(entry)
        if checked.error_messages:
            why = "; ".join(checked.error_messages)
            for secret in sorted(checked._no_log_values, key=len, reverse=True):  # a message may quote a value
                why = why.replace(secret, "********")
            wrong[entry["bot"]["name"]] = in_inventory_words(why)
        else:
            valid.append(checked.validated_parameters)
    return valid, wrong


class ActionModule(ActionBase):
    TRANSFERS_FILES = False

    def split_hosts(self, hosts, task_vars, entry_spec):
        """(entries of the local bots, entries of the bots driven over SSH sessions, profiles by family,
        hosts left to the per-host task, {host: why it cannot be driven}).

        One pass over the hosts, each host's variables computed once and each family's profile
        loaded once; a host whose variables are missing or wrong, or whose family has no loadable
        profile, is reported as that bot's failure, never the whole fleet's."""
        hostvars = task_vars["hostvars"]
        entries, remote, broken, sessions = [], [], {}, {}
        for name in hosts:
            host_vars = hostvars[name]
            if host_vars.get("ansible_connection", "ssh") not in LOCAL:
                if not fleet_ssh.reachable_by_ssh(host_vars):
                    remote.append(name)
                    continue
                sessions[name] = fleet_ssh.destination(host_vars, name)
            try:
                bot = bot_entry(host_vars, name)
                secrets = read_vars(host_vars, SECRET_VARS)
            except MissingVariable as exc:
                broken[name] = str(exc)
                continue
            except AnsibleError as exc:  # a variable templated from an undefined one, a vars file that fails
                broken[name] = f"its inventory variables cannot be read: {exc.message}"
                continue
            entries.append({"local": True, "bot": bot, "secrets": secrets})
        entries, wrong = check_entries(plain(entries), entry_spec)
        broken.update(wrong)
        lookup = self._shared_loader_obj.lookup_loader.get("botops.fleet.bot_profile", loader=self._loader, templar=self._templar)
        profiles, unloadable = {}, {}
        for family in sorted({e["bot"]["family"] for e in entries}):
            try:
                profiles[family] = plain(lookup.run([family], variables=task_vars)[0])
            except AnsibleError as exc:  # an unknown family, an invalid profile: its bots fail, not the fleet
                unloadable[family] = exc.message
        usable, over_ssh = [], {}
        for e in entries:
            why = unloadable.get(e["bot"]["family"])
            if why is not None:
                broken[e["bot"]["name"]] = why  # names the family and the profiles directory
            elif e["bot"]["name"] in sessions:
                over_ssh.setdefault(sessions[e["bot"]["name"]], []).append(dict(e, local=True))  # local there
            else:
                usable.append(e)
        return usable, over_ssh, profiles, remote, broken

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        if self._connection.transport not in LOCAL:
            result.update(self._execute_module(module_name=MODULE, task_vars=task_vars))
            return result
        args = plain({k: v for k, v in self._task.args.items() if k != "hosts"})
        hosts = self._task.args.get("hosts")
        spec = fleet.argument_spec()
        entries, broken, over_ssh = None, {}, {}
        if hosts is not None:
            if args.get("bots") is not None:
                result.update(failed=True, changed=False, msg=f"{MODULE}: give hosts or bots, not both")
                return result
            # the entries are checked one by one in split_hosts; the call's own options here
            entries, over_ssh, found, result["remote_hosts"], broken = self.split_hosts(
                plain(hosts), task_vars, spec["bots"]["options"])
            args["profiles"] = dict(found, **(args.get("profiles") or {}))
            args["bots"] = []
        validated = ArgumentSpecValidator(spec, required_if=REQUIRED_IF).validate(args)
        if validated.error_messages:
            result.update(failed=True, changed=False, msg=f"Invalid arguments for {MODULE}: "
                                                          + "; ".join(validated.error_messages))
            return result
        params = validated.validated_parameters
        if entries is not None:
            params["bots"] = entries
        check_mode = bool(self._play_context.check_mode)
        elsewhere = None
        if over_ssh:
            payload = fleet_ssh.module_utils_payload(os.path.dirname(fleet.__file__))
            shared = {k: v for k, v in params.items() if k != "bots"}
            # where the ssh connection plugin keeps its shared connections (its control_path_dir)
            control_dir = os.path.expanduser(os.environ.get("ANSIBLE_SSH_CONTROL_PATH_DIR")
                                             or os.path.join(C.ANSIBLE_HOME, "cp"))
            elsewhere = ([e["bot"]["name"] for group in over_ssh.values() for e in group],
                         lambda: fleet_ssh.drive_hosts(over_ssh, payload, shared, check_mode, control_dir,
                                                       host_key_checking=bool(C.HOST_KEY_CHECKING)))
        # every targeted bot is in the result and the summary, the ones refused here too
        out, failure = fleet.run_fleet(params, check_mode, refused=broken, elsewhere=elsewhere)
        result.update(out)
        if failure:
            result.update(failed=True, msg=failure)
        return result
