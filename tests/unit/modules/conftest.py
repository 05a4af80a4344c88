"""Module unit tests share no state with the host they run on."""

from __future__ import annotations

import pytest
from ansible_collections.botops.fleet.plugins.module_utils import botops_service


@pytest.fixture(autouse=True)
def slot_dir(tmp_path, monkeypatch):
    """The window slots (bot_deploy, bot_service, bot_restore) in a directory of the test's own: the
    host's are taken by the real bots of the sandbox and the integration tests."""
    directory = tmp_path / "windows"
    monkeypatch.setattr(botops_service, "SLOT_DIR", str(directory))
    return directory
