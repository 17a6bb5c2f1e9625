"""Spot book depth streamed through ccxt.pro: sampled snapshots, the median per bar.

:class:`DepthStream` watches one venue's spot books (``watch_order_book`` per symbol, on the venue's
spot ccxt.pro class) on a :class:`~oihedge.serving.feeds.ws_candles.CandleStreams` runner. ccxt
keeps each book up to date from the venue's snapshot and deltas; at most once per ``sample_ms`` per
symbol (on the injected clock) the book's depth within +-1 % of mid is computed
(:func:`oihedge.pipelines.ingest.spot_depth.book_depth`) and kept with its time. A crossed or broken
book is not sampled: it is an incident (``garbage``) with the reason.

The bar closing at ``c`` takes the **median of the samples timed in (c - bar, c]**
(:meth:`DepthStream.take`); a bar without samples (stream down, not connected yet) has no
streamed value and the live source keeps the REST snapshot it polled (or null). Failures
reconnect as the candle streams do; a book without an update for the runner's
``max_silence`` is reconnected (a spot book of a major changes every second).
"""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from oihedge.pipelines.ingest.normalise import MalformedResponseError
from oihedge.pipelines.ingest.spot_depth import book_depth
from oihedge.serving.feeds.ws_candles import Incident, ReconnectingStream

__all__ = ["DepthStream"]


class DepthStream(ReconnectingStream):
    """One venue's spot-book depth samples (runs on a :class:`CandleStreams` event loop).

    ``symbols``: ccxt unified spot symbols by base asset. ``limit``: book levels to watch.
    ``factory``: a fresh ccxt.pro spot exchange (markets set) per connection.
    """

    label = "depth stream"

    def __init__(
        self,
        venue: str,
        symbols: Mapping[str, str],
        bar_ms: int,
        factory: Callable[[], Any],
        clock_ms: Callable[[], int],
        *,
        limit: int | None = None,
        sample_ms: int = 1000,
        retry_s: float = 1.0,
    ) -> None:
        self.venue = venue
        self.symbols = dict(symbols)
        self.bar_ms = bar_ms
        self.factory = factory
        self.clock_ms = clock_ms
        self.limit = limit
        self.sample_ms = sample_ms
        self.retry_s = retry_s
        self.samples: dict[str, list[tuple[int, float]]] = {b: [] for b in self.symbols}
        self._last_sample: dict[str, int] = {}
        self._base_of = {symbol: base for base, symbol in self.symbols.items()}
        self._init_connection()
        self.updates = 0
        self.last_update_ms: int | None = None
        self.started_ms = clock_ms()

    def delivered(self) -> int:
        return self.updates

    async def _watch_all(self, exchange: Any) -> None:
        await asyncio.gather(*(self._watch_one(exchange, s) for s in self.symbols.values()))

    async def _watch_one(self, exchange: Any, symbol: str) -> None:
        while True:
            book = await exchange.watch_order_book(symbol, self.limit)
            self._sample(symbol, book)

    def _sample(self, symbol: str, book: Any) -> None:
        base = self._base_of.get(symbol)
        if base is None:
            return
        now = self.clock_ms()
        with self.lock:
            self.updates += 1
            self.last_update_ms = now
            last = self._last_sample.get(base)
            if last is not None and now - last < self.sample_ms:
                return
            try:
                depth = book_depth(book, what=f"{self.venue} {base} spot book (websocket)")
            except MalformedResponseError as err:
                self.incidents.append(Incident("garbage", str(err)[:300]))
                return
            self._last_sample[base] = now
            self.samples[base].append((now, depth.usd))
            self.lock.notify_all()

    def restart(self, incident: Incident) -> None:
        """Record ``incident`` and drop the connection (``run`` reconnects)."""
        self.record(incident)
        with self.lock:
            self.last_update_ms = None
            self.started_ms = self.clock_ms()
        if self._watch is not None and not self._watch.done():
            self._watch.cancel()

    # -- the caller's side (any thread) --------------------------------------------------

    def silence_ms(self) -> int:
        """Milliseconds since the last book update (or since the stream (re)started)."""
        with self.lock:
            last = self.last_update_ms if self.last_update_ms is not None else self.started_ms
        return self.clock_ms() - last

    def take(self, close_ms: int) -> dict[str, tuple[float, int]]:
        """Per base: (median depth, number of samples) of the samples timed in
        ``(close_ms - bar, close_ms]``; bases without samples are absent. Samples at or
        before ``close_ms`` are dropped afterwards."""
        out: dict[str, tuple[float, int]] = {}
        with self.lock:
            for base, samples in self.samples.items():
                inside = [usd for ts, usd in samples if close_ms - self.bar_ms < ts <= close_ms]
                if inside:
                    out[base] = (statistics.median(inside), len(inside))
                self.samples[base] = [(ts, usd) for ts, usd in samples if ts > close_ms]
        return out


def depth_symbols(spot_symbol: Callable[[str], str | None], bases: Sequence[str]) -> dict[str, str]:
    """Spot symbols by base for the bases that have one."""
    return {b: s for b in bases if (s := spot_symbol(b)) is not None}
