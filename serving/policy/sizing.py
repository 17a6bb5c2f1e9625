"""Hedge sizing and trade limits: plain arithmetic the hedge policy composes.

Every function here is pure and takes plain numbers, so the backtest, the live loop and
the tests can call them alone. Units: notionals in USD, volatility annualised as a
fraction (0.6 = 60 %/year), fractions in [0, 1].

* :func:`effective_beta` reads a feature that may be missing.
* :func:`max_hedge_usd` is the notional of a "full" hedge.
* :func:`stress_move` is the drop a cascade brings (the policy's severity).
* :func:`limit_trade` turns a target into an order after the stale-data rule, the
  no-trade band, the minimum trade size and the daily turnover cap.
"""

from __future__ import annotations

import math
from datetime import timedelta

YEAR = timedelta(days=365)  # crypto trades every day: annualise over 365 days


def finite_or_none(value: float | None) -> float | None:
    """``value`` as a float, or ``None`` when it is missing (``None``, NaN or infinite)."""
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def effective_beta(beta: float | None, *, default: float, lo: float, hi: float) -> float:
    """The hedge ratio to use: ``beta`` clipped to ``[lo, hi]``, or ``default`` if missing.

    ``beta`` is the slope of the protected exposure's returns on the hedge instrument's
    returns (rolling regression), i.e. the minimum-variance hedge ratio: USD of hedge per
    USD of exposure.
    """
    value = finite_or_none(beta)
    return default if value is None else min(hi, max(lo, value))


def max_hedge_usd(
    portfolio_usd: float, beta: float, *, hedge_ratio_max: float, cap_usd: float
) -> float:
    """Notional of the full hedge, USD: ``min(cap_usd, hedge_ratio_max x beta x portfolio)``."""
    return min(cap_usd, hedge_ratio_max * beta * portfolio_usd)


def stress_move(vol_ann: float | None, *, k: float, horizon: timedelta, floor: float) -> float:
    """Cascade-sized adverse move of the hedge instrument, as a fraction of price.

    ``max(floor, k x vol_ann x sqrt(horizon / 1 year))``; the floor alone when volatility
    is missing.
    """
    value = finite_or_none(vol_ann)
    if value is None or value < 0:
        return floor
    return max(floor, k * value * math.sqrt(horizon / YEAR))


def limit_trade(
    target_usd: float,
    hedge_usd: float,
    *,
    allow_reduce: bool,
    band_usd: float,
    min_trade_usd: float,
    turnover_left_usd: float,
) -> tuple[float, list[str]]:
    """The order that moves the hedge towards ``target_usd`` within the limits.

    Returns ``(trade_usd, reasons)``: ``trade_usd`` is the change of the short hedge
    notional (``+`` sells more perp, ``-`` buys it back), 0.0 when no trade is sent.
    Rules, in order: no reduction when ``allow_reduce`` is false (stale data); a change
    smaller than ``band_usd`` or ``min_trade_usd`` is not traded, except closing the hedge
    entirely (``target_usd == 0``) so a small remainder cannot get stuck; a change larger
    than the turnover left today is cut to it, and not sent if the cut order is below the
    minimum size. The mapping from target to hedge after the trade is non-decreasing.
    """
    delta = target_usd - hedge_usd
    if delta == 0:
        return 0.0, []
    if delta < 0 and not allow_reduce:
        return 0.0, [f"stale data: reduction of ${-delta:,.0f} refused"]
    closing = target_usd == 0
    if not closing and abs(delta) < band_usd:
        return 0.0, [f"no-trade band: |change| ${abs(delta):,.0f} < ${band_usd:,.0f}"]
    if not closing and abs(delta) < min_trade_usd:
        return 0.0, [f"min trade: |change| ${abs(delta):,.0f} < ${min_trade_usd:,.0f}"]
    if abs(delta) <= turnover_left_usd:
        return delta, []
    cut = math.copysign(max(0.0, turnover_left_usd), delta)
    if abs(cut) < max(min_trade_usd, 1e-9):
        return 0.0, [
            f"turnover cap: daily limit reached, ${abs(delta):,.0f} "
            f"{'increase' if delta > 0 else 'decrease'} refused"
        ]
    return cut, [
        f"turnover cap: {'increase' if delta > 0 else 'decrease'} cut from "
        f"${abs(delta):,.0f} to ${abs(cut):,.0f} (daily limit)"
    ]
