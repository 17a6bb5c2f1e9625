"""The backtest's per-bar loops for one symbol (the timing is in
:mod:`oihedge.serving.backtest.engine`).

The loop only decides and fills: per bar it settles the pending order, then asks the
policy for the next one. PnL, funding and marks are computed afterwards, vectorised, from
the positions the loop produced (:func:`ledger_frames`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

import numpy as np
import polars as pl

from oihedge.features.schema import UTC_US
from oihedge.serving.policy import sizing
from oihedge.serving.policy.costs import FUNDING_INTERVAL, CostModel
from oihedge.serving.policy.params import PolicyParams
from oihedge.serving.policy.policy import PolicyState, decide
from oihedge.serving.policy.signals import SIGNAL_FEATURES, VOL_WINDOWS, signals_from_row
from oihedge.serving.policy.sizing import YEAR

__all__ = [
    "TRADE_COLUMNS",
    "Ledger",
    "SymbolSeries",
    "ledger_frames",
    "rule_hysteresis",
    "run_model",
    "run_targets",
]

#: column -> dtype of a policy's trades (one row per fill)
TRADE_COLUMNS: dict[str, pl.DataType] = {
    "decided_at": UTC_US,  # bar of the (first) decision behind the order
    "ts": UTC_US,  # bar the order filled at
    "symbol": pl.String(),
    "qty": pl.Float64(),  # change of the short, base units (+ sells perp, - buys back)
    "price": pl.Float64(),  # reference price of the fill, USD
    "notional_usd": pl.Float64(),  # signed as on an exchange: - sell, + buy
    "fee_usd": pl.Float64(),
    "slippage_usd": pl.Float64(),
    "slippage_bps": pl.Float64(),
    "stress": pl.Boolean(),
}
_US_PER_DAY = 86_400_000_000
_US_PER_FUNDING = FUNDING_INTERVAL // timedelta(microseconds=1)

#: a policy's answer at one bar: (trade_usd, hedge_usd after it, target fraction)
Step = Callable[[int, float, float], tuple[float, float, float]]


@dataclass(frozen=True)
class SymbolSeries:
    """One symbol's inputs on the backtest grid (NaN where missing).

    ``mark`` is the last known price (the first price before it); ``units`` the long
    position, base units, bought at the first mark.
    """

    symbol: str
    ts: list[datetime]
    ts_us: np.ndarray
    price: np.ndarray
    mark: np.ndarray
    volume_24h_usd: np.ndarray
    vol_ann: np.ndarray
    vol_forecast: np.ndarray
    funding_8h: np.ndarray
    fresh_venues: list[int]
    stress: np.ndarray
    p: list[float]
    severity_k: list[float]
    y: np.ndarray
    features: dict[str, list[float]]
    units: float

    @property
    def n(self) -> int:
        return len(self.ts)

    @classmethod
    def from_frame(cls, frame: pl.DataFrame, long_usd: float) -> SymbolSeries:
        """From one symbol's aligned frame (market columns, signal features, ``p``, ``y``)."""

        def floats(name: str) -> np.ndarray:
            return frame[name].cast(pl.Float64).fill_null(np.nan).to_numpy().copy()

        price = floats("price")
        seen = np.flatnonzero(~np.isnan(price))
        symbol = str(frame["symbol"][0])
        if seen.size == 0:
            raise ValueError(f"{symbol}: no price in the backtest window")
        idx = np.where(~np.isnan(price), np.arange(price.size), 0)
        mark = price[np.maximum.accumulate(idx)]
        mark[: seen[0]] = price[seen[0]]
        return cls(
            symbol=symbol,
            ts=frame["ts"].to_list(),
            ts_us=frame["ts"].dt.epoch("us").to_numpy(),
            price=price,
            mark=mark,
            volume_24h_usd=floats("volume_24h_usd"),
            vol_ann=floats("vol_ann"),
            vol_forecast=_vol_forecast(frame),
            funding_8h=floats("funding_8h"),
            fresh_venues=frame["fresh_venues"].fill_null(0).cast(pl.Int64).to_list(),
            stress=frame["stress"].fill_null(False).to_numpy(),
            p=floats("p").tolist(),
            severity_k=floats("severity_k").tolist(),
            y=floats("y"),
            features={name: floats(name).tolist() for name in SIGNAL_FEATURES},
            units=long_usd / float(price[seen[0]]),
        )


def _vol_forecast(frame: pl.DataFrame) -> np.ndarray:
    """:func:`oihedge.serving.policy.signals.vol_forecast` per bar, vectorised (NaN where
    missing)."""
    daily = np.stack([frame[n].cast(pl.Float64).fill_null(np.nan).to_numpy() for n in VOL_WINDOWS])
    variance = (np.where(daily >= 0, daily, np.nan) / 100.0) ** 2 * YEAR.days
    count = np.isfinite(variance).sum(axis=0)
    total = np.nansum(variance, axis=0)
    return np.sqrt(np.divide(total, count, out=np.full(total.shape, np.nan), where=count > 0))


@dataclass(frozen=True)
class Ledger:
    """What the loop produced: the short held after each bar's fill (base units), the
    fill costs booked per bar (USD), the target fraction decided per bar, the fills; for
    the hedge policy, ``decisions``: per bar ``p`` (the probability it read), ``p_entry``
    (the entry level it derived; NaN on a bar it did not decide) and ``tier`` (held)."""

    short_units: np.ndarray
    fee_usd: np.ndarray
    slippage_usd: np.ndarray
    target_fraction: np.ndarray
    trades: list[tuple[object, ...]]
    decisions: dict[str, list[float] | list[str]] | None = None


def run_model(
    series: SymbolSeries,
    params: PolicyParams,
    costs: CostModel,
    *,
    every: timedelta | None = None,
) -> Ledger:
    """The hedge policy (:func:`oihedge.serving.policy.policy.decide`) fed with ``series.p``; with
    ``every``, decided only at the first bar of each ``every``-long period (epoch-aligned:
    00:00 UTC for 24 h) and held in between."""
    state = PolicyState()
    feats = series.features
    names = tuple(feats)
    period = series.ts_us // (every // timedelta(microseconds=1)) if every else None
    p_entry, tiers = [math.nan] * series.n, [state.tier] * series.n

    def step(i: int, hedge_usd: float, mark: float) -> tuple[float, float, float]:
        nonlocal state
        if period is not None and i > 0 and period[i] == period[i - 1]:
            tiers[i] = state.tier
            return 0.0, hedge_usd, state.fraction
        row = {name: feats[name][i] for name in names}
        signals = signals_from_row(
            row,
            ts=series.ts[i],
            portfolio_usd=series.units * mark,
            fresh_venues=series.fresh_venues[i],
            severity_k=series.severity_k[i],
        )
        p = series.p[i]
        if hedge_usd != state.hedge_usd:  # the position, marked now (and any pending order)
            state = replace(state, hedge_usd=hedge_usd)
        decision = decide(None if math.isnan(p) else p, signals, state, params)
        state = decision.state
        p_entry[i], tiers[i] = decision.pricing.p_entry, decision.tier
        return decision.trade_usd, decision.hedge_usd, decision.target_fraction

    ledger = _loop(series, costs, step)
    return replace(ledger, decisions={"p": list(series.p), "p_entry": p_entry, "tier": tiers})


def run_targets(
    series: SymbolSeries, fraction: np.ndarray, params: PolicyParams, costs: CostModel
) -> Ledger:
    """A comparison policy: ``fraction`` of the maximum hedge per bar, traded within the
    policy's limits (no-trade band, minimum trade, daily turnover cap)."""
    if not fraction.any():
        return _loop(series, costs, lambda i, hedge, mark: (0.0, hedge, 0.0))
    beta = sizing.effective_beta(
        None, default=params.beta_default, lo=params.beta_min, hi=params.beta_max
    )
    day = series.ts_us // _US_PER_DAY
    used = [0.0, -1]  # turnover on the current UTC day, that day

    def step(i: int, hedge_usd: float, mark: float) -> tuple[float, float, float]:
        max_usd = sizing.max_hedge_usd(
            series.units * mark,
            beta,
            hedge_ratio_max=params.hedge_ratio_max,
            cap_usd=params.max_hedge_usd,
        )
        if day[i] != used[1]:
            used[0], used[1] = 0.0, day[i]
        trade, _ = sizing.limit_trade(
            float(fraction[i]) * max_usd,
            hedge_usd,
            allow_reduce=True,
            band_usd=params.no_trade_band * max_usd,
            min_trade_usd=params.min_trade_usd,
            turnover_left_usd=params.max_daily_turnover * max_usd - used[0],
        )
        used[0] += abs(trade)
        return trade, max(0.0, hedge_usd + trade), float(fraction[i])

    return _loop(series, costs, step)


def _loop(series: SymbolSeries, costs: CostModel, step: Step) -> Ledger:
    n = series.n
    short = np.zeros(n)
    fee = np.zeros(n)
    slip = np.zeros(n)
    target = np.full(n, np.nan)
    trades: list[tuple[object, ...]] = []
    price, mark = series.price.tolist(), series.mark.tolist()
    held = pending = 0.0
    decided_at = None
    for i in range(n):
        if pending != 0.0 and not math.isnan(price[i]):
            px = price[i]
            cost = costs.trade_cost(
                -pending * px,
                px,
                vol_ann=float(series.vol_ann[i]),
                volume_24h_usd=float(series.volume_24h_usd[i]),
                stress=bool(series.stress[i]),
            )
            trades.append(
                (
                    decided_at,
                    series.ts[i],
                    series.symbol,
                    pending,
                    px,
                    cost.notional_usd,
                    cost.fee_usd,
                    cost.slippage_usd,
                    cost.slippage_bps,
                    bool(series.stress[i]),
                )
            )
            fee[i] += cost.fee_usd
            slip[i] += cost.slippage_usd
            held = max(0.0, held + pending)
            pending, decided_at = 0.0, None
        short[i] = held
        m = mark[i]
        trade_usd, hedge_after, fraction = step(i, max(0.0, (held + pending) * m), m)
        target[i] = fraction
        if trade_usd != 0.0:
            # closing sends exactly the open short back, with no rounding residue
            pending = -held if hedge_after == 0.0 else pending + trade_usd / m
            decided_at = decided_at or series.ts[i]
    return Ledger(short, fee, slip, target, trades)


def ledger_frames(series: SymbolSeries, ledger: Ledger) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(bars, trades) frames of one symbol (see
    :class:`oihedge.serving.backtest.engine.PolicyRun`)."""
    mark, q = series.mark, ledger.short_units
    dm = np.diff(mark, prepend=mark[0])
    q_prev = np.concatenate(([0.0], q[:-1]))
    mark_prev = np.concatenate(([mark[0]], mark[:-1]))
    rate_prev = np.nan_to_num(np.concatenate(([0.0], series.funding_8h[:-1])), nan=0.0)
    dt_ratio = np.diff(series.ts_us, prepend=series.ts_us[0]) / _US_PER_FUNDING
    # CostModel.funding_cost, vectorised: -short x rate x dt / 8h (negative = received)
    funding = -(q_prev * mark_prev) * rate_prev * dt_ratio
    long_pnl = series.units * dm
    hedge_pnl = -q_prev * dm
    pnl = long_pnl + hedge_pnl - ledger.fee_usd - ledger.slippage_usd - funding
    bars = pl.DataFrame(
        {
            "ts": pl.Series(series.ts, dtype=UTC_US),
            "symbol": [series.symbol] * series.n,
            "price": mark,
            "long_usd": series.units * mark,
            "hedge_usd": q * mark,
            "target_fraction": ledger.target_fraction,
            "long_pnl": long_pnl,
            "hedge_pnl": hedge_pnl,
            "fee_usd": ledger.fee_usd,
            "slippage_usd": ledger.slippage_usd,
            "funding_usd": funding,
            "pnl_usd": pnl,
        }
    ).with_columns(pl.col("target_fraction").fill_nan(None))
    if ledger.decisions is not None:  # the hedge policy: what it read and derived
        bars = bars.with_columns(
            pl.Series("p", ledger.decisions["p"], dtype=pl.Float64).fill_nan(None),
            pl.Series("p_entry", ledger.decisions["p_entry"], dtype=pl.Float64).fill_nan(None),
            pl.Series("tier", ledger.decisions["tier"], dtype=pl.String),
        )
    trades = pl.DataFrame(ledger.trades, schema=TRADE_COLUMNS, orient="row")
    return bars, trades


def rule_hysteresis(
    divergence_pp: list[float], ts_us: np.ndarray, *, entry: float, exit_: float, confirm_us: int
) -> np.ndarray:
    """The fixed rule's state per bar: on from a bar with ``divergence >= entry``; off
    once it has been below ``exit_`` (a missing reading counts as below, as in the
    policy's exit) continuously for ``confirm_us`` microseconds."""
    on = np.zeros(len(divergence_pp), dtype=bool)
    active, since = False, -1
    for i, d in enumerate(divergence_pp):
        if d >= entry:  # NaN compares False
            active, since = True, -1
        elif active:
            if math.isnan(d) or d < exit_:
                since = int(ts_us[i]) if since < 0 else since
                if ts_us[i] - since >= confirm_us:
                    active, since = False, -1
            else:
                since = -1
        on[i] = active
    return on
