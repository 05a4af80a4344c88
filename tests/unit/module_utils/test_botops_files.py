"""plugins/module_utils/botops_files: the one atomic writer (mode, temporary file, failure)."""

from __future__ import annotations

import io
import json
import os

import pytest
from ansible_collections.botops.fleet.plugins.module_utils.botops_files import write_atomic, write_json


def test_write_json_replaces_with_mode_and_leaves_nothing_beside(tmp_path):
    path = tmp_path / "record.json"
    path.write_text("old")
    write_json(str(path), {"b": 1, "a": [2]})
    assert path.read_text() == '{\n  "a": [\n    2\n  ],\n  "b": 1\n}\n'
    assert path.stat().st_mode & 0o777 == 0o600
    write_json(str(path), {"b": 1, "a": 2}, mode=0o644, indent=1, sort_keys=False)
    assert path.read_text() == '{\n "b": 1,\n "a": 2\n}\n'
    assert path.stat().st_mode & 0o777 == 0o644
    assert os.listdir(tmp_path) == ["record.json"]


def test_write_atomic_copies_a_binary_file(tmp_path):
    path = tmp_path / "data.bin"
    write_atomic(str(path), io.BytesIO(b"\x00\x01" * 100000), 0o640)
    assert path.read_bytes() == b"\x00\x01" * 100000
    assert path.stat().st_mode & 0o777 == 0o640


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary_one(tmp_path):
    path = tmp_path / "record.json"
    path.write_text('{"kept": true}\n')
    with pytest.raises(TypeError):
        write_json(str(path), {"not json": object()})
    assert json.loads(path.read_text()) == {"kept": True}
    assert os.listdir(tmp_path) == ["record.json"]


def test_a_failed_copy_removes_the_temporary_file(tmp_path):
    class Broken(io.RawIOBase):
        def readinto(self, b):
            raise OSError("read error")

    with pytest.raises(OSError, match="read error"):
        write_atomic(str(tmp_path / "data.bin"), Broken())
    assert os.listdir(tmp_path) == []
