"""How much of a cascade's fall comes back: the post-cascade recovery of a market panel.

Used to calibrate the simulator against real flushes (a simulator whose falls stick
biases every hedge comparison towards holding hedges) and by the stylised-fact tests.

Definition, per event (``symbol``, ``start``, ``trough_ts``), on the symbol's reference
price -- the median over venues of ``close`` (and of ``low``) at each ``ts``; venues
with a null value are left out of that bar's median:

* ``peak`` = reference close of the last bar *before* ``start`` (USD);
* ``trough`` = reference low of the bar closing at ``trough_ts`` (USD);
* ``drop`` = ``peak - trough`` (USD);
* ``after`` = reference close of the last bar at or before ``trough_ts + horizon``
  (default 72h), provided that bar is later than ``trough_ts`` and no older than
  ``trough_ts + horizon - tolerance`` (default tolerance: 6h);
* ``recovery`` = ``(after - trough) / drop``: 0 = the price is still at the trough low,
  1 = back at the pre-cascade close, > 1 above it, < 0 below the trough.

Events whose ``drop`` is not positive, or without a peak, trough or ``after`` price,
get a null recovery (they are kept, so a caller can count them).
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import polars as pl

from oihedge.features.schema import UTC_US

#: the horizon of the recovery the issue compares (real flushes vs simulated cascades)
RECOVERY_HORIZON = timedelta(hours=72)
#: the "after" close may be this much older than trough + horizon (gaps in real feeds)
RECOVERY_TOLERANCE = timedelta(hours=6)

#: column -> dtype of :func:`cascade_recovery`'s output; prices USD, recovery a fraction
RECOVERY_SCHEMA: dict[str, pl.DataType] = {
    "symbol": pl.String(),
    "start": UTC_US,
    "trough_ts": UTC_US,
    "peak_close": pl.Float64(),  # reference close of the last bar before start
    "trough_low": pl.Float64(),  # reference low at trough_ts
    "after_close": pl.Float64(),  # reference close at trough_ts + horizon
    "drop_pct": pl.Float64(),  # (peak - trough) / peak, %
    "recovery": pl.Float64(),  # (after - trough) / (peak - trough)
}


def reference_prices(panel: pl.DataFrame) -> pl.DataFrame:
    """Per (symbol, ts): the median over venues of ``close`` and of ``low`` (USD).

    Null values are ignored; a bar where every venue's ``close`` (or ``low``) is null has
    a null reference. A null ``low`` falls back to that venue's ``close``. Sorted by
    symbol, ts.
    """
    return (
        panel.select(
            "symbol",
            pl.col("ts").dt.cast_time_unit("us"),
            pl.col("close").cast(pl.Float64),
            pl.coalesce(pl.col("low"), pl.col("close")).cast(pl.Float64).alias("low"),
        )
        .filter(pl.col("close").is_not_nan() | pl.col("close").is_null())
        .group_by("symbol", "ts")
        .agg(pl.col("close").median(), pl.col("low").median())
        .sort("symbol", "ts")
    )


def cascade_recovery(
    panel: pl.DataFrame,
    events: pl.DataFrame,
    *,
    horizon: timedelta = RECOVERY_HORIZON,
    tolerance: timedelta = RECOVERY_TOLERANCE,
) -> pl.DataFrame:
    """The share of each event's fall recovered ``horizon`` after its trough.

    ``panel`` is a market panel (needs ``ts, symbol, close, low``); ``events`` needs
    ``symbol, start, trough_ts`` (the simulator's ground truth or
    :func:`oihedge.models.label_report.label_events`). Returns one row per event, in the order
    given, with :data:`RECOVERY_SCHEMA` columns (see the module docstring for the exact
    definition; null where a price is missing or the drop is not positive).

    Raises ``ValueError`` for a non-positive horizon, a negative tolerance or a missing
    column.
    """
    if horizon <= timedelta(0):
        raise ValueError(f"horizon must be > 0, got {horizon!r}")
    if tolerance < timedelta(0) or tolerance >= horizon:
        raise ValueError(f"tolerance must be in [0, horizon), got {tolerance!r}")
    for frame, name, cols in (
        (panel, "panel", ("ts", "symbol", "close", "low")),
        (events, "events", ("symbol", "start", "trough_ts")),
    ):
        missing = [c for c in cols if c not in frame.columns]
        if missing:
            raise ValueError(f"{name} is missing column {missing[0]!r}")
    ref = reference_prices(panel)
    rows = [
        _one_event(ref, symbol, start, trough, horizon, tolerance)
        for symbol, start, trough in events.select("symbol", "start", "trough_ts").iter_rows()
    ]
    return pl.DataFrame(rows, schema=RECOVERY_SCHEMA, orient="row")


def _one_event(
    ref: pl.DataFrame,
    symbol: str,
    start: object,
    trough: object,
    horizon: timedelta,
    tolerance: timedelta,
) -> tuple[object, ...]:
    series = ref.filter(pl.col("symbol") == symbol)
    closes = series.filter(pl.col("close").is_not_null())
    before = closes.filter(pl.col("ts") < start).tail(1)["close"]
    at = series.filter(pl.col("ts") == trough)["low"]
    end = trough + horizon  # type: ignore[operator]
    late = closes.filter(
        (pl.col("ts") > trough) & (pl.col("ts") <= end) & (pl.col("ts") >= end - tolerance)
    ).tail(1)["close"]
    peak = float(before[0]) if before.len() else None
    low = float(at[0]) if at.len() and at[0] is not None else None
    after = float(late[0]) if late.len() else None
    drop_pct = recovery = None
    if peak is not None and low is not None:
        drop_pct = 100.0 * (peak - low) / peak
        if after is not None and peak > low:
            recovery = (after - low) / (peak - low)
    return (symbol, start, trough, peak, low, after, drop_pct, recovery)


def median_recovery(recovery: pl.DataFrame) -> float:
    """Median of the non-null ``recovery`` values (a fraction); NaN when there are none."""
    values = recovery["recovery"].drop_nulls().to_numpy()
    return float(np.median(values)) if values.size else float("nan")
