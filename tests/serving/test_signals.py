"""Feature row -> policy signals: every unit conversion, missing readings, the fallback."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

from oihedge.features import formulas
from oihedge.features.registry import FEATURES
from oihedge.serving.policy.policy import PolicyParams, confirmations
from oihedge.serving.policy.signals import (
    DIVERGENCE,
    FUNDING,
    FUNDING_FALLBACK,
    FUNDING_Z,
    OI_DEV,
    SIGNAL_FEATURES,
    VOL,
    VOL_WINDOWS,
    annualised_vol,
    bp_to_fraction,
    pp_to_fraction,
    signals_from_row,
)

T0 = datetime(2025, 3, 1, 12, tzinfo=UTC)
MISSING = [None, math.nan, math.inf, -math.inf]


def row(**kw: float | None) -> dict[str, float | None]:
    base = {DIVERGENCE: 9.0, OI_DEV: 6.5, FUNDING: -1.5, FUNDING_FALLBACK: 2.0, FUNDING_Z: 2.4}
    return {**base, VOL: 60.0 / math.sqrt(365), **kw}


def test_the_signal_features_exist_in_the_units_converted_here():
    units = {DIVERGENCE: "pp", OI_DEV: "%", FUNDING: "bp/8h", FUNDING_FALLBACK: "bp/8h"}
    units |= {FUNDING_Z: "z", **{v: "%/sqrt(day)" for v in VOL_WINDOWS}}
    assert set(units) == set(SIGNAL_FEATURES)
    for name, unit in units.items():
        assert FEATURES[name].unit == unit, name


@pytest.mark.parametrize(
    ("pp", "fraction"), [(8.0, 0.08), (0.0, 0.0), (-2.5, -0.025), (36.4, 0.364)]
)
def test_percentage_points_to_fraction(pp, fraction):
    assert pp_to_fraction(pp) == pytest.approx(fraction, abs=1e-15)


@pytest.mark.parametrize(("bp", "fraction"), [(1.0, 1e-4), (-6.5, -6.5e-4), (0.0, 0.0)])
def test_basis_points_to_fraction(bp, fraction):
    assert bp_to_fraction(bp) == pytest.approx(fraction, abs=1e-18)


def test_daily_vol_percent_to_annualised_fraction():
    # 60 %/year is 60 / sqrt(365) = 3.1405 % per sqrt(day)
    assert annualised_vol(60.0 / math.sqrt(365)) == pytest.approx(0.60, rel=1e-12)
    assert annualised_vol(1.0) == pytest.approx(math.sqrt(365) / 100, rel=1e-12)
    assert annualised_vol(0.0) == 0.0
    assert annualised_vol(-1.0) is None


def test_annualised_vol_inverts_the_feature_formula():
    """The feature is sqrt(mean r^2 x bars per day) x 100 (oihedge.features.formulas); annualised
    it must be the per-bar volatility x sqrt(bars per year)."""
    mean_square, bars_per_day = 0.002**2, 288.0
    daily_pct = formulas.daily_vol_pct(formulas.SCALAR_OPS, mean_square, bars_per_day)
    assert annualised_vol(daily_pct) == pytest.approx(0.002 * math.sqrt(288 * 365), rel=1e-12)


@pytest.mark.parametrize("bad", MISSING)
def test_missing_readings_stay_missing(bad):
    assert pp_to_fraction(bad) is None
    assert bp_to_fraction(bad) is None
    assert annualised_vol(bad) is None


def test_row_to_signals():
    s = signals_from_row(row(), ts=T0, portfolio_usd=2e6, fresh_venues=3)
    assert (s.ts, s.portfolio_usd, s.fresh_venues) == (T0, 2e6, 3)
    assert s.oi_div_xvenue == pytest.approx(0.09)
    assert s.oi_dev_24h_pct == 6.5  # the policy reads percent
    assert s.funding_8h == pytest.approx(-1.5e-4)  # the OI-weighted rate, not the mean
    assert s.funding_z == 2.4
    assert s.vol_ann == pytest.approx(0.60)
    assert s.beta is None  # same-instrument hedge: the policy's beta_default


def test_funding_falls_back_to_the_mean_rate_without_oi_weights():
    s = signals_from_row(row(**{FUNDING: None}), ts=T0, portfolio_usd=1.0, fresh_venues=2)
    assert s.funding_8h == pytest.approx(2.0e-4)
    s = signals_from_row(
        row(**{FUNDING: math.nan, FUNDING_FALLBACK: None}), ts=T0, portfolio_usd=1.0, fresh_venues=2
    )
    assert s.funding_8h is None


def test_absent_and_nan_features_are_none():
    s = signals_from_row({VOL: math.nan}, ts=T0, portfolio_usd=1.0, fresh_venues=0, beta=math.nan)
    assert (s.oi_div_xvenue, s.oi_dev_24h_pct, s.funding_8h, s.funding_z, s.vol_ann) == (
        None,
        None,
        None,
        None,
        None,
    )
    assert s.beta is None


def test_a_given_beta_is_passed_on():
    s = signals_from_row(row(), ts=T0, portfolio_usd=1.0, fresh_venues=2, beta=0.8)
    assert s.beta == 0.8


def test_converted_signals_confirm_at_the_policy_levels():
    """9 pp of divergence is above div_entry (8 %); z 2.4 is extreme; funding -1.5 bp with
    OI 6.5 % above its mean is negative funding with high OI: all three confirm."""
    s = signals_from_row(row(), ts=T0, portfolio_usd=1.0, fresh_venues=2)
    assert confirmations(s, PolicyParams()) == (
        "xvenue_divergence",
        "negative_funding_high_oi",
        "funding_extreme",
    )
    calm = signals_from_row(
        row(**{DIVERGENCE: 7.9, FUNDING: 0.5, FUNDING_Z: 1.9}),
        ts=T0,
        portfolio_usd=1.0,
        fresh_venues=2,
    )
    assert confirmations(calm, PolicyParams()) == ()
