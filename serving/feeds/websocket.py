"""Live bars with perp candles from the venues' websockets (ccxt.pro), the rest by REST.

:class:`StreamSource` is a :class:`~oihedge.serving.feeds.rest.LiveSource` whose perp candles
(``close``, ``high``, ``low``, ``volume_usd``) come from :mod:`oihedge.serving.feeds.ws_candles` for
the venues that stream them; everything without a stream is polled by REST at bar
cadence through the same collectors and ingestion as before: open interest (no venue
streams OI history; Hyperliquid's snapshot carries its own mark price), funding (the
venues stream the *predicted* rate of the coming settlement, the panel holds the settled
ones) and spot candles.

At each bar close ``t`` (plus ``poll_delay``), per streaming venue:

1. its stream's incidents since the last bar become
   :class:`~oihedge.serving.feeds._base.SourceError` ``stream_<kind>`` (``stream_garbage``,
   ``stream_unavailable``, ``stream_silent``, ...);
2. if the stream has had a candle update within ``max_silence`` it is given up to
   ``stream_wait`` for the candle closing at ``t`` of every symbol; the closed candles
   of the lookback go through the REST normaliser
   (:func:`oihedge.pipelines.ingest.normalise.ohlcv_rows`: same bar times, units and
   ``known_at``) into the live panel store (invalid rows quarantined there with their
   reason, as the ingestion does);
3. otherwise (silent, incomplete, or its markets could not be loaded) the venue's candles
   are polled by REST this bar, with an error ``stream_silent`` / ``stream_incomplete``
   / ``stream_<kind>`` saying why; the stream keeps reconnecting in the background and
   is used again as soon as it delivers.

Then the REST series are fetched (OI after the candles: Bybit's OI in coins is converted
with the stored close) and the bar is read from the store exactly as
:class:`~oihedge.serving.feeds.rest.LiveSource` reads it, so the loop sees the same rows either way.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import polars as pl

from oihedge.pipelines.ingest.collectors import Call, Collector, CollectorError
from oihedge.pipelines.ingest.normalise import MalformedResponseError, ohlcv_rows, to_ms, to_panel
from oihedge.pipelines.ingest.venues import SERIES, VENUES, VenueSpec, bar_timeframe
from oihedge.pipelines.store import PanelStore
from oihedge.serving.feeds._base import Bar, SourceError
from oihedge.serving.feeds.rest import LiveSource, classify_error
from oihedge.serving.feeds.ws_candles import (
    CandleStreams,
    Incident,
    incident_errors,
    offers_candle_stream,
    pro_exchange,
)
from oihedge.serving.feeds.ws_candles import venue_stream as make_venue_stream

__all__ = ["StreamSource", "live_source", "streamed_venues"]

log = logging.getLogger(__name__)

#: what a streaming venue still polls by REST
REST_SERIES: tuple[str, ...] = tuple(s for s in SERIES if s != "close")
FEEDS = ("websocket", "rest")


def streamed_venues(venues: Sequence[str], feeds: Mapping[str, str]) -> tuple[str, ...]:
    """The venues whose candles are streamed: ``feeds[venue]`` (``"websocket"`` or
    ``"rest"``), ``"websocket"`` when not given, and only where ccxt.pro streams candles."""
    out = []
    for venue in venues:
        feed = feeds.get(venue, "websocket")
        if feed not in FEEDS:
            raise ValueError(f"feed of {venue!r} must be 'websocket' or 'rest', got {feed!r}")
        if feed == "rest":
            continue
        if not offers_candle_stream(venue):
            log.warning("%s: ccxt.pro streams no candles for it; polled by REST", venue)
            continue
        out.append(venue)
    return tuple(out)


def live_source(
    store: PanelStore,
    collectors: Mapping[str, Collector],
    symbols: Sequence[str],
    bar: timedelta,
    *,
    feeds: Mapping[str, str],
    max_silence: timedelta,
    stream_wait: timedelta,
    poll_delay: timedelta,
    liquidations: bool = False,
    depth_streams: bool = False,
    options: Collector | None = None,
) -> LiveSource:
    """The live source for the configured feeds: a :class:`StreamSource` when a venue
    streams, else the REST :class:`~oihedge.serving.feeds.rest.LiveSource`; ``liquidations``:
    with the venues' liquidation streams (:mod:`oihedge.serving.feeds.liquidations`);
    ``depth_streams``: with their spot books streamed (:mod:`oihedge.serving.feeds.depth`);
    ``options``: the options venue's collector (its chains snapshotted every bar), or None."""
    streamed = streamed_venues(tuple(collectors), feeds)
    source: LiveSource
    if not streamed:
        source = LiveSource(store, collectors, symbols, bar, poll_delay=poll_delay, options=options)
    else:
        source = StreamSource(
            store,
            collectors,
            symbols,
            bar,
            streamed=streamed,
            max_silence=max_silence,
            stream_wait=stream_wait,
            poll_delay=poll_delay,
            options=options,
        )
    if liquidations:
        from oihedge.serving.feeds.liquidations import LiquidationFeeds

        source.liquidations = LiquidationFeeds(store, collectors, symbols, bar, clock=source._clock)
        source.liquidations.start()  # connected before the first bar closes
    if depth_streams:
        from oihedge.serving.feeds.depth import DepthFeeds

        source.depth = DepthFeeds(
            store, collectors, symbols, bar, clock=source._clock, max_silence=max_silence
        )
        source.depth.start()
    return source


class StreamSource(LiveSource):
    """:class:`~oihedge.serving.feeds.rest.LiveSource` with the perp candles of ``streamed``
    venues from ccxt.pro websockets.

    ``max_silence``: a stream without a candle update for this long is not used (the
    venue is polled by REST) and is reconnected. ``stream_wait``: at each bar, how long to
    wait for a stream's closing candle. ``exchange_factory(spec, markets)``: builds the
    ccxt.pro exchange of a connection (default: the venue's class with the REST
    collector's markets). ``retry_s``: first reconnection delay after a failure. The
    other arguments are :class:`~oihedge.serving.feeds.rest.LiveSource`'s.
    """

    def __init__(
        self,
        store: PanelStore,
        collectors: Mapping[str, Collector],
        symbols: Sequence[str],
        bar: timedelta,
        *,
        streamed: Sequence[str],
        max_silence: timedelta = timedelta(seconds=60),
        stream_wait: timedelta = timedelta(seconds=5),
        exchange_factory: Callable[[VenueSpec, Mapping[str, Any]], Any] = pro_exchange,
        retry_s: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(store, collectors, symbols, bar, **kwargs)
        unknown = [v for v in streamed if v not in self.collectors]
        if unknown:
            raise ValueError(f"streamed venue {unknown[0]!r} has no collector")
        if max_silence <= timedelta(0) or stream_wait < timedelta(0):
            raise ValueError(
                f"need max_silence > 0 and stream_wait >= 0, got {max_silence}, {stream_wait}"
            )
        self.streamed = tuple(streamed)
        self.max_silence = max_silence
        self.stream_wait = stream_wait
        self.retry_s = retry_s
        self._factory = exchange_factory
        self.streams = CandleStreams(
            clock_ms=lambda: to_ms(self._clock()),
            max_silence_ms=int(max_silence.total_seconds() * 1000),
        )
        #: where each venue's candles came from in the last bar: "websocket" or "rest"
        self.feed: dict[str, str] = {}

    def __iter__(self) -> Iterator[Bar]:
        # connected before the first bar closes, so that its closing candle is streamed
        self.start_streams()
        try:
            yield from super().__iter__()
        finally:
            self.close()

    def start_streams(self) -> list[SourceError]:
        """Connect every streamed venue not connected yet; the venues that could not
        start (their markets did not load; they are polled by REST and tried again)."""
        failed = []
        for venue in self.streamed:
            if self.streams.get(venue) is None:
                failure = self._start(venue)
                if failure is not None:
                    log.warning("%s: %s", venue, failure.detail)
                    failed.append(failure)
        return failed

    def close(self) -> None:
        """Stop the streams (the REST collectors need no closing)."""
        self.streams.close()
        super().close()

    def poll(self, t: datetime) -> Bar:
        """Streamed candles, then the REST series, up to bar close ``t``; the bar for ``t``."""
        errors = self.start_streams()
        streaming = []
        for venue in self.streamed:
            if self._stream_bar(venue, t, errors):
                streaming.append(venue)
        for venue in self.collectors:
            self.feed[venue] = "websocket" if venue in streaming else "rest"
        on_stream = {v: self.collectors[v] for v in streaming}
        polled = {v: c for v, c in self.collectors.items() if v not in on_stream}
        errors += self.fetch(t, on_stream, REST_SERIES)
        errors += self.fetch(t, polled, SERIES)
        # first: the loop keeps the last error kind per venue (see LiveSource.poll)
        return self.bar_at(t, self.poll_streams(t) + self.fetch_options(t) + errors)

    # -- one venue's stream at one bar --------------------------------------------------

    def _stream_bar(self, venue: str, t: datetime, errors: list[SourceError]) -> bool:
        """Write ``venue``'s streamed candles for bar ``t``; False: poll them by REST."""
        stream = self.streams.get(venue)
        if stream is None:  # not started: the error is in the bar already
            return False
        silent = stream.silence_ms()
        if silent > self.max_silence // timedelta(milliseconds=1):
            errors.extend(_errors(venue, stream.take_incidents()))
            errors.append(
                SourceError(
                    venue,
                    "stream_silent",
                    f"websocket: no candle for {silent / 1000:.0f}s; candles polled by REST",
                )
            )
            return False
        t_ms = to_ms(t)
        since_ms = to_ms(t - self.lookback)
        candles = stream.closed(since_ms, t_ms)
        deadline = time.monotonic() + self.stream_wait.total_seconds()
        with stream.lock:
            while candles is None and (left := deadline - time.monotonic()) > 0:
                stream.lock.wait(left)
                candles = stream.closed(since_ms, t_ms)
        errors.extend(_errors(venue, stream.take_incidents()))
        if candles is None:
            detail = f"websocket: no closed candle at {t:%H:%M}Z yet; candles polled by REST"
            errors.append(SourceError(venue, "stream_incomplete", detail))
            return False
        return self._write(venue, t_ms, candles, errors)

    def _start(self, venue: str) -> SourceError | None:
        """Start ``venue``'s stream with the markets of its REST collector."""
        collector = self.collectors[venue]
        try:
            markets = collector.call(Call("load_markets", what=f"{venue}: load markets"))
        except CollectorError as err:
            kind = f"stream_{classify_error(str(err))}"
            return SourceError(venue, kind, f"websocket not started: {err}")
        spec = VENUES[venue]
        stream = make_venue_stream(
            venue,
            self.symbols,
            self.bar // timedelta(milliseconds=1),
            bar_timeframe(self.bar),
            markets,
            lambda: to_ms(self._clock()),
            factory=lambda: self._factory(spec, markets),
            retry_s=self.retry_s,
        )
        self.streams.add(stream)
        return None

    def _write(
        self, venue: str, t_ms: int, candles: Mapping[str, list], errors: list[SourceError]
    ) -> bool:
        """Normalise and store the candles as the REST ingestion does; False on failure."""
        spec = VENUES[venue]
        try:
            frames = [
                ohlcv_rows(rows, spec=spec, symbol=base, bar=self.bar, now_ms=t_ms).frame
                for base, rows in candles.items()
            ]
            report = self.store.append(
                to_panel(pl.concat(frames)),
                source=f"stream-{venue}-close",
                bar=self.bar,
                mode="update",
            )
        except MalformedResponseError as err:
            errors.append(SourceError(venue, "stream_garbage", f"websocket: {err}"))
            return False
        except Exception as err:  # the store failing: REST gets the same chance
            log.error("storing %s streamed candles failed: %s", venue, err)
            errors.append(SourceError(venue, "error", f"websocket candles not stored: {err}"))
            return False
        if report.quarantined:
            log.warning(
                "%s: %d streamed candle rows quarantined: %s",
                venue,
                report.quarantined,
                report.quarantine_reasons,
            )
        return True


def _errors(venue: str, incidents: Sequence[Incident]) -> list[SourceError]:
    """One error per kind of candle-stream incident (the first detail, and how many)."""
    return incident_errors(venue, incidents, kind_prefix="stream", label="websocket")
