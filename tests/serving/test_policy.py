"""The hedge policy: tiers, hysteresis, limits, stale data, per-asset parameters."""

from __future__ import annotations

import dataclasses
import math
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.config import ConfigError, PolicyAltcoinConfig, PolicyValues, load_config
from serving.policy import (
    BUDGET_TIER,
    TIERS,
    Decision,
    PolicyParams,
    PolicyState,
    Signals,
    decide,
    with_position,
)

T0 = datetime(2025, 3, 1, 12, tzinfo=UTC)
P = PolicyParams()
CFG = load_config(env={})
ALT = PolicyParams(**CFG.policy.values_for("NEAR", CFG.universe.altcoins))
MILLION = 1_000_000.0
# the three confirmations, each on its own
DIVERGENCE = {"oi_div_xvenue": 0.09}
FUNDING_Z = {"funding_z": 2.5}
NEG_FUNDING_HIGH_OI = {"funding_8h": -0.0001, "oi_dev_24h_pct": 6.0}


def sig(ts: datetime = T0, **kw) -> Signals:
    """Calm signals on a $1M portfolio: vol at the reference, beta 1, four venues fresh."""
    base = {"portfolio_usd": MILLION, "fresh_venues": 4, "vol_ann": 0.6, "beta": 1.0}
    return Signals(ts=ts, **{**base, **kw})


def run(p: float | None, state: PolicyState | None = None, params: PolicyParams = P, **kw):
    return decide(p, sig(**kw), state or PolicyState(), params)


def held(fraction: float, **kw) -> PolicyState:
    """A state holding ``fraction`` of the $1M max hedge, fully filled."""
    return PolicyState(fraction=fraction, tier="elevated", hedge_usd=fraction * MILLION, **kw)


# --- tiers -----------------------------------------------------------------------------


@pytest.mark.parametrize("extra", [{}, DIVERGENCE, {**FUNDING_Z, **DIVERGENCE}])
def test_calm_is_baseline_even_with_confirmations(extra):
    d = run(0.10, **extra)
    assert (d.target_fraction, d.tier, d.trade) == (0.0, "baseline", False)
    assert any(r.startswith("calm: p=0.100") for r in d.reasons)


@pytest.mark.parametrize(("vol", "fraction"), [(0.6, 0.25), (0.1, 0.20), (1.5, 0.30), (None, 0.25)])
def test_early_signal_is_a_partial_hedge_of_20_to_30_pct(vol, fraction):
    d = run(0.35, vol_ann=vol)
    assert d.tier == "early"
    assert d.target_fraction == pytest.approx(fraction)
    assert d.target_usd == pytest.approx(fraction * MILLION)
    assert d.trade and d.trade_usd == pytest.approx(fraction * MILLION)


def test_each_confirmation_adds_an_increment():
    fractions = [
        run(0.35).target_fraction,
        run(0.35, **DIVERGENCE).target_fraction,
        run(0.35, **DIVERGENCE, **FUNDING_Z).target_fraction,
        run(0.35, **DIVERGENCE, **FUNDING_Z, **NEG_FUNDING_HIGH_OI).target_fraction,
    ]
    assert fractions == pytest.approx([0.25, 0.35, 0.45, 0.55])
    d = run(0.35, **DIVERGENCE, **FUNDING_Z, **NEG_FUNDING_HIGH_OI)
    assert d.confirmations == ("xvenue_divergence", "negative_funding_high_oi", "funding_extreme")


def test_negative_funding_needs_high_oi_to_confirm():
    assert run(0.35, funding_8h=-0.0001, oi_dev_24h_pct=2.0).confirmations == ()
    assert run(0.35, funding_8h=0.0001, oi_dev_24h_pct=9.0).confirmations == ()


@pytest.mark.parametrize(
    ("p", "tier", "fraction"), [(0.55, "elevated", 0.40), (0.75, "high", 0.55)]
)
def test_probability_steps(p, tier, fraction):
    d = run(p)
    assert (d.tier, d.target_fraction) == (tier, pytest.approx(fraction))


def test_partial_tiers_are_capped_below_full():
    d = run(0.80, **DIVERGENCE, **FUNDING_Z, **NEG_FUNDING_HIGH_OI)  # high, not extreme
    assert (d.tier, d.target_fraction) == ("high", pytest.approx(P.partial_cap))


def test_full_only_on_extreme_probability_with_several_confirmations():
    one = run(0.90, **DIVERGENCE)
    assert (one.tier, one.target_fraction) == ("high", pytest.approx(0.65))
    assert any("but 1 confirmations < 2: partial only" in r for r in one.reasons)
    two = run(0.90, **DIVERGENCE, **FUNDING_Z)
    assert (two.tier, two.target_fraction, two.target_usd) == ("full", 1.0, MILLION)


def test_notional_scales_with_beta_and_is_capped():
    assert run(0.90, **DIVERGENCE, **FUNDING_Z, beta=1.2).target_usd == pytest.approx(1.2 * MILLION)
    assert run(0.90, **DIVERGENCE, **FUNDING_Z, beta=9.0).max_usd == pytest.approx(1.5 * MILLION)
    assert run(0.90, **DIVERGENCE, **FUNDING_Z, beta=math.nan).max_usd == pytest.approx(MILLION)
    huge = run(0.90, **DIVERGENCE, **FUNDING_Z, portfolio_usd=50 * MILLION)
    assert huge.target_usd == P.max_hedge_usd == 10 * MILLION


def test_loss_budget_raises_the_hedge_only_above_the_early_level():
    params = dataclasses.replace(P, loss_budget=0.02)
    move = 3.0 * 2.0 * math.sqrt(4 / (365 * 24))  # stress_k x vol x sqrt(4h in years)
    needed = MILLION - 0.02 * MILLION / (0.35 * move)  # expected loss p x move x unhedged
    d = run(0.35, None, params, vol_ann=2.0)
    assert (d.tier, d.target_fraction) == (BUDGET_TIER, pytest.approx(needed / MILLION))
    assert any(r.startswith("loss budget 2.0% with p=0.350 x stress move 12.8%") for r in d.reasons)
    assert run(0.29, None, params, vol_ann=2.0).target_fraction == 0.0  # calm stays calm
    assert run(0.35, vol_ann=2.0).tier == "early"  # the default 5 % does not bind here


def test_loss_budget_that_cannot_be_met_says_so():
    d = decide(0.95, sig(vol_ann=3.0), PolicyState(), ALT)  # altcoin max is 60 % of exposure
    assert d.target_fraction == 1.0 and d.target_usd == pytest.approx(0.6 * MILLION)
    assert any(r.startswith("loss budget not met") for r in d.reasons)


# --- hysteresis ------------------------------------------------------------------------


def test_exit_needs_low_probability_and_normal_signals_for_the_confirm_duration():
    normal = {"oi_div_xvenue": 0.02, "funding_z": 0.5}
    bar = timedelta(minutes=30)
    d = run(0.60)  # elevated: 0.40
    steps = [
        (0.25, normal, "p >= exit 0.20"),  # inside the band
        (0.10, {"oi_div_xvenue": 0.05, "funding_z": 0.5}, "divergence 0.050 >= 0.040"),
        (0.10, {**normal, "funding_z": -1.2}, "|funding z| 1.20 >= 1.00"),
        (0.10, {**normal, **NEG_FUNDING_HIGH_OI, "funding_z": 0.0}, "negative funding"),
        (0.10, normal, "met for 0:00:00, need 2:00:00"),  # the clock starts
        (0.10, normal, "met for 0:30:00"),
        (0.10, {**normal, "funding_z": 1.5}, "|funding z| 1.50"),  # a break restarts it
    ]
    for i, (p, extra, why) in enumerate(steps, start=1):
        d = run(p, d.state, ts=T0 + i * bar, **extra)
        assert (d.target_fraction, d.tier, d.trade) == (pytest.approx(0.40), "elevated", False)
        assert any(why in r for r in d.reasons), (why, d.reasons)
    start = T0 + (len(steps) + 1) * bar
    for k in range(4):  # 0h, 0.5h, 1h, 1.5h: still held
        d = run(0.10, d.state, ts=start + k * bar, **normal)
        assert d.target_fraction == pytest.approx(0.40)
    d = run(0.10, d.state, ts=start + timedelta(hours=2), **normal)
    assert (d.target_fraction, d.tier) == (0.0, "baseline")
    assert d.trade_usd == pytest.approx(-0.40 * MILLION) and d.hedge_usd == 0.0
    assert any(r.startswith("exit: conditions met for 2:00:00") for r in d.reasons)


def test_missing_readings_count_as_normal_for_the_exit():
    state = held(0.4, exit_since=T0 - timedelta(hours=3))
    d = run(0.05, state, oi_div_xvenue=None, funding_z=math.nan, funding_8h=None)
    assert d.target_fraction == 0.0 and d.trade


def test_oscillating_probability_inside_the_band_trades_once():
    d, trades = None, 0
    for i in range(60):
        p = 0.32 if i % 2 == 0 else 0.22  # around p_early, never below p_exit
        d = run(p, d.state if d else None, ts=T0 + i * timedelta(minutes=5))
        trades += d.trade
        assert d.target_fraction == pytest.approx(0.25)
    assert trades == 1


# --- limits ----------------------------------------------------------------------------


def test_no_trade_band_holds_small_changes():
    d = run(0.35, held(0.25), vol_ann=0.66)  # vol scale 1.1: target 0.275, change $25k
    assert d.target_fraction == pytest.approx(0.275)
    assert (d.trade, d.trade_usd, d.hedge_usd) == (False, 0.0, 0.25 * MILLION)
    assert any(r.startswith("no-trade band: |change| $25,000 < $50,000") for r in d.reasons)


def test_min_trade_size():
    params = dataclasses.replace(P, no_trade_band=0.0)
    state = dataclasses.replace(held(0.25), hedge_usd=249_500.0)
    d = run(0.35, state, params)
    assert not d.trade
    assert any(r.startswith("min trade: |change| $500 < $1,000") for r in d.reasons)


def test_a_small_remainder_is_closed_when_the_target_is_zero():
    d = run(0.05, PolicyState(hedge_usd=500.0))
    assert d.trade_usd == -500.0 and d.hedge_usd == 0.0


def test_daily_turnover_cap_refuses_and_says_so():
    params = dataclasses.replace(P, max_daily_turnover=0.5)  # $500k a day on a $1M max
    full = {**DIVERGENCE, **FUNDING_Z}
    d = run(0.90, None, params, **full)
    assert (d.target_usd, d.trade_usd) == (MILLION, 500_000.0)
    assert any("increase cut from $1,000,000 to $500,000" in r for r in d.reasons)
    d = run(0.90, d.state, params, ts=T0 + timedelta(hours=1), **full)
    assert not d.trade and d.hedge_usd == 500_000.0
    assert any("daily limit reached, $500,000 increase refused" in r for r in d.reasons)
    d = run(0.90, d.state, params, ts=T0 + timedelta(days=1), **full)  # a new UTC day
    assert d.trade_usd == 500_000.0 and d.hedge_usd == MILLION
    assert d.state.turnover_usd == 500_000.0


def test_daily_turnover_cap_also_refuses_decreases():
    params = dataclasses.replace(P, max_daily_turnover=0.5)
    state = dataclasses.replace(
        held(1.0), exit_since=T0 - timedelta(hours=5), day=T0.date(), turnover_usd=500_000.0
    )
    d = run(0.05, state, params)
    assert d.target_fraction == 0.0 and not d.trade and d.hedge_usd == MILLION
    assert any("$1,000,000 decrease refused" in r for r in d.reasons)


# --- stale data and missing inputs ---------------------------------------------------------


def test_stale_data_may_increase_the_hedge():
    d = run(0.60, fresh_venues=1)
    assert d.trade_usd == pytest.approx(400_000.0)
    assert any(r.startswith("stale data: 1 fresh venues < 2") for r in d.reasons)


def test_stale_data_never_reduces_the_hedge():
    state = held(0.4, exit_since=T0 - timedelta(hours=5))
    d = run(0.05, state, fresh_venues=1)
    assert (d.target_fraction, d.trade, d.state.exit_since) == (0.4, False, None)
    smaller = run(0.60, held(0.4), fresh_venues=0, portfolio_usd=500_000.0)
    assert not smaller.trade and smaller.hedge_usd == 400_000.0
    assert any("reduction of $200,000 refused" in r for r in smaller.reasons)


@pytest.mark.parametrize("p", [None, math.nan])
def test_no_probability_holds(p):
    d = run(p, held(0.4, exit_since=T0 - timedelta(hours=5)))
    assert d.target_fraction == 0.4 and not d.trade
    assert "no probability: hold, no reduction" in d.reasons


def test_every_reading_missing_never_crashes():
    nan = math.nan
    blank = Signals(T0, MILLION, 4, nan, None, nan, None, nan, None)
    d = decide(0.5, blank, PolicyState(), P)
    assert (d.confirmations, d.tier, d.max_usd) == ((), "elevated", MILLION)


# --- per asset, configuration, errors ----------------------------------------------------


def test_altcoins_have_wider_thresholds_and_a_smaller_max():
    assert decide(0.35, sig(), PolicyState(), P).tier == "early"
    assert decide(0.35, sig(), PolicyState(), ALT).tier == "baseline"
    assert decide(0.45, sig(oi_div_xvenue=0.10), PolicyState(), P).confirmations
    alt = decide(0.45, sig(oi_div_xvenue=0.10, vol_ann=0.9), PolicyState(), ALT)
    assert alt.confirmations == () and alt.tier == "early"
    assert alt.target_usd == pytest.approx(0.25 * 0.6 * MILLION)


def test_config_keys_are_the_policy_parameters():
    names = {f.name for f in dataclasses.fields(PolicyParams)}
    assert names == set(PolicyValues.model_fields) == set(PolicyAltcoinConfig.model_fields)
    assert PolicyParams(**CFG.policy.values_for("BTC", CFG.universe.altcoins)) == P
    assert (ALT.p_early, ALT.hedge_ratio_max, ALT.exit_confirm) == (0.40, 0.6, timedelta(hours=4))


@pytest.mark.parametrize(
    ("env", "match"),
    [
        (
            {"OIHEDGE_POLICY__P_EXIT": "0.5"},
            r"'policy' \(environment\): policy: p_exit must be below p_early, got p_exit=0.5",
        ),
        (
            {"OIHEDGE_POLICY__ALTCOIN__P_EARLY": "0.2"},
            r"policy.altcoin \(with \[policy\]\): p_exit must be below p_early, got p_exit=0.25, "
            r"p_early=0.2",
        ),
        ({"OIHEDGE_POLICY__PARTIAL_CAP": "1.0"}, r"'policy.partial_cap' = 1.0 .*less than 1"),
        ({"OIHEDGE_POLICY__EXIT_CONFIRM": "soon"}, r"'policy.exit_confirm' = 'soon'"),
    ],
)
def test_bad_policy_config_is_named(env, match):
    with pytest.raises(ConfigError, match=match):
        load_config(env=env)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"p_exit": 0.4}, r"p_exit must be below p_early, got p_exit=0.4, p_early=0.3"),
        ({"p_extreme": 1.2}, r"p_extreme must be <= 1, got 1.2"),
        ({"partial_cap": 1.0}, r"partial_cap must be < 1 .*got 1.0"),
        ({"div_exit": 0.1}, r"div_exit must be in \[0, div_entry\), got div_exit=0.1"),
        ({"funding_z_exit": 3.0}, r"funding_z_exit must be in \[0, funding_z_entry\)"),
        ({"full_min_confirmations": 4}, r"full_min_confirmations must be in \[0, 3\], got 4"),
        ({"hedge_ratio_max": 1.5}, r"hedge_ratio_max must be in \(0, 1\] .*got 1.5"),
        ({"beta_min": 2.0}, r"beta_min <= beta_default <= beta_max, got 2.0, 1.0, 1.5"),
        ({"vol_ref": math.nan}, r"vol_ref must be a number, got nan"),
        ({"no_trade_band": 1.0}, r"no_trade_band must be in \[0, 1\), got 1.0"),
    ],
)
def test_bad_parameters_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PolicyParams(**kwargs)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: run(1.2), r"probability must be in \[0, 1\], got 1.2"),
        (lambda: run(0.5, portfolio_usd=-1.0), r"portfolio_usd must be .*>= 0, got -1.0"),
        (lambda: run(0.5, ts=datetime(2025, 1, 1)), r"signals.ts must be timezone-aware"),
        (
            lambda: run(0.5, PolicyState(last_ts=T0 + timedelta(hours=1))),
            r"signals.ts 2025-03-01T12:00:00\+00:00 is before the state's last bar",
        ),
        (
            lambda: run(0.5, PolicyState(fraction=1.5)),
            r"state.fraction must be in \[0, 1\], got 1.5",
        ),
        (lambda: with_position(PolicyState(), -5.0), r"hedge_usd must be .*>= 0, got -5.0"),
    ],
)
def test_bad_inputs_are_named(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_with_position_replaces_the_hedge_only():
    state = held(0.4)
    assert with_position(state, 123.0) == dataclasses.replace(state, hedge_usd=123.0)
    # every other field carried over, whatever it holds (with_position copies them one by one)
    full = PolicyState(
        fraction=0.55,
        tier="high",
        hedge_usd=1.0,
        exit_since=T0,
        day=T0.date(),
        turnover_usd=42.0,
        last_change=T0,
        last_ts=T0 + timedelta(hours=1),
    )
    for field in dataclasses.fields(PolicyState):
        assert getattr(full, field.name) != getattr(PolicyState(), field.name), field.name
    assert with_position(full, 7.0) == dataclasses.replace(full, hedge_usd=7.0)


# --- properties ----------------------------------------------------------------------------


def _maybe(lo: float, hi: float) -> st.SearchStrategy[float | None]:
    return st.one_of(st.none(), st.just(math.nan), st.floats(lo, hi))


SIGNALS = st.builds(
    Signals,
    ts=st.just(T0),
    portfolio_usd=st.floats(0, 1e8),
    fresh_venues=st.integers(0, 5),
    oi_div_xvenue=_maybe(0, 0.5),
    oi_dev_24h_pct=_maybe(-50, 50),
    funding_8h=_maybe(-0.01, 0.01),
    funding_z=_maybe(-6, 6),
    vol_ann=_maybe(0, 5),
    beta=_maybe(-2, 3),
)
STATES = st.builds(
    PolicyState,
    fraction=st.floats(0, 1),
    tier=st.sampled_from(TIERS),
    hedge_usd=st.floats(0, 2e7),
    exit_since=st.one_of(st.none(), st.integers(0, 600).map(lambda m: T0 - timedelta(minutes=m))),
    day=st.sampled_from([None, T0.date()]),
    turnover_usd=st.floats(0, 3e7),
)
PARAMS = st.sampled_from([P, ALT, dataclasses.replace(P, no_trade_band=0.0, min_trade_usd=0.0)])
PROB = st.floats(0, 1)


def _check_bounds(d: Decision, state: PolicyState) -> None:
    assert 0.0 <= d.target_fraction <= 1.0
    assert 0.0 <= d.target_usd <= d.max_usd * (1 + 1e-12)
    assert 0.0 <= d.hedge_usd <= max(d.max_usd, state.hedge_usd) * (1 + 1e-12) + 1e-9
    assert d.trade == (d.trade_usd != 0.0)


@settings(max_examples=300, deadline=None)
@given(p=PROB, signals=SIGNALS, state=STATES, params=PARAMS)
def test_target_is_within_zero_and_the_max(p, signals, state, params):
    _check_bounds(decide(p, signals, state, params), state)


@settings(max_examples=300, deadline=None)
@given(p1=PROB, p2=PROB, signals=SIGNALS, state=STATES, params=PARAMS)
def test_target_never_decreases_when_probability_rises(p1, p2, signals, state, params):
    """Monotone in p for one fixed state and fixed signals (the state carries the history)."""
    low, high = sorted((p1, p2))
    a, b = decide(low, signals, state, params), decide(high, signals, state, params)
    assert a.target_fraction <= b.target_fraction
    assert a.target_usd <= b.target_usd
    assert a.hedge_usd <= b.hedge_usd + 1e-9


@settings(max_examples=150, deadline=None)
@given(
    anywhere=PROB,
    in_band=st.floats(0.25, 0.40),  # at or above p_exit for both parameter sets
    n_bars=st.integers(2, 40),
    signals=SIGNALS,
    params=st.sampled_from([P, ALT]),
)
def test_no_flip_flop_on_a_probability_oscillating_in_the_band(
    anywhere, in_band, n_bars, signals, params
):
    """Alternating with a value inside the band, the hedge only ever goes one way: up."""
    state, fractions = PolicyState(), []
    for i in range(n_bars):
        p = anywhere if i % 2 == 0 else in_band
        d = decide(p, dataclasses.replace(signals, ts=T0 + i * timedelta(minutes=5)), state, params)
        assert d.trade_usd >= 0.0
        fractions.append(d.target_fraction)
        state = d.state
    assert fractions == sorted(fractions)
