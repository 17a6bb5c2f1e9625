"""PolicyParams: the one declaration of the policy's parameters and of their checks."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest

from oihedge.serving.policy.params import PolicyParams, check_relations, check_value


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"exit_share": 0.0}, r"exit_share must be in \(0, 1\], got 0.0"),
        ({"risk_quantile": 1.0}, r"risk_quantile must be in \[0.5, 1\), got 1.0"),
        ({"stress_k": 0.0}, r"stress_k must be > 0, got 0.0"),
        ({"drift_ann": -0.1}, r"drift_ann must be >= 0, got -0.1"),
        ({"min_hold": timedelta(hours=-1)}, r"min_hold must be >= 0"),
        ({"partial_cap": 1.0}, r"partial_cap must be < 1 .*got 1.0"),
        ({"div_exit": 0.1}, r"div_exit must be in \[0, div_entry\), got div_exit=0.1"),
        ({"funding_z_exit": 3.0}, r"funding_z_exit must be in \[0, funding_z_entry\)"),
        ({"full_min_confirmations": 4}, r"full_min_confirmations must be in \[0, 3\], got 4"),
        ({"hedge_ratio_max": 1.5}, r"hedge_ratio_max must be in \(0, 1\] .*got 1.5"),
        ({"beta_min": 2.0}, r"beta_min <= beta_default <= beta_max, got 2.0, 1.0, 1.5"),
        ({"loss_budget": math.nan}, r"loss_budget must be a number, got nan"),
        ({"no_trade_band": 1.0}, r"no_trade_band must be in \[0, 1\), got 1.0"),
    ],
)
def test_bad_parameters_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PolicyParams(**kwargs)


@pytest.mark.parametrize(
    ("name", "value", "match"),
    [
        ("partial_cap", -0.1, r"^partial_cap must be >= 0, got -0.1$"),
        ("max_hedge_usd", math.inf, None),  # no cap
        ("stress_k", math.inf, r"^stress_k must be finite, got inf$"),
        ("oi_high_pct", -20.0, None),  # any finite level
        ("risk_horizon", timedelta(0), r"^risk_horizon must be > 0, got "),
        ("exit_confirm", timedelta(0), None),
    ],
)
def test_a_value_is_checked_against_its_own_range_alone(name, value, match):
    if match is None:
        assert check_value(name, value) == value
    else:
        with pytest.raises(ValueError, match=match):
            check_value(name, value)


def test_the_relations_are_checked_on_a_whole_set():
    values = vars(PolicyParams())
    check_relations(values)
    with pytest.raises(ValueError, match=r"^min_hedge_fraction must be in \[0, partial_cap=0.3\]"):
        check_relations({**values, "partial_cap": 0.3})
    with pytest.raises(ValueError, match=r"^funding_z_exit must be in \[0, funding_z_entry\)"):
        check_relations({**values, "funding_z_entry": 1.0})
