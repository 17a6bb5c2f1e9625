"""What the backtest marks, fills and charges with: one row per (bar close, symbol).

:func:`build_market` turns a market panel and its feature table into the frame
:data:`MARKET_COLUMNS` on the feature table's decision grid:

* ``price`` (USD): the median ``close`` over the venues with a close at that bar (robust
  to one venue's bad print); null when no venue has one. The long portfolio and the short
  hedge are both marked to it (the spot-perp basis is not modelled: the hedge's carry is
  its funding, charged separately).
* ``volume_24h_usd``: a typical venue's 24 h volume, the median over venues of each
  venue's ``volume_usd`` summed over ``(t - volume_window, t]`` (the hedge trades on one
  venue, so the sum over venues would overstate its liquidity); null without volume.
* ``funding_8h``: the funding rate the short hedge accrues over ``(t, t + bar]``, per 8 h,
  as a fraction: the feature ``funding_mean_bp8h`` / 1e4 (the mean over venues of each
  venue's last settled or predicted rate, carried forward at most ``funding_max_age``);
  null (charged as 0) when no venue has a rate that recent.
* ``vol_ann``: realised volatility (``vol_rv_24h_pct``) as an annualised fraction, the
  slippage model's volatility input (:func:`oihedge.serving.policy.signals.annualised_vol`).
* ``fresh_venues``: venues whose latest row *known* at ``t`` (``known_at <= t``) closes
  no earlier than ``t - max_staleness`` (the features' staleness rule).
* ``stress``: the bar lies inside a cascade: ``start <= t <= end`` of one of the given
  cascade windows of the symbol (normally the label events, see
  :func:`oihedge.models.label_report.label_events`: from the last close before the fall to its
  trough). A fill at a stress bar pays the cost model's ``stress_multiplier`` on slippage.
  The windows are *realised* market state used for costs, never a decision input.
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import polars as pl

from oihedge.features.schema import UTC_US
from oihedge.serving.policy.signals import FUNDING_FALLBACK, VOL

__all__ = ["MARKET_COLUMNS", "build_market"]

#: column -> dtype of the market frame
MARKET_COLUMNS: dict[str, pl.DataType] = {
    "ts": UTC_US,
    "symbol": pl.String(),
    "price": pl.Float64(),
    "volume_24h_usd": pl.Float64(),
    "funding_8h": pl.Float64(),
    "vol_ann": pl.Float64(),
    "fresh_venues": pl.Int64(),
    "stress": pl.Boolean(),
}
_SQRT_YEAR_DAYS = float(np.sqrt(365.0))


def build_market(
    panel: pl.DataFrame,
    features: pl.DataFrame,
    *,
    max_staleness: timedelta,
    volume_window: timedelta = timedelta(hours=24),
    cascades: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """The market frame (:data:`MARKET_COLUMNS`) on the grid of ``features``.

    ``panel``: validated market panel rows. ``features``: the feature table (``ts``,
    ``symbol``, ``funding_mean_bp8h``, ``vol_rv_24h_pct``). ``max_staleness``: the feature
    spec's staleness (two bars by default). ``cascades``: windows with ``symbol``,
    ``start``, ``end`` (None: no bar is a stress bar). Sorted by symbol, ts.
    """
    for column in (FUNDING_FALLBACK, VOL):
        if column not in features.columns:
            raise ValueError(f"the feature table lacks {column!r}, which the backtest needs")
    grid = features.select(
        pl.col("ts").dt.cast_time_unit("us"),
        "symbol",
        (pl.col(FUNDING_FALLBACK) / 10_000.0).alias("funding_8h"),
        (pl.col(VOL) / 100.0 * _SQRT_YEAR_DAYS).alias("vol_ann"),
    ).sort("symbol", "ts")
    rows = panel.with_columns(
        pl.col("ts").dt.cast_time_unit("us"), pl.col("known_at").dt.cast_time_unit("us")
    )
    price = (
        rows.filter(pl.col("close").is_not_null())
        .group_by("ts", "symbol")
        .agg(pl.col("close").median().alias("price"))
    )
    market = grid.join(price, on=["ts", "symbol"], how="left")
    market = market.join(_volume(rows, volume_window), on=["ts", "symbol"], how="left")
    market = market.join(_fresh(rows, grid, max_staleness), on=["ts", "symbol"], how="left")
    market = market.with_columns(
        pl.col("fresh_venues").fill_null(0),
        _stress(market, cascades),
    )
    return market.select([pl.col(k).cast(t) for k, t in MARKET_COLUMNS.items()]).sort(
        "symbol", "ts"
    )


def _venues(rows: pl.DataFrame) -> list[str]:
    return sorted(rows["venue"].unique().to_list())


def _volume(rows: pl.DataFrame, window: timedelta) -> pl.DataFrame:
    """Per (ts, symbol): median over venues of the venue's trailing ``window`` volume,
    carried to the grid bars after it for at most ``window``."""
    per_venue = (
        rows.filter(pl.col("volume_usd").is_not_null())
        .sort("venue", "symbol", "ts")
        .with_columns(
            pl.col("volume_usd")
            .rolling_sum_by("ts", window)
            .over(["venue", "symbol"])
            .alias("_vol")
        )
    )
    grid = rows.select("ts", "symbol").unique().sort("ts")
    parts = []
    for venue in _venues(per_venue):
        right = per_venue.filter(pl.col("venue") == venue).select("ts", "symbol", "_vol")
        parts.append(
            grid.join_asof(
                right.sort("ts"),
                on="ts",
                by="symbol",
                strategy="backward",
                tolerance=window,
                check_sortedness=False,  # sorted by ts; polars cannot check within groups
            ).with_columns(pl.lit(venue).alias("venue"))
        )
    if not parts:
        schema = {"ts": UTC_US, "symbol": pl.String(), "volume_24h_usd": pl.Float64()}
        return pl.DataFrame(schema=schema)
    return (
        pl.concat(parts)
        .group_by("ts", "symbol")
        .agg(pl.col("_vol").median().alias("volume_24h_usd"))
    )


def _fresh(rows: pl.DataFrame, grid: pl.DataFrame, max_staleness: timedelta) -> pl.DataFrame:
    """Per grid (ts, symbol): how many venues' latest known row is at most
    ``max_staleness`` old (newest bar close seen among rows with ``known_at <= ts``)."""
    seen = (
        rows.select("venue", "symbol", "ts", "known_at")
        .sort("known_at", "ts")
        .with_columns(pl.col("ts").cum_max().over(["venue", "symbol"]).alias("_seen"))
    )
    keys = grid.select("ts", "symbol").sort("ts")
    out = keys.with_columns(pl.lit(0, dtype=pl.Int64).alias("fresh_venues"))
    for venue in _venues(seen):
        right = seen.filter(pl.col("venue") == venue).select("known_at", "symbol", "_seen")
        joined = keys.join_asof(
            right.sort("known_at"),
            left_on="ts",
            right_on="known_at",
            by="symbol",
            strategy="backward",
            check_sortedness=False,
        )
        fresh = (pl.col("ts") - pl.col("_seen") <= max_staleness).fill_null(False)
        out = out.with_columns(
            pl.col("fresh_venues") + joined.select(fresh.cast(pl.Int64)).to_series()
        )
    return out


def _stress(market: pl.DataFrame, cascades: pl.DataFrame | None) -> pl.Expr:
    """Boolean column: the bar lies in ``[start, end]`` of a cascade of its symbol."""
    if cascades is None or cascades.is_empty():
        return pl.lit(False).alias("stress")
    flags = np.zeros(market.height, dtype=bool)
    ts = market["ts"].dt.epoch("us").to_numpy()
    symbols = market["symbol"].to_numpy()
    for symbol, start, end in cascades.select(
        "symbol", pl.col("start").dt.epoch("us"), pl.col("end").dt.epoch("us")
    ).iter_rows():
        flags |= (symbols == symbol) & (ts >= start) & (ts <= end)
    return pl.lit(pl.Series("stress", flags))
