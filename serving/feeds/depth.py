"""The live source's streamed spot depth: each venue's spot books through ccxt.pro.

:class:`DepthFeeds` starts one :class:`~oihedge.serving.feeds.ws_depth.DepthStream` per configured
venue with a spot book (:data:`oihedge.pipelines.ingest.spot_depth.DEPTH_BOOKS`), and at each bar
close ``t`` writes ``spot_depth_usd`` = the median of the bar's depth samples (at most one a second
per symbol, timed in (t - bar, t]) into the live panel store, with ``known_at`` = the poll time. It
runs after the REST poll, whose single snapshot of the book at ``t`` + ``poll_delay`` stays the
bar's value where the stream had no sample (the fallback); a bar with samples gets their median
instead. The stream's incidents become ``depth_<kind>`` errors on the bar (``depth_garbage`` for a
crossed book, ``depth_unavailable``, ...).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import ccxt.pro as ccxt_pro

from oihedge.pipelines.ingest.collectors import Call, Collector, CollectorError
from oihedge.pipelines.ingest.normalise import _frame, to_ms, to_panel
from oihedge.pipelines.ingest.spot_depth import DEPTH_BOOKS
from oihedge.pipelines.ingest.venues import VENUES, VenueSpec
from oihedge.pipelines.store import PanelStore
from oihedge.serving.feeds._base import SourceError
from oihedge.serving.feeds.rest import classify_error
from oihedge.serving.feeds.ws_candles import CandleStreams, incident_errors
from oihedge.serving.feeds.ws_depth import DepthStream, depth_symbols

__all__ = ["DepthFeeds", "pro_spot_exchange"]

log = logging.getLogger(__name__)

#: book levels watched per venue (ccxt's accepted values: Bybit spot 1/50/200/1000; OKX's
#: ``books`` channel is 400 levels whatever is asked; Binance's is the REST snapshot size)
WS_LIMITS: Mapping[str, int | None] = {"binanceusdm": 1000, "bybit": 200, "okx": None}


def pro_spot_exchange(spec: VenueSpec, markets: Mapping[str, Any]) -> Any:
    """A ccxt.pro exchange for ``spec``'s spot markets with ``markets`` already loaded."""
    spot_id = spec.spot_ccxt_id or spec.id
    options = spec.spot_ccxt_options if spec.spot_ccxt_id else spec.ccxt_options
    exchange = getattr(ccxt_pro, spot_id)({"options": dict(options)})
    exchange.set_markets(list(markets.values()))
    return exchange


class DepthFeeds:
    """Spot-book depth streams of ``collectors``' venues, written bar by bar into ``store``.

    ``max_silence``: a book without an update for this long is reconnected.
    ``sample_every``: at most one depth sample per symbol this often (on ``clock``).
    ``exchange_factory(spec, markets)``: each connection's ccxt.pro spot exchange.
    """

    def __init__(
        self,
        store: PanelStore,
        collectors: Mapping[str, Collector],
        symbols: Sequence[str],
        bar: timedelta,
        *,
        clock: Callable[[], datetime],
        max_silence: timedelta = timedelta(seconds=60),
        exchange_factory: Callable[[VenueSpec, Mapping[str, Any]], Any] = pro_spot_exchange,
        retry_s: float = 1.0,
        sample_every: timedelta = timedelta(seconds=1),
    ) -> None:
        self.store = store
        self.sample_ms = sample_every // timedelta(milliseconds=1)
        self.collectors = dict(collectors)
        self.symbols = tuple(symbols)
        self.bar = bar
        self._clock = clock
        self._factory = exchange_factory
        self.retry_s = retry_s
        self.venues = tuple(v for v in self.collectors if v in DEPTH_BOOKS and v in WS_LIMITS)
        self.runner = CandleStreams(
            clock_ms=lambda: to_ms(self._clock()),
            max_silence_ms=int(max_silence.total_seconds() * 1000),
        )

    def start(self) -> list[SourceError]:
        """Connect every venue not connected yet; the venues whose markets did not load."""
        failed = []
        for venue in self.venues:
            if self.runner.get(venue) is not None:
                continue
            try:
                markets = self.collectors[venue].call(
                    Call("load_markets", what=f"{venue}: load spot markets", market="spot")
                )
            except CollectorError as err:
                kind = f"depth_{classify_error(str(err))}"
                failed.append(SourceError(venue, kind, f"depth stream not started: {err}"))
                continue
            spec = VENUES[venue]
            symbols = depth_symbols(spec.spot_symbol, self.symbols)
            symbols = {b: s for b, s in symbols.items() if s in markets}
            if not symbols:
                continue
            stream = DepthStream(
                venue,
                symbols,
                self.bar // timedelta(milliseconds=1),
                lambda spec=spec, markets=markets: self._factory(spec, markets),
                lambda: to_ms(self._clock()),
                limit=WS_LIMITS[venue],
                sample_ms=self.sample_ms,
                retry_s=self.retry_s,
            )
            self.runner.add(stream)  # type: ignore[arg-type]
        return failed

    def stream(self, venue: str) -> DepthStream | None:
        return self.runner.get(venue)  # type: ignore[return-value]

    def poll(self, t: datetime) -> list[SourceError]:
        """Write the median depth of the bar closing at ``t`` per streamed (venue, symbol);
        the streams' errors."""
        errors = self.start()
        t_ms, now_ms = to_ms(t), to_ms(self._clock())
        for venue in self.venues:
            stream = self.stream(venue)
            if stream is None:
                continue
            errors.extend(_incident_errors(venue, stream))
            medians = stream.take(t_ms)
            if not medians:
                continue
            cols: dict[str, list] = {
                "ts": [t_ms] * len(medians),
                "known_at": [max(now_ms, t_ms)] * len(medians),
                "venue": [venue] * len(medians),
                "symbol": list(medians),
                "spot_depth_usd": [usd for usd, _ in medians.values()],
            }
            try:
                self.store.append(
                    to_panel(_frame(cols, ("spot_depth_usd",))),
                    source=f"stream-{venue}-depth",
                    bar=self.bar,
                    mode="update",
                )
            except Exception as err:  # the store failing: the REST snapshot stays
                log.error("storing %s streamed depth failed: %s", venue, err)
                errors.append(SourceError(venue, "error", f"streamed depth not stored: {err}"))
        return errors

    def close(self) -> None:
        self.runner.close()


def _incident_errors(venue: str, stream: DepthStream) -> list[SourceError]:
    return incident_errors(
        venue, stream.take_incidents(), kind_prefix="depth", label="depth stream"
    )
