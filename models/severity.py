"""The severity of a cascade: the drop it brings, in units of the horizon's volatility.

The hedge policy (``oihedge.serving.policy.policy``) weighs a cascade probability by how much a
cascade costs the unhedged exposure. That cost is learned here, on training data only:
for every labelled row whose label says a cascade follows within the horizon ``H``, its
forward drop is divided by the volatility known at ``t`` scaled to ``H``
(``vol_rv_24h_pct`` is in % per sqrt(day), so the scale is ``vol / 100 x sqrt(H /
1d)``). The drop is the one a hedge can earn: ``1 - lowest close / close(t)`` over ``(t,
t + H]`` (the median close over venues, ``y_ref_close``), not the label's drop to the
lowest low: a hedge is marked and closed at prices, and the wick comes back inside its
bar. The severity ``k`` is the mean of those ratios: the expected drop of a cascade, in
multiples of the horizon's volatility, so the policy's severity follows the current
volatility (``k x vol_ann x sqrt(H / 1y)``, the same quantity annualised).

Rows with a missing or non-positive volatility or drop are left out; with fewer than
``min_rows`` positive rows nothing is fitted (``None``) and the policy keeps its
configured ``stress_k``.

`oihedge train` fits it on the development rows the final model is trained on and
stores it in the model card (``card["severity"]``: :meth:`Severity.card`, or null with
``card["severity_note"]`` saying why); :func:`card_severity_k` reads it back for the live
loop and the promotion gate.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import polars as pl

__all__ = [
    "CLOSE",
    "SEVERITY_VOL",
    "Severity",
    "card_severity_k",
    "fit_severity",
    "severity_rows",
]

#: the volatility the severity is measured in (the policy's ``vol_ann`` reads the same)
SEVERITY_VOL = "vol_rv_24h_pct"
#: the label table's reference close (median over venues), USD
CLOSE = "y_ref_close"


@dataclass(frozen=True)
class Severity:
    """A fitted severity: ``k`` (mean drop / horizon volatility), the number of positive
    rows it was fitted on and their median drop in % (for the model card)."""

    k: float
    n_rows: int
    median_drop_pct: float

    def card(self) -> dict[str, float | int]:
        """The model card's ``severity`` entry."""
        return {"k": self.k, "n_rows": self.n_rows, "median_drop_pct": self.median_drop_pct}


def severity_rows(
    features: pl.DataFrame, labels: pl.DataFrame, label_column: str, horizon: timedelta
) -> pl.DataFrame:
    """``ts``, ``symbol``, ``ratio`` (drop / horizon volatility) and ``drop_pct`` of every
    positive labelled row with a usable drop and volatility, sorted by ``ts``."""
    for name, frame, what in (
        (SEVERITY_VOL, features, "feature table"),
        (CLOSE, labels, "label table"),
        (label_column, labels, "label table"),
    ):
        if name not in frame.columns:
            raise ValueError(f"the {what} lacks column {name!r}")
    if not horizon > timedelta(0):
        raise ValueError(f"horizon must be > 0, got {horizon!r}")
    scale = math.sqrt(horizon / timedelta(days=1))
    closes = labels.select("ts", "symbol", pl.col(CLOSE).cast(pl.Float64)).sort("symbol", "ts")
    # the lowest close in (u - H, u], read at u = t + H: the lowest close in (t, t + H]
    ahead = closes.select(
        (pl.col("ts") - horizon).alias("ts"),
        "symbol",
        pl.col(CLOSE)
        .rolling_min_by("ts", window_size=horizon, closed="right")
        .over("symbol")
        .alias("_low_close"),
    )
    return (
        labels.filter(pl.col(label_column) == 1)
        .select("ts", "symbol", pl.col(CLOSE).cast(pl.Float64))
        .join(ahead, on=["ts", "symbol"], how="inner")
        .join(features.select("ts", "symbol", SEVERITY_VOL), on=["ts", "symbol"], how="inner")
        .with_columns((100.0 * (1.0 - pl.col("_low_close") / pl.col(CLOSE))).alias("drop_pct"))
        .filter((pl.col("drop_pct") > 0) & (pl.col(SEVERITY_VOL) > 0))
        .select(
            "ts",
            "symbol",
            (pl.col("drop_pct") / (pl.col(SEVERITY_VOL) * scale)).alias("ratio"),
            "drop_pct",
        )
        .filter(pl.col("ratio").is_finite())
        .sort("ts", "symbol")
    )


def fit_severity(rows: pl.DataFrame, *, min_rows: int = 5) -> Severity | None:
    """The severity from :func:`severity_rows` output (already cut to the training
    window); ``None`` with fewer than ``min_rows`` rows."""
    if min_rows < 1:
        raise ValueError(f"min_rows must be >= 1, got {min_rows!r}")
    if rows.height < min_rows:
        return None
    ratio = rows["ratio"].to_numpy()
    return Severity(
        k=float(np.mean(ratio)),
        n_rows=rows.height,
        median_drop_pct=float(np.median(rows["drop_pct"].to_numpy())),
    )


def card_severity_k(card: Mapping[str, Any] | None) -> float | None:
    """The severity ``k`` a model card carries (``card["severity"]["k"]``); ``None`` when
    the card has no severity, a null one, or a ``k`` that is not a finite number > 0 (the
    policy then keeps its ``stress_k``)."""
    entry = None if card is None else card.get("severity")
    if not isinstance(entry, Mapping):
        return None
    k = entry.get("k")
    if isinstance(k, bool) or not isinstance(k, int | float):
        return None
    k = float(k)
    return k if math.isfinite(k) and k > 0 else None
