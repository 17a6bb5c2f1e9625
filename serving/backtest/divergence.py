"""Divergence skill: how well a cross-venue OI divergence announces cascade events.

:func:`divergence_skill` reads ``oi_div_xvenue_4h`` (percentage points) per (ts, symbol):

* an *episode* starts at a bar whose divergence is ``>= threshold`` while the symbol's
  previous row was below it or missing (or there is no previous row); its *precision*
  is the share of episodes followed by a cascade event of the same symbol with
  ``ts < start <= ts + horizon``. Only episodes in ``[window start, window end -
  horizon]`` count: one nearer the end has no full horizon after it;
* *recall* is the share of the events (start in the window) with a bar of divergence
  ``>= threshold`` at ``start - horizon <= ts < start``;
* the *base rate* is the share of all bars in ``[window start, window end - horizon]``
  followed by an event start within the horizon (the precision of a random alarm).

No look-ahead concern applies: this is a report on a finished backtest (the claims of
:mod:`oihedge.serving.backtest.claims` use it)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import polars as pl

from oihedge.serving.policy.signals import DIVERGENCE

_US = timedelta(microseconds=1)
_NEVER = np.iinfo(np.int64).max


@dataclass(frozen=True)
class DivergenceSkill:
    """How well ``divergence >= threshold_pp`` announces cascade events (module docstring).

    ``precision`` = ``hits / episodes``, ``recall`` = ``caught / events``, ``base_rate`` =
    the share of ``bars`` followed by an event; each NaN when its denominator is 0.
    """

    threshold_pp: float
    episodes: int
    hits: int
    precision: float
    events: int
    caught: int
    recall: float
    bars: int
    base_rate: float


# --- divergence skill -------------------------------------------------------------------


def ratio(num: int | float, den: int | float) -> float:
    return float(num) / float(den) if den else math.nan


def _by_symbol(frame: pl.DataFrame, column: str) -> dict[str, np.ndarray]:
    """symbol -> the sorted int64 microseconds of ``column`` (nulls dropped)."""
    out: dict[str, np.ndarray] = {}
    for (symbol,), part in frame.drop_nulls(column).partition_by("symbol", as_dict=True).items():
        out[str(symbol)] = np.sort(part[column].dt.epoch("us").to_numpy())
    return out


def _followed(rows: pl.DataFrame, starts: Mapping[str, np.ndarray], horizon_us: int) -> np.ndarray:
    """Per row (``ts``, ``symbol``): is an event start in ``(ts, ts + horizon]``?"""
    out = np.zeros(rows.height, dtype=bool)
    ts, symbols = rows["ts"].dt.epoch("us").to_numpy(), rows["symbol"].to_numpy()
    for symbol, start in starts.items():
        mask = symbols == symbol
        if mask.any():
            nxt = np.append(start, _NEVER)[np.searchsorted(start, ts[mask], side="right")]
            out[mask] = nxt <= ts[mask] + horizon_us
    return out


def _preceded(events: pl.DataFrame, alarms: Mapping[str, np.ndarray], horizon_us: int) -> int:
    """How many events have an alarm bar at ``start - horizon <= ts < start``."""
    caught = 0
    for (symbol,), part in events.partition_by("symbol", as_dict=True).items():
        bars = alarms.get(str(symbol), np.array([], dtype=np.int64))
        start = part["start"].dt.epoch("us").to_numpy()
        first = np.append(bars, _NEVER)[np.searchsorted(bars, start - horizon_us, side="left")]
        caught += int((first < start).sum())
    return caught


def _crossings(features: pl.DataFrame, threshold_pp: float) -> pl.DataFrame:
    """``ts``, ``symbol``, ``high`` (divergence >= threshold), ``episode`` (a crossing)."""
    high = (pl.col(DIVERGENCE) >= threshold_pp).fill_null(False)
    return (
        features.select("ts", "symbol", DIVERGENCE)
        .sort("symbol", "ts")
        .with_columns(high.alias("high"))
        .with_columns(
            (pl.col("high") & ~pl.col("high").shift(1).over("symbol").fill_null(False)).alias(
                "episode"
            )
        )
    )


def divergence_skill(
    features: pl.DataFrame,
    events: pl.DataFrame,
    *,
    threshold_pp: float,
    horizon: timedelta,
    start: datetime,
    end: datetime,
    symbols: Sequence[str],
) -> DivergenceSkill:
    """Precision, recall and base rate of ``oi_div_xvenue_4h >= threshold_pp`` (pp) as a
    warning of the ``events`` (``symbol``, ``start``) within ``horizon``, over the
    window ``[start, end]`` and ``symbols`` (definitions in the module docstring).

    Episodes are found on the whole feature table (one running into the window is not a
    new crossing), then kept in ``[start, end - horizon]``."""
    if horizon <= timedelta(0):
        raise ValueError(f"horizon must be > 0, got {horizon!r}")
    h = horizon // _US
    rows = _crossings(features.filter(pl.col("symbol").is_in(list(symbols))), threshold_pp)
    ev = events.filter(pl.col("symbol").is_in(list(symbols))).drop_nulls("start")
    starts = _by_symbol(ev, "start")
    bars = rows.filter(pl.col("ts").is_between(start, end - horizon))
    episodes = bars.filter("episode")
    hits = int(_followed(episodes, starts, h).sum())
    inside = ev.filter(pl.col("start").is_between(start, end))
    caught = _preceded(inside, _by_symbol(rows.filter("high"), "ts"), h)
    followed = int(_followed(bars, starts, h).sum())
    return DivergenceSkill(
        threshold_pp=threshold_pp,
        episodes=episodes.height,
        hits=hits,
        precision=ratio(hits, episodes.height),
        events=inside.height,
        caught=caught,
        recall=ratio(caught, inside.height),
        bars=bars.height,
        base_rate=ratio(followed, bars.height),
    )
