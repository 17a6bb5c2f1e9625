"""``oihedge ingest`` for the options series: one chain snapshot per symbol per run.

Deribit serves no history of its option chains (:mod:`oihedge.pipelines.ingest.options`), so a run
records the snapshot of the current bar for each configured symbol the venue lists
options for, and resumes as the OI snapshots of venues without OI history do: a bar that
already has an options row is not fetched again. Run ``oihedge ingest`` every bar (cron,
a timer) to build the series; bars no run saw stay null. A snapshot whose every number is
null (an empty chain) writes no row: it is reported with its reasons instead.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from datetime import datetime, timedelta
from typing import Any

from oihedge.pipelines.ingest.collectors import AsyncCollector, Call, Collector, CollectorError
from oihedge.pipelines.ingest.normalise import MalformedResponseError, floor_ms, from_ms, to_ms
from oihedge.pipelines.ingest.options import (
    OPTIONS_COLUMNS,
    SERIES_NAME,
    OptionsSnapshot,
    OptionsVenue,
    chain_call,
    describe,
    read_chain,
    snapshot_rows,
)
from oihedge.pipelines.ingest.report import IngestReport, SeriesReport
from oihedge.pipelines.panel_manifest import WriteRun
from oihedge.pipelines.store import PanelStore

WRITER = "ingest"


def last_options_bar(store: PanelStore, venue: str) -> dict[str, datetime]:
    """Per symbol: the last bar of ``venue`` holding any options value."""
    out: dict[str, datetime] = {}
    for column in OPTIONS_COLUMNS:
        for (v, symbol), ts in store.last_ts(column).items():
            if v == venue and (symbol not in out or ts > out[symbol]):
                out[symbol] = ts
    return out


class _OptionsJob:
    """The call generator of one run, and what it did."""

    def __init__(
        self,
        venue: OptionsVenue,
        store: PanelStore,
        symbols: tuple[str, ...],
        bar: timedelta,
        clock: Callable[[], datetime],
        run: WriteRun,
    ) -> None:
        self.venue, self.store, self.symbols, self.bar = venue, store, symbols, bar
        self.clock, self.run = clock, run
        self.reports: list[SeriesReport] = []

    def job(self) -> Generator[Call, Any, list[SeriesReport]]:
        bar_close = from_ms(floor_ms(to_ms(self.clock()), self.bar))
        stored = last_options_bar(self.store, self.venue.id)
        for symbol in self.symbols:
            report = SeriesReport(self.venue.id, symbol, SERIES_NAME)
            self.reports.append(report)
            if symbol not in self.venue.currencies:
                report.note = f"{self.venue.id} lists no options on {symbol}: options columns null"
                continue
            report.note = f"{self.venue.id} has no option-chain history: one snapshot per run"
            if symbol in stored and stored[symbol] >= bar_close:
                report.resumed_from = stored[symbol]
                report.note += "; this bar already has one"
                continue
            response = yield chain_call(self.venue, symbol)
            report.pages += 1
            self._write(read_chain(response, symbol, self.clock()), report)
        return self.reports

    def _write(self, snapshot: OptionsSnapshot, report: SeriesReport) -> None:
        # (chain entries left out are counted per reason in the note: they are not rows)
        report.note += f"; {describe(snapshot)}"
        if all(v is None for v in snapshot.summary.values().values()):
            return
        frame = snapshot_rows([snapshot], venue=self.venue.id, bar=self.bar)
        self.run.started()
        written = self.store.append(
            frame, source=f"ingest-{self.venue.id}-{SERIES_NAME}", bar=self.bar, mode="update"
        )
        report.absorb(written, frame)


def ingest_options(
    store: PanelStore,
    collector: Collector,
    symbols: tuple[str, ...],
    bar: timedelta,
    *,
    clock: Callable[[], datetime],
    report: IngestReport,
) -> None:
    """Snapshot the options of ``symbols`` into ``store``; adds to ``report`` (a venue error
    is recorded there in one line, as for the perp venues)."""
    venue: OptionsVenue = collector.spec  # type: ignore[assignment]
    with WriteRun(store.root, WRITER) as run:
        job = _OptionsJob(venue, store, symbols, bar, clock, run)
        report.pacing[venue.id] = collector.pacing
        try:
            collector.run(job.job())
        except (CollectorError, MalformedResponseError) as err:
            report.errors[venue.id] = str(err)
        report.series.extend(job.reports)


async def ingest_options_async(
    store: PanelStore,
    collector: AsyncCollector,
    symbols: tuple[str, ...],
    bar: timedelta,
    *,
    clock: Callable[[], datetime],
    report: IngestReport,
) -> None:
    """:func:`ingest_options` on an asyncio collector."""
    venue: OptionsVenue = collector.spec  # type: ignore[assignment]
    with WriteRun(store.root, WRITER) as run:
        job = _OptionsJob(venue, store, symbols, bar, clock, run)
        report.pacing[venue.id] = collector.pacing
        try:
            await collector.run(job.job())
        except (CollectorError, MalformedResponseError) as err:
            report.errors[venue.id] = str(err)
        report.series.extend(job.reports)
