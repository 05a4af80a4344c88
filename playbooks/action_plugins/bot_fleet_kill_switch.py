# Copyright: botops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""bot_fleet_kill_switch on the controller, in the controller's own process.

The module runs on the controller anyway (``delegate_to: localhost``). Executed as a module, each
call also pays for packing the module and its module_utils into an AnsiballZ payload, a Python
process that unpacks and compiles them, and a round trip of every bot's arguments through JSON:
about half a second of CPU, a quarter of a fleet halt's budget. For a task that runs on the
controller (local connection) this plugin runs the module's own code (``run_fleet``, the same
function ``main()`` calls, with the same argument spec and rules) in the worker process instead;
for any other connection it executes the module as usual. It sits beside the playbooks that use
the module (Ansible loads ``action_plugins/`` next to a playbook); plays elsewhere run the module.

Given ``hosts`` (the play's host names) instead of ``bots``, it reads each host's inventory
variables itself, once, in Python, and each family's profile once: at a thousand bots, templating
every bot's facts into the task's arguments costs seconds (Ansible templates, tags and pickles
every value of a task's arguments), and this costs a fraction of one.
"""

from __future__ import annotations

import importlib.util
import json
import sys

from ansible import constants as C
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.plugins.action import ActionBase

MODULE = "bot_fleet_kill_switch"


def _load_module(path):
    """The module's Python code, importable on the controller with botops' module_utils."""
    import ansible.module_utils

    for directory in C.DEFAULT_MODULE_UTILS_PATH or ():
        if directory not in ansible.module_utils.__path__:
            ansible.module_utils.__path__.append(directory)
    name = f"_botops_controller_{MODULE}"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        code = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(code)
        sys.modules[name] = code
    return sys.modules[name]


# A bot's facts and secrets from its inventory variables: key -> (variable, default), as group_vars'
# botops_bot and botops_secrets build them (tests/unit/test_fleet_kill_switch_playbook.py keeps the
# two in step). The kill switch needs every fact but the database, and no database password.
REQUIRED = object()
BOT_VARS = {
    "family": ("bot_family", REQUIRED),
    "root": ("bot_root", REQUIRED),
    "listen": ("bot_listen", "127.0.0.1"),
    "ports": ("bot_ports", {}),
    "service": ("bot_service", {}),
    "process_match": ("bot_process_match", None),
    "redis_url": ("bot_redis_url", None),
    "paper_only": ("bot_paper_only", None),
}
SECRET_VARS = {
    "api_token": ("bot_api_token", None),
    "username": ("bot_api_username", None),
    "password": ("bot_api_password", None),
}
LOCAL = ("local", "ansible.builtin.local")


def plain(value):
    """The value without the controller's data tags, as a module receives it (supervisord's
    XML-RPC, for one, cannot marshal tagged strings)."""
    return json.loads(json.dumps(value))


def read_vars(host_vars, wanted):
    """{key: value} of the variables in `wanted`; raises KeyError naming a required one not set."""
    out = {}
    for key, (name, default) in wanted.items():
        if name in host_vars:
            out[key] = host_vars[name]
        elif default is REQUIRED:
            raise KeyError(name)
        else:
            out[key] = default
    return out


class ActionModule(ActionBase):
    TRANSFERS_FILES = False

    def split_hosts(self, hosts, task_vars):
        """(entries of the local bots, profiles by family, remote hosts, {host: why it cannot be driven}).

        One pass over the hosts, each host's variables computed once; a host whose variables are
        missing is reported as that bot's failure, never the whole fleet's."""
        hostvars = task_vars["hostvars"]
        entries, remote, broken = [], [], {}
        for name in hosts:
            host_vars = hostvars[name]
            if host_vars.get("ansible_connection", "ssh") not in LOCAL:
                remote.append(name)
                continue
            try:
                bot = dict(read_vars(host_vars, BOT_VARS), name=name)
                secrets = read_vars(host_vars, SECRET_VARS)
            except KeyError as exc:
                broken[name] = f"its inventory sets no {exc.args[0]}"
                continue
            entries.append({"local": True, "bot": bot, "secrets": secrets})
        entries = plain(entries)
        lookup = self._shared_loader_obj.lookup_loader.get("bot_profile", loader=self._loader, templar=self._templar)
        profiles = {family: plain(lookup.run([family], variables=task_vars)[0])
                    for family in sorted({e["bot"]["family"] for e in entries})}
        return entries, profiles, remote, broken

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        local = self._connection.transport in LOCAL
        found = self._shared_loader_obj.module_loader.find_plugin_with_context(
            MODULE, collection_list=self._task.collections)
        if not local or not found.resolved:
            result.update(self._execute_module(module_name=MODULE, task_vars=task_vars))
            return result
        module = _load_module(found.plugin_resolved_path)
        args = plain({k: v for k, v in self._task.args.items() if k != "hosts"})
        hosts = self._task.args.get("hosts")
        broken = {}
        if hosts is not None:
            if args.get("bots") is not None:
                result.update(failed=True, changed=False, msg=f"{MODULE}: give hosts or bots, not both")
                return result
            args["bots"], found, result["remote_hosts"], broken = self.split_hosts(plain(hosts), task_vars)
            args["profiles"] = dict(found, **(args.get("profiles") or {}))
        validated = ArgumentSpecValidator(module.argument_spec(), required_if=module.REQUIRED_IF).validate(args)
        if validated.error_messages:
            result.update(failed=True, changed=False, msg=f"Invalid arguments for {MODULE}: "
                                                          + "; ".join(validated.error_messages))
            return result
        params = validated.validated_parameters
        if params["bots"]:
            out, failure = module.run_fleet(params, bool(self._play_context.check_mode), validated._no_log_values)
        else:
            out, failure = {"changed": False, "bots": {}, "actions": [], "summary": {}}, None
        result.update(out)
        for name, why in broken.items():
            result["bots"][name] = {"failed": True, "changed": False, "msg": f"Cannot drive bot '{name}': {why}"}
        if broken:
            failure = "; ".join(filter(None, [failure, f"{len(broken)} bot(s) could not be driven: {', '.join(sorted(broken))}"]))
        if failure:
            result.update(failed=True, msg=failure)
        return result
