"""Writes normalised pages of one series into the panel store, in batches (the ingestion's
writer: :mod:`oihedge.pipelines.ingest.incremental` makes one per series it fetches)."""

from __future__ import annotations

from datetime import timedelta

import polars as pl

from oihedge.pipelines.ingest.normalise import Normalised, to_panel
from oihedge.pipelines.ingest.report import SeriesReport
from oihedge.pipelines.panel_manifest import WriteRun
from oihedge.pipelines.store import PanelStore

__all__ = ["PageWriter"]


class PageWriter:
    """Buffers normalised pages of one series and appends them to the store in batches of
    at least ``flush_rows`` rows (and on :meth:`flush`), counting into ``report``."""

    def __init__(
        self,
        store: PanelStore,
        report: SeriesReport,
        run: WriteRun,
        *,
        bar: timedelta,
        flush_rows: int,
    ) -> None:
        self.store, self.report, self.run = store, report, run
        self.bar, self.flush_rows = bar, flush_rows
        self.frames: list[pl.DataFrame] = []
        self.rows = 0

    def add(self, page: Normalised) -> None:
        self.report.empty_values += page.empty_values
        self.report.without_price += page.without_price
        if page.frame.height:
            self.frames.append(page.frame)
            self.rows += page.frame.height
        if self.rows >= self.flush_rows:
            self.flush()

    def flush(self) -> None:
        if not self.frames:
            return
        frame = to_panel(pl.concat(self.frames, how="vertical"))
        self.frames, self.rows = [], 0
        source = f"ingest-{self.report.venue}-{self.report.series}"
        self.run.started()
        written = self.store.append(frame, source=source, bar=self.bar, mode="update")
        self.report.absorb(written, frame)
