"""A websocket server on 127.0.0.1 that speaks the four venues' candle protocols, for ccxt.pro.

The ccxt.pro exchange under test is a normal instance whose ``urls['api']['ws']`` point
here (:func:`point_at`); ccxt builds its subscriptions, the server answers them as the
venue does (the ack and ping replies of ``tests/fixtures/ws/<venue>_*_from_docs.json``)
and pushes candle frames built from the same fixtures, so ccxt's own handlers parse them.
Nothing in ccxt is patched.

Each venue has a list of connection scripts (:class:`Conn`), used in connection order;
connections beyond the list are accepted and stay silent.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import WSMsgType, web
from ccxt_venues import SyntheticVenues, _s

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "ws"
TEMPLATES = {
    "binanceusdm": "binanceusdm_kline_from_docs.json",
    "bybit": "bybit_kline_from_docs.json",
    "okx": "okx_candle_from_docs.json",
    "hyperliquid": "hyperliquid_candle_from_docs.json",
}


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any test that connects anywhere but 127.0.0.1 (import it into a test module:
    it is autouse there)."""
    real = socket.socket.connect

    def connect(self: socket.socket, address: object) -> object:
        if not (isinstance(address, tuple) and address[0] in ("127.0.0.1", "::1")):
            raise AssertionError(f"a test tried to connect to {address!r}")
        return real(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)


class Clock:
    """A wall clock the test moves."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def fixture(venue: str) -> dict[str, Any]:
    return json.loads((FIXTURES / TEMPLATES[venue]).read_text())


def garbage(name: str) -> str:
    """A garbage frame of ``garbage_frames.json``, as the text sent on the wire."""
    value = json.loads((FIXTURES / "garbage_frames.json").read_text())[name]
    return value if isinstance(value, str) else json.dumps(value)


def candle_frame(
    venue: str, base: str, open_ms: int, tf_ms: int, values: tuple[float, ...]
) -> dict[str, Any]:
    """The venue's documented candle push for ``base``, filled with ``values``
    (o, h, l, c, base volume) formatted as the REST replies format them."""
    o, h, low, c, v = values
    frame = copy.deepcopy(fixture(venue)["frame"])
    if venue == "binanceusdm":
        k = frame["k"]
        frame["s"] = k["s"] = f"{base}USDT"
        k.update(t=open_ms, T=open_ms + tf_ms - 1, i=f"{tf_ms // 60_000}m")
        k.update(o=_s(o), h=_s(h), l=_s(low), c=_s(c), v=_s(v), q=_s(v * c))
        frame["E"] = open_ms + tf_ms
    elif venue == "bybit":
        frame["topic"] = f"kline.{tf_ms // 60_000}.{base}USDT"
        d = frame["data"][0]
        d.update(start=open_ms, end=open_ms + tf_ms - 1, interval=str(tf_ms // 60_000))
        d.update(open=_s(o), high=_s(h), low=_s(low), close=_s(c), volume=_s(v))
        d.update(turnover=_s(v * c), timestamp=open_ms + tf_ms)
        frame["ts"] = open_ms + tf_ms
    elif venue == "okx":
        frame["arg"] = {"channel": f"candle{tf_ms // 60_000}m", "instId": f"{base}-USDT-SWAP"}
        # as the REST candles of ccxt_venues: volume in contracts (0.01 BTC), then in coins
        frame["data"] = [
            [str(open_ms), _s(o), _s(h), _s(low), _s(c), _s(v * 100), _s(v), _s(v * c), "1"]
        ]
    elif venue == "hyperliquid":
        frame["data"].update(t=open_ms, T=open_ms + tf_ms - 1, s=base, i=f"{tf_ms // 60_000}m")
        frame["data"].update(o=_s(o), c=_s(c), h=_s(h), l=_s(low), v=_s(v), n=10)
    else:
        raise ValueError(venue)
    return frame


@dataclass
class Conn:
    """One connection's script: after the subscription, send the candles opening at
    ``opens`` (of every subscribed symbol, from ``SyntheticVenues``), ``extra`` frames
    (text or JSON-able), then close the connection if ``close``."""

    opens: list[int] = field(default_factory=list)
    extra: list[Any] = field(default_factory=list)
    close: bool = False
    #: frames sent before the candles
    before: list[Any] = field(default_factory=list)
    #: seconds to wait after the subscription before sending anything
    wait_s: float = 0.0
    #: seconds to wait between two frames (0: a burst)
    gap_s: float = 0.0


def _bases(venue: str, msg: dict[str, Any]) -> list[str]:
    """The base assets a subscription message asks for."""
    if venue == "binanceusdm":
        return [p.split("usdt@")[0].upper() for p in msg.get("params", [])]
    if venue == "bybit":
        return [a.rsplit(".", 1)[-1].removesuffix("USDT") for a in msg.get("args", [])]
    if venue == "okx":
        # a channel of a whole instType (liquidation-orders) names no instrument
        return [a["instId"].split("-")[0] for a in msg.get("args", []) if "instId" in a]
    return [msg["subscription"]["coin"]]


def _is_subscribe(venue: str, msg: Any) -> bool:
    if not isinstance(msg, dict):
        return False
    return msg.get("method") in ("SUBSCRIBE", "subscribe") or msg.get("op") == "subscribe"


class WsReplay:
    """The server (in its own thread and event loop). ``synthetic``: candle values;
    ``tf_ms``: the bar."""

    def __init__(self, synthetic: SyntheticVenues, tf_ms: int) -> None:
        self.synthetic = synthetic
        self.tf_ms = tf_ms
        self.scripts: dict[str, list[Conn]] = {}
        self.connections: dict[str, int] = {}
        self.received: list[tuple[str, Any]] = []
        self.open: set[web.WebSocketResponse] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._runner: web.AppRunner | None = None
        self.port = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)

    @property
    def base_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def close(self) -> None:
        async def stop() -> None:
            for ws in list(self.open):
                await ws.close()
            if self._runner is not None:
                await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _start(self) -> int:
        app = web.Application()
        app.router.add_route("GET", "/{venue}/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        return site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _handle(self, request: web.Request) -> web.WebSocketResponse:
        venue = request.match_info["venue"]
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.open.add(ws)
        n = self.connections.get(venue, 0)
        self.connections[venue] = n + 1
        scripts = self.scripts.get(venue, [])
        script = scripts[n] if n < len(scripts) else Conn()
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            data = json.loads(msg.data) if msg.data[:1] in "{[" else msg.data
            self.received.append((venue, data))
            reply = self._pong(venue, data)
            if reply is not None:
                await ws.send_str(reply)
            elif _is_subscribe(venue, data):
                await ws.send_str(json.dumps(self._ack(venue, data)))
                await asyncio.sleep(script.wait_s)
                for frame in self._frames(venue, script, _bases(venue, data)):
                    await ws.send_str(frame if isinstance(frame, str) else json.dumps(frame))
                    if script.gap_s:
                        await asyncio.sleep(script.gap_s)
                if script.close:
                    await ws.close()
                    break
        self.open.discard(ws)
        return ws

    def _pong(self, venue: str, data: Any) -> str | None:
        if venue == "okx" and data == "ping":
            return "pong"
        if isinstance(data, dict) and (data.get("op") == "ping" or data.get("method") == "ping"):
            return json.dumps(fixture(venue)["pong"])
        return None

    def _ack(self, venue: str, data: dict[str, Any]) -> dict[str, Any]:
        ack = copy.deepcopy(fixture(venue)["ack"])
        if venue == "binanceusdm":
            ack["id"] = data.get("id")
        elif venue == "bybit":
            ack["req_id"] = data.get("req_id")
        elif venue == "okx":
            ack["arg"] = data["args"][0]
        else:
            ack["data"]["subscription"] = data["subscription"]
        return ack

    def _frames(self, venue: str, script: Conn, bases: list[str]) -> list[Any]:
        frames: list[Any] = list(script.before)
        for open_ms in script.opens:
            for base in bases:
                values = self.synthetic.candle(venue, base, open_ms, self.tf_ms)
                frames.append(candle_frame(venue, base, open_ms, self.tf_ms, values))
        return frames + list(script.extra)


def point_at(exchange: Any, base_url: str) -> Any:
    """Point every websocket url of a ccxt.pro ``exchange`` at ``base_url``/<venue>/..."""
    prefix = f"{base_url}/{exchange.id}"

    def rewrite(value: Any) -> Any:
        if isinstance(value, str):
            return re.sub(r"^wss?://[^/]+", prefix, value)
        if isinstance(value, dict):
            return {k: rewrite(v) for k, v in value.items()}
        return value

    exchange.urls["api"]["ws"] = rewrite(exchange.urls["api"]["ws"])
    return exchange


def factory_for(server: WsReplay) -> Callable[[Any, Any], Any]:
    """A :class:`oihedge.serving.feeds.websocket.StreamSource` ``exchange_factory`` that connects to
    ``server``."""
    from oihedge.serving.feeds.ws_candles import pro_exchange

    return lambda spec, markets: point_at(pro_exchange(spec, markets), server.base_url)
