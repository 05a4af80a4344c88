"""The reference bot says who it is where its family's profile looks (the identity probe), and
hyperliquid's credentials check is a GET that needs the token and changes nothing."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from ansible_collections.botops.fleet.plugins.module_utils.botops_values import json_path
from botops import profiles
from botops.sandbox.refbot import families
from botops.sandbox.refbot.server import Request
from botops.sandbox.refbot.state import BotState

OK = SimpleNamespace(ok=True, detail="ok")


def stub_bot(name="bot07"):
    """What the family builders read of a bot, without its database, Redis or trading loop."""
    state = BotState("DRY", True)
    components = {c: OK for c in ("database", "redis", "schema", "trading")}
    return SimpleNamespace(
        cfg=SimpleNamespace(name=name, paper_only=False, memory_ledger=True), version="1.0.0", view=state.view,
        health=SimpleNamespace(ready=lambda: (True, components)),
        release=SimpleNamespace(qty_column="qty", writes_fee=False),
    )


def get(path, headers=None):
    return Request(method="GET", path=path, query={}, headers=headers or {}, body=b"")


def serve(family, port_name, request):
    """(status, body) of the family's route, or of the refusal its server would answer."""
    spec = next(s for s in families.BUILDERS[family](stub_bot()) if s.port_name == port_name)
    if spec.protect(request):
        return 401, {"detail": "Not authenticated"}
    return spec.routes[(request.method, request.path)](request)


@pytest.mark.parametrize("family", sorted(families.BUILDERS))
def test_each_family_reports_the_bots_name_where_its_profile_looks(family):
    probe = profiles.load(family)["identity"]
    ports = profiles.load(family)["http"]["ports"]
    port_name = probe["http"].get("port", "api" if "api" in ports else next(iter(ports)))
    status, body = serve(family, port_name, get(probe["http"]["path"]))
    assert status == 200 and json_path(body, probe["json"]) == "bot07", body


def test_hyperliquid_reads_its_breaker_only_with_the_token():
    spec = families.hyperliquid(stub_bot())[0]
    breaker = "/api/emergency/circuit-breaker"
    assert spec.protect(get(breaker)), "the admin's breaker read answers without the token"
    assert not spec.protect(get("/api/health"))
    assert spec.protect(Request(method="POST", path="/api/trades/orders/cancel-all", query={}, headers={}, body=b""))
    status, body = spec.routes[("GET", breaker)](get(breaker))
    assert status == 200 and body == {"circuit_breaker": "closed", "reason": None, "since": None}
    check = profiles.load("hyperliquid")["auth"]["check"]
    assert check["http"]["path"] == breaker and ("GET", breaker) in spec.routes
