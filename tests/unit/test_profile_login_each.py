"""Login variants (basic / json / form, a token that expires, requests marked `auth: none`), actions
done for each item of a list (`each`) and counts of the items that match (`count` with `where`),
against a real local HTTP server that speaks like Freqtrade's REST API."""

from __future__ import annotations

import base64
import copy
import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ansible_collections.botops.fleet.plugins.module_utils.botops_bot import Bot
from ansible_collections.botops.fleet.plugins.module_utils.botops_errors import BotError, CredentialsError
from ansible_collections.botops.fleet.plugins.module_utils.botops_mode import plan_actions
from ansible_collections.botops.fleet.plugins.module_utils.botops_values import PlaceholderError, describe_action, substitute, uses_http
from botops import profiles
from botops.profiles import ProfileError

USER, PASSWORD = "freqtrader", "pa&ss=w0rd secret"


class _Freqtrade(BaseHTTPRequestHandler):
    """/api/v1/ping is public; the rest needs a bearer token from POST /api/v1/token/login, which
    takes the credentials as state["login"] says (basic, json or form; state["fields"] their names)."""

    state: dict = {}

    def log_message(self, *args):
        pass

    def _send(self, status, doc):
        raw = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def _body(self):
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _login(self):
        state, raw = self.state, self._body()
        state["logins"].append({"authorization": self.headers.get("Authorization"),
                                "content_type": self.headers.get("Content-Type"), "body": raw})
        user_field, password_field = state["fields"]
        if state["login"] == "basic":
            header = self.headers.get("Authorization") or ""
            given = base64.b64decode(header[6:]).decode() if header.startswith("Basic ") else ""
            user, _, password = given.partition(":")
            ok = not raw and (user, password) == (USER, PASSWORD)
        elif state["login"] == "json":
            doc = json.loads(raw or b"null") if self.headers.get("Content-Type") == "application/json" else None
            ok = isinstance(doc, dict) and (doc.get(user_field), doc.get(password_field)) == (USER, PASSWORD)
        else:
            form = (urllib.parse.parse_qs(raw.decode())
                    if self.headers.get("Content-Type") == "application/x-www-form-urlencoded" else {})
            ok = (form.get(user_field), form.get(password_field)) == ([USER], [PASSWORD])
        if not ok:
            self._send(401, {"detail": "Unauthorized"})
            return
        token = f"tok-{len(state['logins'])}-7f3e9a"
        state["issued"].append(token)
        state["valid"].add(token)
        self._send(200, state.get("answer") or {"access_token": token, "refresh_token": "refresh-" + token})

    def _authorized(self):
        header = self.headers.get("Authorization") or ""
        self.state["seen"].append((self.command, self.path, header))
        if header.startswith("Bearer ") and header[7:] in self.state["valid"] and not self.state.get("refuse_all"):
            return True
        self._send(401, {"detail": "Unauthorized"})
        return False

    def do_GET(self):
        if self.path == "/api/v1/ping":
            self.state["seen"].append((self.command, self.path, self.headers.get("Authorization") or ""))
            self._send(200, {"status": "pong"})
        elif not self._authorized():
            return
        elif self.path == "/api/v1/status":
            self._send(200, self.state["trades"])
        elif self.path == "/api/v1/show_config":
            self._send(200, {"runmode": "dry_run", "dry_run": True, "bot_name": "ft01"})
        else:
            self._send(404, {"detail": "Not Found"})

    def do_POST(self):
        if self.path == "/api/v1/token/login":
            self._login()
            return
        body = json.loads(self._body() or b"null")
        if not self._authorized():
            return
        self.state["posted"].append((self.path, body))
        self._send(200, {"result": "ok"})

    def do_DELETE(self):
        if not self._authorized():
            return
        self.state["deleted"].append(self.path)
        parts = self.path.split("/")  # /api/v1/trades/<id>/open-order
        trade = next((t for t in self.state["trades"] if str(t.get("trade_id")) == parts[4]), None)
        if trade is None or len(parts) != 6 or parts[5] != "open-order":
            self._send(404, {"detail": "trade not found"})
            return
        trade["has_open_orders"] = False
        self._send(200, {"result": "cancelled"})


TRADES = [
    {"trade_id": 1, "pair": "BTC/USDT", "has_open_orders": True, "orders": [{"order_id": "a1"}]},
    {"trade_id": 2, "pair": "ETH/USDT", "has_open_orders": False, "orders": [{"order_id": "b1"}]},
    {"trade_id": 3, "pair": "SOL/USDT", "has_open_orders": True, "orders": [{"order_id": "c 1/x"}]},
]


@pytest.fixture
def freqtrade():
    _Freqtrade.state = {"login": "basic", "fields": ("username", "password"), "logins": [], "issued": [],
                        "valid": set(), "seen": [], "posted": [], "deleted": [], "trades": copy.deepcopy(TRADES)}
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Freqtrade)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield _Freqtrade.state, srv.server_address[1]
    srv.shutdown()
    srv.server_close()


LOGIN = {"request": {"method": "POST", "path": "/api/v1/token/login"}, "token_json": "access_token",
         "credentials": "basic"}
PING = {"http": {"path": "/api/v1/ping", "auth": "none"}, "json": "status", "equals": "pong"}
CANCEL_EACH = {"each": {"http": {"path": "/api/v1/status"}, "json": "",
                        "where": {"json": "has_open_orders", "equals": True}},
               "do": [{"http": {"method": "DELETE", "path": "/api/v1/trades/{item.trade_id}/open-order"}}]}
OPEN_ORDERS = {"http": {"path": "/api/v1/status"}, "json": "", "count": True,
               "where": {"json": "has_open_orders", "equals": True}}


def freqtrade_profile(**login):
    """A Freqtrade-like profile: login with basic credentials, a public ping for liveness, open orders
    counted from the trades, each open trade's order cancelled."""
    profile = copy.deepcopy(profiles.load("mojorust"))
    profile["http"]["ports"] = {"api": 8080}
    profile["auth"] = {"type": "login", "login": copy.deepcopy(dict(LOGIN, **login)),
                       "check": {"http": {"path": "/api/v1/show_config"}}}
    profile["identity"] = {"http": {"path": "/api/v1/show_config"}, "json": "bot_name"}
    profile["health"] = {"liveness": copy.deepcopy(PING),
                         "readiness": {"http": {"path": "/api/v1/show_config"}, "json": "runmode"}}
    profile["facts"]["open_orders"] = copy.deepcopy(OPEN_ORDERS)
    profile["facts"]["open_positions"] = {"http": {"path": "/api/v1/status"}, "json": "", "count": True}
    profile["positions"] = {"cancel_orders": [copy.deepcopy(CANCEL_EACH)]}
    return profile


def make_bot(port, profile=None, password=PASSWORD):
    bot = {"name": "ft01", "root": "/nonexistent", "listen": "127.0.0.1", "ports": {"api": port},
           "process_match": "no-such-process-botops-test"}
    return Bot(profile or freqtrade_profile(), bot, {"username": USER, "password": password})


def test_the_freqtrade_like_profile_is_valid():
    profiles.validate(freqtrade_profile(), "mojorust")
    profiles.validate(freqtrade_profile(credentials="json", fields={"username": "user", "password": "pass"}),
                      "mojorust")


# ---------------------------------------------------------------------------- login variants
def test_basic_login_sends_a_header_and_no_body(freqtrade):
    state, port = freqtrade
    bot = make_bot(port)
    assert bot.probe({"http": {"path": "/api/v1/show_config"}, "json": "runmode"}) == "dry_run"
    assert bot.probe({"http": {"path": "/api/v1/show_config"}, "json": "dry_run"}) is True
    [login] = state["logins"]  # one login serves every request
    assert login["authorization"] == "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    assert login["body"] == b"" and login["content_type"] is None
    assert [s[2] for s in state["seen"]] == ["Bearer tok-1-7f3e9a"] * 2


def test_json_login_names_its_fields(freqtrade):
    state, port = freqtrade
    state.update(login="json", fields=("user", "pass"))
    bot = make_bot(port, freqtrade_profile(credentials="json", fields={"username": "user", "password": "pass"}))
    assert bot.probe({"http": {"path": "/api/v1/status"}, "json": "", "count": True}) == 3
    [login] = state["logins"]
    assert json.loads(login["body"]) == {"user": USER, "pass": PASSWORD} and login["authorization"] is None


def test_json_is_the_default_login(freqtrade):
    state, port = freqtrade
    state["login"] = "json"
    profile = freqtrade_profile()
    del profile["auth"]["login"]["credentials"]
    assert make_bot(port, profile).credentials()["ok"] is True
    assert json.loads(state["logins"][0]["body"]) == {"username": USER, "password": PASSWORD}


def test_form_login_encodes_the_credentials(freqtrade):
    state, port = freqtrade
    state["login"] = "form"
    bot = make_bot(port, freqtrade_profile(credentials="form"))
    assert bot.probe({"http": {"path": "/api/v1/show_config"}, "json": "runmode"}) == "dry_run"
    [login] = state["logins"]
    assert login["content_type"] == "application/x-www-form-urlencoded"
    assert urllib.parse.parse_qs(login["body"].decode()) == {"username": [USER], "password": [PASSWORD]}


def test_an_expired_token_is_renewed_once_and_the_request_sent_again(freqtrade):
    state, port = freqtrade
    bot = make_bot(port)
    assert bot.do({"http": {"method": "POST", "path": "/api/v1/stopbuy"}}) == "POST /api/v1/stopbuy -> 200"
    state["valid"].clear()  # Freqtrade's access tokens expire after 15 minutes
    assert bot.do({"http": {"method": "POST", "path": "/api/v1/stopbuy"}}) == "POST /api/v1/stopbuy -> 200"
    assert len(state["logins"]) == 2
    assert [s[2] for s in state["seen"]] == ["Bearer tok-1-7f3e9a", "Bearer tok-1-7f3e9a", "Bearer tok-2-7f3e9a"]
    assert state["posted"] == [("/api/v1/stopbuy", None)] * 2
    # a GET too, and the renewed token serves the requests after it
    state["valid"].clear()
    assert bot.probe({"http": {"path": "/api/v1/show_config"}, "json": "runmode"}) == "dry_run"
    assert bot.probe({"http": {"path": "/api/v1/show_config"}, "json": "runmode"}) == "dry_run"
    assert len(state["logins"]) == 3


def test_a_token_refused_again_is_not_renewed_twice(freqtrade):
    state, port = freqtrade
    bot = make_bot(port)
    bot.probe({"http": {"path": "/api/v1/show_config"}, "json": "runmode"})
    state["refuse_all"] = True  # no token works now, not even a new one
    with pytest.raises(BotError) as info:
        bot.do({"http": {"method": "POST", "path": "/api/v1/forceexit", "body": {"tradeid": "all"}}})
    assert "HTTP 401" in str(info.value)
    assert len(state["logins"]) == 2  # one renewal, then the answer stands
    # a token that was just issued and is refused is not renewed at all
    fresh = make_bot(port)
    assert fresh.request({"path": "/api/v1/show_config"})[0] == 401
    assert len(state["logins"]) == 3
    for token in state["issued"]:
        assert token not in str(info.value)


def test_a_failed_login_names_the_request_never_the_password_or_token(freqtrade):
    state, port = freqtrade
    bot = make_bot(port, password="wrong-secret-pw")
    with pytest.raises(CredentialsError) as info:
        bot.probe({"http": {"path": "/api/v1/show_config"}, "json": "runmode"})
    assert str(info.value) == "login POST /api/v1/token/login answered HTTP 401"
    seen = bot.credentials()
    assert seen["ok"] is False and "login POST /api/v1/token/login answered HTTP 401" in seen["message"]
    for text in (str(info.value), seen["message"]):
        assert "wrong-secret-pw" not in text and PASSWORD not in text


def test_a_login_answer_without_a_usable_token_does_not_show_it(freqtrade):
    state, port = freqtrade
    state["answer"] = {"access_token": {"value": "tok-hidden-1234"}, "refresh_token": "refresh-hidden-5678"}
    with pytest.raises(BotError) as info:
        make_bot(port).probe({"http": {"path": "/api/v1/show_config"}, "json": "runmode"})
    assert "'access_token' is not a string" in str(info.value)
    state["answer"] = {"token": "tok-hidden-1234", "refresh_token": "refresh-hidden-5678"}
    with pytest.raises(BotError) as other:
        make_bot(port).probe({"http": {"path": "/api/v1/show_config"}, "json": "runmode"})
    assert "login answer has no token: no 'access_token'" in str(other.value)
    for text in (str(info.value), str(other.value)):
        assert "hidden" not in text and PASSWORD not in text


def test_a_public_request_carries_no_credentials_and_answers_when_the_login_fails(freqtrade):
    state, port = freqtrade
    bot = make_bot(port, password="wrong-secret-pw")
    profile = bot.profile
    ok, seen = bot.check(profile["health"]["liveness"])
    assert ok and seen == {"status": 200, "value": "pong"}
    assert bot.wait_for([profile["health"]["liveness"]], timeout=1)[0]
    assert state["logins"] == []  # never tried to log in
    assert state["seen"] == [("GET", "/api/v1/ping", "")] * 2
    ok, seen = bot.check(profile["health"]["readiness"])  # needs the login, which fails
    assert not ok and "login POST /api/v1/token/login answered HTTP 401" in seen["error"]
    # with working credentials, a public request still carries none
    good = make_bot(port)
    good.probe({"http": {"path": "/api/v1/show_config"}, "json": "runmode"})
    assert good.check(profile["health"]["liveness"])[0]
    assert state["seen"][-1] == ("GET", "/api/v1/ping", "")


# ---------------------------------------------------------------------------- placeholders
def test_substitute_reads_dotted_names_and_quotes_paths():
    item = {"trade_id": 7, "pair": "BTC/USDT", "order": {"id": "x 1"}, "open": True}
    names = {"item": item, "reason": "drawdown"}
    assert substitute({"tradeid": "{item.trade_id}", "open": "{item.open}", "all": "{item}",
                       "why": "{reason}: {item.pair}", "deep": ["{item.order.id}"]}, names) == {
        "tradeid": 7, "open": True, "all": item, "why": "drawdown: BTC/USDT", "deep": ["x 1"]}
    assert substitute("/api/v1/trades/{item.trade_id}/{item.pair}/{item.order.id}", names, quote=True) == (
        "/api/v1/trades/7/BTC%2FUSDT/x%201")
    assert substitute("/api/v1/{unknown.x}/{other}", names, quote=True) == "/api/v1/{unknown.x}/{other}"
    with pytest.raises(PlaceholderError, match=r"\{item.order.side\}: no 'order.side' in"):
        substitute({"side": "{item.order.side}"}, names)


# ---------------------------------------------------------------------------- counts with a condition
def test_a_count_with_where_counts_the_items_that_match(freqtrade):
    state, port = freqtrade
    bot = make_bot(port)
    assert bot.probe(OPEN_ORDERS) == 2
    assert bot.probe(dict(OPEN_ORDERS, where={"json": "trade_id", "at_least": 2})) == 2
    assert bot.probe(dict(OPEN_ORDERS, where={"json": "pair", "one_of": ["ETH/USDT", "SOL/USDT"]})) == 2
    assert bot.probe(dict(OPEN_ORDERS, where={"json": "orders.0.order_id", "not_equals": "a1"})) == 2
    assert bot.probe(dict(OPEN_ORDERS, where={"json": "stop_loss"})) == 0  # no item has it
    assert bot.probe(OPEN_ORDERS | {"where": {"json": "has_open_orders", "equals": 1}}) == 0  # true is not 1
    state["trades"] = []
    assert bot.probe(OPEN_ORDERS) == 0
    state["trades"] = {"trades": TRADES}
    with pytest.raises(BotError, match=r"GET /api/v1/status: '' is not a list: \{\"trades\""):
        bot.probe(OPEN_ORDERS)


# ---------------------------------------------------------------------------- each
def test_each_cancels_the_open_order_of_each_open_trade(freqtrade):
    state, port = freqtrade
    bot = make_bot(port)
    assert bot.probe(bot.profile["facts"]["open_orders"]) == 2
    done = [bot.do(action) for action in bot.profile["positions"]["cancel_orders"]]
    assert done == ["DELETE /api/v1/trades/{item.trade_id}/open-order for 2 items of GET /api/v1/status "
                    "where 'has_open_orders' equal to true"]
    assert state["deleted"] == ["/api/v1/trades/1/open-order", "/api/v1/trades/3/open-order"]
    assert bot.probe(bot.profile["facts"]["open_orders"]) == 0
    assert bot.probe(bot.profile["facts"]["open_positions"]) == 3
    # nothing left to cancel: success, nothing sent
    assert bot.do(CANCEL_EACH) == "no item of GET /api/v1/status where 'has_open_orders' equal to true"
    assert len(state["deleted"]) == 2


def test_each_fills_bodies_and_quoted_paths_from_the_item(freqtrade):
    state, port = freqtrade
    bot = make_bot(port)
    action = {"each": {"http": {"path": "/api/v1/status"}, "json": ""},
              "do": [{"http": {"method": "POST", "path": "/api/v1/forceexit",
                               "body": {"tradeid": "{item.trade_id}", "ordertype": "market",
                                        "note": "{reason}: exit {item.pair}", "open": "{item.has_open_orders}"}}},
                     {"http": {"method": "POST", "path": "/api/v1/orders/{item.orders.0.order_id}/cancel"}}]}
    done = bot.do(action, {"reason": "drawdown"})
    assert done.endswith("for 3 items of GET /api/v1/status")
    exits = [body for path, body in state["posted"] if path == "/api/v1/forceexit"]
    assert exits[0] == {"tradeid": 1, "ordertype": "market", "note": "drawdown: exit BTC/USDT", "open": True}
    assert [e["tradeid"] for e in exits] == [1, 2, 3]  # an id stays a number
    cancels = [path for path, _ in state["posted"] if path.startswith("/api/v1/orders/")]
    assert cancels == ["/api/v1/orders/a1/cancel", "/api/v1/orders/b1/cancel", "/api/v1/orders/c%201%2Fx/cancel"]


def test_an_item_without_the_field_fails_naming_it_and_the_others_are_acted_on(freqtrade):
    state, port = freqtrade
    state["trades"][0] = {"id": 1, "pair": "BTC/USDT", "has_open_orders": True}  # no trade_id
    bot = make_bot(port)
    with pytest.raises(BotError) as info:
        bot.do(CANCEL_EACH)
    msg = str(info.value)
    assert "done for 1 of 2 items of GET /api/v1/status" in msg
    assert ("item 0 {\"id\": 1, \"pair\": \"BTC/USDT\", \"has_open_orders\": true} has no 'trade_id' for "
            "{item.trade_id} of DELETE /api/v1/trades/{item.trade_id}/open-order") in msg
    assert state["deleted"] == ["/api/v1/trades/3/open-order"]


def test_an_item_whose_request_fails_is_named(freqtrade):
    state, port = freqtrade
    # quoted into the path, "99/extra" names no trade of the bot: it answers 404
    state["trades"].append({"trade_id": "99/extra", "pair": "X/USDT", "has_open_orders": True})
    bot = make_bot(port)
    with pytest.raises(BotError) as info:
        bot.do(CANCEL_EACH)
    assert "done for 2 of 3 items" in str(info.value)
    assert "item 3 {\"trade_id\": \"99/extra\"" in str(info.value) and "answered HTTP 404" in str(info.value)
    assert state["deleted"][-1] == "/api/v1/trades/99%2Fextra/open-order"


def test_each_needs_a_list(freqtrade):
    state, port = freqtrade
    bot = make_bot(port)
    with pytest.raises(BotError, match=r"GET /api/v1/status '0' is not a list: \{\"trade_id\": 1"):
        bot.do(dict(CANCEL_EACH, each={"http": {"path": "/api/v1/status"}, "json": "0"}))
    with pytest.raises(BotError, match=r"GET /api/v1/nope answered HTTP 404"):
        bot.do(dict(CANCEL_EACH, each={"http": {"path": "/api/v1/nope"}, "json": ""}))
    assert state["deleted"] == []


class _Redis:
    """The shared Redis helper's interface (Bot.redis): GET and SET on a dict."""

    def __init__(self, data):
        self.data = data

    def command(self, url, op, key, *value):
        if op == "GET":
            return self.data.get(key)
        self.data[key] = value[0]
        return "OK"


def test_each_reads_a_redis_list_and_acts_on_the_api(freqtrade):
    state, port = freqtrade
    bot = make_bot(port)
    bot.bot["redis_url"] = "redis://127.0.0.1:1/0"
    bot.redis = _Redis({"bot:orders": json.dumps({"open": [{"trade_id": 3}, {"trade_id": 1}]})})
    action = {"each": {"redis": {"key": "bot:orders"}, "json": "open"}, "do": CANCEL_EACH["do"]}
    assert bot.do(action).endswith("for 2 items of Redis key bot:orders 'open'")
    assert state["deleted"] == ["/api/v1/trades/3/open-order", "/api/v1/trades/1/open-order"]


def test_describe_and_plan_an_each_action():
    assert describe_action(CANCEL_EACH) == (
        "for each item of GET /api/v1/status where 'has_open_orders' equal to true: "
        "DELETE /api/v1/trades/{item.trade_id}/open-order")
    assert uses_http(CANCEL_EACH)
    assert uses_http({"each": {"redis": {"key": "k"}}, "do": [{"http": {"path": "/x"}}]})
    assert not uses_http({"each": {"redis": {"key": "k"}}, "do": [{"signal": "TERM"}]})
    assert plan_actions([[CANCEL_EACH], [{"service": "restart"}]]) == [CANCEL_EACH, {"service": "restart"}]


# ---------------------------------------------------------------------------- the schema
def _set(profile, path, value):
    node = profile
    *parents, last = path.split(".")
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    if value is None:
        del node[int(last) if last.isdigit() else last]
    else:
        node[int(last) if last.isdigit() else last] = value


@pytest.mark.parametrize("path, value, message", [
    ("facts.open_orders.count", None, "facts.open_orders: 'where' needs 'count' (where picks the items counted)"),
    ("facts.open_orders.count", False, "facts.open_orders.where: counts the items that match, and count is false"),
    ("facts.open_orders.where", {"equals": True}, "facts.open_orders.where: missing required key 'json'"),
    ("facts.open_orders.where", {"json": "x", "matches": "y"}, "facts.open_orders.where: unknown key 'matches'"),
    ("facts.open_orders.where.less_than", "two", "facts.open_orders.where.less_than: expected number"),
    ("positions.cancel_orders.0.do", None, "positions.cancel_orders[0]: 'each' needs 'do' (the actions done"),
    ("positions.cancel_orders.0.do", [], "positions.cancel_orders[0].do: []"),
    ("positions.cancel_orders.0.each", None, "positions.cancel_orders[0]: 'do' needs 'each' (the list whose"),
    ("positions.cancel_orders.0.http", {"path": "/x"}, "positions.cancel_orders[0]: expected exactly one of"),
    ("positions.cancel_orders.0.each.redis", {"key": "k"}, "positions.cancel_orders[0].each: expected exactly one of"),
    ("positions.cancel_orders.0.each.where.json", 5, "positions.cancel_orders[0].each.where.json: expected string"),
    ("positions.cancel_orders.0.each.count", True, "positions.cancel_orders[0].each: unknown key 'count'"),
    ("positions.cancel_orders.0.do.0.http.port", "metrics",
     "positions.cancel_orders[0].do[0].http.port: unknown port name 'metrics'"),
    ("positions.cancel_orders.0.each.http.path", "/api/v1/trades/{item.trade_id}",
     "positions.cancel_orders[0].each.http.path: {item.trade_id} is set only in the actions of an each"),
    ("positions.close_all", [{"http": {"method": "DELETE", "path": "/api/v1/trades/{item.trade_id}"}}],
     "positions.close_all[0].http.path: {item.trade_id} is set only in the actions of an each"),
    ("positions.cancel_orders.0.do.0.map", {"side": {"buy": "BUY"}},
     "positions.cancel_orders[0].do[0].map.side: the action has no {side} placeholder"),
    ("auth.login.credentials", "digest",
     "auth.login.credentials: 'digest' is not valid (expected one of: json, form, basic)"),
    ("auth.login.fields", {"username": "user"},
     "auth.login.fields: basic credentials travel in the Authorization header"),
    ("auth.login.fields", {"user": "u"}, "auth.login.fields: unknown key 'user'"),
    ("auth.login.request.body", {"username": "u"}, "auth.login.request.body: the login's body is the credentials"),
    ("health.liveness.http.auth", "never", "health.liveness.http.auth: 'never' is not valid (expected one of: none)"),
])
def test_the_schema_refuses_a_wrong_each_where_or_login(path, value, message):
    profile = freqtrade_profile()
    _set(profile, path, value)
    with pytest.raises(ProfileError) as info:
        profiles.validate(profile, "profiles/mojorust.yml")
    assert f"profiles/mojorust.yml: {message}" in str(info.value)


def test_nested_each_and_item_placeholders_inside_do_are_valid():
    profile = freqtrade_profile()
    profile["positions"]["close_all"] = [
        {"each": {"http": {"path": "/api/v1/status"}, "json": ""},
         "do": [{"http": {"method": "POST", "path": "/api/v1/forceexit", "body": {"tradeid": "{item.trade_id}"}}},
                {"each": {"http": {"path": "/api/v1/status"}, "json": ""},
                 "do": [{"config_file": {"path": "c.json", "key": "last_exit", "value": "{item}"}}]}]}]
    profiles.validate(profile, "profiles/mojorust.yml")
