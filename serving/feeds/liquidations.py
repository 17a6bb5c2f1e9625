"""The live source's liquidation feed: the venues' liquidation streams, one bar at a time.

:class:`LiquidationFeeds` starts one
:class:`~oihedge.serving.feeds.ws_liquidations.LiquidationStream` per configured venue that
publishes liquidations (on its own background event loop, the candle streams' runner), and at each
bar close ``t`` (when the live source polls, ``t`` + ``poll_delay``) writes ``liq_long_usd`` /
``liq_short_usd`` of the bars that closed since the last poll into the live panel store, with
``known_at`` = the poll time. A bar during which a venue's stream was down is not written (it stays
null) and the bar carries a :class:`~oihedge.serving.feeds._base.SourceError` ``liq_down`` saying
so; the stream's incidents become ``liq_<kind>`` errors (``liq_garbage``, ``liq_unavailable``, ...).
A venue without a liquidation stream (Hyperliquid) is left out and logged once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from oihedge.pipelines.ingest.collectors import Call, Collector, CollectorError
from oihedge.pipelines.ingest.liquidations import feed
from oihedge.pipelines.ingest.normalise import from_ms, to_ms, to_panel
from oihedge.pipelines.ingest.venues import VenueSpec
from oihedge.pipelines.store import PanelStore
from oihedge.serving.feeds._base import SourceError
from oihedge.serving.feeds.rest import classify_error
from oihedge.serving.feeds.ws_candles import CandleStreams, incident_errors, pro_exchange
from oihedge.serving.feeds.ws_liquidations import (
    LiquidationStream,
    liquidation_stream,
    offers_liquidation_stream,
)

__all__ = ["LiquidationFeeds"]

log = logging.getLogger(__name__)


class LiquidationFeeds:
    """Liquidation streams of ``collectors``' venues, written bar by bar into ``store``.

    ``clock``: wall clock. ``exchange_factory(spec, markets)``: each connection's ccxt.pro
    exchange (tests point it at a local server). ``retry_s``: first reconnect delay.
    """

    def __init__(
        self,
        store: PanelStore,
        collectors: Mapping[str, Collector],
        symbols: Sequence[str],
        bar: timedelta,
        *,
        clock: Callable[[], datetime],
        exchange_factory: Callable[[VenueSpec, Mapping[str, Any]], Any] = pro_exchange,
        retry_s: float = 1.0,
    ) -> None:
        self.store = store
        self.collectors = dict(collectors)
        self.symbols = tuple(symbols)
        self.bar = bar
        self._clock = clock
        self._factory = exchange_factory
        self.retry_s = retry_s
        self.venues = tuple(v for v in self.collectors if offers_liquidation_stream(v))
        for venue in self.collectors:
            if venue not in self.venues:
                log.info("%s: %s", venue, feed(venue).notes)
        # silence never restarts a liquidation stream (its silence_ms is 0)
        self.runner = CandleStreams(clock_ms=lambda: to_ms(self._clock()), max_silence_ms=1)
        self._last: datetime | None = None

    def start(self) -> list[SourceError]:
        """Connect every venue not connected yet; the venues whose markets did not load."""
        failed = []
        for venue in self.venues:
            if self.runner.get(venue) is not None:
                continue
            try:
                markets = self.collectors[venue].call(
                    Call("load_markets", what=f"{venue}: load markets")
                )
            except CollectorError as err:
                kind = f"liq_{classify_error(str(err))}"
                failed.append(SourceError(venue, kind, f"liquidation stream not started: {err}"))
                continue
            stream = liquidation_stream(
                venue,
                self.symbols,
                self.bar // timedelta(milliseconds=1),
                markets,
                lambda: to_ms(self._clock()),
                factory=self._factory,
                retry_s=self.retry_s,
            )
            self.runner.add(stream)  # type: ignore[arg-type]
        return failed

    def stream(self, venue: str) -> LiquidationStream | None:
        return self.runner.get(venue)  # type: ignore[return-value]

    def poll(self, t: datetime, lookback: timedelta) -> list[SourceError]:
        """Write the liquidation bars closing in (last poll, ``t``] (at most ``lookback``
        back); the errors of the venues whose bars stay null or whose stream had trouble."""
        errors = self.start()
        since = max(self._last or t - lookback, t - lookback)
        now_ms = to_ms(self._clock())
        for venue in self.venues:
            stream = self.stream(venue)
            if stream is None:
                continue
            with stream.lock:
                frame, down = stream.bars.finalise(to_ms(since), to_ms(t), now_ms)
            errors.extend(_incident_errors(venue, stream))
            if down:
                closes = ", ".join(f"{from_ms(c):%H:%M}Z" for c in down)
                errors.append(
                    SourceError(
                        venue,
                        "liq_down",
                        f"liquidation stream down during the bar(s) closing {closes}; "
                        "liq_long_usd / liq_short_usd stay null there",
                    )
                )
            if frame.height:
                errors.extend(self._write(venue, frame))
        self._last = t
        return errors

    def _write(self, venue: str, frame: Any) -> list[SourceError]:
        try:
            self.store.append(
                to_panel(frame), source=f"stream-{venue}-liq", bar=self.bar, mode="update"
            )
        except Exception as err:  # the store failing: the bar goes on without them
            log.error("storing %s liquidations failed: %s", venue, err)
            return [SourceError(venue, "error", f"liquidations not stored: {err}")]
        return []

    def close(self) -> None:
        self.runner.close()


def _incident_errors(venue: str, stream: LiquidationStream) -> list[SourceError]:
    return incident_errors(
        venue, stream.take_incidents(), kind_prefix="liq", label="liquidation stream"
    )
