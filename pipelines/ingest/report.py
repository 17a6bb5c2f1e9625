"""What an ingest run did: per (venue, symbol, series) rows, pages, quarantine, notes."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import polars as pl

from oihedge.pipelines.ingest.collectors import Pacing
from oihedge.pipelines.store import AppendReport


@dataclass
class SeriesReport:
    """What ingesting one series of one (venue, symbol) did."""

    venue: str
    symbol: str
    series: str
    resumed_from: datetime | None = None
    pages: int = 0
    rows_written: int = 0
    quarantined: int = 0
    quarantine_reasons: dict[str, int] = field(default_factory=dict)
    empty_values: int = 0
    without_price: int = 0
    first_ts: datetime | None = None
    last_ts: datetime | None = None
    note: str = ""

    def absorb(self, written: AppendReport, frame: pl.DataFrame) -> None:
        self.rows_written += written.rows_written
        self.quarantined += written.quarantined
        for reason, count in written.quarantine_reasons.items():
            self.quarantine_reasons[reason] = self.quarantine_reasons.get(reason, 0) + count
        if frame.height:
            lo, hi = frame["ts"].min(), frame["ts"].max()
            self.first_ts = lo if self.first_ts is None else min(self.first_ts, lo)
            self.last_ts = hi if self.last_ts is None else max(self.last_ts, hi)


@dataclass
class IngestReport:
    """All series reports, the rate-limit accounting per venue, and per-venue errors."""

    series: list[SeriesReport] = field(default_factory=list)
    pacing: dict[str, Pacing] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def rows_written(self) -> int:
        return sum(s.rows_written for s in self.series)

    @property
    def quarantined(self) -> int:
        return sum(s.quarantined for s in self.series)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {
            "rows_written": self.rows_written,
            "quarantined": self.quarantined,
            "series": [
                {
                    k: (v.isoformat() if isinstance(v, datetime) else v)
                    for k, v in s.__dict__.items()
                }
                for s in self.series
            ],
            "requests": {v: p.requests for v, p in self.pacing.items()},
            "rate_limit_wait_s": {v: round(p.wait_s, 3) for v, p in self.pacing.items()},
            "errors": self.errors,
        }
