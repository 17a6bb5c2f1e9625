"""The hedge policy: the derived level, the two parts, tiers, hysteresis, limits, stale data,
per-asset parameters."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oihedge.pipelines.cli.config import load_config
from oihedge.serving.policy.policy import (
    TIERS,
    VOL_TIER,
    Decision,
    PolicyParams,
    PolicyState,
    Signals,
    decide,
    smooth_probability,
    with_position,
)

T0 = datetime(2025, 3, 1, 12, tzinfo=UTC)
P = PolicyParams()
CFG = load_config(env={})
ALT = PolicyParams(**CFG.policy_params("NEAR"))
MILLION = 1_000_000.0
# the three confirmations, each on its own
DIVERGENCE = {"oi_div_xvenue": 0.09}
FUNDING_Z = {"funding_z": 2.5}
NEG_FUNDING_HIGH_OI = {"funding_8h": -0.0001, "oi_dev_24h_pct": 6.0}
# the derived entry level at the default signals, written out (oihedge.serving.policy.policy docstring):
# severity = stress_k x vol x sqrt(4h / 1y); cost = a round trip (fee 5 + half-spread 1 +
# 10 x vol bps, each way) + the forgone drift over 4 h
H_YEARS = 4 / (365 * 24)
SEVERITY = 3.0 * 0.6 * math.sqrt(H_YEARS)  # 3.85 %
COST = 2 * (5.0 + 1.0 + 10.0 * 0.6) / 1e4 + 0.30 * H_YEARS  # 0.254 %
P_ENTRY = COST / SEVERITY  # 0.0660: a calibrated model of a 2 % event reaches it


def sig(ts: datetime = T0, **kw) -> Signals:
    """Calm signals on a $1M portfolio: vol 60 %, beta 1, four venues fresh."""
    base = {"portfolio_usd": MILLION, "fresh_venues": 4, "vol_ann": 0.6, "beta": 1.0}
    return Signals(ts=ts, **{**base, **kw})


def run(p: float | None, state: PolicyState | None = None, params: PolicyParams = P, **kw):
    return decide(p, sig(**kw), state or PolicyState(), params)


def held(fraction: float, **kw) -> PolicyState:
    """A state holding ``fraction`` of the $1M max hedge, fully filled."""
    return PolicyState(fraction=fraction, tier="elevated", hedge_usd=fraction * MILLION, **kw)


# --- the derived level and the cascade part -----------------------------------------------


def test_the_entry_level_is_derived_from_cost_and_severity():
    d = run(0.01)
    assert d.pricing.severity == pytest.approx(SEVERITY)
    assert d.pricing.cost == pytest.approx(COST)
    assert d.pricing.p_entry == pytest.approx(P_ENTRY) and 0.05 < P_ENTRY < 0.08
    assert d.pricing.p_exit == pytest.approx(0.5 * P_ENTRY)
    # a fitted severity travels with the model and moves the level
    assert run(0.01, severity_k=6.0).pricing.p_entry == pytest.approx(COST / (2 * SEVERITY))
    # funding a short pays is a cost; funding it receives is not a reason to hedge
    paid = run(0.01, funding_8h=-0.001).pricing
    assert paid.cost == pytest.approx(COST + 0.001 * 0.5)
    assert run(0.01, funding_8h=0.001).pricing.cost == pytest.approx(COST)
    # a missing volatility: the severity floor and the cost model's fallback volatility
    blind = run(0.01, vol_ann=None).pricing
    assert blind.severity == P.stress_move_min
    assert blind.cost == pytest.approx(COST + 2 * 10.0 * (1.0 - 0.6) / 1e4)


@pytest.mark.parametrize("extra", [{}, DIVERGENCE, {**FUNDING_Z, **DIVERGENCE}])
def test_below_the_entry_level_is_baseline_even_with_confirmations(extra):
    d = run(0.95 * P_ENTRY, **extra)
    assert (d.target_fraction, d.tier, d.trade) == (0.0, "baseline", False)
    assert any(r.startswith(f"calm: p={0.95 * P_ENTRY:.4f} x severity 3.85%") for r in d.reasons)


@pytest.mark.parametrize(
    ("edge", "tier", "fraction"),
    [(1.8, "early", 4 / 9), (2.0, "elevated", 0.5), (3.0, "elevated", 2 / 3), (5.0, "high", 0.75)],
)
def test_the_hedge_is_the_share_of_the_expected_loss_above_the_cost(edge, tier, fraction):
    d = run(edge * P_ENTRY)
    assert (d.tier, d.target_fraction) == (tier, pytest.approx(fraction))
    assert d.trade and d.trade_usd == pytest.approx(fraction * MILLION)
    assert any(f"edge {edge:.1f} -> {fraction:.3f}" in r for r in d.reasons)


def test_a_cascade_hedge_below_the_minimum_fraction_is_not_taken():
    # edge 1.5 prices a third of the max hedge, below min_hedge_fraction 0.4
    d = run(1.5 * P_ENTRY)
    assert (d.tier, d.target_fraction, d.trade) == ("baseline", 0.0, False)
    assert any(
        r.startswith("calm: ") and "edge 1.50: hedge 0.333 < min_hedge_fraction 0.40" in r
        for r in d.reasons
    )
    # the minimum sits at edge 1 / (1 - 0.4): just above it the part is taken
    assert run(1.01 / 0.6 * P_ENTRY).target_fraction == pytest.approx(1 - 0.6 / 1.01)
    # without a minimum, the same edge hedges its third
    free = dataclasses.replace(P, min_hedge_fraction=0.0)
    assert run(1.5 * P_ENTRY, params=free).target_fraction == pytest.approx(1 / 3)
    # a hedge already held is not dropped by the minimum: the exit rules decide that
    kept = run(1.5 * P_ENTRY, state=held(0.5, last_change=T0 - timedelta(days=1)))
    assert (kept.target_fraction, kept.trade) == (0.5, False)


def test_confirmations_are_named():
    d = run(2 * P_ENTRY, **DIVERGENCE, **FUNDING_Z, **NEG_FUNDING_HIGH_OI)
    assert d.confirmations == ("xvenue_divergence", "negative_funding_high_oi", "funding_extreme")


def test_negative_funding_needs_high_oi_to_confirm():
    assert run(0.35, funding_8h=-0.0001, oi_dev_24h_pct=2.0).confirmations == ()
    assert run(0.35, funding_8h=0.0001, oi_dev_24h_pct=9.0).confirmations == ()


def test_full_only_at_eight_times_the_entry_level_with_several_confirmations():
    one = run(9 * P_ENTRY, **DIVERGENCE)
    assert (one.tier, one.target_fraction) == ("high", pytest.approx(P.partial_cap))
    assert any("but 1 confirmations < 2: partial only" in r for r in one.reasons)
    two = run(9 * P_ENTRY, **DIVERGENCE, **FUNDING_Z)
    assert (two.tier, two.target_fraction, two.target_usd) == ("full", 1.0, MILLION)


def test_notional_scales_with_beta_and_is_capped():
    assert run(0.90, **DIVERGENCE, **FUNDING_Z, beta=1.2).target_usd == pytest.approx(1.2 * MILLION)
    assert run(0.90, **DIVERGENCE, **FUNDING_Z, beta=9.0).max_usd == pytest.approx(1.5 * MILLION)
    assert run(0.90, **DIVERGENCE, **FUNDING_Z, beta=math.nan).max_usd == pytest.approx(MILLION)
    huge = run(0.90, **DIVERGENCE, **FUNDING_Z, portfolio_usd=50 * MILLION)
    assert huge.target_usd == P.max_hedge_usd == 10 * MILLION


# --- the ordinary part: volatility against the risk budget ---------------------------------


def test_a_quiet_market_stays_unhedged():
    d = run(0.01, vol_forecast_ann=0.8)
    tail = 1.6448536 * 0.8 * math.sqrt(H_YEARS)  # 2.8 % over 4 h < the 5 % budget
    assert d.pricing.tail_loss == pytest.approx(tail)
    assert (d.target_fraction, d.tier) == (0.0, "baseline")


def test_a_volatile_market_is_hedged_to_the_risk_budget():
    d = run(0.01, vol_forecast_ann=2.0)
    tail = 1.6448536 * 2.0 * math.sqrt(H_YEARS)  # 7.0 %
    assert (d.tier, d.target_fraction) == (VOL_TIER, pytest.approx(1 - 0.05 / tail))
    assert any(r.startswith("vol target: tail loss 7.03% over 4:00:00") for r in d.reasons)
    # the larger part wins: a cascade edge above the volatility hedge takes over
    assert run(5 * P_ENTRY, vol_forecast_ann=2.0).tier == "high"
    # without a forecast the policy reads the realised volatility
    assert run(0.01, vol_ann=2.0).tier == VOL_TIER


def test_the_volatility_part_is_capped_below_full():
    d = decide(0.0, sig(vol_forecast_ann=20.0), PolicyState(), ALT)
    assert d.target_fraction == pytest.approx(ALT.partial_cap)
    assert d.target_usd == pytest.approx(ALT.partial_cap * 0.6 * MILLION)


# --- hysteresis ------------------------------------------------------------------------


def test_exit_needs_low_probability_and_normal_signals_for_the_confirm_duration():
    params = dataclasses.replace(
        P, min_hold=timedelta(0), div_exit=0.04, funding_z_exit=1.0, exit_confirm=timedelta(hours=2)
    )
    normal = {"oi_div_xvenue": 0.02, "funding_z": 0.5}
    bar = timedelta(minutes=30)
    low = 0.3 * P_ENTRY  # below p_exit = 0.5 x p_entry
    d = run(2 * P_ENTRY, None, params)  # elevated: 0.50
    steps = [
        (0.6 * P_ENTRY, normal, f"p >= exit {0.5 * P_ENTRY:.4f}"),  # inside the band
        (low, {"oi_div_xvenue": 0.05, "funding_z": 0.5}, "divergence 0.050 >= 0.040"),
        (low, {**normal, "funding_z": -1.2}, "|funding z| 1.20 >= 1.00"),
        (low, {**normal, **NEG_FUNDING_HIGH_OI, "funding_z": 0.0}, "negative funding"),
        (low, normal, "met for 0:00:00, need 2:00:00"),  # the clock starts
        (low, normal, "met for 0:30:00"),
        (low, {**normal, "funding_z": 1.5}, "|funding z| 1.50"),  # a break restarts it
    ]
    for i, (p, extra, why) in enumerate(steps, start=1):
        d = run(p, d.state, params, ts=T0 + i * bar, **extra)
        assert (d.target_fraction, d.tier, d.trade) == (pytest.approx(0.5), "elevated", False)
        assert any(why in r for r in d.reasons), (why, d.reasons)
    start = T0 + (len(steps) + 1) * bar
    for k in range(4):  # 0h, 0.5h, 1h, 1.5h: still held
        d = run(low, d.state, params, ts=start + k * bar, **normal)
        assert d.target_fraction == pytest.approx(0.5)
    d = run(low, d.state, params, ts=start + timedelta(hours=2), **normal)
    assert (d.target_fraction, d.tier) == (0.0, "baseline")
    assert d.trade_usd == pytest.approx(-0.5 * MILLION) and d.hedge_usd == 0.0
    assert any(r.startswith("exit: conditions met for 2:00:00") for r in d.reasons)


def test_a_hedge_is_held_for_the_minimum_holding_time():
    d = run(2 * P_ENTRY)
    for hours in (1, 3, 5):  # normal from the first hour on: the exit clock runs from there
        d = run(0.01, d.state, ts=T0 + timedelta(hours=hours))
        if hours < 4:
            assert d.target_fraction == pytest.approx(0.5)
            assert any(f"held for {hours}:00:00, minimum 4:00:00" in r for r in d.reasons)
    assert (d.target_fraction, d.trade_usd) == (0.0, pytest.approx(-0.5 * MILLION))


def test_missing_readings_count_as_normal_for_the_exit():
    state = held(0.4, exit_since=T0 - timedelta(hours=3))
    d = run(0.01, state, oi_div_xvenue=None, funding_z=math.nan, funding_8h=None)
    assert d.target_fraction == 0.0 and d.trade


def test_oscillating_probability_inside_the_band_trades_once():
    d, trades = None, 0
    for i in range(60):
        p = (2.0 if i % 2 == 0 else 0.6) * P_ENTRY  # around p_entry, never below p_exit
        d = run(p, d.state if d else None, ts=T0 + i * timedelta(minutes=5))
        trades += d.trade
        assert d.target_fraction == pytest.approx(0.5)
    assert trades == 1


# --- limits ----------------------------------------------------------------------------


def test_no_trade_band_holds_small_changes():
    d = run(P_ENTRY / (1 - 0.525), held(0.5))  # target 0.525: a change of $25k
    assert d.target_fraction == pytest.approx(0.525)
    assert (d.trade, d.trade_usd, d.hedge_usd) == (False, 0.0, 0.5 * MILLION)
    assert any(r.startswith("no-trade band: |change| $25,000 < $50,000") for r in d.reasons)


def test_min_trade_size():
    params = dataclasses.replace(P, no_trade_band=0.0)
    state = dataclasses.replace(held(0.5), hedge_usd=499_500.0)
    d = run(2 * P_ENTRY, state, params)
    assert not d.trade
    assert any(r.startswith("min trade: |change| $500 < $1,000") for r in d.reasons)


def test_a_small_remainder_is_closed_when_the_target_is_zero():
    d = run(0.01, PolicyState(hedge_usd=500.0))
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
    d = run(0.01, state, params)
    assert d.target_fraction == 0.0 and not d.trade and d.hedge_usd == MILLION
    assert any("$1,000,000 decrease refused" in r for r in d.reasons)


# --- stale data and missing inputs ---------------------------------------------------------


def test_stale_data_may_increase_the_hedge():
    d = run(2 * P_ENTRY, fresh_venues=1)
    assert d.trade_usd == pytest.approx(500_000.0)
    assert any(r.startswith("stale data: 1 fresh venues < 2") for r in d.reasons)


def test_stale_data_never_reduces_the_hedge():
    state = held(0.4, exit_since=T0 - timedelta(hours=5))
    d = run(0.01, state, fresh_venues=1)
    assert (d.target_fraction, d.trade, d.state.exit_since) == (0.4, False, None)
    smaller = run(2 * P_ENTRY, held(0.4), fresh_venues=0, portfolio_usd=500_000.0)
    assert not smaller.trade and smaller.hedge_usd == 400_000.0
    assert any("reduction of $150,000 refused" in r for r in smaller.reasons)


@pytest.mark.parametrize("p", [None, math.nan])
def test_no_probability_holds(p):
    d = run(p, held(0.4, exit_since=T0 - timedelta(hours=5)))
    assert d.target_fraction == 0.4 and not d.trade
    assert "no probability: hold, no reduction" in d.reasons


def test_every_reading_missing_never_crashes():
    nan = math.nan
    blank = Signals(T0, MILLION, 4, nan, None, nan, None, nan, None, nan, None)
    d = decide(0.6, blank, PolicyState(), P)
    # no volatility: severity at its 1 % floor, slippage at the cost model's fallback
    # volatility (100 %): one way 5 + 1 + 10 bps, p_entry 0.33 (edge 1.8: early)
    assert (d.confirmations, d.tier, d.max_usd) == ((), "early", MILLION)
    assert d.pricing.p_entry == pytest.approx((2 * 16.0 / 1e4 + 0.30 * H_YEARS) / 0.01)
    assert math.isnan(d.pricing.tail_loss)
    assert d.pricing.record()["tail_loss"] is None  # a record never carries NaN
    assert d.pricing.record()["p_entry"] == d.pricing.p_entry


# --- per asset, errors -------------------------------------------------------------------


def test_altcoins_have_wider_thresholds_a_smaller_max_and_a_longer_hold():
    assert decide(0.45, sig(oi_div_xvenue=0.10), PolicyState(), P).confirmations
    alt = decide(2 * P_ENTRY, sig(oi_div_xvenue=0.10), PolicyState(), ALT)
    assert alt.confirmations == () and alt.tier == "elevated"
    assert alt.target_usd == pytest.approx(0.5 * 0.6 * MILLION)
    assert (ALT.min_hold, ALT.exit_confirm) == (timedelta(hours=8), timedelta(hours=2))
    # a higher severity floor: with no volatility reading an altcoin cascade is worth 2 %
    blind = Signals(T0, MILLION, 4)
    assert decide(0.0, blind, PolicyState(), ALT).pricing.severity == 0.02
    assert decide(0.0, blind, PolicyState(), P).pricing.severity == 0.01


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
        p_smooth=0.03,
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
    vol_forecast_ann=_maybe(0, 5),
    beta=_maybe(-2, 3),
    severity_k=_maybe(-1, 10),
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
    in_band=st.floats(0.5, 1.0),  # at or above any p_exit (exit_share 0.5 x p_entry <= 1)
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


# --- the smoothed probability ---------------------------------------------------------


def test_the_probability_is_smoothed_over_time_not_over_bars():
    first = PolicyState(last_ts=T0, p_smooth=0.01)
    # 15 min after a bar (one half-life) the old value keeps half its weight, whatever
    # the bar length: three 5-min bars give the same weight (0.5) as one 15-min step
    assert smooth_probability(0.09, T0 + timedelta(minutes=15), first, P.p_halflife) == (
        pytest.approx(0.05)
    )
    q, state = 0.01, first
    for k in range(1, 4):
        q = smooth_probability(0.09, T0 + timedelta(minutes=5 * k), state, P.p_halflife)
        state = PolicyState(last_ts=T0 + timedelta(minutes=5 * k), p_smooth=q)
    assert q == pytest.approx(0.05)
    # the first probability, no previous value, a zero half-life: p itself; no p: held
    assert smooth_probability(0.2, T0, PolicyState(), P.p_halflife) == 0.2
    assert smooth_probability(0.2, T0 + timedelta(hours=1), first, timedelta(0)) == 0.2
    assert smooth_probability(None, T0 + timedelta(hours=1), first, P.p_halflife) == 0.01
    assert smooth_probability(None, T0, PolicyState(), P.p_halflife) is None
    # a probability that does not move leaves the average exactly where it is (no
    # rounding drift, no "smoothed" line in the log for a flat p)
    flat = PolicyState(last_ts=T0, p_smooth=0.16)
    assert smooth_probability(0.16, T0 + timedelta(minutes=5), flat, P.p_halflife) == 0.16


def test_a_one_bar_spike_opens_no_hedge_and_a_persistent_rise_does():
    calm = PolicyState(last_ts=T0 - timedelta(minutes=5), p_smooth=0.01)
    # p jumps to 3 x p_entry for one 5-min bar: q = 0.794 x 0.01 + 0.206 x 0.198 = 0.049
    spike = decide(3 * P_ENTRY, sig(), calm, P)
    assert spike.state.p_smooth == pytest.approx(0.7937 * 0.01 + 0.2063 * 3 * P_ENTRY, rel=1e-3)
    assert spike.target_fraction == 0.0 and not spike.trade
    assert any("smoothed" in r for r in spike.reasons)
    back = decide(0.01, sig(T0 + timedelta(minutes=5)), spike.state, P)
    assert back.target_fraction == 0.0  # the spike is gone: no round trip was paid
    # the same p held: q = 0.049, 0.080, 0.104, 0.123: it crosses 1.67 x p_entry = 0.110
    # (the 40 % minimum hedge) at the 4th bar, 15 min after the rise
    state, opened = calm, None
    for k in range(6):
        d = decide(3 * P_ENTRY, sig(T0 + timedelta(minutes=5 * k)), state, P)
        state = d.state
        if opened is None and d.target_fraction > 0:
            opened = k
    assert opened == 3
    # after six bars (two half-lives) q has come three quarters of the way
    assert state.p_smooth == pytest.approx(0.25 * 0.01 + 0.75 * 3 * P_ENTRY)
    # without smoothing the first bar opens it
    assert decide(3 * P_ENTRY, sig(), calm, replace(P, p_halflife=timedelta(0))).trade


def test_a_missing_probability_holds_the_smoothed_value():
    state = PolicyState(last_ts=T0 - timedelta(minutes=5), p_smooth=0.05)
    d = decide(None, sig(), state, P)
    assert d.state.p_smooth == 0.05
