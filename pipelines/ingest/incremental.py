"""Incremental ingestion: venues -> ccxt pages -> normalised rows -> the panel store.

Per (venue, symbol) four series are fetched one after the other, each resuming from its
own last stored bar (``PanelStore.last_ts(column)``): perp candles (``close``), spot
candles (``spot_close``), open interest (``oi_usd``) and funding (``funding_rate``). They
are merged into one row per bar with ``PanelStore.append(mode="update")``.

Pagination is by time windows of exactly one page (``limit`` x timeframe), so no page can
hold more rows than the venue returns and an empty page (a venue outage, a symbol not yet
listed) just moves on to the next window. Pages are buffered and written every
``flush_rows`` rows, at the end of each series, and on any interruption (the job's
``finally`` flushes), so a re-run resumes exactly where the stored data ends and nothing
fetched is lost.

The work is a generator of :class:`~oihedge.pipelines.ingest.collectors.Call` objects, so the same
code runs on the synchronous and the asyncio collectors.

The panel's completeness marker (:mod:`oihedge.pipelines.panel_manifest`) says ``complete: false``
from the first write of a run until it ends; a run killed or stopped by an exception leaves
the panel marked partial until a later run finishes. A venue error the run records in its
report and gets past (the other venues go on) ends the run normally.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl

from oihedge.pipelines.ingest.collectors import (
    AsyncCollector,
    Call,
    Collector,
    CollectorError,
    UnknownSymbolError,
)
from oihedge.pipelines.ingest.normalise import (
    MalformedResponseError,
    Normalised,
    floor_ms,
    from_ms,
    funding_rows,
    ohlcv_rows,
    oi_history_rows,
    oi_snapshot_rows,
    to_ms,
)
from oihedge.pipelines.ingest.report import IngestReport, SeriesReport
from oihedge.pipelines.ingest.spot_depth import DEPTH_BOOKS, depth_rows, reach_note
from oihedge.pipelines.ingest.venues import SERIES, VenueSpec, bar_timeframe, timeframe_delta
from oihedge.pipelines.ingest.writer import PageWriter
from oihedge.pipelines.panel_manifest import WriteRun
from oihedge.pipelines.store import PanelStore

Progress = Callable[[str, int, int], None]
WRITER = "ingest"


@dataclass(frozen=True)
class IngestPlan:
    """What to ingest: venues, base symbols, the span and the bar, and how to write."""

    symbols: tuple[str, ...]
    since: datetime
    bar: timedelta
    until: datetime | None = None
    series: tuple[str, ...] = SERIES
    flush_rows: int = 50_000
    #: False: fetch from ``since`` even where bars are stored (rewrites them, idempotent)
    resume: bool = True

    def __post_init__(self) -> None:
        if self.since.tzinfo is None:
            raise ValueError(f"since must be timezone-aware (UTC), got {self.since!r}")
        unknown = [s for s in self.series if s not in SERIES]
        if unknown:
            raise ValueError(f"unknown series {unknown[0]!r}; the series are {', '.join(SERIES)}")
        if not self.symbols:
            raise ValueError("symbols must not be empty")
        if self.flush_rows < 1:
            raise ValueError(f"flush_rows must be >= 1, got {self.flush_rows!r}")


def _windows(start_ms: int, end_ms: int, span_ms: int) -> list[tuple[int, int]]:
    """Half-open windows [a, a + span) covering [start, end] (the last one may reach past
    ``end``: rows past ``now`` do not exist yet, and still-open candles are dropped)."""
    return [(a, a + span_ms) for a in range(start_ms, end_ms + 1, span_ms)]


class _VenueJob:
    """Builds the call generator for one venue (all symbols, all series)."""

    def __init__(
        self,
        spec: VenueSpec,
        store: PanelStore,
        plan: IngestPlan,
        *,
        clock: Callable[[], datetime],
        resume: Mapping[str, Mapping[tuple[str, str], datetime]],
        progress: Progress | None,
        run: WriteRun,
    ) -> None:
        self.spec, self.store, self.plan, self.run = spec, store, plan, run
        self.clock, self.resume, self.progress = clock, resume, progress
        self.bar_ms = int(plan.bar.total_seconds() * 1000)
        self.reports: list[SeriesReport] = []
        self.spot_markets: Mapping[str, Any] = {}

    # -- the job ------------------------------------------------------------------------

    def job(self) -> Generator[Call, Any, list[SeriesReport]]:
        markets = yield Call("load_markets", what=f"{self.spec.id}: load markets")
        self._check_symbols(markets)
        self.spot_markets = markets
        if self.spec.spot_ccxt_id and {"spot_close", "spot_depth_usd"} & set(self.plan.series):
            what = f"{self.spec.id}: load spot markets ({self.spec.spot_ccxt_id})"
            self.spot_markets = yield Call("load_markets", what=what, market="spot")
        now_ms = to_ms(self.plan.until or self.clock())
        for base in self.plan.symbols:
            for series in self.plan.series:
                report = SeriesReport(self.spec.id, base, series)
                self.reports.append(report)
                if series == "oi_usd" and self.spec.oi_mode == "snapshot":
                    yield from self._snapshot(base, report)
                elif series == "spot_depth_usd":
                    yield from self._depth(base, report)
                else:
                    yield from self._history(base, series, report, now_ms)
        return self.reports

    def _check_symbols(self, markets: Mapping[str, Any]) -> None:
        missing = [b for b in self.plan.symbols if self.spec.perp_symbol(b) not in markets]
        if missing:
            bases = sorted({m.split("/")[0] for m in markets if m.endswith(f":{self.spec.quote}")})
            raise UnknownSymbolError(
                f"{self.spec.id}: no perpetual {self.spec.perp_symbol(missing[0])!r} for symbol "
                f"{missing[0]!r}; listed bases include {', '.join(bases[:12]) or 'none'}"
            )

    def _start_ms(self, base: str, column: str, report: SeriesReport) -> int:
        last = self.resume.get(column, {}).get((self.spec.id, base))
        start = self.plan.since
        if self.plan.resume and last is not None and last + self.plan.bar > start:
            start = last + self.plan.bar
            report.resumed_from = start
        return floor_ms(to_ms(start) + self.bar_ms - 1, self.plan.bar)

    def _history(
        self, base: str, series: str, report: SeriesReport, now_ms: int
    ) -> Generator[Call, Any, None]:
        spot = series == "spot_close"
        market = self.spec.spot_symbol(base) if spot else self.spec.perp_symbol(base)
        if market is None or market not in (self.spot_markets if spot else {market: 1}):
            report.note = f"{self.spec.id} has no spot market for {base}; spot_close stays null"
            return
        start_ms = self._start_ms(base, series, report)
        end_ms = floor_ms(now_ms, self.plan.bar)
        tf_ms, limit, method = self._series_shape(series)
        start_ms = self._clamp(series, start_ms, now_ms, tf_ms, report)
        if start_ms > end_ms:
            return
        if series == "funding_rate":
            windows = _windows(start_ms, now_ms, limit * tf_ms)
        elif series == "oi_usd":
            windows = _windows(start_ms, end_ms, limit * tf_ms)
        else:  # candles are asked for by open time
            windows = _windows(start_ms - tf_ms, end_ms - tf_ms, limit * tf_ms)
        if self.progress:
            self.progress(self.spec.id, 0, len(windows))
        writer = PageWriter(
            self.store, report, self.run, bar=self.plan.bar, flush_rows=self.plan.flush_rows
        )
        previous: int | None = None
        prices = self._prices(base, start_ms) if series == "oi_usd" else None
        try:
            for lo, hi in windows:
                what = f"{self.spec.id} {base} {series} {from_ms(lo):%Y-%m-%dT%H:%M}Z"
                args, kwargs = self._arguments(series, market, lo, hi, limit)
                raw = yield Call(
                    method,
                    args,
                    kwargs,
                    series=series,
                    what=what,
                    market="spot" if spot else "perp",
                )
                report.pages += 1
                page, previous = self._normalise(series, raw, base, now_ms, prices, previous)
                writer.add(page)
                if self.progress:
                    self.progress(self.spec.id, 1, 0)
        finally:
            writer.flush()

    def _series_shape(self, series: str) -> tuple[int, int, str]:
        spec = self.spec
        if series == "funding_rate":
            step = int(spec.funding_min_interval.total_seconds() * 1000)
            return step, spec.funding_limit, "fetch_funding_rate_history"
        if series == "oi_usd":
            step = int(timeframe_delta(spec.oi_timeframe(self.plan.bar)).total_seconds() * 1000)
            return step, spec.oi_limit, "fetch_open_interest_history"
        limit = spec.spot_limit if series == "spot_close" else spec.ohlcv_limit
        return self.bar_ms, limit, "fetch_ohlcv"

    def _clamp(
        self, series: str, start_ms: int, now_ms: int, tf_ms: int, report: SeriesReport
    ) -> int:
        """Move the start to what the venue still serves, and say so in the report."""
        reach: int | None = None
        if series == "oi_usd" and self.spec.oi_max_age is not None:
            # a minute inside the window, for clock skew between us and the venue
            reach = now_ms - int(self.spec.oi_max_age.total_seconds() * 1000) + 60_000
        elif series == "funding_rate" and self.spec.funding_max_age is not None:
            reach = now_ms - int(self.spec.funding_max_age.total_seconds() * 1000) + 60_000
        elif series in ("close", "spot_close") and self.spec.ohlcv_max_bars is not None:
            reach = now_ms - (self.spec.ohlcv_max_bars - 1) * tf_ms
        if reach is None or start_ms >= reach:
            return start_ms
        reach = floor_ms(reach + self.bar_ms - 1, self.plan.bar)
        archive = (
            " (Binance archives: oihedge import-archive)" if self.spec.id == "binanceusdm" else ""
        )
        report.note = (
            f"{self.spec.id} serves {series} only from {from_ms(reach):%Y-%m-%d %H:%M}Z on; "
            f"earlier bars are not in its API{archive}"
        )
        return reach

    def _arguments(
        self, series: str, market: str, lo: int, hi: int, limit: int
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        until = hi - 1
        if series == "funding_rate":
            params: dict[str, Any] = {"until": until}
            if self.spec.id == "okx":  # ccxt sends no upper bound: okx 'after' is exclusive
                params = {"after": hi}
            return (market, lo, limit), {"params": params}
        timeframe = (
            self.spec.oi_timeframe(self.plan.bar)
            if series == "oi_usd"
            else bar_timeframe(self.plan.bar)
        )
        return (market, timeframe, lo, limit), {"params": {"until": until}}

    def _normalise(
        self,
        series: str,
        raw: Any,
        base: str,
        now_ms: int,
        prices: Mapping[int, float] | None,
        previous: int | None,
    ) -> tuple[Normalised, int | None]:
        spec, bar = self.spec, self.plan.bar
        if not isinstance(raw, list):
            raise MalformedResponseError(
                f"{spec.id} {base} {series}: expected a list, got {raw!r:.80}"
            )
        if series == "funding_rate":
            return funding_rows(raw, spec=spec, symbol=base, bar=bar, previous_ms=previous)
        if series == "oi_usd":
            return oi_history_rows(raw, spec=spec, symbol=base, bar=bar, prices=prices), previous
        page = ohlcv_rows(
            raw, spec=spec, symbol=base, bar=bar, now_ms=now_ms, spot=series == "spot_close"
        )
        return page, previous

    def _prices(self, base: str, start_ms: int) -> dict[int, float] | None:
        if self.spec.oi_unit == "usd":
            return None
        frame = (
            self.store.scan(venues=[self.spec.id], symbols=[base], start=from_ms(start_ms))
            .filter(pl.col("close").is_not_null())
            .select(pl.col("ts").dt.epoch("ms"), "close")
            .collect()
        )
        return dict(zip(frame["ts"].to_list(), frame["close"].to_list(), strict=True))

    def _taken(self, series: str, base: str, report: SeriesReport) -> bool:
        """Whether the bar the run is in already has its snapshot of ``series`` (noted)."""
        bar_close = from_ms(floor_ms(to_ms(self.clock()), self.plan.bar))
        last = self.resume.get(series, {}).get((self.spec.id, base))
        if last is not None and last >= bar_close:
            report.note += "; this bar already has one"
            return True
        return False

    def _write_page(self, report: SeriesReport, page: Normalised) -> None:
        writer = PageWriter(
            self.store, report, self.run, bar=self.plan.bar, flush_rows=self.plan.flush_rows
        )
        writer.add(page)
        writer.flush()

    def _snapshot(self, base: str, report: SeriesReport) -> Generator[Call, Any, None]:
        report.note = f"{self.spec.id} has no OI history: one snapshot per run accumulates"
        if self._taken("oi_usd", base, report):
            return
        what = f"{self.spec.id} {base} oi_usd snapshot"
        raw = yield Call(
            "fetch_open_interest", (self.spec.perp_symbol(base),), series="oi_usd", what=what
        )
        fetched = to_ms(self.clock())
        report.pages += 1
        page = oi_snapshot_rows(
            raw, spec=self.spec, symbol=base, bar=self.plan.bar, fetched_ms=fetched
        )
        self._write_page(report, page)

    def _depth(self, base: str, report: SeriesReport) -> Generator[Call, Any, None]:
        """One spot book snapshot for the bar the run is in (see ingest.spot_depth)."""
        market = self.spec.spot_symbol(base)
        book = DEPTH_BOOKS.get(self.spec.id)
        if market is None or book is None or market not in self.spot_markets:
            report.note = f"{self.spec.id} has no spot book for {base}; spot_depth_usd stays null"
            return
        report.note = "one spot book snapshot per run / poll accumulates (no book history)"
        if self._taken("spot_depth_usd", base, report):
            return
        what = f"{self.spec.id} {base} spot_depth_usd order book"
        raw = yield Call(
            "fetch_order_book",
            (market, book.limit),
            series="spot_depth_usd",
            what=what,
            market="spot",
        )
        report.pages += 1
        try:
            page, depth = depth_rows(
                raw, spec=self.spec, symbol=base, bar=self.plan.bar, fetched_ms=to_ms(self.clock())
            )
        except MalformedResponseError as err:  # a crossed or broken book: this bar stays null
            report.empty_values += 1
            report.note = f"snapshot rejected: {err}"
            return
        if not depth.complete:
            report.note = reach_note(self.spec.id, depth)
        self._write_page(report, page)


def _resume_points(
    store: PanelStore, plan: IngestPlan
) -> dict[str, dict[tuple[str, str], datetime]]:
    """Last stored bar per (venue, symbol) of each series; the OI snapshot always checks."""
    snapshots = ("oi_usd", "spot_depth_usd")
    columns = plan.series if plan.resume else [c for c in plan.series if c in snapshots]
    return {column: store.last_ts(column) for column in columns}


def ingest(
    store: PanelStore,
    collectors: Mapping[str, Collector],
    plan: IngestPlan,
    *,
    clock: Callable[[], datetime] | None = None,
    progress: Progress | None = None,
) -> IngestReport:
    """Fetch every series of ``plan`` from each venue (one after the other) into ``store``.

    A venue that fails (unknown symbol, retries exhausted, malformed page) is recorded in
    ``report.errors`` with a one-line message; the pages it fetched before are stored and
    the other venues go on.
    """
    clock = clock or (lambda: datetime.now(UTC))
    resume = _resume_points(store, plan)
    report = IngestReport()
    with WriteRun(store.root, WRITER) as run:
        for venue_id, collector in collectors.items():
            job = _VenueJob(
                collector.spec, store, plan, clock=clock, resume=resume, progress=progress, run=run
            )
            report.pacing[venue_id] = collector.pacing
            try:
                collector.run(job.job())
            except (CollectorError, MalformedResponseError) as err:
                report.errors[venue_id] = str(err)
            report.series.extend(job.reports)
    return report


async def ingest_async(
    store: PanelStore,
    collectors: Mapping[str, AsyncCollector],
    plan: IngestPlan,
    *,
    clock: Callable[[], datetime] | None = None,
    progress: Progress | None = None,
) -> IngestReport:
    """:func:`ingest` with the venues fetched concurrently (each paced by its own limiter)."""
    clock = clock or (lambda: datetime.now(UTC))
    resume = _resume_points(store, plan)
    report = IngestReport()
    with WriteRun(store.root, WRITER) as run:
        await _gather(store, collectors, plan, clock, resume, progress, run, report)
    return report


async def _gather(
    store: PanelStore,
    collectors: Mapping[str, AsyncCollector],
    plan: IngestPlan,
    clock: Callable[[], datetime],
    resume: Mapping[str, Mapping[tuple[str, str], datetime]],
    progress: Progress | None,
    run: WriteRun,
    report: IngestReport,
) -> None:
    jobs = {
        v: _VenueJob(c.spec, store, plan, clock=clock, resume=resume, progress=progress, run=run)
        for v, c in collectors.items()
    }

    async def one(venue_id: str) -> None:
        collector = collectors[venue_id]
        report.pacing[venue_id] = collector.pacing
        try:
            await collector.run(jobs[venue_id].job())
        except (CollectorError, MalformedResponseError) as err:
            report.errors[venue_id] = str(err)

    await asyncio.gather(*(one(v) for v in collectors))
    for job in jobs.values():
        report.series.extend(job.reports)
