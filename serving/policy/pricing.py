"""What the hedge policy reads at one bar and what it derives from it, before deciding:
the cascade pricing (severity, holding cost and the derived
probability levels ``p_entry`` / ``p_exit``, :func:`pricing`), the ordinary tail loss, and
the confirmations (:func:`confirmations`). The formulas are described with the policy in
:mod:`oihedge.serving.policy.policy`.
"""

from __future__ import annotations

import functools
import math
from datetime import timedelta
from statistics import NormalDist
from typing import NamedTuple

from oihedge.serving.policy import sizing
from oihedge.serving.policy.costs import FUNDING_INTERVAL
from oihedge.serving.policy.params import PolicyParams
from oihedge.serving.policy.signals import Signals

__all__ = ["Pricing", "Readings", "confirmations", "confirmed", "pricing", "tail_loss"]


class Pricing(NamedTuple):
    """The cascade part's terms at one bar, fractions of the hedged notional.

    ``severity``: the drop a cascade brings; ``cost``: the cost of holding a unit of
    hedge over the cascade horizon (round trip + funding paid + forgone drift);
    ``p_entry = min(1, cost / severity)`` and ``p_exit = exit_share x p_entry``, the derived
    probability levels; ``tail_loss``: the ordinary-risk tail loss of the unhedged
    exposure over the risk horizon, fraction of the portfolio (NaN without volatility).
    """

    severity: float
    cost: float
    p_entry: float
    p_exit: float
    tail_loss: float

    def record(self) -> dict[str, float | None]:
        """The terms by name, for a log or state record (NaN: None)."""
        return {k: (v if math.isfinite(v) else None) for k, v in self._asdict().items()}


def confirmations(signals: Signals, params: PolicyParams) -> tuple[str, ...]:
    """Names of the confirmations that hold at this bar (missing readings never do)."""
    return confirmed(Readings.of(signals, params), params)


def pricing(signals: Signals, beta: float, params: PolicyParams) -> Pricing:
    """Severity, holding cost, derived probability levels and the ordinary tail loss at
    one bar (see the module docstring); ``beta``: the effective hedge beta."""
    vol = sizing.finite_or_none(signals.vol_ann)
    vol = None if vol is None or vol < 0 else vol
    k = sizing.finite_or_none(signals.severity_k)
    k = params.stress_k if k is None or k <= 0 else k
    severity = sizing.stress_move(
        vol, k=k, horizon=params.stress_horizon, floor=params.stress_move_min
    )
    one_way_bps = params.costs.small_order_bps(vol)
    funding = sizing.finite_or_none(signals.funding_8h) or 0.0
    funding_paid = max(0.0, -funding) * (params.stress_horizon / FUNDING_INTERVAL)
    drift = params.drift_ann * (params.stress_horizon / sizing.YEAR)
    cost = 2.0 * one_way_bps / 1e4 + funding_paid + drift
    p_entry = min(1.0, cost / severity)
    return Pricing(
        severity=severity,
        cost=cost,
        p_entry=p_entry,
        p_exit=params.exit_share * p_entry,
        tail_loss=tail_loss(signals, beta, params),
    )


class Readings(NamedTuple):
    """The readings the confirmations and the exit test share, read once per bar:
    divergence and funding z (finite or None), negative funding with high OI."""

    div: float | None
    z: float | None
    negative_funding_high_oi: bool

    @classmethod
    def of(cls, signals: Signals, params: PolicyParams) -> Readings:
        return cls(
            sizing.finite_or_none(signals.oi_div_xvenue),
            sizing.finite_or_none(signals.funding_z),
            _negative_funding_high_oi(signals, params),
        )


def confirmed(r: Readings, params: PolicyParams) -> tuple[str, ...]:
    out = []
    if r.div is not None and r.div >= params.div_entry:
        out.append("xvenue_divergence")
    if r.negative_funding_high_oi:
        out.append("negative_funding_high_oi")
    if r.z is not None and abs(r.z) >= params.funding_z_entry:
        out.append("funding_extreme")
    return tuple(out)


def _negative_funding_high_oi(signals: Signals, params: PolicyParams) -> bool:
    funding = sizing.finite_or_none(signals.funding_8h)
    oi_dev = sizing.finite_or_none(signals.oi_dev_24h_pct)
    return (
        funding is not None
        and oi_dev is not None
        and funding < params.funding_neg_8h
        and oi_dev >= params.oi_high_pct
    )


@functools.cache
def _z_horizon(quantile: float, horizon: timedelta) -> float:
    """The normal quantile times the square root of the horizon in years (per bar it is
    the same pair: computed once)."""
    return NormalDist().inv_cdf(quantile) * math.sqrt(horizon / sizing.YEAR)


def tail_loss(signals: Signals, beta: float, params: PolicyParams) -> float:
    """Ordinary tail loss of the unhedged exposure over the risk horizon, fraction of the
    portfolio; NaN without a volatility reading."""
    vol = sizing.finite_or_none(signals.vol_forecast_ann)
    if vol is None:
        vol = sizing.finite_or_none(signals.vol_ann)
    if vol is None or vol < 0:
        return math.nan
    return _z_horizon(params.risk_quantile, params.risk_horizon) * vol * beta
