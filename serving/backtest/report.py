"""Backtest metrics: one row per policy, from its equity curve and ledger.

Definitions (fractions of the portfolio unless said otherwise; losses are positive):

* ``worst_24h_loss``: ``max(0, -min_t (E_t / E_{t - 24h} - 1))`` over every bar ``t`` at
  least 24 h after the first, ``E_{t-24h}`` being the equity at the last bar at or before
  ``t - 24h`` (with less than 24 h of data: the worst return from the first bar). The
  window is a parameter (``loss_window``).
* ``max_drawdown``: ``max_t (1 - E_t / max_{s <= t} E_s)``.
* ``cvar_95_daily``: daily returns are taken between the last equities of consecutive UTC
  days (the first day from the first bar's equity); CVaR is minus the mean of the worst
  ``ceil(5 % x N)`` of the ``N`` daily returns (at least one), at ``cvar_level`` 0.95.
* ``total_return``: ``E_end / E_start - 1``.
* ``hedge_cost_annual``: (fees + slippage + funding paid) / initial portfolio / years,
  with years = (last bar - first bar) / 365 days; ``fees_slippage_annual`` and
  ``funding_annual`` are its two parts (funding is negative when the short receives it).
* ``turnover_annual``: hedge notional traded (sum of ``|notional|`` of the fills) /
  initial portfolio / years.
* ``time_hedged``: share of (symbol, bar) pairs with a short hedge on;
  ``mean_hedge_ratio``: mean of total hedge / total long value over the bars.
* ``upside_capture``: the share of the unhedged portfolio's gains kept on its up days:
  over the UTC days whose daily return (as for CVaR) of the unhedged run (``unhedged``,
  ``no_hedge`` by default) is > 0, the sum of this policy's daily returns / the sum of
  the unhedged run's (1.0 for the unhedged run itself; NaN without an unhedged run or
  an up day).

The cascade metrics read the cascade *events* (``symbol``, ``start``, ``trough_ts``);
an event counts when its symbol is in the run and its ``start`` lies within the run's
first and last bar (the others are ignored). ``events`` is their number (0 without
events). A symbol's *position* at a bar is ``hedge_usd / (long_usd x
hedge_ratio_max[symbol])``, the share of its full hedge (``hedge_ratio_max`` 1.0 by
default).

* ``cascades_protected``: the share of events at whose ``start`` the position (at the
  symbol's last bar at or before ``start``) was at least a quarter of the full hedge
  (NaN without events).
* ``cascade_loss_offset``: over the events whose long lost money from ``start`` to
  ``trough_ts`` (the symbol's bars with ``start < ts <= trough_ts``), the sum of the
  hedge's PnL (``hedge_pnl``: price moves only, no fees, slippage or funding) / the sum
  of the long's losses (``-long_pnl``) over those bars; a trough after the last bar
  counts up to it. A static hedge of a fraction ``f`` of a same-asset long offsets ``f``
  (NaN without such an event).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

if TYPE_CHECKING:
    from oihedge.serving.backtest.engine import PolicyRun

__all__ = [
    "EVENT_COLUMNS",
    "METRIC_COLUMNS",
    "PolicyMetrics",
    "cvar",
    "daily_returns",
    "max_drawdown",
    "metrics_table",
    "policy_metrics",
    "upside_capture",
    "worst_window_loss",
]

_US = timedelta(microseconds=1)
_UTC_US = pl.Datetime("us", "UTC")
_US_PER_DAY = 86_400_000_000
_YEAR_US = 365 * _US_PER_DAY
#: the position (share of the full hedge) at a cascade's start that counts as protected
_PROTECTED = 0.25
#: the columns the cascade events need
EVENT_COLUMNS: tuple[str, ...] = ("symbol", "start", "trough_ts")


@dataclass(frozen=True)
class PolicyMetrics:
    """One policy's metrics (see the module docstring for the definitions)."""

    worst_24h_loss: float
    max_drawdown: float
    cvar_95_daily: float
    total_return: float
    hedge_cost_annual: float
    fees_slippage_annual: float
    funding_annual: float
    turnover_annual: float
    time_hedged: float
    mean_hedge_ratio: float
    trades: int
    upside_capture: float
    cascades_protected: float
    cascade_loss_offset: float
    events: int


#: the table's metric columns, in order
METRIC_COLUMNS: tuple[str, ...] = tuple(PolicyMetrics.__dataclass_fields__)


def worst_window_loss(ts_us: np.ndarray, equity: np.ndarray, window: timedelta) -> float:
    """Worst equity return over ``window`` as a positive fraction (0 when none is a loss).

    ``ts_us``: bar times, int64 microseconds, increasing; ``equity``: USD at those bars.
    """
    ts_us, equity = np.asarray(ts_us, dtype=np.int64), np.asarray(equity, dtype=np.float64)
    if equity.size < 2:
        return 0.0
    back = np.searchsorted(ts_us, ts_us - window // _US, side="right") - 1
    ok = back >= 0
    # shorter than the window: the worst return from the first bar
    returns = equity[ok] / equity[back[ok]] - 1.0 if ok.any() else equity[1:] / equity[0] - 1.0
    return max(0.0, -float(returns.min()))


def max_drawdown(equity: np.ndarray) -> float:
    """Largest fall from a running peak, as a positive fraction of the peak."""
    equity = np.asarray(equity, dtype=np.float64)
    if equity.size == 0:
        return 0.0
    return max(0.0, float((1.0 - equity / np.maximum.accumulate(equity)).max()))


def daily_returns(ts_us: np.ndarray, equity: np.ndarray) -> np.ndarray:
    """Returns between the last equities of consecutive UTC days; the first day's is
    taken from the first bar's equity."""
    ts_us, equity = np.asarray(ts_us, dtype=np.int64), np.asarray(equity, dtype=np.float64)
    if equity.size == 0:
        return np.array([])
    day = ts_us // _US_PER_DAY
    last = np.flatnonzero(np.diff(day, append=day[-1] + 1) != 0)
    closes = equity[last]
    previous = np.concatenate(([equity[0]], closes[:-1]))
    return closes / previous - 1.0


def cvar(returns: np.ndarray, level: float = 0.95) -> float:
    """Minus the mean of the worst ``ceil((1 - level) x N)`` returns (at least one);
    a positive number is an expected loss. NaN without returns."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    values = np.sort(np.asarray(returns, dtype=np.float64))
    if values.size == 0:
        return math.nan
    # round first: (1 - 0.95) x 120 is 6.000000000000001 in floating point
    k = max(1, math.ceil(round((1.0 - level) * values.size, 9)))
    return -float(values[:k].mean())


def upside_capture(
    ts_us: np.ndarray,
    equity: np.ndarray,
    unhedged_ts_us: np.ndarray,
    unhedged_equity: np.ndarray,
) -> float:
    """Sum of this equity's daily returns / sum of the unhedged equity's, over the UTC
    days (common to both) where the unhedged daily return is > 0; NaN without one.

    Daily returns as :func:`daily_returns`; times are int64 microseconds, increasing.
    """
    days, returns = _days(ts_us), daily_returns(ts_us, equity)
    ref_days, ref_returns = _days(unhedged_ts_us), daily_returns(unhedged_ts_us, unhedged_equity)
    _, mine, ref = np.intersect1d(days, ref_days, assume_unique=True, return_indices=True)
    up = ref_returns[ref] > 0
    if not up.any():
        return math.nan
    return float(returns[mine][up].sum() / ref_returns[ref][up].sum())


def policy_metrics(
    run: PolicyRun,
    *,
    portfolio_usd: float,
    loss_window: timedelta = timedelta(hours=24),
    cvar_level: float = 0.95,
    events: pl.DataFrame | None = None,
    hedge_ratio_max: Mapping[str, float] | None = None,
    unhedged_run: PolicyRun | None = None,
) -> PolicyMetrics:
    """Every metric of one policy's run; ``unhedged_run`` is the reference of
    ``upside_capture`` (NaN without it), ``events`` those of the cascade metrics."""
    ts_us = run.equity["ts"].dt.epoch("us").to_numpy()
    equity = run.equity["equity_usd"].to_numpy()
    years = (ts_us[-1] - ts_us[0]) / _YEAR_US if ts_us.size > 1 else math.nan
    sums = run.bars.select(
        pl.col("fee_usd").sum(), pl.col("slippage_usd").sum(), pl.col("funding_usd").sum()
    ).row(0)
    fees_slip, funding = sums[0] + sums[1], sums[2]
    traded = float(run.trades["notional_usd"].abs().sum()) if run.trades.height else 0.0
    hedge, long = run.equity["hedge_usd"].to_numpy(), run.equity["long_usd"].to_numpy()
    per_year = portfolio_usd * years
    ratio = np.divide(hedge, long, where=long > 0, out=np.zeros_like(hedge))
    upside = math.nan
    if unhedged_run is not None:
        upside = upside_capture(
            ts_us,
            equity,
            unhedged_run.equity["ts"].dt.epoch("us").to_numpy(),
            unhedged_run.equity["equity_usd"].to_numpy(),
        )
    protected, offset, n_events = _cascade_metrics(
        run.bars, _checked_events(events, hedge_ratio_max), hedge_ratio_max
    )
    return PolicyMetrics(
        worst_24h_loss=worst_window_loss(ts_us, equity, loss_window),
        max_drawdown=max_drawdown(equity),
        cvar_95_daily=cvar(daily_returns(ts_us, equity), cvar_level),
        total_return=float(equity[-1] / equity[0] - 1.0),
        hedge_cost_annual=(fees_slip + funding) / per_year,
        fees_slippage_annual=fees_slip / per_year,
        funding_annual=funding / per_year,
        turnover_annual=traded / per_year,
        time_hedged=float((run.bars["hedge_usd"] > 0).mean()),
        mean_hedge_ratio=float(np.mean(ratio)),
        trades=run.trades.height,
        upside_capture=upside,
        cascades_protected=protected,
        cascade_loss_offset=offset,
        events=n_events,
    )


def metrics_table(
    runs: Mapping[str, PolicyRun],
    *,
    portfolio_usd: float,
    loss_window: timedelta = timedelta(hours=24),
    cvar_level: float = 0.95,
    events: pl.DataFrame | None = None,
    hedge_ratio_max: Mapping[str, float] | None = None,
    unhedged: str = "no_hedge",
) -> pl.DataFrame:
    """One row per policy (in the order of ``runs``): ``policy`` and :data:`METRIC_COLUMNS`.

    ``events``: the cascade events (at least :data:`EVENT_COLUMNS`; ``start`` and
    ``trough_ts`` datetime[us, UTC]) of the cascade metrics, NaN without them;
    ``hedge_ratio_max``: symbol -> the fraction of the long a full hedge is (1.0 for every
    symbol by default); ``unhedged``: the run ``upside_capture`` is measured against
    (NaN when ``runs`` has none of that name).
    """
    checked = _checked_events(events, hedge_ratio_max)
    reference = runs.get(unhedged)
    rows = []
    for name, run in runs.items():
        metrics = policy_metrics(
            run,
            portfolio_usd=portfolio_usd,
            loss_window=loss_window,
            cvar_level=cvar_level,
            events=checked,
            hedge_ratio_max=hedge_ratio_max,
            unhedged_run=reference,
        )
        rows.append({"policy": name, **asdict(metrics)})
    return pl.DataFrame(rows)


def _days(ts_us: np.ndarray) -> np.ndarray:
    """The UTC days (days since the epoch) of :func:`daily_returns`' returns, in order."""
    day = np.asarray(ts_us, dtype=np.int64) // _US_PER_DAY
    if day.size == 0:
        return day
    return day[np.flatnonzero(np.diff(day, append=day[-1] + 1) != 0)]


def _checked_events(
    events: pl.DataFrame | None, hedge_ratio_max: Mapping[str, float] | None
) -> pl.DataFrame | None:
    """``events`` reduced to :data:`EVENT_COLUMNS` with the expected dtypes; raises
    ``ValueError`` on a missing column, a time column that is not UTC, or a bad
    ``hedge_ratio_max``."""
    for symbol, value in (hedge_ratio_max or {}).items():
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"hedge_ratio_max of {symbol} must be > 0, got {value!r}")
    if events is None:
        return None
    missing = [c for c in EVENT_COLUMNS if c not in events.columns]
    if missing:
        raise ValueError(f"events lack the column(s) {missing}; need {list(EVENT_COLUMNS)}")
    for column in ("start", "trough_ts"):
        dtype = events.schema[column]
        if not (isinstance(dtype, pl.Datetime) and dtype.time_zone == "UTC"):
            raise ValueError(f"events column {column!r} must be datetime[us, UTC], got {dtype}")
    checked = events.select(
        pl.col("symbol").cast(pl.String),
        pl.col("start").cast(_UTC_US),
        pl.col("trough_ts").cast(_UTC_US),
    )
    if hedge_ratio_max is not None:
        unknown = sorted(set(checked["symbol"].drop_nulls()) - set(hedge_ratio_max))
        if unknown:
            raise ValueError(f"hedge_ratio_max has no entry for the event symbol(s) {unknown}")
    return checked


def _cascade_metrics(
    bars: pl.DataFrame,
    events: pl.DataFrame | None,
    hedge_ratio_max: Mapping[str, float] | None,
) -> tuple[float, float, int]:
    """``cascades_protected``, ``cascade_loss_offset`` and the number of events in the
    run's window (``events`` checked by :func:`_checked_events`)."""
    if events is None or bars.is_empty():
        return math.nan, math.nan, 0
    first, last = bars["ts"].min(), bars["ts"].max()
    inside = events.filter(
        pl.col("symbol").is_in(bars["symbol"].unique().implode()),
        pl.col("start").is_between(first, last),
    )
    if inside.is_empty():
        return math.nan, math.nan, 0
    protected, hedge, loss = [], [], []
    for (symbol,), part in inside.partition_by("symbol", as_dict=True).items():
        rows = bars.filter(pl.col("symbol") == symbol)
        if not rows["ts"].is_sorted():
            rows = rows.sort("ts")
        ts = rows["ts"].dt.epoch("us").to_numpy()
        start = part["start"].dt.epoch("us").to_numpy()
        # a trough before the start (or none): an empty window
        end = np.maximum(part["trough_ts"].dt.epoch("us").fill_null(0).to_numpy(), start)
        at_start = np.searchsorted(ts, start, side="right") - 1  # last bar at or before
        at_end = np.searchsorted(ts, end, side="right") - 1
        full = 1.0 if hedge_ratio_max is None else hedge_ratio_max[symbol]
        long_usd = rows["long_usd"].to_numpy()[at_start]
        hedge_usd = rows["hedge_usd"].to_numpy()[at_start]
        position = np.divide(
            hedge_usd, long_usd * full, where=long_usd > 0, out=np.zeros_like(hedge_usd)
        )
        protected.append(position >= _PROTECTED - 1e-9)  # exactly a quarter, up to rounding
        hedge_cum = np.cumsum(rows["hedge_pnl"].to_numpy())
        long_cum = np.cumsum(rows["long_pnl"].to_numpy())
        hedge.append(hedge_cum[at_end] - hedge_cum[at_start])  # over start < ts <= end
        loss.append(long_cum[at_start] - long_cum[at_end])
    lost = np.concatenate(loss)
    gained = np.concatenate(hedge)[lost > 0]
    offset = float(gained.sum() / lost[lost > 0].sum()) if gained.size else math.nan
    return float(np.concatenate(protected).mean()), offset, inside.height
