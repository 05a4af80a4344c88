# Copyright: botops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The HTTP client of a Bot (BotHttp, a part of botops_bot.Bot): the credentials a request carries
(a bearer token, basic auth, or a login traded for a bearer token), one request with its timeout
and a fleet run's limits, the profile's requests with their placeholders (memoized within
Bot.memoized), and whether the bot accepts botops' credentials (the profile's auth.check). Stdlib only.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import http.client
import json
import ssl
import urllib.parse

from ansible_collections.botops.fleet.plugins.module_utils.botops_errors import BotError, CredentialsError
from ansible_collections.botops.fleet.plugins.module_utils.botops_values import describe_request, json_path, substitute


class BotHttp:
    """The HTTP part of a Bot. It reads what Bot.__init__ sets (profile, bot, secrets, scheme, ports,
    default_port, timeout, verify_tls, _token, _memo, unresponsive), a fleet run's helpers
    (fail_fast, http_slots: see Bot), and Bot._recall for a GET within Bot.memoized."""

    def _auth_headers(self, method, force=False):
        """The credentials a request of this method carries; `force`: whatever the method (auth.check)."""
        auth = self.profile["auth"]
        kind = auth["type"]
        if kind == "none":
            return {}
        if not force and method not in auth.get("methods", ["GET", "POST", "PUT", "DELETE", "PATCH"]):
            return {}
        if kind == "bearer":
            token = self.secrets.get("api_token")
            if not token:
                raise CredentialsError("the profile needs a bearer token: set bot_api_token for this bot (vault)")
            return {"Authorization": f"Bearer {token}"}
        user, password = self.secrets.get("username"), self.secrets.get("password")
        if not user or not password:
            raise CredentialsError(
                f"the profile needs {kind} credentials: set bot_api_username and bot_api_password (vault)")
        if kind == "basic":
            raw = base64.b64encode(f"{user}:{password}".encode()).decode()
            return {"Authorization": f"Basic {raw}"}
        if self._token is None:  # login: trade the credentials for a bearer token, once
            self._token = self._login(auth["login"], user, password)
        return {"Authorization": f"Bearer {self._token}"}

    def _login(self, login, user, password):
        """A bearer token for the credentials: the login request sends them as `credentials` says
        (basic: an Authorization header; json: a JSON body; form: a form body; `fields` names the
        body's keys). Its messages never hold the password or the token."""
        how = login.get("credentials", "json")
        req = login["request"]
        if how == "basic":
            raw = base64.b64encode(f"{user}:{password}".encode()).decode()
            status, doc = self._http(req, headers={"Authorization": f"Basic {raw}"})
        else:
            fields = login.get("fields") or {}
            body = {fields.get("username", "username"): user, fields.get("password", "password"): password}
            status, doc = self._http(req, body, headers={}, form=how == "form")
        if status >= 400:
            raise (CredentialsError if status in (401, 403) else BotError)(
                f"login {describe_request(req)} answered HTTP {status}")
        try:
            token = json_path(doc, login["token_json"])
        except KeyError as exc:
            raise BotError(f"login answer has no token: {exc.args[0]}") from None
        if isinstance(token, bool) or not isinstance(token, (str, int)) or token == "":
            raise BotError(f"login answer has no token: '{login['token_json']}' is not a string")
        return str(token)

    def url(self, req):
        port = self.ports[req.get("port", self.default_port)]
        return f"{self.scheme}://{self.bot.get('listen') or '127.0.0.1'}:{port}{req['path']}"

    def port(self, req):
        """The port number a request of the profile goes to."""
        return self.ports[req.get("port", self.default_port)]

    def _http(self, req, body=None, headers=None, timeout=None, authenticate=False, form=False):
        """One request: with the bot's credentials, or `headers` instead (the login's own); a
        request the profile marks `auth: none` carries none and never logs in. A login token the bot
        stops taking (HTTP 401: Freqtrade's expire after 15 minutes) is traded for a new one and the
        request sent once more. `form`: the body as application/x-www-form-urlencoded."""
        method = req.get("method", "GET")
        if headers is not None or req.get("auth") == "none":
            return self._send(req, method, body, headers or {}, timeout, form)
        held = self._token
        credentials = self._auth_headers(method, force=authenticate)
        status, doc = self._send(req, method, body, credentials, timeout, form)
        if status == 401 and credentials and held is not None and self._token == held:
            self._token = None  # a token from an earlier login that no longer works: log in once more
            status, doc = self._send(req, method, body, self._auth_headers(method, force=authenticate), timeout, form)
        return status, doc

    def _send(self, req, method, body, credentials, timeout, form=False):
        port = int(self.ports[req.get("port", self.default_port)])
        host = self.bot.get("listen") or "127.0.0.1"
        timeout = timeout or self.timeout
        if self.unresponsive and self.fail_fast:
            timeout = min(timeout, self.fail_fast)
        hdrs = {"Accept": "application/json"}
        hdrs.update(credentials)
        payload = None
        if body is not None and form:
            payload = urllib.parse.urlencode(body).encode()
            hdrs["Content-Type"] = "application/x-www-form-urlencoded"
        elif body is not None:
            payload = json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        if self.scheme == "https":
            ctx = ssl.create_default_context()
            if not self.verify_tls:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=ctx)
        else:
            conn = http.client.HTTPConnection(host, port, timeout=timeout)
        # a bot that already timed out is not counted: its requests cost its host nothing
        slot = self.http_slots(host) if self.http_slots is not None and not self.unresponsive else None
        try:
            with slot or contextlib.nullcontext():
                conn.request(method, req["path"], body=payload, headers=hdrs)
                resp = conn.getresponse()
                raw = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            if isinstance(exc, TimeoutError):
                self.unresponsive = True
            raise BotError(f"{describe_request(req)} on {host}:{port}: {exc.__class__.__name__}: {exc}") from None
        finally:
            conn.close()
        try:
            doc = json.loads(raw) if raw else None
        except ValueError:
            doc = raw.decode(errors="replace")[:200]
        return resp.status, doc

    def request(self, req, variables=None, timeout=None, authenticate=False):
        """Send one request of the profile; returns (status, parsed JSON). `authenticate`: with the
        bot's credentials whatever the method (the profile's auth.check). Placeholders in the path
        ('/trades/{item.trade_id}') take the variables' values, URL-quoted."""
        if "{" in req["path"]:
            req = dict(req, path=substitute(req["path"], variables or {}, quote=True))
        body = req.get("body")
        key = None
        if self._memo is not None and body is None and req.get("method", "GET") == "GET" and not authenticate:
            key = (req.get("port"), req["path"])
        if body is not None:
            body = substitute(copy.deepcopy(body), variables or {})
        return self._recall(key, lambda: self._http(req, body, timeout=timeout, authenticate=authenticate))

    def credentials(self):
        """Whether the bot accepts the credentials botops holds for it, by the profile's auth.check
        (an authenticated request that changes nothing; the kill switch's API rungs need the same
        credentials): {checked, ok, status, message}.

        ok is False when the bot refused them (HTTP 401 / 403) or they are missing; True when it
        answered as the check expects; None when it could not be told (no check in the profile, no
        answer, another status). Never raises."""
        auth = self.profile.get("auth") or {}
        check = auth.get("check")
        out = {"checked": False, "ok": None, "status": None, "message": None}
        if auth.get("type", "none") == "none":
            out["message"] = "not checked: the profile's API needs no credentials"
            return out
        if not check:
            out["message"] = f"not checked: profile '{self.profile.get('family')}' declares no auth.check"
            return out
        req = check["http"]
        try:
            status, body = self.request(req, authenticate=True)
        except CredentialsError as exc:
            out.update(checked=True, ok=False, message=f"the kill switch's API requests would fail: {exc}")
            return out
        except BotError as exc:
            out["message"] = f"not checked: {exc}"
            return out
        expected = check.get("status", 200)
        out.update(checked=True, status=status)
        if status == expected:
            out["ok"] = True
        elif status in (401, 403):
            out["ok"] = False
            out["message"] = (f"its API refused botops' credentials ({describe_request(req)} answered HTTP {status}): "
                              "the kill switch's API requests would fail too (check bot_api_token, or "
                              "bot_api_username and bot_api_password, in its vault)")
        else:
            out["message"] = f"not checked: {describe_request(req)} answered HTTP {status} (expected {expected})"
        return out
