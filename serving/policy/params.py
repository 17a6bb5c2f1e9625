"""Parameters of the hedge policy: one frozen, validated set per asset class.

The field names are the keys of the ``[policy]`` table of the configuration (majors) and
of ``[policy.altcoin]`` (overrides for the universe's altcoins), except
:data:`COST_FIELDS`: ``costs``, the ``[costs]`` model, so that the policy prices a trade
with the same model the backtest and the paper broker charge; the CLI builds
``PolicyParams(**config.policy.values_for(symbol, config.universe.altcoins), costs=...)``.
Serving never imports the configuration. Defaults here are the majors' defaults of the
shipped configuration (a test holds them equal).

This is the one declaration of the policy's parameters: their names, types, defaults and
checks. The configuration's ``[policy]`` and ``[policy.altcoin]`` models are derived from
the fields (pipelines/cli/config_policy.py); they check each key with :func:`check_value`
and each whole set by building a ``PolicyParams``.

No field is an absolute probability level: the policy derives its probability threshold
from the cost of holding a hedge and the severity of a cascade (oihedge.serving.policy.policy), so a
calibrated model of a rare event can reach it.

Units: fractions are fractions of the maximum hedge; ``div_*``
is cross-venue OI divergence as a fraction (0.08 = 8 %); ``oi_high_pct`` is OI deviation
from its 24 h mean in percent; funding per 8 h as a fraction; volatility annualised as a
fraction; notionals in USD.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

from oihedge.serving.policy.costs import CostModel

_T = TypeVar("_T")

#: the confirmations the policy counts (see :func:`oihedge.serving.policy.policy.confirmations`)
N_CONFIRMATIONS = 3


@dataclass(frozen=True)
class PolicyParams:
    """Risk budget, cascade pricing, exit, sizing and limits of the hedge policy
    (see oihedge.serving.policy.policy)."""

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
    p_halflife: timedelta = timedelta(minutes=15)
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
        for name, value in vars(self).items():
            if name not in COST_FIELDS:
                check_value(name, value)
        check_relations(vars(self))


#: fields filled from the ``[costs]`` table, not from ``[policy]`` (one cost model)
COST_FIELDS: tuple[str, ...] = ("costs",)
#: the one field that may be infinite (no cap)
_MAY_BE_INFINITE = frozenset({"max_hedge_usd"})

_ZERO = timedelta(0)
_Rule = tuple[Callable[[Any], bool], str]
_POSITIVE: _Rule = (lambda v: v > 0, "> 0")
_NON_NEGATIVE: _Rule = (lambda v: v >= 0, ">= 0")
_SHARE: _Rule = (lambda v: 0 < v <= 1, "in (0, 1]")
_LONGER: _Rule = (lambda v: v > _ZERO, "> 0")
_NOT_NEGATIVE_TIME: _Rule = (lambda v: v >= _ZERO, ">= 0")

#: each field's own range, as (holds, what the value must be); a field not listed may be
#: any finite number. The rules between fields are in :func:`check_relations`.
_RANGES: dict[str, tuple[_Rule, ...]] = {
    "loss_budget": (_SHARE,),
    "risk_horizon": (_LONGER,),
    "risk_quantile": ((lambda v: 0.5 <= v < 1, "in [0.5, 1)"),),
    "stress_k": (_POSITIVE,),
    "stress_horizon": (_LONGER,),
    "stress_move_min": (_SHARE,),
    "drift_ann": (_NON_NEGATIVE,),
    "baseline_fraction": (_NON_NEGATIVE,),
    "partial_cap": (_NON_NEGATIVE, (lambda v: v < 1, "< 1 (only the full tier hedges 100 %)")),
    "min_hedge_fraction": (_NON_NEGATIVE,),
    "full_min_confirmations": (
        (lambda v: 0 <= v <= N_CONFIRMATIONS, f"in [0, {N_CONFIRMATIONS}]"),
    ),
    "div_entry": (_POSITIVE,),
    "div_exit": (_NON_NEGATIVE,),
    "funding_z_entry": (_POSITIVE,),
    "funding_z_exit": (_NON_NEGATIVE,),
    "exit_confirm": (_NOT_NEGATIVE_TIME,),
    "exit_share": (_SHARE,),
    "p_halflife": (_NOT_NEGATIVE_TIME,),
    "min_hold": (_NOT_NEGATIVE_TIME,),
    "hedge_ratio_max": ((lambda v: 0 < v <= 1, "in (0, 1] (never net short)"),),
    "max_hedge_usd": (_POSITIVE,),
    "beta_default": (_POSITIVE,),
    "beta_min": (_POSITIVE,),
    "beta_max": (_POSITIVE,),
    "min_trade_usd": (_NON_NEGATIVE,),
    "no_trade_band": ((lambda v: 0 <= v < 1, "in [0, 1)"),),
    "max_daily_turnover": (_POSITIVE,),
    "min_fresh_venues": (_NON_NEGATIVE,),
}


def _fail(name: str, value: object, rule: str) -> ValueError:
    return ValueError(f"{name} must be {rule}, got {value!r}")


def check_value(name: str, value: _T) -> _T:
    """``value`` for the field ``name`` when it is within the field's own range (a number,
    finite but where no cap is meant); raises ``ValueError`` naming the field, the rule and
    the value. The configuration checks each ``[policy]`` key with it."""
    if isinstance(value, float | int) and math.isnan(value):
        raise _fail(name, value, "a number")
    if isinstance(value, float) and math.isinf(value) and name not in _MAY_BE_INFINITE:
        raise _fail(name, value, "finite")
    for holds, rule in _RANGES.get(name, ()):
        if not holds(value):
            raise _fail(name, value, rule)
    return value


def check_relations(values: Mapping[str, Any]) -> None:
    """The rules between fields of one parameter set (``values``: field -> value, each
    within its own range); raises ``ValueError`` naming the fields and their values."""
    cap = values["partial_cap"]
    for name in ("baseline_fraction", "min_hedge_fraction"):
        if not values[name] <= cap:
            raise _fail(name, values[name], f"in [0, partial_cap={cap!r}]")
    for low, high in (("div_exit", "div_entry"), ("funding_z_exit", "funding_z_entry")):
        if not values[low] < values[high]:
            raise ValueError(
                f"{low} must be in [0, {high}), got {low}={values[low]!r}, {high}={values[high]!r}"
            )
    betas = values["beta_min"], values["beta_default"], values["beta_max"]
    if not betas[0] <= betas[1] <= betas[2]:
        raise ValueError(
            "betas must satisfy 0 < beta_min <= beta_default <= beta_max, got "
            + ", ".join(repr(b) for b in betas)
        )
