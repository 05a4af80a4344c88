"""A loopback stand-in for an exchange's public REST API (Binance spot, /api/v3), for running real
Freqtrade bots offline.

Freqtrade reaches it through its own config, unmodified:
`exchange.ccxt_config.urls.api.public = http://127.0.0.1:<port>/api/v3`, websockets off
(`exchange.enable_ws: false`), spot markets only (`ccxt_config.options.fetchMarkets.types: [spot]`).
It answers what a dry-run bot asks: exchangeInfo, time, ping, klines, ticker/24hr, ticker/price,
ticker/bookTicker and depth. Prices are a deterministic walk over time, so candles close and
strategies see data; nothing private (orders, balances) is served: a dry-run bot keeps those itself.

    python -m botops.sandbox.exchange --port 0 --port-file FILE    # writes the port it listens on

Every request is counted by path (`GET /_stats`), so a test can tell that the bots really used it.
Stdlib only.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

# base asset -> starting price in USDT
MARKETS = {"BTC": 60000.0, "ETH": 3000.0, "SOL": 150.0, "XRP": 0.6}
QUOTE = "USDT"
INTERVALS = {"1m": 60, "3m": 180, "5m": 300, "15m": 900, "30m": 1800, "1h": 3600, "2h": 7200, "4h": 14400,
             "6h": 21600, "8h": 28800, "12h": 43200, "1d": 86400}
MAX_KLINES = 1000


def price(base: str, t: float) -> float:
    """The price of base at epoch second t: a smooth, deterministic walk around its start (±3 %)."""
    start = MARKETS[base]
    phase = sum(map(ord, base))
    return round(start * (1 + 0.02 * math.sin(t / 900 + phase) + 0.01 * math.sin(t / 97 + phase * 3)), 2)


def kline(base: str, open_ms: int, seconds: int) -> list:
    """One Binance kline: [open time, open, high, low, close, volume, close time, quote volume,
    trades, taker base, taker quote, ignore]."""
    t0 = open_ms / 1000
    samples = [price(base, t0 + seconds * i / 4) for i in range(5)]
    o, c = samples[0], samples[-1]
    volume = 10 + (open_ms // 1000) % 7
    return [open_ms, f"{o:.2f}", f"{max(samples):.2f}", f"{min(samples):.2f}", f"{c:.2f}", f"{volume:.5f}",
            open_ms + seconds * 1000 - 1, f"{volume * c:.2f}", 100, f"{volume / 2:.5f}", f"{volume * c / 2:.2f}", "0"]


def symbol_info(base: str) -> dict:
    return {
        "symbol": base + QUOTE, "status": "TRADING", "baseAsset": base, "baseAssetPrecision": 8,
        "quoteAsset": QUOTE, "quotePrecision": 8, "quoteAssetPrecision": 8, "baseCommissionPrecision": 8,
        "quoteCommissionPrecision": 8,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
        "icebergAllowed": True, "ocoAllowed": True, "quoteOrderQtyMarketAllowed": True, "allowTrailingStop": True,
        "cancelReplaceAllowed": True, "isSpotTradingAllowed": True, "isMarginTradingAllowed": False,
        "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": "0.01", "maxPrice": "1000000.00", "tickSize": "0.01"},
            {"filterType": "LOT_SIZE", "minQty": "0.00001", "maxQty": "9000000.0", "stepSize": "0.00001"},
            {"filterType": "NOTIONAL", "minNotional": "5.0", "applyMinToMarket": True, "maxNotional": "9000000",
             "applyMaxToMarket": False, "avgPriceMins": 5},
        ],
        "permissions": [], "permissionSets": [["SPOT"]],
        "defaultSelfTradePreventionMode": "EXPIRE_MAKER", "allowedSelfTradePreventionModes": ["EXPIRE_MAKER"],
    }


def ticker(base: str, now: float) -> dict:
    last, open_ = price(base, now), price(base, now - 86400)
    bid, ask = round(last * 0.9999, 2), round(last * 1.0001, 2)
    ms = int(now * 1000)
    return {"symbol": base + QUOTE, "priceChange": f"{last - open_:.2f}",
            "priceChangePercent": f"{(last - open_) / open_ * 100:.3f}", "weightedAvgPrice": f"{last:.2f}",
            "prevClosePrice": f"{open_:.2f}", "lastPrice": f"{last:.2f}", "lastQty": "0.1",
            "bidPrice": f"{bid:.2f}", "bidQty": "5.0", "askPrice": f"{ask:.2f}", "askQty": "5.0",
            "openPrice": f"{open_:.2f}", "highPrice": f"{max(last, open_) * 1.01:.2f}",
            "lowPrice": f"{min(last, open_) * 0.99:.2f}", "volume": "1000.0", "quoteVolume": f"{1000 * last:.2f}",
            "openTime": ms - 86400000, "closeTime": ms, "firstId": 1, "lastId": 1000, "count": 1000}


class Exchange(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address):
        super().__init__(address, Handler)
        self.stats: Counter = Counter()
        self.lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    server: Exchange

    def log_message(self, *args):
        pass

    def _send(self, status: int, doc) -> None:
        raw = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def _base(self, query: dict) -> str | None:
        symbol = (query.get("symbol") or [""])[0]
        base = symbol[: -len(QUOTE)] if symbol.endswith(QUOTE) else None
        return base if base in MARKETS else None

    def do_GET(self):  # noqa: N802 (http.server's name)
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        path = url.path.rstrip("/")
        with self.server.lock:
            self.server.stats[path] += 1
        now = time.time()
        if path == "/_stats":
            with self.server.lock:
                return self._send(200, dict(self.server.stats))
        if not path.startswith("/api/v3/"):
            return self._send(404, {"code": -1, "msg": f"no such path {path}"})
        name = path[len("/api/v3/"):]
        if name == "ping":
            return self._send(200, {})
        if name == "time":
            return self._send(200, {"serverTime": int(now * 1000)})
        if name == "exchangeInfo":
            return self._send(200, {"timezone": "UTC", "serverTime": int(now * 1000), "rateLimits": [],
                                    "exchangeFilters": [], "symbols": [symbol_info(b) for b in MARKETS]})
        if name in ("ticker/24hr", "ticker/price", "ticker/bookTicker"):
            bases = [self._base(query)] if "symbol" in query else list(MARKETS)
            if None in bases:
                return self._send(400, {"code": -1121, "msg": "Invalid symbol."})
            docs = [ticker(b, now) for b in bases]
            if name == "ticker/price":
                docs = [{"symbol": d["symbol"], "price": d["lastPrice"]} for d in docs]
            elif name == "ticker/bookTicker":
                docs = [{k: d[k] for k in ("symbol", "bidPrice", "bidQty", "askPrice", "askQty")} for d in docs]
            return self._send(200, docs[0] if "symbol" in query else docs)
        if name == "depth":
            base = self._base(query)
            if base is None:
                return self._send(400, {"code": -1121, "msg": "Invalid symbol."})
            last = price(base, now)
            limit = min(int((query.get("limit") or ["20"])[0]), 100)
            bids = [[f"{last * (1 - 0.0001 * (i + 1)):.2f}", "5.0"] for i in range(limit)]
            asks = [[f"{last * (1 + 0.0001 * (i + 1)):.2f}", "5.0"] for i in range(limit)]
            return self._send(200, {"lastUpdateId": int(now), "bids": bids, "asks": asks})
        if name in ("klines", "uiKlines"):
            base = self._base(query)
            interval = (query.get("interval") or [""])[0]
            if base is None or interval not in INTERVALS:
                return self._send(400, {"code": -1121, "msg": "Invalid symbol or interval."})
            seconds = INTERVALS[interval]
            limit = min(int((query.get("limit") or ["500"])[0]), MAX_KLINES)
            step = seconds * 1000
            last_open = int(now * 1000) // step * step
            if "startTime" in query:
                first = -(-int(query["startTime"][0]) // step) * step
                end = int(query["endTime"][0]) if "endTime" in query else last_open
                opens = list(range(first, min(end, last_open) + 1, step))[:limit]
            else:
                end = min(int(query["endTime"][0]) // step * step, last_open) if "endTime" in query else last_open
                opens = [end - step * i for i in range(limit)][::-1]
            return self._send(200, [kline(base, t, seconds) for t in opens])
        return self._send(404, {"code": -1, "msg": f"not served by the stand-in: {path}"})


def serve(port: int = 0, host: str = "127.0.0.1") -> Exchange:
    """Start the stand-in in a thread; returns the server (its port: server.server_address[1])."""
    server = Exchange((host, port))
    threading.Thread(target=server.serve_forever, name="exchange", daemon=True).start()
    return server


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m botops.sandbox.exchange", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file", help="write the port listened on to this file (for --port 0)")
    args = parser.parse_args(argv)
    server = Exchange((args.host, args.port))
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as fh:
            fh.write(str(server.server_address[1]))
        os.replace(tmp, args.port_file)
    print(f"exchange stand-in on {args.host}:{server.server_address[1]}", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
