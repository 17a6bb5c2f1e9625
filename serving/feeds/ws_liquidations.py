"""Liquidations streamed from the venues' websockets through ccxt.pro, on a background thread.

One :class:`LiquidationStream` per venue that publishes liquidations
(:data:`oihedge.pipelines.ingest.liquidations.LIQUIDATION_FEEDS`) runs on the event loop of a
:class:`~oihedge.serving.feeds.ws_candles.CandleStreams` (the same runner, watchdog and frame-error
handler as the candle streams): it calls ccxt.pro's ``watch_liquidations_for_symbols`` (or one
``watch_liquidations`` per symbol) in a loop and adds every liquidation to its
:class:`~oihedge.pipelines.ingest.liquidations.LiquidationBars`, which also records when the
connection was up. ccxt parses the frames; this module reads only ccxt's liquidation structures.

Failures are handled as the candle streams handle them, each recorded as an
:class:`~oihedge.serving.feeds.ws_candles.Incident`: a watch that raises (dropped, refused,
rejected) reconnects after ``retry_s`` (doubling up to 30 s); a frame ccxt cannot handle restarts
the connection (``garbage``); a liquidation structure without side, amount or price is refused
(``garbage``) and not added. Every moment without a connection is down time: the bars it touches
stay null.

Silence is not a failure here (a calm market liquidates nothing for minutes): the stream
reports no silence to the watchdog; a dead connection is found by ccxt's keep-alive
(ping / pong), which fails the watch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ccxt.pro as ccxt_pro

from oihedge.pipelines.ingest.liquidations import (
    LiquidationBars,
    feed,
    liquidated_side,
    notional_usd,
)
from oihedge.pipelines.ingest.normalise import MalformedResponseError
from oihedge.pipelines.ingest.venues import VENUES, VenueSpec
from oihedge.serving.feeds.ws_candles import Incident, ReconnectingStream

__all__ = ["LiquidationStream", "offers_liquidation_stream"]


ExchangeFactory = Callable[[], Any]


def offers_liquidation_stream(venue_id: str) -> bool:
    """The venue has a public liquidation stream in the feed table and in ccxt.pro."""
    method = feed(venue_id).stream
    cls = getattr(ccxt_pro, venue_id, None)
    if method is None or cls is None:
        return False
    has = cls().has
    return bool(has.get("watchLiquidationsForSymbols") or has.get("watchLiquidations"))


class LiquidationStream(ReconnectingStream):
    """One venue's liquidation stream (runs on a :class:`CandleStreams` event loop).

    ``symbols``: ccxt unified perp symbols by base asset. ``factory``: a fresh ccxt.pro
    exchange (markets set) per connection. ``clock_ms``: wall clock, epoch ms.
    """

    label = "liquidation stream"

    def __init__(
        self,
        venue: str,
        symbols: Mapping[str, str],
        bar_ms: int,
        factory: ExchangeFactory,
        clock_ms: Callable[[], int],
        *,
        retry_s: float = 1.0,
    ) -> None:
        self.venue = venue
        self.symbols = dict(symbols)
        self.factory = factory
        self.clock_ms = clock_ms
        self.retry_s = retry_s
        self.bars = LiquidationBars(venue, tuple(self.symbols), bar_ms)
        self._base_of = {symbol: base for base, symbol in self.symbols.items()}
        self._init_connection()
        self.received = 0
        #: id(exchange) -> the cached liquidations already taken (by identity)
        self._seen: dict[int, dict[int, Any]] = {}

    def delivered(self) -> int:
        return self.received

    def _beside(self, exchange: Any) -> asyncio.Future[Any]:
        return asyncio.ensure_future(self._mark_up(exchange))

    def _dropped(self) -> None:
        with self.lock:
            self.bars.down(self.clock_ms())

    async def _mark_up(self, exchange: Any) -> None:
        """The connection counts as up from the moment ccxt's client has opened it."""
        while not getattr(exchange, "clients", None):
            await asyncio.sleep(0.01)
        client = next(iter(exchange.clients.values()))
        await client.connected
        with self.lock:
            self.bars.up(self.clock_ms())
            self.lock.notify_all()

    def restart(self, incident: Incident) -> None:
        """Record ``incident`` and drop the connection (``run`` reconnects)."""
        self.record(incident)
        with self.lock:
            self.bars.down(self.clock_ms())
        if self._watch is not None and not self._watch.done():
            self._watch.cancel()

    async def _watch_all(self, exchange: Any) -> None:
        symbols = list(self.symbols.values())
        if exchange.has.get("watchLiquidationsForSymbols"):
            while True:
                self._add(exchange, await exchange.watch_liquidations_for_symbols(symbols))
        else:
            await asyncio.gather(*(self._watch_one(exchange, s) for s in symbols))

    async def _watch_one(self, exchange: Any, symbol: str) -> None:
        while True:
            self._add(exchange, await exchange.watch_liquidations(symbol))

    def _add(self, exchange: Any, _returned: Sequence[Any]) -> None:
        """Take the liquidations new in ccxt's cache. The watch returns only what resolved
        its future: a frame carrying several liquidations (Bybit batches them), or frames
        handled before this coroutine awaited again, resolve nothing more, but every
        parsed liquidation is appended to ``exchange.liquidations`` (ccxt's ArrayCache)."""
        cache = list(getattr(exchange, "liquidations", None) or [])
        seen = self._seen.get(id(exchange), {})
        fresh = [liq for liq in cache if id(liq) not in seen]
        # holding the objects still cached keeps their ids from being reused
        self._seen = {id(exchange): {id(liq): liq for liq in cache}}
        with self.lock:
            for liq in fresh:
                self.received += 1
                try:
                    base, ts, side, usd = self._parse(exchange, liq)
                except MalformedResponseError as err:
                    self.bars.rejected += 1
                    self.incidents.append(Incident("garbage", str(err)[:300]))
                    continue
                if base is not None:
                    self.bars.add(base, ts, side, usd)
            self.lock.notify_all()

    def _parse(self, exchange: Any, liq: Any) -> tuple[str | None, int, Any, float]:
        if not isinstance(liq, Mapping):
            raise MalformedResponseError(f"{self.venue}: a liquidation {liq!r:.80}")
        base = self._base_of.get(liq.get("symbol"))  # type: ignore[arg-type]
        ts = liq.get("timestamp")
        if not isinstance(ts, int):
            raise MalformedResponseError(f"{self.venue}: a liquidation without a time {liq!r:.80}")
        market = (exchange.markets or {}).get(liq.get("symbol")) or {}
        size = market.get("contractSize")
        return base, ts, liquidated_side(self.venue, liq), notional_usd(self.venue, liq, size)

    # -- the caller's side (any thread) --------------------------------------------------

    def silence_ms(self) -> int:
        """Always 0: no liquidation for a while is a calm market, not a dead stream."""
        return 0


def liquidation_stream(
    venue: str,
    bases: Sequence[str],
    bar_ms: int,
    markets: Mapping[str, Any],
    clock_ms: Callable[[], int],
    *,
    factory: Callable[[VenueSpec, Mapping[str, Any]], Any],
    retry_s: float = 1.0,
) -> LiquidationStream:
    """A :class:`LiquidationStream` of ``bases``' perps on ``venue`` (markets from its REST
    collector); ``factory(spec, markets)`` builds each connection's ccxt.pro exchange."""
    spec = VENUES[venue]
    symbols = {base: spec.perp_symbol(base) for base in bases}
    return LiquidationStream(
        venue, symbols, bar_ms, lambda: factory(spec, markets), clock_ms, retry_s=retry_s
    )
