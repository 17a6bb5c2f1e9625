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
    from serving.backtest import PolicyRun

__all__ = [
    "METRIC_COLUMNS",
    "PolicyMetrics",
    "cvar",
    "daily_returns",
    "hedge_gate_metrics",
    "max_drawdown",
    "metrics_table",
    "policy_metrics",
    "worst_window_loss",
]

_US = timedelta(microseconds=1)
_US_PER_DAY = 86_400_000_000
_YEAR_US = 365 * _US_PER_DAY


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


def policy_metrics(
    run: PolicyRun,
    *,
    portfolio_usd: float,
    loss_window: timedelta = timedelta(hours=24),
    cvar_level: float = 0.95,
) -> PolicyMetrics:
    """Every metric of one policy's run."""
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
    )


def metrics_table(
    runs: Mapping[str, PolicyRun],
    *,
    portfolio_usd: float,
    loss_window: timedelta = timedelta(hours=24),
    cvar_level: float = 0.95,
) -> pl.DataFrame:
    """One row per policy (in the order of ``runs``): ``policy`` and :data:`METRIC_COLUMNS`."""
    rows = []
    for name, run in runs.items():
        metrics = policy_metrics(
            run, portfolio_usd=portfolio_usd, loss_window=loss_window, cvar_level=cvar_level
        )
        rows.append({"policy": name, **asdict(metrics)})
    return pl.DataFrame(rows)


def hedge_gate_metrics(
    run: PolicyRun, *, portfolio_usd: float, loss_window: timedelta = timedelta(hours=24)
) -> dict[str, float]:
    """``worst_24h_loss`` and ``hedge_cost_annual`` of one run (the promotion gate's)."""
    metrics = policy_metrics(run, portfolio_usd=portfolio_usd, loss_window=loss_window)
    return {
        "worst_24h_loss": metrics.worst_24h_loss,
        "hedge_cost_annual": metrics.hedge_cost_annual,
    }
