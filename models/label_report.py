"""Cascade events from the labels, the label report, and matching against ground truth.

An *event* is a run of positive labels of one symbol (rows at most ``merge_gap`` apart).
The label says a fall happens within ``(t, t + H]``; the event locates it: each positive
row's *trough* is the bar with the lowest reference low in its window, and the *peak* of
a trough is the row with the largest drop to it (the last close before that fall). The
event runs from its first peak (``start``) to its last trough (``end``); ``trough_ts``
and ``price_drop_pct`` (the depth) are those of its deepest fall, ``oi_drop_pct`` is the
largest forward aggregate OI fall over the run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import polars as pl

from oihedge.features.schema import UTC_US
from oihedge.models.label_params import LabelConfig, LabelParams

#: column -> dtype of the label events; percentages are falls (positive = down)
EVENT_SCHEMA: dict[str, pl.DataType] = {
    "symbol": pl.String(),
    "start": UTC_US,
    "end": UTC_US,
    "trough_ts": UTC_US,
    "price_drop_pct": pl.Float64(),
    "oi_drop_pct": pl.Float64(),
    "label_start": UTC_US,
    "label_end": UTC_US,
    "n_bars": pl.Int64(),
}
_DAYS_PER_MONTH = 365.25 / 12


def label_events(
    labels: pl.DataFrame,
    params: LabelParams | LabelConfig,
    *,
    merge_gap: timedelta | None = None,
) -> pl.DataFrame:
    """Merge runs of positive labels into events, one row per event (:data:`EVENT_SCHEMA`).

    ``labels`` is the output of :func:`oihedge.models.labels.cascade_labels` for ``params``.
    Positive rows of one symbol at most ``merge_gap`` apart form one event (default: a
    quarter of the horizon, because the label flickers while a drop hovers at a
    threshold). ``label_start`` / ``label_end`` are the first and last positive label
    times, ``n_bars`` the number of positive rows. Sorted by start, symbol.
    """
    col = params.label_column
    if col not in labels.columns:
        raise ValueError(f"labels have no column {col!r} (labels of another horizon?)")
    horizon = params.horizon
    gap = merge_gap if merge_gap is not None else horizon / 4
    if gap <= timedelta(0):
        raise ValueError(f"merge_gap must be > 0, got {merge_gap!r}")
    positive = (
        labels.filter(pl.col(col) == 1)
        .sort("symbol", "ts")
        .with_columns(
            (pl.col("ts").diff().over("symbol") > gap).fill_null(True).cum_sum().alias("_run")
        )
    )
    if positive.is_empty():
        return pl.DataFrame(schema=EVENT_SCHEMA)
    runs = positive.group_by("_run").agg(
        pl.col("symbol").first(),
        pl.col("y_fwd_oi_drop_pct").max().alias("oi_drop_pct"),
        pl.col("ts").min().alias("label_start"),
        pl.col("ts").max().alias("label_end"),
        pl.len().cast(pl.Int64).alias("n_bars"),
    )
    timing = _peaks_and_troughs(positive, labels, horizon)
    return (
        runs.join(timing, on="_run", how="left")
        .select([pl.col(k).cast(t) for k, t in EVENT_SCHEMA.items()])
        .sort("start", "symbol")
    )


def _peaks_and_troughs(
    positive: pl.DataFrame, labels: pl.DataFrame, horizon: timedelta
) -> pl.DataFrame:
    """Per run: ``start`` (first peak), ``end`` (last trough), ``trough_ts`` (deepest).

    Each positive row's trough is the lowest reference low in ``(t, t + H]``; for each
    trough the peak is the row with the largest drop to it (the last close before that
    fall). A run holding several falls spans from its first peak to its last trough.
    """
    rows = _troughs(positive, labels, horizon)
    falls = rows.group_by("_run", "_trough").agg(
        pl.col("ts").get(pl.col("y_fwd_price_drop_pct").arg_max()).alias("_peak"),
        pl.col("y_fwd_price_drop_pct").max(),
    )
    return falls.group_by("_run").agg(
        pl.col("_peak").min().alias("start"),
        pl.col("_trough").max().alias("end"),
        pl.col("_trough").get(pl.col("y_fwd_price_drop_pct").arg_max()).alias("trough_ts"),
        pl.col("y_fwd_price_drop_pct").max().alias("price_drop_pct"),
    )


def _troughs(positive: pl.DataFrame, labels: pl.DataFrame, horizon: timedelta) -> pl.DataFrame:
    """Per positive row: ``_run``, ``ts``, its drop and ``_trough``, the time of the lowest
    reference low in ``(ts, ts + H]`` (the first such bar on ties; rows whose window holds
    no low are left out). Windows are gathered per symbol with numpy, positives only, so
    memory is positives x window bars, not positives x bars."""
    h_us = int(horizon / timedelta(microseconds=1))
    out = []
    for (symbol,), pos in positive.partition_by("symbol", as_dict=True).items():
        grid = labels.filter(pl.col("symbol") == symbol).sort("ts")
        t = grid["ts"].dt.epoch("us").to_numpy()
        low = grid["y_ref_low"].cast(pl.Float64).fill_null(np.nan).to_numpy()
        t_pos = pos["ts"].dt.epoch("us").to_numpy()
        first = np.searchsorted(t, t_pos, side="right")  # first bar after ts
        last = np.searchsorted(t, t_pos + h_us, side="right")  # one past ts + H
        width = int((last - first).max(initial=0))
        if width == 0:
            continue
        idx = first[:, None] + np.arange(width)[None, :]
        inside = idx < last[:, None]
        window = np.where(inside, low[np.minimum(idx, len(low) - 1)], np.nan)
        has_low = ~np.isnan(window).all(axis=1)
        at = np.nanargmin(np.where(has_low[:, None], window, 0.0), axis=1)
        trough_us = t[np.minimum(first + at, len(t) - 1)]
        out.append(
            pos.select("_run", "ts", "y_fwd_price_drop_pct")
            .with_columns(pl.Series("_trough", trough_us).cast(pl.Datetime("us", "UTC")))
            .filter(pl.Series(has_low))
        )
    if not out:
        return positive.select(
            "_run", "ts", "y_fwd_price_drop_pct", pl.col("ts").alias("_trough")
        ).clear()
    return pl.concat(out)


@dataclass(frozen=True)
class LabelReport:
    """Base rates and event counts of a label set.

    ``by_symbol``: symbol, n_rows, n_labelled (non-null), n_positive, base_rate (positives
    / labelled), first_ts, last_ts, months (labelled span in months of 30.44 days),
    n_events, events_per_month, median_price_drop_pct, median_oi_drop_pct.
    ``by_month``: symbol, month ("YYYY-MM"), n_labelled, base_rate, n_events (by start).
    """

    by_symbol: pl.DataFrame
    by_month: pl.DataFrame

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``{"by_symbol": [...rows], "by_month": [...rows]}`` (times as ISO)."""
        return {
            "by_symbol": _records(self.by_symbol),
            "by_month": _records(self.by_month),
        }


def _records(frame: pl.DataFrame) -> list[dict[str, Any]]:
    times = [n for n, t in frame.schema.items() if isinstance(t, pl.Datetime)]
    return frame.with_columns(pl.col(times).dt.to_string("%Y-%m-%dT%H:%M:%SZ")).to_dicts()


def _label_column(labels: pl.DataFrame) -> str:
    found = [c for c in labels.columns if c.startswith("y_cascade_")]
    if len(found) != 1:
        raise ValueError(f"labels must have exactly one y_cascade_* column, got {found}")
    return found[0]


def label_report(labels: pl.DataFrame, events: pl.DataFrame) -> LabelReport:
    """Base rate per symbol and per month, events per month, from labels and their events.

    ``labels`` from :func:`oihedge.models.labels.cascade_labels`, ``events`` from
    :func:`label_events` (or any frame with ``symbol``, ``start``, ``price_drop_pct``,
    ``oi_drop_pct``).
    """
    col = _label_column(labels)
    labelled = pl.col(col).is_not_null()
    per_symbol = labels.group_by("symbol").agg(
        pl.len().cast(pl.Int64).alias("n_rows"),
        labelled.sum().cast(pl.Int64).alias("n_labelled"),
        pl.col(col).sum().cast(pl.Int64).alias("n_positive"),
        pl.col(col).cast(pl.Float64).mean().alias("base_rate"),
        pl.col("ts").filter(labelled).min().alias("first_ts"),
        pl.col("ts").filter(labelled).max().alias("last_ts"),
    )
    per_event = events.group_by("symbol").agg(
        pl.len().cast(pl.Int64).alias("n_events"),
        pl.col("price_drop_pct").median().alias("median_price_drop_pct"),
        pl.col("oi_drop_pct").median().alias("median_oi_drop_pct"),
    )
    months = (pl.col("last_ts") - pl.col("first_ts")).dt.total_seconds() / (86400 * _DAYS_PER_MONTH)
    by_symbol = (
        per_symbol.join(per_event, on="symbol", how="left")
        .with_columns(pl.col("n_events").fill_null(0), months.alias("months"))
        .with_columns(
            pl.when(pl.col("months") > 0)
            .then(pl.col("n_events") / pl.col("months"))
            .alias("events_per_month")
        )
        .select(
            "symbol",
            "n_rows",
            "n_labelled",
            "n_positive",
            "base_rate",
            "first_ts",
            "last_ts",
            "months",
            "n_events",
            "events_per_month",
            "median_price_drop_pct",
            "median_oi_drop_pct",
        )
        .sort("symbol")
    )
    month = pl.col("ts").dt.strftime("%Y-%m").alias("month")
    rates = labels.group_by("symbol", month).agg(
        labelled.sum().cast(pl.Int64).alias("n_labelled"),
        pl.col(col).cast(pl.Float64).mean().alias("base_rate"),
    )
    counts = events.group_by("symbol", pl.col("start").dt.strftime("%Y-%m").alias("month")).agg(
        pl.len().cast(pl.Int64).alias("n_events")
    )
    by_month = (
        rates.join(counts, on=["symbol", "month"], how="left")
        .with_columns(pl.col("n_events").fill_null(0))
        .sort("symbol", "month")
    )
    return LabelReport(by_symbol=by_symbol, by_month=by_month)


@dataclass(frozen=True)
class EventMatch:
    """How well predicted events recover true ones.

    ``precision`` = matched predicted / predicted, ``recall`` = matched true / true (NaN
    when the denominator is 0); ``f1`` their harmonic mean.
    """

    precision: float
    recall: float
    f1: float
    n_pred: int
    n_truth: int
    n_pred_matched: int
    n_truth_matched: int
    tolerance: timedelta


def match_events(
    pred_events: pl.DataFrame, truth_events: pl.DataFrame, tolerance: timedelta
) -> EventMatch:
    """Match events of the same symbol whose ``[start, end]`` intervals overlap once the
    predicted interval is widened by ``tolerance`` on each side.

    One event may match several of the other side (a label event that spans two close
    cascades matches both). Both frames need ``symbol``, ``start`` and ``end``.
    """
    if tolerance < timedelta(0):
        raise ValueError(f"tolerance must be >= 0, got {tolerance!r}")
    for name, frame in (("pred_events", pred_events), ("truth_events", truth_events)):
        missing = [c for c in ("symbol", "start", "end") if c not in frame.columns]
        if missing:
            raise ValueError(f"{name} is missing column {missing[0]!r}")
    pred = pred_events.select("symbol", "start", "end").with_row_index("_p")
    truth = truth_events.select("symbol", "start", "end").with_row_index("_t")
    pairs = pred.join(truth, on="symbol", suffix="_truth").filter(
        (pl.col("start") - tolerance <= pl.col("end_truth"))
        & (pl.col("end") + tolerance >= pl.col("start_truth"))
    )
    n_pred, n_truth = pred.height, truth.height
    n_pm, n_tm = pairs["_p"].n_unique(), pairs["_t"].n_unique()
    precision = n_pm / n_pred if n_pred else math.nan
    recall = n_tm / n_truth if n_truth else math.nan
    f1 = (
        2 * precision * recall / (precision + recall)
        if n_pred and n_truth and precision + recall > 0
        else math.nan
    )
    return EventMatch(precision, recall, f1, n_pred, n_truth, n_pm, n_tm, tolerance)
