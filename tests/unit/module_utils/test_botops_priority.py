"""botops_priority: a module lowers its own CPU priority to BOTOPS_NICE, the programs it runs
inherit it, it is never raised, and a wrong value fails the module before it does anything.

Each case runs in a fresh process: a niceness, once lowered, stays lowered for the process."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from ansible_collections.botops.fleet.plugins.module_utils.botops_priority import yield_cpu

# the module's process lowers its priority, then runs a program (as pg_dump or alembic would be run)
CHILD = """
import subprocess, sys
from ansible_collections.botops.fleet.plugins.module_utils.botops_priority import yield_cpu
print(yield_cpu())
print(subprocess.run([sys.executable, "-c", "import os; print(os.nice(0))"], capture_output=True, text=True).stdout.strip())
"""


def run(env_value=None, start_at=0):
    env = {k: v for k, v in os.environ.items() if k != "BOTOPS_NICE"}
    if env_value is not None:
        env["BOTOPS_NICE"] = env_value
    cmd = [sys.executable, "-c", CHILD]
    if start_at:
        cmd = ["nice", "-n", str(start_at), *cmd]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout.split()
    return [int(v) for v in out]


BASE = os.nice(0)  # the niceness this test runs at (a CI runner may already be niced)


def test_the_module_and_the_programs_it_runs_go_below_the_bots():
    assert run("10") == [max(10, BASE)] * 2


def test_without_botops_nice_nothing_changes():
    assert run() == [BASE, BASE]
    assert run("") == [BASE, BASE]
    assert run("0") == [BASE, BASE]


def test_a_priority_is_never_raised():
    start = max(BASE, 15)
    assert run("5", start_at=start - BASE) == [start, start]


@pytest.mark.parametrize("value", ["20", "-1", "ten", "1.5"])
def test_a_wrong_value_fails_the_module_before_it_does_anything(value):
    class Module:
        def fail_json(self, msg):
            raise SystemExit(msg)

    before = os.nice(0)
    with pytest.raises(SystemExit) as info:
        yield_cpu(Module(), environ={"BOTOPS_NICE": value})
    assert str(info.value) == (f"BOTOPS_NICE={value!r} (bot_ops_nice): a niceness is a whole number from 0 to 19, "
                               "e.g. 10")
    with pytest.raises(ValueError, match="bot_ops_nice"):
        yield_cpu(environ={"BOTOPS_NICE": value})
    assert os.nice(0) == before
