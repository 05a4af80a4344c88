"""botops bench: benchmarks are found by file name and selected with --only."""

from __future__ import annotations

import functools

import pytest

from botops import bench


def test_rollout_is_found_and_selected_by_name():
    assert "deploy" in bench.available()
    (name, path), = bench.select("deploy")
    assert name == "deploy" and path.name == "bench_deploy.py"


def test_dashes_and_underscores_are_alike_and_unknown_names_are_refused(tmp_path, monkeypatch):
    (tmp_path / "bench_kill_switch.py").write_text("def main(argv):\n    return 0\n")
    (tmp_path / "bench_deploy.py").write_text("def main(argv):\n    return len(argv)\n")
    monkeypatch.setattr(bench, "BENCH_DIR", tmp_path)
    # a lock of its own: the machine-wide one is held while a real benchmark runs
    monkeypatch.setattr(bench, "machine_lock", functools.partial(bench.machine_lock, tmp_path / "bench.lock"))
    assert [n for n, _ in bench.select("kill-switch,deploy")] == ["kill_switch", "deploy"]
    assert [n for n, _ in bench.select(None)] == ["deploy", "kill_switch"]
    with pytest.raises(ValueError, match="no benchmark 'nope' .available: deploy, kill_switch"):
        bench.select("nope")
    assert bench.run_selected("deploy", ["--bots", "5"]) == 2
