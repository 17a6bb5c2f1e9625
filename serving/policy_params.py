"""Parameters of the hedge policy: one frozen, validated set per asset class.

The field names are the keys of the ``[policy]`` table of the configuration (majors) and
of ``[policy.altcoin]`` (overrides for the universe's altcoins); the CLI builds
``PolicyParams(**config.policy.values_for(symbol, config.universe.altcoins))``. Serving
never imports the configuration. Defaults here are the majors' defaults of the shipped
configuration (a test holds them equal).

Units: probabilities in [0, 1]; fractions are fractions of the maximum hedge; ``div_*``
is cross-venue OI divergence as a fraction (0.08 = 8 %); ``oi_high_pct`` is OI deviation
from its 24 h mean in percent; funding per 8 h as a fraction; volatility annualised as a
fraction; notionals in USD.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta

#: the confirmations the policy counts (see :func:`serving.policy.confirmations`)
N_CONFIRMATIONS = 3


@dataclass(frozen=True)
class PolicyParams:
    """Levels, ladder, exit, sizing and limits of the hedge policy (see serving.policy)."""

    # probability levels: exit < early < elevated < high < extreme
    p_exit: float = 0.20
    p_early: float = 0.30
    p_elevated: float = 0.50
    p_high: float = 0.70
    p_extreme: float = 0.85
    # the ladder, in fractions of the maximum hedge
    baseline_fraction: float = 0.0
    early_fraction: float = 0.25
    step_fraction: float = 0.15
    confirmation_fraction: float = 0.10
    partial_cap: float = 0.75
    full_min_confirmations: int = 2
    # confirmations and their exit (normalised) levels
    div_entry: float = 0.08
    div_exit: float = 0.04
    oi_high_pct: float = 5.0
    funding_neg_8h: float = 0.0
    funding_z_entry: float = 2.0
    funding_z_exit: float = 1.0
    exit_confirm: timedelta = timedelta(hours=2)
    # sizing
    hedge_ratio_max: float = 1.0
    max_hedge_usd: float = 10_000_000.0
    beta_default: float = 1.0
    beta_min: float = 0.5
    beta_max: float = 1.5
    vol_ref: float = 0.60
    vol_scale_min: float = 0.8
    vol_scale_max: float = 1.2
    loss_budget: float = 0.05
    stress_k: float = 3.0
    stress_horizon: timedelta = timedelta(hours=4)
    stress_move_min: float = 0.06
    # limits
    min_trade_usd: float = 1_000.0
    no_trade_band: float = 0.05
    max_daily_turnover: float = 3.0
    min_fresh_venues: int = 2

    def __post_init__(self) -> None:
        _check_finite(self)
        _check_levels(self)
        _check_ladder(self)
        _check_exit(self)
        _check_sizing(self)
        _check_limits(self)


def _fail(name: str, value: object, rule: str) -> ValueError:
    return ValueError(f"{name} must be {rule}, got {value!r}")


def _check_finite(p: PolicyParams) -> None:
    for name, value in vars(p).items():
        if isinstance(value, float | int) and math.isnan(value):
            raise _fail(name, value, "a number")
        if isinstance(value, float) and math.isinf(value) and name != "max_hedge_usd":
            raise _fail(name, value, "finite")


def _check_levels(p: PolicyParams) -> None:
    names = ("p_exit", "p_early", "p_elevated", "p_high", "p_extreme")
    levels = [getattr(p, n) for n in names]
    if not levels[0] > 0:
        raise _fail("p_exit", p.p_exit, "> 0")
    if not levels[-1] <= 1:
        raise _fail("p_extreme", p.p_extreme, "<= 1")
    for i in range(len(names) - 1):
        if not levels[i] < levels[i + 1]:
            raise ValueError(
                f"{names[i]} must be below {names[i + 1]}, got "
                f"{names[i]}={levels[i]!r}, {names[i + 1]}={levels[i + 1]!r}"
            )


def _check_ladder(p: PolicyParams) -> None:
    if not 0 <= p.baseline_fraction <= p.early_fraction:
        raise _fail(
            "baseline_fraction", p.baseline_fraction, f"in [0, early_fraction={p.early_fraction!r}]"
        )
    if not p.early_fraction <= p.partial_cap:
        raise _fail("early_fraction", p.early_fraction, f"<= partial_cap={p.partial_cap!r}")
    if not p.partial_cap < 1:
        raise _fail("partial_cap", p.partial_cap, "< 1 (only the full tier hedges 100 %)")
    for name in ("step_fraction", "confirmation_fraction"):
        if getattr(p, name) < 0:
            raise _fail(name, getattr(p, name), ">= 0")
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
    if p.exit_confirm < timedelta(0):
        raise _fail("exit_confirm", p.exit_confirm, ">= 0")


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
    if not p.vol_ref > 0:
        raise _fail("vol_ref", p.vol_ref, "> 0")
    if not 0 < p.vol_scale_min <= 1 <= p.vol_scale_max:
        raise ValueError(
            f"vol scales must satisfy 0 < vol_scale_min <= 1 <= vol_scale_max, "
            f"got {p.vol_scale_min!r}, {p.vol_scale_max!r}"
        )
    if not 0 < p.loss_budget <= 1:
        raise _fail("loss_budget", p.loss_budget, "in (0, 1]")
    if p.stress_k < 0:
        raise _fail("stress_k", p.stress_k, ">= 0")
    if not p.stress_horizon > timedelta(0):
        raise _fail("stress_horizon", p.stress_horizon, "> 0")
    if not 0 < p.stress_move_min <= 1:
        raise _fail("stress_move_min", p.stress_move_min, "in (0, 1]")


def _check_limits(p: PolicyParams) -> None:
    if p.min_trade_usd < 0:
        raise _fail("min_trade_usd", p.min_trade_usd, ">= 0")
    if not 0 <= p.no_trade_band < 1:
        raise _fail("no_trade_band", p.no_trade_band, "in [0, 1)")
    if not p.max_daily_turnover > 0:
        raise _fail("max_daily_turnover", p.max_daily_turnover, "> 0")
    if p.min_fresh_venues < 0:
        raise _fail("min_fresh_venues", p.min_fresh_venues, ">= 0")
