"""The AWX execution environment installs botops with pip, from its wheel (execution-environment.yml).

`ansible-builder create` writes the image's build context without building it (no container engine
here): the context must hold the wheel, and the Containerfile must install it with pip and check that
the `botops` command and the collection's modules are there, with no PYTHONPATH into a checkout.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_image_installs_the_wheel(tmp_path):
    for name in ("execution-environment.yml", "requirements.yml"):
        shutil.copy(REPO / name, tmp_path / name)
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check", "-q",
                           "-w", str(tmp_path / "dist"), str(REPO)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    builder = Path(sys.executable).with_name("ansible-builder")
    proc = subprocess.run([str(builder), "create", "--file", "execution-environment.yml", "--context", "context",
                           "--output-filename", "Containerfile"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    context = tmp_path / "context"
    assert list((context / "_build" / "botops").glob("botops-*.whl")), sorted(p.name for p in context.rglob("*"))
    containerfile = (context / "Containerfile").read_text()
    assert "pip install --no-cache-dir /tmp/botops/botops-*.whl" in containerfile, containerfile
    assert "botops --list" in containerfile and "ansible-doc botops.fleet.bot_facts" in containerfile
    assert "PYTHONPATH" not in containerfile
