"""Live bars from the venues: REST polling through the ccxt collectors, at bar cadence.

At each bar close ``t`` (plus ``poll_delay``, the venues' publication lag) the source runs
the incremental ingestion of :mod:`oihedge.pipelines.ingest.incremental` for the last few bars
(candles, spot candles, OI and funding per venue and symbol; the collectors' pacing,
retries and error classification; the normaliser's units) into a live panel folder, then
hands the loop every row stored since the previous bar, per (venue, symbol), in
``(known_at, ts)`` order.
With an ``options`` collector (:mod:`oihedge.pipelines.ingest.options`), each bar also snapshots the
option chains of the symbols the options venue lists (``opt_*`` columns, venue
``deribit``) into the same store.

A venue that times out, rate-limits past its retries, answers garbage or is down does not
stop the bar: the ingestion records it (``report.errors``) and moves on to the next venue;
the bar goes on without that venue's new rows, carrying a
:class:`~oihedge.serving.feeds._base.SourceError` with the kind (``timeout``, ``rate_limited``,
``garbage``, ``unavailable``, ``error``). The loop then sees the venue age and, past
``max_staleness``, leaves it out and records why. Rows the store refuses on write are
quarantined there (``_quarantine``) with their reason.

This class polls every series of every venue by REST once a bar (what the 5-minute OI
publication cadence allows anyway). :class:`oihedge.serving.feeds.websocket.StreamSource` builds on
it: perp candles from ccxt.pro websockets, the rest (and any venue whose stream fails)
through :meth:`LiveSource.fetch`, the same rows into the same store.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl

from oihedge.pipelines.ingest.collectors import Collector
from oihedge.pipelines.ingest.incremental import IngestPlan, ingest
from oihedge.pipelines.ingest.venues import SERIES
from oihedge.pipelines.store import PanelStore
from oihedge.serving.feeds._base import Bar, SourceError, from_us

__all__ = ["LiveSource", "classify_error"]

log = logging.getLogger(__name__)

_US = timedelta(microseconds=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def classify_error(message: str) -> str:
    """The kind of a venue failure from the collector's one-line message."""
    text = message.lower()
    if "timeout" in text or "timed out" in text:
        return "timeout"
    if "ratelimit" in text or "too many requests" in text or "429" in text or "ddos" in text:
        return "rate_limited"
    if "malformed" in text or "badresponse" in text:
        return "garbage"
    if "notavailable" in text or "maintenance" in text or "503" in text or "502" in text:
        return "unavailable"
    return "error"


class LiveSource:
    """Bars polled from ``collectors`` (one per ccxt venue id) into ``store``.

    ``symbols``: base assets. ``bar``: bar length. ``poll_delay``: wait after each bar
    close before polling. ``lookback``: how far back each poll re-reads (covers a bar
    missed by a slow venue). ``clock`` / ``sleep``: wall clock and waiting (replaceable in
    tests). ``start``: the first bar close to poll (default: the next one). ``max_bars``:
    stop after this many bars (None: run until interrupted).
    """

    def __init__(
        self,
        store: PanelStore,
        collectors: Mapping[str, Collector],
        symbols: Sequence[str],
        bar: timedelta,
        *,
        poll_delay: timedelta = timedelta(seconds=20),
        lookback: timedelta | None = None,
        clock: Callable[[], datetime] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        start: datetime | None = None,
        max_bars: int | None = None,
        options: Collector | None = None,
    ) -> None:
        if not symbols:
            raise ValueError("symbols must not be empty")
        self.store = store
        self.collectors = dict(collectors)
        self.symbols = tuple(symbols)
        self.bar = bar
        self.poll_delay = poll_delay
        self.lookback = lookback or 3 * bar
        self._clock = clock or (lambda: datetime.now(UTC))
        self._sleep = sleep
        self.start = start
        self.max_bars = max_bars
        self.options = options
        self._emitted: dict[tuple[str, str], datetime] = {}
        #: the liquidation streams (:class:`oihedge.serving.feeds.liquidations.LiquidationFeeds`),
        #: written into the store at each poll; None: liquidations stay null
        self.liquidations: Any = None
        #: the spot-book streams (:class:`oihedge.serving.feeds.depth.DepthFeeds`): their median
        #: depth of the bar replaces the polled REST snapshot; None: REST snapshots only
        self.depth: Any = None

    def next_close(self, moment: datetime) -> datetime:
        """The first bar close strictly after ``moment``."""
        bar_us = self.bar // _US
        us = (moment - _EPOCH) // _US
        return from_us((us // bar_us + 1) * bar_us)

    def __iter__(self) -> Iterator[Bar]:
        t = self.start or self.next_close(self._clock())
        n = 0
        try:
            while self.max_bars is None or n < self.max_bars:
                wait = (t + self.poll_delay - self._clock()).total_seconds()
                if wait > 0:
                    self._sleep(wait)
                yield self.poll(t)
                n += 1
                t = max(t + self.bar, self.next_close(self._clock() - self.poll_delay))
        finally:
            self.close()

    def poll(self, t: datetime) -> Bar:
        """Fetch what the venues published up to bar close ``t``; the bar for ``t``."""
        errors = self.fetch(t, self.collectors, SERIES)
        # first: the loop keeps one error kind per venue, the last one, so a REST failure
        # (which leaves the venue out) is not masked by a liquidation feed's
        return self.bar_at(t, self.poll_streams(t) + self.fetch_options(t) + errors)

    def poll_streams(self, t: datetime) -> list[SourceError]:
        """Write the streamed liquidation bars up to ``t`` and the bar's streamed spot
        depth (after the REST poll: it replaces the REST snapshot) into the store; their
        errors."""
        errors = []
        for name, feed in (("liquidations", self.liquidations), ("depth", self.depth)):
            if feed is None:
                continue
            try:
                errors += feed.poll(t, self.lookback) if name == "liquidations" else feed.poll(t)
            except Exception as err:  # the bar goes on without them
                log.error("%s for %s failed: %s", name, t.isoformat(), err)
                errors += [SourceError(v, "error", f"{name}: {err}") for v in self.collectors]
        return errors

    def close(self) -> None:
        """Stop the liquidation and depth streams (idempotent; REST needs no closing)."""
        for feed in (self.liquidations, self.depth):
            if feed is not None:
                feed.close()

    def bar_at(self, t: datetime, errors: list[SourceError]) -> Bar:
        """The bar for ``t``: the stored rows not handed over yet, and ``errors``."""
        try:
            rows = self._new_rows(t)
        except Exception as err:  # the store unreadable: the bar goes on empty
            log.error("reading the live panel for %s failed: %s", t.isoformat(), err)
            rows = []
        return Bar((t - _EPOCH) // _US, rows=rows, errors=errors)

    def fetch(
        self, t: datetime, collectors: Mapping[str, Collector], series: Sequence[str]
    ) -> list[SourceError]:
        """Ingest ``series`` of ``collectors``' venues up to ``t`` into the store; the
        venues that failed, with the kind of failure (the store itself failing fails
        every venue of the call)."""
        if not collectors or not series:
            return []
        plan = IngestPlan(
            symbols=self.symbols,
            since=t - self.lookback,
            bar=self.bar,
            until=t,
            series=tuple(series),
            resume=False,
        )
        try:
            report = ingest(self.store, collectors, plan, clock=lambda: t)
        except Exception as err:  # the store itself failing: the bar goes on empty
            log.error("polling for %s failed: %s", t.isoformat(), err)
            return [SourceError(v, "error", str(err)) for v in collectors]
        errors = []
        for venue, message in sorted(report.errors.items()):
            kind = classify_error(message)
            errors.append(SourceError(venue, kind, message))
            log.warning("venue %s left out of bar %s: %s", venue, t.isoformat(), message)
        return errors

    def fetch_options(self, t: datetime) -> list[SourceError]:
        """Snapshot the option chains (``options``: the options venue's collector, None:
        none) into the store, for the bar of ``t``; the failure, if any, with its kind.
        The snapshot's ``known_at`` is the wall clock when it was read, after ``t``."""
        if self.options is None:
            return []
        from oihedge.pipelines.ingest.options_ingest import ingest_options
        from oihedge.pipelines.ingest.report import IngestReport

        report = IngestReport()
        try:
            ingest_options(
                self.store, self.options, self.symbols, self.bar, clock=self._clock, report=report
            )
        except Exception as err:  # the store or the replay failing: the bar goes on
            log.error("options snapshot for %s failed: %s", t.isoformat(), err)
            return [SourceError(self.options.spec.id, "error", str(err))]
        errors = []
        for venue, message in sorted(report.errors.items()):
            errors.append(SourceError(venue, classify_error(message), message))
            log.warning("options of %s left out of bar %s: %s", venue, t.isoformat(), message)
        return errors

    def _new_rows(self, t: datetime) -> list[dict]:
        """Stored rows with ``ts <= t`` not handed over yet, in arrival order."""
        frame = self.store.read(
            start=t - self.lookback, end=t + self.bar, symbols=list(self.symbols)
        ).filter(pl.col("ts") <= t)
        if frame.is_empty():
            return []
        keep = []
        for (venue, symbol), part in frame.group_by(["venue", "symbol"], maintain_order=True):
            last = self._emitted.get((str(venue), str(symbol)))
            new = part if last is None else part.filter(pl.col("ts") > last)
            if not new.is_empty():
                keep.append(new)
                self._emitted[(str(venue), str(symbol))] = new["ts"].max()  # type: ignore[assignment]
        if not keep:
            return []
        rows = pl.concat(keep).sort("known_at", "ts")
        micros = [pl.col(c).dt.epoch("us") for c in ("ts", "known_at")]
        return rows.with_columns(micros).to_dicts()
