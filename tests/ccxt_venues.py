"""The four venues' answers, for the replay router of :mod:`ccxt_replay`.

Payload sources, in ``tests/fixtures/ccxt/<venue>/`` (see its README):

- ``recorded-*``: real venue responses copied from ccxt's recorded test data
  (``ts/src/test/static/response/<exchange>.json`` ``httpResponse``, and the market
  objects ccxt keeps as ``info`` in ``ts/src/test/static/markets/<exchange>.json``,
  wrapped in the endpoint's envelope);
- ``built-*``: built from the venue's API documentation where no recording exists.

:class:`SyntheticVenues` answers history requests for any window with deterministic data
in exactly those payload layouts (field names, string numbers, ordering, envelopes,
newest-first where the venue sends newest first), so a backfill of any length can be
replayed. :func:`venue_router` wires markets (recorded) and history (synthetic) for a set
of venues.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ccxt_replay import Reply, Req, Router

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "ccxt"
MINUTE = 60_000
HOUR = 3_600_000
DAY = 86_400_000


# -- recorded fixtures ---------------------------------------------------------------------


def load(venue: str, name: str) -> Any:
    return json.loads((FIXTURES / venue / name).read_text())


def _clone_base(entries: list[dict], base: str, key: Callable[[dict, str], None]) -> list[dict]:
    """Add ``base`` by copying the recorded BTC entry (a built market, named as such)."""
    known = json.dumps(entries)
    if f'"{base}' in known:
        return entries
    entry = copy.deepcopy(entries[0])
    key(entry, base)
    return [*entries, entry]


def _rename(entry: dict, old: str, new: str) -> None:
    for k, v in list(entry.items()):
        if isinstance(v, str) and old in v:
            entry[k] = v.replace(old, new)


def market_payloads(venue: str, bases: Iterable[str]) -> dict[str, Any]:
    """Endpoint -> markets payload for ``venue`` covering ``bases`` (extra bases cloned)."""
    bases = list(bases)
    if venue == "binanceusdm":
        out = {}
        for name in ("fapi", "api-v3"):
            data = load(venue, f"recorded-{name}-exchangeInfo.json")
            for base in bases:
                data["symbols"] = _clone_base(
                    data["symbols"], base, lambda e, b: _rename(e, "BTC", b)
                )
            out[name] = data
        return out
    if venue == "bybit":
        out = {}
        for category in ("spot", "linear"):
            data = load(venue, f"recorded-instruments-info-{category}.json")
            for base in bases:
                data["result"]["list"] = _clone_base(
                    data["result"]["list"], base, lambda e, b: _rename(e, "BTC", b)
                )
            out[category] = data
        return out
    if venue == "okx":
        out = {}
        for inst in ("SPOT", "SWAP"):
            data = load(venue, f"recorded-instruments-{inst}.json")
            for base in bases:
                data["data"] = _clone_base(data["data"], base, lambda e, b: _rename(e, "BTC", b))
            out[inst] = data
        return out
    if venue == "hyperliquid":
        meta, ctxs = load(venue, "recorded-metaAndAssetCtxs.json")
        for base in bases:
            if base not in [u["name"] for u in meta["universe"]]:
                meta["universe"].append({**meta["universe"][0], "name": base})
                ctxs.append(dict(ctxs[0]))
        return {"meta": [meta, ctxs], "spotMeta": load(venue, "built-spotMeta.json")}
    raise ValueError(venue)


# -- synthetic history in the venues' payload layouts --------------------------------------

BASE_PRICE = {"BTC": 60_000.0, "ETH": 3_000.0, "SOL": 150.0, "DOGE": 0.15, "HYPE": 25.0}
BASE_OI = {"BTC": 80_000.0, "ETH": 1_500_000.0, "SOL": 9_000_000.0, "DOGE": 9e9, "HYPE": 2e7}
VENUE_TILT = {"binanceusdm": 1.0, "bybit": 1.0002, "okx": 0.9998, "hyperliquid": 1.0004}


def _s(x: float) -> str:
    return f"{x:.8g}"


class SyntheticVenues:
    """Deterministic prices, OI and funding for any (venue, symbol, time) up to ``now_ms``.

    ``gaps`` lists (venue, kind, start_ms, end_ms): no data of that kind ("kline", "oi",
    "funding") in the half-open window, as in a venue outage.
    """

    def __init__(self, now_ms: int, gaps: Iterable[tuple[str, str, int, int]] = ()) -> None:
        self.now_ms = now_ms
        self.gaps = list(gaps)
        #: (venue, base) whose spot book is served crossed
        self.crossed: set[tuple[str, str]] = set()

    # values
    def price(self, venue: str, base: str, t: int) -> float:
        wave = 0.03 * math.sin(2 * math.pi * t / (3 * DAY)) + 0.01 * math.sin(
            2 * math.pi * t / (7 * HOUR)
        )
        return BASE_PRICE.get(base, 10.0) * VENUE_TILT.get(venue, 1.0) * (1 + wave)

    def oi_base(self, venue: str, base: str, t: int) -> float:
        return BASE_OI.get(base, 1e6) * (1 + 0.1 * math.sin(2 * math.pi * t / (5 * DAY)))

    def funding(self, t: int) -> float:
        return 0.0001 * (1 + math.sin(2 * math.pi * t / (4 * DAY)))

    def book_levels(
        self, venue: str, base: str, t: int
    ) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
        """Bids and asks (best first) around the spot price at ``t``: five levels a side at
        0.3 % steps, so the three nearest of each side lie within +-1 % of mid. A
        (venue, base) in ``crossed`` gets a best bid above its best ask."""
        mid = self.price(venue, base, t)
        bids = [(mid * (1 - 0.003 * k), 2.0 + k) for k in range(1, 6)]
        asks = [(mid * (1 + 0.003 * k), 1.0 + k) for k in range(1, 6)]
        if (venue, base) in self.crossed:
            bids.insert(0, (mid * 1.004, 1.0))
        return bids, asks

    def _book(self, venue: str, base: str) -> tuple[list[list[str]], list[list[str]]]:
        bids, asks = self.book_levels(venue, base, self.now_ms)
        return [[_s(p), _s(a)] for p, a in bids], [[_s(p), _s(a)] for p, a in asks]

    def binance_depth(self, req: Req) -> Reply:
        body = copy.deepcopy(load("binanceusdm", "built-api-v3-depth.json"))
        body.pop("_source")
        body["bids"], body["asks"] = self._book("binanceusdm", req.params["symbol"][:-4])
        return Reply(body=body)

    def bybit_orderbook(self, req: Req) -> Reply:
        body = copy.deepcopy(load("bybit", "built-orderbook-spot.json"))
        body.pop("_source")
        result = body["result"]
        result["s"] = req.params["symbol"]
        result["b"], result["a"] = self._book("bybit", req.params["symbol"][:-4])
        result["ts"] = result["cts"] = body["time"] = self.now_ms
        return Reply(body=body)

    def okx_books(self, req: Req) -> Reply:
        body = copy.deepcopy(load("okx", "built-market-books.json"))
        body.pop("_source")
        bids, asks = self._book("okx", req.params["instId"].split("-")[0])
        entry = body["data"][0]
        entry["bids"] = [[p, a, "0", "1"] for p, a in bids]
        entry["asks"] = [[p, a, "0", "1"] for p, a in asks]
        entry["ts"] = str(self.now_ms)
        return Reply(body=body)

    def _missing(self, venue: str, kind: str, t: int) -> bool:
        return any(v == venue and k == kind and a <= t < b for v, k, a, b in self.gaps)

    def candle(self, venue: str, base: str, open_ms: int, tf: int) -> tuple[float, ...]:
        o, c = self.price(venue, base, open_ms), self.price(venue, base, open_ms + tf)
        return o, max(o, c) * 1.001, min(o, c) * 0.999, c, 100.0 + (open_ms // tf) % 50

    def times(
        self, venue: str, kind: str, lo: int, hi: int, step: int, offset: int = 0
    ) -> list[int]:
        """Grid times t (+offset), lo <= t <= hi, t <= now, outside gaps.

        For candles t is the open time, so the candle still open at ``now`` is included,
        as venues do.
        """
        first = -(-(lo - offset) // step) * step + offset
        top = min(hi, self.now_ms)
        return [t for t in range(first, top + 1, step) if not self._missing(venue, kind, t)]

    # -- binance
    def binance_klines(self, req: Req, spot: bool) -> Reply:
        venue, p = "binanceusdm", req.params
        base = p["symbol"].removesuffix("USDT")
        tf = _tf_ms(p["interval"])
        lo = int(p.get("startTime", self.now_ms - 500 * tf))
        hi = int(p.get("endTime", self.now_ms))
        rows = []
        for t in self.times(venue, "kline", lo, hi, tf)[: int(p.get("limit", 500))]:
            o, h, low, c, v = self.candle(venue, base, t, tf)
            if spot:
                o, h, low, c = (x * 0.9997 for x in (o, h, low, c))
            rows.append(
                [
                    t,
                    _s(o),
                    _s(h),
                    _s(low),
                    _s(c),
                    _s(v),
                    t + tf - 1,
                    _s(v * c),
                    100,
                    _s(v / 2),
                    _s(v * c / 2),
                    "0",
                ]
            )
        return Reply(body=rows)

    def binance_oi(self, req: Req) -> Reply:
        p = req.params
        tf = _tf_ms(p["period"])
        lo, hi = int(p.get("startTime", self.now_ms - 30 * tf)), int(p.get("endTime", self.now_ms))
        if lo < self.now_ms - 30 * DAY:
            return Reply(
                400, {"code": -1130, "msg": "Data sent for parameter 'startTime' is not valid."}
            )
        base = p["symbol"].removesuffix("USDT")
        rows = []
        for t in self.times("binanceusdm", "oi", lo, hi, tf)[: int(p.get("limit", 30))]:
            amount = self.oi_base("binanceusdm", base, t)
            value = amount * self.price("binanceusdm", base, t)
            rows.append(
                {
                    "symbol": p["symbol"],
                    "sumOpenInterest": _s(amount),
                    "sumOpenInterestValue": _s(value),
                    "timestamp": t,
                }
            )
        return Reply(body=rows)

    def binance_funding(self, req: Req) -> Reply:
        p = req.params
        lo, hi = int(p.get("startTime", 0)), int(p.get("endTime", self.now_ms))
        rows = [
            {
                "symbol": p["symbol"],
                "fundingTime": t,
                "fundingRate": _s(self.funding(t)),
                "markPrice": "0",
            }
            for t in self.times("binanceusdm", "funding", lo, hi, 8 * HOUR, offset=1)
        ][: int(p.get("limit", 100))]
        return Reply(body=rows)

    # -- bybit (newest first, envelopes with retCode)
    def _bybit(self, result: dict) -> Reply:
        return Reply(
            body={
                "retCode": 0,
                "retMsg": "OK",
                "result": result,
                "retExtInfo": {},
                "time": self.now_ms,
            }
        )

    def bybit_kline(self, req: Req) -> Reply:
        p = req.params
        tf = MINUTE * int(p["interval"]) if p["interval"].isdigit() else DAY
        base = p["symbol"].removesuffix("USDT")
        lo, hi = int(p.get("start", 0)), int(p.get("end", self.now_ms))
        times = self.times("bybit", "kline", lo, hi, tf)[-int(p.get("limit", 200)) :]
        rows = []
        for t in reversed(times):
            o, h, low, c, v = self.candle("bybit", base, t, tf)
            if p["category"] == "spot":
                o, h, low, c = (x * 0.9997 for x in (o, h, low, c))
            rows.append([str(t), _s(o), _s(h), _s(low), _s(c), _s(v), _s(v * c)])
        return self._bybit({"category": p["category"], "symbol": p["symbol"], "list": rows})

    def bybit_oi(self, req: Req) -> Reply:
        p = req.params
        tf = {
            "5min": 5 * MINUTE,
            "15min": 15 * MINUTE,
            "30min": 30 * MINUTE,
            "1h": HOUR,
            "4h": 4 * HOUR,
            "1d": DAY,
        }[p["intervalTime"]]
        base = p["symbol"].removesuffix("USDT")
        times = self.times("bybit", "oi", int(p["startTime"]), int(p["endTime"]), tf)[
            -int(p.get("limit", 50)) :
        ]
        rows = [
            {"openInterest": _s(self.oi_base("bybit", base, t)), "timestamp": str(t)}
            for t in reversed(times)
        ]
        return self._bybit(
            {"symbol": p["symbol"], "category": p["category"], "list": rows, "nextPageCursor": ""}
        )

    def bybit_funding(self, req: Req) -> Reply:
        p = req.params
        times = self.times("bybit", "funding", int(p["startTime"]), int(p["endTime"]), 8 * HOUR)[
            -int(p.get("limit", 200)) :
        ]
        rows = [
            {
                "symbol": p["symbol"],
                "fundingRate": _s(self.funding(t)),
                "fundingRateTimestamp": str(t),
            }
            for t in reversed(times)
        ]
        return self._bybit({"category": p["category"], "list": rows})

    # -- okx (exclusive before/after, newest first)
    def _okx(self, data: list) -> Reply:
        return Reply(body={"code": "0", "msg": "", "data": data})

    def okx_candles(self, req: Req) -> Reply:
        p = req.params
        tf = _tf_ms(p["bar"].lower())
        inst = p["instId"]
        base = inst.split("-")[0]
        lo, hi = int(p.get("before", -1)) + 1, int(p.get("after", self.now_ms + 1)) - 1
        times = self.times("okx", "kline", lo, hi, tf)[-int(p.get("limit", 100)) :]
        rows = []
        for t in reversed(times):
            o, h, low, c, v = self.candle("okx", base, t, tf)
            if not inst.endswith("SWAP"):
                o, h, low, c = (x * 0.9997 for x in (o, h, low, c))
            contracts = v * 100 if inst.endswith("SWAP") else v
            rows.append(
                [str(t), _s(o), _s(h), _s(low), _s(c), _s(contracts), _s(v), _s(v * c), "1"]
            )
        return self._okx(rows)

    def okx_oi(self, req: Req) -> Reply:
        p = req.params
        tf = _tf_ms(p["period"].lower())
        base = p["instId"].split("-")[0]
        times = self.times("okx", "oi", int(p["begin"]) + 1, int(p["end"]) - 1, tf)[
            -int(p.get("limit", 100)) :
        ]
        rows = []
        for t in reversed(times):
            amount = self.oi_base("okx", base, t)
            rows.append(
                [str(t), _s(amount * 100), _s(amount), _s(amount * self.price("okx", base, t))]
            )
        return self._okx(rows)

    def okx_funding(self, req: Req) -> Reply:
        p = req.params
        lo, hi = int(p.get("before", -1)) + 1, int(p.get("after", self.now_ms + 1)) - 1
        times = self.times("okx", "funding", lo, hi, 8 * HOUR)[-int(p.get("limit", 100)) :]
        rows = [
            {
                "instType": "SWAP",
                "instId": p["instId"],
                "fundingRate": _s(self.funding(t)),
                "realizedRate": _s(self.funding(t)),
                "fundingTime": str(t),
                "method": "current_period",
            }
            for t in reversed(times)
        ]
        return self._okx(rows)

    # -- hyperliquid (POST /info)
    def hyperliquid_info(self, req: Req, markets: dict[str, Any]) -> Reply:
        body = req.body or {}
        kind = body.get("type")
        if kind == "metaAndAssetCtxs":
            return Reply(body=markets["meta"])
        if kind == "spotMeta":
            return Reply(body=markets["spotMeta"])
        if kind == "candleSnapshot":
            r = body["req"]
            tf = _tf_ms(r["interval"])
            lo = max(int(r["startTime"]), self.now_ms - 5000 * tf)
            rows = []
            for t in self.times("hyperliquid", "kline", lo, int(r["endTime"]), tf)[:5000]:
                o, h, low, c, v = self.candle("hyperliquid", r["coin"], t, tf)
                rows.append(
                    {
                        "t": t,
                        "T": t + tf - 1,
                        "s": r["coin"],
                        "i": r["interval"],
                        "o": _s(o),
                        "c": _s(c),
                        "h": _s(h),
                        "l": _s(low),
                        "v": _s(v),
                        "n": 10,
                    }
                )
            return Reply(body=rows)
        if kind == "fundingHistory":
            hi = int(body.get("endTime", self.now_ms))
            times = self.times(
                "hyperliquid", "funding", int(body["startTime"]), hi, HOUR, offset=31
            )[:500]
            rows = [
                {
                    "coin": body["coin"],
                    "fundingRate": _s(self.funding(t) / 8),
                    "premium": "0.0001",
                    "time": t,
                }
                for t in times
            ]
            return Reply(body=rows)
        return Reply(422, {"error": f"unknown info type {kind!r}"})


def _bybit_markets(markets: dict[str, Any], req: Req) -> Any:
    payload = markets[req.params["category"]]
    if req.params.get("status") == "PreLaunch":  # no pre-listed contracts in the fixture
        payload = {**payload, "result": {**payload["result"], "list": []}}
    return payload


def _tf_ms(timeframe: str) -> int:
    units = {"m": MINUTE, "h": HOUR, "d": DAY}
    return int(timeframe[:-1]) * units[timeframe[-1]]


def venue_router(
    venues: Iterable[str],
    bases: Iterable[str],
    synthetic: SyntheticVenues,
    router: Router | None = None,
) -> Router:
    """A router answering markets (recorded) and history (synthetic) for ``venues``."""
    router = router or Router()
    bases = list(bases)
    for venue in venues:
        markets = market_payloads(venue, bases)
        if venue == "binanceusdm":
            router.add("GET", "https://fapi.binance.com/fapi/v1/exchangeInfo", markets["fapi"])
            router.add("GET", "https://api.binance.com/api/v3/exchangeInfo", markets["api-v3"])
            router.add(
                "GET",
                "https://fapi.binance.com/fapi/v1/klines",
                lambda r: synthetic.binance_klines(r, False),
            )
            router.add(
                "GET",
                "https://api.binance.com/api/v3/klines",
                lambda r: synthetic.binance_klines(r, True),
            )
            router.add(
                "GET",
                "https://fapi.binance.com/futures/data/openInterestHist",
                synthetic.binance_oi,
            )
            router.add(
                "GET", "https://fapi.binance.com/fapi/v1/fundingRate", synthetic.binance_funding
            )
            router.add("GET", "https://api.binance.com/api/v3/depth", synthetic.binance_depth)
        elif venue == "bybit":
            router.add(
                "GET",
                "https://api.bybit.com/v5/market/instruments-info",
                lambda r, m=markets: Reply(body=_bybit_markets(m, r)),
            )
            router.add("GET", "https://api.bybit.com/v5/market/kline", synthetic.bybit_kline)
            router.add("GET", "https://api.bybit.com/v5/market/open-interest", synthetic.bybit_oi)
            router.add(
                "GET", "https://api.bybit.com/v5/market/funding/history", synthetic.bybit_funding
            )
            router.add(
                "GET", "https://api.bybit.com/v5/market/orderbook", synthetic.bybit_orderbook
            )
        elif venue == "okx":
            router.add(
                "GET",
                "https://www.okx.com/api/v5/public/instruments",
                lambda r, m=markets: Reply(body=m[r.params["instType"]]),
            )
            router.add("GET", "https://www.okx.com/api/v5/market/candles", synthetic.okx_candles)
            router.add(
                "GET", "https://www.okx.com/api/v5/market/history-candles", synthetic.okx_candles
            )
            router.add(
                "GET",
                "https://www.okx.com/api/v5/rubik/stat/contracts/open-interest-history",
                synthetic.okx_oi,
            )
            router.add(
                "GET",
                "https://www.okx.com/api/v5/public/funding-rate-history",
                synthetic.okx_funding,
            )
            router.add("GET", "https://www.okx.com/api/v5/market/books", synthetic.okx_books)
        elif venue == "hyperliquid":
            router.add(
                "POST",
                "https://api.hyperliquid.xyz/info",
                lambda r, m=markets: synthetic.hyperliquid_info(r, m),
            )
        else:
            raise ValueError(f"no replay routes for venue {venue!r}")
    return router
