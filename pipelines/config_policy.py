"""``[policy]`` and ``[policy.altcoin]``: the hedge policy's parameters of the majors and
the altcoins' overrides (serving.policy_params.PolicyParams)."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Annotated, Any

from pydantic import Field, model_validator

from pipelines.config_types import Duration, NonNegative, Positive, Prob, Section

Fraction = Annotated[float, Field(ge=0, le=1)]


class PolicyValues(Section):
    """Hedge-policy parameters of one asset class (serving.policy_params.PolicyParams;
    its cost fields come from ``[costs]``, see :meth:`Config.policy_params`)."""

    loss_budget: Prob = 0.05
    risk_horizon: Duration = timedelta(hours=4)
    risk_quantile: Annotated[float, Field(ge=0.5, lt=1)] = 0.95
    stress_k: Positive = 3.0
    stress_horizon: Duration = timedelta(hours=4)
    stress_move_min: Prob = 0.01
    drift_ann: NonNegative = 0.30
    baseline_fraction: Fraction = 0.0
    partial_cap: Annotated[float, Field(ge=0, lt=1)] = 0.75
    min_hedge_fraction: Fraction = 0.4
    full_min_confirmations: Annotated[int, Field(ge=0, le=3)] = 2
    div_entry: Positive = 0.08
    div_exit: NonNegative = 0.07
    oi_high_pct: Annotated[float, Field(allow_inf_nan=False)] = 5.0
    funding_neg_8h: Annotated[float, Field(allow_inf_nan=False)] = 0.0
    funding_z_entry: Positive = 2.0
    funding_z_exit: NonNegative = 1.9
    exit_confirm: Duration = timedelta(hours=1)
    exit_share: Prob = 0.5
    min_hold: Duration = timedelta(hours=4)
    hedge_ratio_max: Prob = 1.0
    max_hedge_usd: Annotated[float, Field(gt=0)] = 10_000_000.0
    beta_default: Positive = 1.0
    beta_min: Positive = 0.5
    beta_max: Positive = 1.5
    min_trade_usd: NonNegative = 1_000.0
    no_trade_band: Annotated[float, Field(ge=0, lt=1)] = 0.05
    max_daily_turnover: Positive = 3.0
    min_fresh_venues: Annotated[int, Field(ge=0)] = 2


class PolicyAltcoinConfig(Section):
    """Overrides of ``[policy]`` for the universe's altcoins; ``None``: the majors' value."""

    loss_budget: Prob | None = None
    risk_horizon: Duration | None = None
    risk_quantile: Annotated[float, Field(ge=0.5, lt=1)] | None = None
    stress_k: Positive | None = None
    stress_horizon: Duration | None = None
    stress_move_min: Prob | None = 0.02
    drift_ann: NonNegative | None = None
    baseline_fraction: Fraction | None = None
    partial_cap: Annotated[float, Field(ge=0, lt=1)] | None = None
    min_hedge_fraction: Fraction | None = None
    full_min_confirmations: Annotated[int, Field(ge=0, le=3)] | None = None
    div_entry: Positive | None = 0.12
    div_exit: NonNegative | None = 0.10
    oi_high_pct: Annotated[float, Field(allow_inf_nan=False)] | None = 8.0
    funding_neg_8h: Annotated[float, Field(allow_inf_nan=False)] | None = None
    funding_z_entry: Positive | None = 2.5
    funding_z_exit: NonNegative | None = 2.4
    exit_confirm: Duration | None = timedelta(hours=2)
    exit_share: Prob | None = None
    min_hold: Duration | None = timedelta(hours=8)
    hedge_ratio_max: Prob | None = 0.6
    max_hedge_usd: Annotated[float, Field(gt=0)] | None = 2_000_000.0
    beta_default: Positive | None = None
    beta_min: Positive | None = None
    beta_max: Positive | None = None
    min_trade_usd: NonNegative | None = None
    no_trade_band: Annotated[float, Field(ge=0, lt=1)] | None = 0.08
    max_daily_turnover: Positive | None = 2.0
    min_fresh_venues: Annotated[int, Field(ge=0)] | None = None


class PolicyConfig(PolicyValues):
    """``[policy]``: the majors' values, and ``[policy.altcoin]`` overrides."""

    altcoin: PolicyAltcoinConfig = PolicyAltcoinConfig()

    @model_validator(mode="after")
    def _ordered(self) -> PolicyConfig:
        _check_policy_order(self.model_dump(exclude={"altcoin"}), "policy")
        _check_policy_order(self._altcoin_values(), "policy.altcoin (with [policy])")
        return self

    def values_for(self, symbol: str, altcoins: Sequence[str]) -> dict[str, Any]:
        """Keyword arguments of ``PolicyParams`` for ``symbol``.

        The ``[policy]`` values, overridden by the non-empty ``[policy.altcoin]`` ones when
        ``symbol`` is one of ``altcoins`` (normally ``universe.altcoins``).
        """
        if symbol in altcoins:
            return self._altcoin_values()
        return self.model_dump(exclude={"altcoin"})

    def _altcoin_values(self) -> dict[str, Any]:
        values = self.model_dump(exclude={"altcoin"})
        overrides = self.altcoin.model_dump()
        values.update({k: v for k, v in overrides.items() if v is not None})
        return values


def _check_policy_order(values: Mapping[str, Any], where: str) -> None:
    """Cross-key rules of the policy (the ranges are checked per key)."""
    chains = (
        ("div_exit", "div_entry"),
        ("funding_z_exit", "funding_z_entry"),
    )
    for chain in chains:
        for low, high in itertools.pairwise(chain):
            if not values[low] < values[high]:
                raise ValueError(
                    f"{where}: {low} must be below {high}, got "
                    f"{low}={values[low]!r}, {high}={values[high]!r}"
                )
    weak = (
        ("baseline_fraction", "partial_cap"),
        ("min_hedge_fraction", "partial_cap"),
        ("beta_min", "beta_default", "beta_max"),
    )
    for chain in weak:
        for low, high in itertools.pairwise(chain):
            if not values[low] <= values[high]:
                raise ValueError(
                    f"{where}: {low} must be <= {high}, got "
                    f"{low}={values[low]!r}, {high}={values[high]!r}"
                )
