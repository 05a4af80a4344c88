"""Each role's molecule scenario (``roles/<role>/molecule/default``), one slow test per role.

``molecule test`` runs the default sequence on a real one-bot sandbox fleet (tests/molecule/create.yml
and destroy.yml): destroy, syntax, create, prepare, converge, idempotence (a second converge must
change nothing), verify, destroy. Run them with ``python -m pytest -m slow tests/molecule``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ROLES = sorted(p.parent.parent.name for p in (REPO / "roles").glob("*/meta/main.yml"))
SCENARIO_TIMEOUT = 1200  # seconds; a scenario takes well under a minute on an idle machine


def molecule_env(ansible_home: Path) -> dict[str, str]:
    """The environment of a test run: the venv's tools first, Ansible's state out of ~/.ansible, no colours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOLECULE_")}
    env.update({
        "PATH": os.pathsep.join((str(BIN), os.environ.get("PATH", ""))),
        "ANSIBLE_HOME": str(ansible_home),
        "NO_COLOR": "1",
        "ANSIBLE_NOCOLOR": "1",
        "PY_COLORS": "0",
    })
    return env


@pytest.mark.slow
@pytest.mark.parametrize("role", ROLES)
def test_molecule_scenario(role, tmp_path):
    role_dir = REPO / "roles" / role
    assert (role_dir / "molecule" / "default" / "molecule.yml").is_file(), f"role {role} has no molecule scenario"
    proc = subprocess.run(
        [str(BIN / "molecule"), "test"], cwd=role_dir, env=molecule_env(tmp_path / "ansible"),
        capture_output=True, text=True, timeout=SCENARIO_TIMEOUT,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"molecule test of role {role} failed (rc={proc.returncode}):\n{output[-6000:]}"
    for step in ("converge", "idempotence", "verify", "destroy"):
        assert re.search(rf"{step}: Executed: Successful", output), f"role {role}: step {step} did not run:\n{output[-3000:]}"
