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


class ActionModule(ActionBase):
    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        if self._connection.transport not in ("local", "ansible.builtin.local"):
            result.update(self._execute_module(module_name=MODULE, task_vars=task_vars))
            return result
        found = self._shared_loader_obj.module_loader.find_plugin_with_context(
            MODULE, collection_list=self._task.collections)
        if not found.resolved:
            result.update(self._execute_module(module_name=MODULE, task_vars=task_vars))
            return result
        module = _load_module(found.plugin_resolved_path)
        # plain values, as a module receives them (the controller's carry data tags that, for one,
        # supervisord's XML-RPC cannot marshal)
        args = json.loads(json.dumps(dict(self._task.args)))
        validated = ArgumentSpecValidator(module.argument_spec(), required_if=module.REQUIRED_IF).validate(args)
        if validated.error_messages:
            result.update(failed=True, changed=False, msg=f"Invalid arguments for {MODULE}: "
                                                          + "; ".join(validated.error_messages))
            return result
        out, failure = module.run_fleet(validated.validated_parameters, bool(self._play_context.check_mode),
                                        validated._no_log_values)
        result.update(out)
        if failure:
            result.update(failed=True, msg=failure)
        return result
