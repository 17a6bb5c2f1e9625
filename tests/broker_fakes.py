"""A fake Binance USD-M futures account behind ccxt's HTTP layer, for the broker tests.

ccxt builds, signs and parses every request unchanged; only the ``requests`` transport is
replaced (a session mounted with :class:`_Adapter`), so no socket is ever opened. Markets
come from the recorded ``exchangeInfo`` the ingestion tests keep
(``tests/fixtures/ccxt/binanceusdm/recorded-fapi-exchangeInfo.json``); account responses
are built from Binance's API docs (``tests/fixtures/ccxt/broker/built-binanceusdm-*``)
and filled in by a small model of the account: market orders fill at the mark price,
one-way positions, reduce-only enforced, client ids unique among *open* orders (as on
Binance), optional faults (lost responses, resting orders).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import requests
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "ccxt"
BROKER = FIXTURES / "broker"


def _load(path: Path) -> Any:
    data = json.loads(path.read_text())
    if isinstance(data, dict):
        data.pop("_source", None)
    elif isinstance(data, list):
        for item in data:
            item.pop("_source", None)
    return data


ERRORS = _load(BROKER / "built-binanceusdm-errors.json")


@dataclass
class Call:
    """One HTTP request as the venue saw it."""

    method: str
    path: str
    params: dict[str, str]
    headers: dict[str, str]


@dataclass
class FakeBinanceFutures:
    """The account: orders by client id, one-way positions, mark prices (USD)."""

    api_key: str = ""
    prices: dict[str, float] = field(default_factory=lambda: {"BTCUSDT": 60_000.0})
    fill_market: bool = True
    lose_next_responses: int = 0  # accept an order, then time out instead of answering
    hide_next_lookups: int = 0  # answer "does not exist" to order queries (a lagging replica)
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    positions: dict[str, float] = field(default_factory=dict)
    entries: dict[str, float] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    next_id: int = 8_389_765_000

    def session(self) -> requests.Session:
        """A requests session whose every request goes to this venue."""
        session = requests.Session()
        session.trust_env = False
        session.mount("https://", _Adapter(self))
        return session

    def orders_created(self, cid: str | None = None) -> list[Call]:
        """Accepted or refused ``POST /fapi/v1/order`` calls (for one client id)."""
        return [
            c
            for c in self.calls
            if c.method == "POST"
            and c.path == "/fapi/v1/order"
            and (cid is None or c.params.get("newClientOrderId") == cid)
        ]

    # -- routing -------------------------------------------------------------------------

    def handle(self, call: Call) -> tuple[int, Any]:
        self.calls.append(call)
        if call.path == "/fapi/v1/exchangeInfo":
            return 200, _load(FIXTURES / "binanceusdm" / "recorded-fapi-exchangeInfo.json")
        sent_key = call.headers.get("X-MBX-APIKEY")
        if call.path.startswith("/fapi/") and sent_key != self.api_key:
            # echo the key back, as some venues do, so the redaction has something to mask
            error = ERRORS["invalid_api_key"]
            return 401, {**error, "msg": f"{error['msg']} (key {sent_key})"}
        route = {
            ("POST", "/fapi/v1/order"): self._create,
            ("GET", "/fapi/v1/order"): self._query,
            ("DELETE", "/fapi/v1/order"): self._cancel,
            ("GET", "/fapi/v1/openOrders"): self._open,
            ("GET", "/fapi/v3/positionRisk"): self._positions,
            ("GET", "/fapi/v1/leverageBracket"): lambda _c: (
                200,
                _load(BROKER / "built-binanceusdm-leverage-bracket.json"),
            ),
        }.get((call.method, call.path))
        if route is None:
            raise AssertionError(f"the fake venue has no route {call.method} {call.path}")
        return route(call)

    def _create(self, call: Call) -> tuple[int, Any]:
        p = call.params
        cid = p["newClientOrderId"]
        if cid in self.orders and self.orders[cid]["status"] in ("NEW", "PARTIALLY_FILLED"):
            return 400, ERRORS["duplicate_client_order_id"]
        qty = float(p["quantity"])
        signed = qty if p["side"] == "BUY" else -qty
        held = self.positions.get(p["symbol"], 0.0)
        if p.get("reduceOnly") == "true":
            if held == 0 or (held > 0) == (signed > 0):
                return 400, ERRORS["reduce_only_rejected"]
            signed = max(-abs(held), min(abs(held), signed))  # reduced to the position
        body = _load(BROKER / "built-binanceusdm-create-order.json")
        self.next_id += 1
        body.update(
            clientOrderId=cid,
            orderId=self.next_id,
            symbol=p["symbol"],
            side=p["side"],
            origQty=p["quantity"],
            reduceOnly=p.get("reduceOnly") == "true",
            status="NEW",
            executedQty="0",
            cumQty="0",
            cumQuote="0",
            avgPrice="0.00000",
        )
        if self.fill_market:
            self._fill(body, signed)
        self.orders[cid] = body
        if self.lose_next_responses > 0:
            self.lose_next_responses -= 1
            raise requests.exceptions.ReadTimeout("replayed: the response was lost")
        return 200, copy.deepcopy(body)

    def _fill(self, body: dict[str, Any], signed: float) -> None:
        price = self.prices[body["symbol"]]
        symbol = body["symbol"]
        held = self.positions.get(symbol, 0.0)
        if held == 0 or (held > 0) == (signed > 0):
            total = abs(held) + abs(signed)
            self.entries[symbol] = (
                abs(held) * self.entries.get(symbol, 0.0) + abs(signed) * price
            ) / total
        self.positions[symbol] = round(held + signed, 8)
        qty = abs(signed)
        body.update(
            status="FILLED",
            executedQty=f"{qty:.3f}",
            cumQty=f"{qty:.3f}",
            cumQuote=f"{qty * price:.5f}",
            avgPrice=f"{price:.5f}",
        )

    def fill_resting(self) -> None:
        """Fill every resting (NEW) order at the mark price."""
        for body in self.orders.values():
            if body["status"] == "NEW":
                qty = float(body["origQty"])
                self._fill(body, qty if body["side"] == "BUY" else -qty)

    def _order_body(self, body: dict[str, Any]) -> dict[str, Any]:
        out = _load(BROKER / "built-binanceusdm-query-order.json")
        for key in (
            "avgPrice",
            "clientOrderId",
            "cumQuote",
            "executedQty",
            "orderId",
            "origQty",
            "reduceOnly",
            "side",
            "status",
            "symbol",
        ):
            out[key] = body[key]
        out["time"] = out["updateTime"] = body["updateTime"]
        return out

    def _query(self, call: Call) -> tuple[int, Any]:
        body = self.orders.get(call.params.get("origClientOrderId", ""))
        if body is None or self.hide_next_lookups > 0:
            self.hide_next_lookups = max(0, self.hide_next_lookups - 1)
            return 400, ERRORS["order_does_not_exist"]
        return 200, self._order_body(body)

    def _cancel(self, call: Call) -> tuple[int, Any]:
        body = self.orders.get(call.params.get("origClientOrderId", ""))
        if body is None or body["status"] != "NEW":
            return 400, ERRORS["order_does_not_exist"]
        body["status"] = "CANCELED"
        return 200, self._order_body(body)

    def _open(self, call: Call) -> tuple[int, Any]:
        symbol = call.params.get("symbol")
        return 200, [
            self._order_body(b)
            for b in self.orders.values()
            if b["status"] in ("NEW", "PARTIALLY_FILLED") and symbol in (None, b["symbol"])
        ]

    def _positions(self, call: Call) -> tuple[int, Any]:
        template = _load(BROKER / "built-binanceusdm-position-risk-v3.json")[0]
        out = []
        for symbol, amount in self.positions.items():
            if amount == 0:
                continue
            row = dict(template)
            mark = self.prices[symbol]
            row.update(
                symbol=symbol,
                positionAmt=f"{amount:.3f}",
                entryPrice=f"{self.entries.get(symbol, mark):.1f}",
                markPrice=f"{mark:.8f}",
                notional=f"{amount * mark:.8f}",
            )
            out.append(row)
        return 200, out


class _Adapter(BaseAdapter):
    def __init__(self, venue: FakeBinanceFutures) -> None:
        super().__init__()
        self.venue = venue

    def send(self, request, stream=False, timeout=None, verify=True, cert=None, proxies=None):  # noqa: ANN001
        parts = urlsplit(request.url)
        body = request.body.decode() if isinstance(request.body, bytes) else (request.body or "")
        params = dict(parse_qsl(parts.query))
        params.update(dict(parse_qsl(body)))
        call = Call(request.method, parts.path, params, dict(request.headers))
        status, payload = self.venue.handle(call)
        response = requests.Response()
        response.status_code = status
        response._content = json.dumps(payload).encode()
        response.headers = CaseInsensitiveDict({"Content-Type": "application/json"})
        response.url = request.url
        response.request = request
        response.reason = "OK" if status < 400 else "Bad Request"
        response.encoding = "utf-8"
        return response

    def close(self) -> None:
        pass


# -- OKX and Bybit: order placement only (the client-id field and reduce-only) -------------


class PlacementVenue:
    """Answers what ccxt needs to place one order on OKX or Bybit; records the requests.

    Markets: the ingestion tests' recorded instrument lists (other instrument types are
    answered empty). Account endpoints: the ``built-<venue>-*`` payloads.
    """

    def __init__(self, venue: str) -> None:
        self.venue = venue
        self.calls: list[tuple[str, str, dict[str, str], Any]] = []

    def session(self) -> requests.Session:
        session = requests.Session()
        session.trust_env = False
        session.mount("https://", _PlacementAdapter(self))
        return session

    def orders(self) -> list[dict[str, Any]]:
        """Bodies of the order requests sent."""
        paths = {"/api/v5/trade/batch-orders", "/v5/order/create"}
        out = []
        for method, path, _params, body in self.calls:
            if method == "POST" and path in paths:
                out.extend(body if isinstance(body, list) else [body])
        return out

    def answer(self, method: str, path: str, params: dict[str, str], body: Any) -> Any:
        self.calls.append((method, path, params, body))
        if path == "/api/v5/public/instruments":
            if params.get("instType") == "SWAP":
                return _load(FIXTURES / "okx" / "recorded-instruments-SWAP.json")
            return {"code": "0", "msg": "", "data": []}
        if path == "/api/v5/trade/order" and method == "GET":
            return _load(BROKER / "built-okx-order-not-found.json")
        if path == "/api/v5/trade/batch-orders":
            reply = _load(BROKER / "built-okx-batch-orders.json")
            reply["data"][0]["clOrdId"] = body[0]["clOrdId"]
            return reply
        if path == "/v5/market/instruments-info":
            if params.get("category") == "linear":
                return _load(FIXTURES / "bybit" / "recorded-instruments-info-linear.json")
            empty = _load(BROKER / "built-bybit-order-list-empty.json")
            return {**empty, "result": {"category": params.get("category"), "list": []}}
        if path in ("/v5/order/realtime", "/v5/order/history"):
            return _load(BROKER / "built-bybit-order-list-empty.json")
        if path == "/v5/user/query-api":
            return _load(BROKER / "built-bybit-user-query-api.json")
        if path == "/v5/account/info":
            return _load(BROKER / "built-bybit-account-info.json")
        if path == "/v5/order/create":
            reply = _load(BROKER / "built-bybit-order-create.json")
            reply["result"]["orderLinkId"] = body["orderLinkId"]
            return reply
        raise AssertionError(f"the fake {self.venue} has no route {method} {path}")


class _PlacementAdapter(BaseAdapter):
    def __init__(self, venue: PlacementVenue) -> None:
        super().__init__()
        self.venue = venue

    def send(self, request, stream=False, timeout=None, verify=True, cert=None, proxies=None):  # noqa: ANN001
        parts = urlsplit(request.url)
        raw = request.body.decode() if isinstance(request.body, bytes) else (request.body or "")
        body = json.loads(raw) if raw[:1] in ("{", "[") else dict(parse_qsl(raw))
        payload = self.venue.answer(request.method, parts.path, dict(parse_qsl(parts.query)), body)
        response = requests.Response()
        response.status_code = 200
        response._content = json.dumps(payload).encode()
        response.headers = CaseInsensitiveDict({"Content-Type": "application/json"})
        response.url = request.url
        response.request = request
        response.encoding = "utf-8"
        return response

    def close(self) -> None:
        pass
