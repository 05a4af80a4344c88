"""Every module documents itself: ansible-doc renders it, EXAMPLES and RETURN are valid YAML."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
MODULES = sorted(p.stem for p in (REPO / "library").glob("*.py"))


def doc_strings(name):
    tree = ast.parse((REPO / "library" / f"{name}.py").read_text())
    found = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            if node.targets[0].id in ("DOCUMENTATION", "EXAMPLES", "RETURN"):
                found[node.targets[0].id] = node.value.value
    return found


def test_ansible_doc_renders_every_module():
    ansible_doc = Path(sys.executable).with_name("ansible-doc")
    proc = subprocess.run([str(ansible_doc), "-M", str(REPO / "library"), "--json", *MODULES],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    docs = json.loads(proc.stdout)
    for name in MODULES:
        assert docs[name]["doc"]["short_description"], name
        assert "check_mode" in docs[name]["doc"].get("attributes", {}), f"{name} declares no check_mode support"


@pytest.mark.parametrize("name", MODULES)
def test_examples_and_return_are_yaml(name):
    strings = doc_strings(name)
    assert set(strings) == {"DOCUMENTATION", "EXAMPLES", "RETURN"}, name
    examples = yaml.safe_load(strings["EXAMPLES"])
    assert isinstance(examples, list) and examples, f"{name}: EXAMPLES holds no task"
    calls = [task for task in examples if name in task or f"botops.{name}" in task]
    assert calls, f"{name}: EXAMPLES never calls the module"
    assert isinstance(yaml.safe_load(strings["RETURN"]), dict), name
