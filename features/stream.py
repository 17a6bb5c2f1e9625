"""The panel read as a stream: arrival order, accepted rows, the bar, the decision grid.

Both backends see the panel the way the live loop does. Rows arrive in ``known_at``
order (rows known at the same instant in ``ts`` order, then venue and symbol). A row is
*accepted* when it passes :func:`oihedge.features.screening.validate` and its ``ts`` is after every
accepted row of its (venue, symbol): a row that arrives after a newer one is
``out_of_order`` and ignored by both backends, exactly as the live loop quarantines it.
Decisions are taken at bar closes ``t`` on a regular grid; at ``t`` a row counts only
if ``known_at <= t``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import polars as pl

from oihedge.features.schema import UTC_US, check_columns, infer_bar
from oihedge.features.screening import Screening, screen

#: rows known at the same instant are taken in ts order; among rows of one series with
#: equal (known_at, ts) -- a bar delivered twice -- the input order decides (the first wins)
ARRIVAL_ORDER: tuple[str, ...] = ("known_at", "ts")


@dataclass(frozen=True, eq=False)
class AcceptedPanel:
    """The accepted rows and what was left out, by reason.

    ``screening`` holds the accepted rows as row numbers of the input (the batch
    backend reads the few columns it needs through it); :attr:`rows` is their frame.
    """

    screening: Screening
    bar: timedelta
    rows_in: int
    quarantined: dict[str, int]

    @functools.cached_property
    def rows(self) -> pl.DataFrame:
        """The accepted rows, sorted by venue, symbol, ts (made on first use)."""
        return self.screening.valid()

    @property
    def rows_used(self) -> int:
        return len(self.screening.order)


def arrival_order(panel: pl.DataFrame) -> pl.DataFrame:
    """``panel`` sorted into arrival order (stable: equal keys keep their input order)."""
    return panel.sort(list(ARRIVAL_ORDER), maintain_order=True)


def accept(panel: pl.DataFrame, *, bar: timedelta | None = None) -> AcceptedPanel:
    """Validate ``panel`` as a stream and keep the rows both backends use.

    ``bar`` defaults to :func:`oihedge.features.schema.infer_bar`; rows off the bar grid are
    quarantined.
    """
    check_columns(panel, source="feature input")
    step = bar if bar is not None else infer_bar(panel)
    screened = screen(
        panel, bar=step, arrival_order=True, order_by=ARRIVAL_ORDER, source="feature input"
    )
    return AcceptedPanel(
        screening=screened,
        bar=step,
        rows_in=panel.height,
        quarantined=screened.reasons(),
    )


def ceil_to_bar(moment: datetime, bar: timedelta) -> datetime:
    """The first bar close at or after ``moment`` (bars are aligned to the Unix epoch)."""
    epoch = datetime(1970, 1, 1, tzinfo=moment.tzinfo)
    return epoch + -(-(moment - epoch) // bar) * bar


def decision_times(known_us: np.ndarray, bar: timedelta) -> np.ndarray:
    """:func:`decision_grid` in epoch microseconds, from the rows' ``known_at`` in epoch
    microseconds (at least one)."""
    step = bar // timedelta(microseconds=1)
    first = -(-int(known_us.min()) // step) * step
    last = -(-int(known_us.max()) // step) * step
    return np.arange(first, last + 1, step, dtype=np.int64)


def decision_grid(rows: pl.DataFrame, bar: timedelta) -> pl.Series:
    """Bar closes from the first to the last ``known_at`` of ``rows`` (rounded up to bars)."""
    if rows.is_empty():
        return pl.Series("t", [], dtype=UTC_US)
    first = ceil_to_bar(rows["known_at"].min(), bar)  # type: ignore[arg-type]
    last = ceil_to_bar(rows["known_at"].max(), bar)  # type: ignore[arg-type]
    return pl.datetime_range(first, last, interval=bar, eager=True, time_unit="us").alias("t")
