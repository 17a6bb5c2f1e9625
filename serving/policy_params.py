"""Parameters of the hedge policy: one frozen, validated set per asset class.

The field names are the keys of the ``[policy]`` table of the configuration (majors) and
of ``[policy.altcoin]`` (overrides for the universe's altcoins), except
:data:`COST_FIELDS`: ``costs``, the ``[costs]`` model, so that the policy prices a trade
with the same model the backtest and the paper broker charge; the CLI builds
``PolicyParams(**config.policy.values_for(symbol, config.universe.altcoins), costs=...)``.
Serving never imports the configuration. Defaults here are the majors' defaults of the
shipped configuration (a test holds them equal).

No field is an absolute probability level: the policy derives its probability threshold
from the cost of holding a hedge and the severity of a cascade (serving.policy), so a
calibrated model of a rare event can reach it.

Units: fractions are fractions of the maximum hedge; ``div_*``
is cross-venue OI divergence as a fraction (0.08 = 8 %); ``oi_high_pct`` is OI deviation
from its 24 h mean in percent; funding per 8 h as a fraction; volatility annualised as a
fraction; notionals in USD.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import timedelta

from serving.costs import CostModel

#: the confirmations the policy counts (see :func:`serving.policy.confirmations`)
N_CONFIRMATIONS = 3


@dataclass(frozen=True)
class PolicyParams:
    """Risk budget, cascade pricing, exit, sizing and limits of the hedge policy
    (see serving.policy)."""

    # ordinary risk: the volatility forecast's tail loss held within the budget
    loss_budget: float = 0.05
    risk_horizon: timedelta = timedelta(hours=4)
    risk_quantile: float = 0.95
    # cascade risk: severity (the drop a cascade brings) and the cost of holding a hedge
    stress_k: float = 3.0
    stress_horizon: timedelta = timedelta(hours=4)
    stress_move_min: float = 0.01
    drift_ann: float = 0.30
    # the cost model a hedge trade is priced with (the [costs] table)
    costs: CostModel = field(default_factory=CostModel)
    # the readable output and the full hedge
    baseline_fraction: float = 0.0
    partial_cap: float = 0.75
    min_hedge_fraction: float = 0.4
    full_min_confirmations: int = 2
    # confirmations and their exit (normalised) levels
    div_entry: float = 0.08
    div_exit: float = 0.07
    oi_high_pct: float = 5.0
    funding_neg_8h: float = 0.0
    funding_z_entry: float = 2.0
    funding_z_exit: float = 1.9
    exit_confirm: timedelta = timedelta(hours=1)
    exit_share: float = 0.5
    min_hold: timedelta = timedelta(hours=4)
    # sizing
    hedge_ratio_max: float = 1.0
    max_hedge_usd: float = 10_000_000.0
    beta_default: float = 1.0
    beta_min: float = 0.5
    beta_max: float = 1.5
    # limits
    min_trade_usd: float = 1_000.0
    no_trade_band: float = 0.05
    max_daily_turnover: float = 3.0
    min_fresh_venues: int = 2

    def __post_init__(self) -> None:
        _check_finite(self)
        _check_risk(self)
        _check_ladder(self)
        _check_exit(self)
        _check_sizing(self)
        _check_limits(self)


#: fields filled from the ``[costs]`` table, not from ``[policy]`` (one cost model)
COST_FIELDS: tuple[str, ...] = ("costs",)


def _fail(name: str, value: object, rule: str) -> ValueError:
    return ValueError(f"{name} must be {rule}, got {value!r}")


def _check_finite(p: PolicyParams) -> None:
    for name, value in vars(p).items():
        if isinstance(value, float | int) and math.isnan(value):
            raise _fail(name, value, "a number")
        if isinstance(value, float) and math.isinf(value) and name != "max_hedge_usd":
            raise _fail(name, value, "finite")


def _check_risk(p: PolicyParams) -> None:
    if not 0 < p.loss_budget <= 1:
        raise _fail("loss_budget", p.loss_budget, "in (0, 1]")
    if not p.risk_horizon > timedelta(0):
        raise _fail("risk_horizon", p.risk_horizon, "> 0")
    if not 0.5 <= p.risk_quantile < 1:
        raise _fail("risk_quantile", p.risk_quantile, "in [0.5, 1)")
    if p.stress_k <= 0:
        raise _fail("stress_k", p.stress_k, "> 0")
    if not p.stress_horizon > timedelta(0):
        raise _fail("stress_horizon", p.stress_horizon, "> 0")
    if not 0 < p.stress_move_min <= 1:
        raise _fail("stress_move_min", p.stress_move_min, "in (0, 1]")
    if p.drift_ann < 0:
        raise _fail("drift_ann", p.drift_ann, ">= 0")


def _check_ladder(p: PolicyParams) -> None:
    if not 0 <= p.baseline_fraction <= p.partial_cap:
        raise _fail(
            "baseline_fraction", p.baseline_fraction, f"in [0, partial_cap={p.partial_cap!r}]"
        )
    if not p.partial_cap < 1:
        raise _fail("partial_cap", p.partial_cap, "< 1 (only the full tier hedges 100 %)")
    if not 0 <= p.min_hedge_fraction <= p.partial_cap:
        raise _fail(
            "min_hedge_fraction", p.min_hedge_fraction, f"in [0, partial_cap={p.partial_cap!r}]"
        )
    if not 0 <= p.full_min_confirmations <= N_CONFIRMATIONS:
        raise _fail(
            "full_min_confirmations", p.full_min_confirmations, f"in [0, {N_CONFIRMATIONS}]"
        )


def _check_exit(p: PolicyParams) -> None:
    if not 0 <= p.div_exit < p.div_entry:
        raise ValueError(
            f"div_exit must be in [0, div_entry), got div_exit={p.div_exit!r}, "
            f"div_entry={p.div_entry!r}"
        )
    if not 0 <= p.funding_z_exit < p.funding_z_entry:
        raise ValueError(
            f"funding_z_exit must be in [0, funding_z_entry), got "
            f"funding_z_exit={p.funding_z_exit!r}, "
            f"funding_z_entry={p.funding_z_entry!r}"
        )
    for name in ("exit_confirm", "min_hold"):
        if getattr(p, name) < timedelta(0):
            raise _fail(name, getattr(p, name), ">= 0")
    if not 0 < p.exit_share <= 1:
        raise _fail("exit_share", p.exit_share, "in (0, 1]")


def _check_sizing(p: PolicyParams) -> None:
    if not 0 < p.hedge_ratio_max <= 1:
        raise _fail("hedge_ratio_max", p.hedge_ratio_max, "in (0, 1] (never net short)")
    if not p.max_hedge_usd > 0:
        raise _fail("max_hedge_usd", p.max_hedge_usd, "> 0")
    if not 0 < p.beta_min <= p.beta_default <= p.beta_max:
        raise ValueError(
            f"betas must satisfy 0 < beta_min <= beta_default <= beta_max, got "
            f"{p.beta_min!r}, {p.beta_default!r}, {p.beta_max!r}"
        )


def _check_limits(p: PolicyParams) -> None:
    if p.min_trade_usd < 0:
        raise _fail("min_trade_usd", p.min_trade_usd, ">= 0")
    if not 0 <= p.no_trade_band < 1:
        raise _fail("no_trade_band", p.no_trade_band, "in [0, 1)")
    if not p.max_daily_turnover > 0:
        raise _fail("max_daily_turnover", p.max_daily_turnover, "> 0")
    if p.min_fresh_venues < 0:
        raise _fail("min_fresh_venues", p.min_fresh_venues, ">= 0")
