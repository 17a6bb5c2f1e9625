"""Ground-truth cascade events, observed from the simulated mechanism (never scheduled).

A *cascade bar* of an asset is one whose long liquidations, summed over venues, reach
``event_bar_liq_frac`` of the asset's one-side OI before the bar. Cascade bars closer
than ``event_merge_gap`` form one episode. The event starts at the first cascade bar of
the episode whose next hour (within the episode) liquidates ``event_min_liq_frac`` of the
OI before it; episodes with no such hour are not events. Everything is measured on the
*true* state, not on the noisy feeds.
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from oihedge.features.schema import UTC_US

if TYPE_CHECKING:
    from oihedge.pipelines.sim.market import MarketPath
    from oihedge.pipelines.sim.simulate import SimulationConfig

#: column -> dtype of the events table; amounts USD, percentages in % (positive = fall)
EVENTS_SCHEMA: dict[str, pl.DataType] = {
    "symbol": pl.String(),
    "start": UTC_US,  # close of the first cascade bar
    "end": UTC_US,  # close of the last cascade bar
    "trough_ts": UTC_US,  # close of the bar with the lowest low
    "price_drop_pct": pl.Float64(),  # last close before start -> lowest low, %
    "oi_drop_pct": pl.Float64(),  # aggregate OI before start -> its minimum up to end+1h, %
    "liquidated_long_usd": pl.Float64(),
    "liquidated_short_usd": pl.Float64(),
    "venues": pl.String(),  # venues with >= 10% of the long liquidations, largest first
    # fragility one bar before start: the extra fall (%) that long liquidations would add
    # to a 1% dip, from the long book and the depth (0 when leverage is not built up)
    "precursor_strength": pl.Float64(),
    "oi_buildup_pct": pl.Float64(),  # aggregate OI vs its trailing 24h mean before start, %
    "funding_8h": pl.Float64(),  # OI-weighted funding rate before start, per 8h
    "euphoria": pl.Float64(),  # latent euphoria before start (sd units)
    "impact_share": pl.Float64(),  # share of the fall caused by liquidation impact
    "max_rounds": pl.Int64(),  # most liquidation rounds inside one bar
    "n_bars": pl.Int64(),
    "severity": pl.String(),  # mild (< 10% OI drop), severe (< 20%), extreme
}
_VENUE_SHARE = 0.10
_SEVERITY = ((10.0, "mild"), (20.0, "severe"), (math.inf, "extreme"))


def _episodes(flag: np.ndarray, gap_bars: int) -> list[tuple[int, int]]:
    """Runs of flagged bars, merging runs separated by at most ``gap_bars`` bars."""
    idx = np.flatnonzero(flag)
    if idx.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(idx) > gap_bars + 1)
    starts = np.concatenate(([idx[0]], idx[breaks + 1]))
    ends = np.concatenate((idx[breaks], [idx[-1]]))
    return list(zip(starts.tolist(), ends.tolist(), strict=True))


def find_events(path: MarketPath, config: SimulationConfig) -> pl.DataFrame:
    """The cascade events of every asset, sorted by start then symbol (see module doc)."""
    bar = config.bar
    hour = max(1, int(timedelta(hours=1) / bar))
    day = max(1, int(timedelta(days=1) / bar))
    gap = max(0, int(config.event_merge_gap / bar))
    oi = path.oi_usd.sum(axis=2)
    liq = path.liq_long.sum(axis=2)
    prev_oi = np.vstack([oi[:1], oi[:-1]])
    rows: list[dict[str, object]] = []
    bar_us = int(bar / timedelta(microseconds=1))
    start_us = int(config.start.timestamp() * 1_000_000)
    names = np.array([v.name for v in config.venues])
    for a, asset in enumerate(config.assets):
        flag = liq[:, a] >= config.event_bar_liq_frac * prev_oi[:, a]
        for first, e in _episodes(flag, gap):
            # the event starts at the first cascade bar of its first hour that liquidates
            # event_min_liq_frac of OI (earlier cascade bars of the episode are precursors)
            ahead = np.convolve(liq[first : e + 1, a][::-1], np.ones(hour))[: e + 1 - first]
            ahead = ahead[::-1]  # liquidations in [bar, bar + 1h) within the episode
            need = config.event_min_liq_frac * prev_oi[first : e + 1, a]
            hits = np.flatnonzero((ahead >= need) & flag[first : e + 1])
            if hits.size == 0:
                continue
            s = first + int(hits[0])
            rows.append(_event_row(path, a, s, e, max(s - 1, 0), hour, day, names))
            rows[-1]["symbol"] = asset.symbol
    for row in rows:
        for key in ("start", "end", "trough_ts"):
            row[key] = start_us + (int(row[key]) + 1) * bar_us  # type: ignore[call-overload]
    if not rows:
        return pl.DataFrame(schema=EVENTS_SCHEMA)
    frame = pl.DataFrame(rows).with_columns(
        pl.col(k).cast(pl.Int64).cast(UTC_US) for k in ("start", "end", "trough_ts")
    )
    return frame.select([pl.col(k).cast(t) for k, t in EVENTS_SCHEMA.items()]).sort(
        ["start", "symbol"]
    )


def _event_row(
    path: MarketPath,
    a: int,
    s: int,
    e: int,
    before: int,
    hour: int,
    day: int,
    names: np.ndarray,
) -> dict[str, object]:
    oi = path.oi_usd[:, a].sum(axis=1)
    liq_v = path.liq_long[s : e + 1, a].sum(axis=0)
    trough = s + int(np.argmin(path.log_low[s : e + 1, a]))
    oi_min = oi[s : min(e + hour + 1, oi.size)].min()
    share = liq_v / max(liq_v.sum(), 1e-12)
    order = np.argsort(-share, kind="stable")
    venues = ",".join(names[i] for i in order if share[i] >= _VENUE_SHARE)
    oi_drop = 100.0 * (1.0 - oi_min / oi[before])
    weights = path.oi_usd[before, a]
    return {
        "start": s,
        "end": e,
        "trough_ts": trough,
        "price_drop_pct": 100.0
        * (1.0 - math.exp(path.log_low[trough, a] - path.log_close[before, a])),
        "oi_drop_pct": oi_drop,
        "liquidated_long_usd": float(liq_v.sum()),
        "liquidated_short_usd": float(path.liq_short[s : e + 1, a].sum()),
        "venues": venues,
        "precursor_strength": float(path.fragility[before, a]),
        "oi_buildup_pct": 100.0 * (oi[before] / oi[max(0, before - day) : before + 1].mean() - 1.0),
        "funding_8h": float(weights @ path.funding[before, a] / weights.sum()),
        "euphoria": float(path.euphoria[before, a]),
        "impact_share": float(
            -path.impact_long[s : trough + 1, a].sum()
            / max(path.log_close[before, a] - path.log_low[trough, a], 1e-12)
        ),
        "max_rounds": int(path.rounds[s : e + 1, a].max()),
        "n_bars": e - s + 1,
        "severity": next(label for bound, label in _SEVERITY if oi_drop < bound),
    }
