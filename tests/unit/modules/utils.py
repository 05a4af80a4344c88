"""Run a module's main() in-process: exit_json / fail_json raise, as in ansible-core's unit tests."""

from __future__ import annotations

from contextlib import contextmanager
from unittest import mock

import pytest
from ansible.module_utils import basic
from ansible.module_utils.testing import patch_module_args


class AnsibleExitJson(Exception):
    """exit_json was called: args[0] is the result."""


class AnsibleFailJson(Exception):
    """fail_json was called: args[0] is the result."""


def _exit_json(self, **kwargs):
    kwargs.setdefault("changed", False)
    raise AnsibleExitJson(kwargs)


def _fail_json(self, **kwargs):
    kwargs["failed"] = True
    raise AnsibleFailJson(kwargs)


@contextmanager
def module_args(args: dict, check_mode: bool = False):
    payload = dict(args)
    if check_mode:
        payload["_ansible_check_mode"] = True
    with patch_module_args(payload), \
            mock.patch.object(basic.AnsibleModule, "exit_json", _exit_json), \
            mock.patch.object(basic.AnsibleModule, "fail_json", _fail_json):
        yield


def run_module(main, args: dict, check_mode: bool = False) -> dict:
    """Run main() with these arguments; return the result dict (failed=True when it failed)."""
    with module_args(args, check_mode):
        with pytest.raises((AnsibleExitJson, AnsibleFailJson)) as info:
            main()
    return info.value.args[0]
