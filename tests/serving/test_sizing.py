"""Sizing arithmetic and trade limits, one function at a time."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oihedge.serving.policy import sizing


@pytest.mark.parametrize(
    ("beta", "expected"),
    [(None, 1.0), (math.nan, 1.0), (math.inf, 1.0), (0.1, 0.5), (1.2, 1.2), (4.0, 1.5)],
)
def test_effective_beta(beta, expected):
    assert sizing.effective_beta(beta, default=1.0, lo=0.5, hi=1.5) == expected


def test_max_hedge_and_stress_move():
    assert sizing.max_hedge_usd(2e6, 1.2, hedge_ratio_max=0.5, cap_usd=1e7) == pytest.approx(1.2e6)
    assert sizing.max_hedge_usd(2e8, 1.0, hedge_ratio_max=1.0, cap_usd=1e7) == 1e7
    year = timedelta(days=365)
    assert sizing.stress_move(0.8, k=2.0, horizon=year / 4, floor=0.05) == pytest.approx(0.8)
    assert sizing.stress_move(None, k=2.0, horizon=year, floor=0.05) == 0.05
    assert sizing.stress_move(0.01, k=2.0, horizon=year, floor=0.05) == 0.05


LIMITS = {"allow_reduce": True, "band_usd": 50_000.0, "min_trade_usd": 1_000.0}


@pytest.mark.parametrize(
    ("target", "hedge", "left", "trade", "why"),
    [
        (300_000.0, 300_000.0, 1e9, 0.0, None),
        (340_000.0, 300_000.0, 1e9, 0.0, "no-trade band"),
        (400_000.0, 300_000.0, 1e9, 100_000.0, None),
        (0.0, 20_000.0, 1e9, -20_000.0, None),  # closing is never held by the band
        (400_000.0, 300_000.0, 60_000.0, 60_000.0, "turnover cap: increase cut"),
        (400_000.0, 300_000.0, 500.0, 0.0, "daily limit reached"),
        (0.0, 20_000.0, 0.0, 0.0, "daily limit reached, $20,000 decrease refused"),
    ],
)
def test_limit_trade(target, hedge, left, trade, why):
    got, reasons = sizing.limit_trade(target, hedge, turnover_left_usd=left, **LIMITS)
    assert got == trade
    assert (why is None and reasons == []) or any(why in r for r in reasons)


def test_limit_trade_refuses_reductions_on_stale_data():
    limits = {**LIMITS, "allow_reduce": False}
    assert sizing.limit_trade(0.0, 5e5, turnover_left_usd=1e9, **limits)[0] == 0.0
    assert sizing.limit_trade(9e5, 5e5, turnover_left_usd=1e9, **limits)[0] == 4e5


@settings(max_examples=300, deadline=None)
@given(
    t1=st.floats(0, 2e6),
    t2=st.floats(0, 2e6),
    hedge=st.floats(0, 2e6),
    left=st.floats(-1e5, 3e6),
    band=st.floats(0, 1e5),
    min_trade=st.floats(0, 1e4),
    allow=st.booleans(),
)
def test_hedge_after_the_limits_is_monotone_in_the_target(
    t1, t2, hedge, left, band, min_trade, allow
):
    kw = {
        "allow_reduce": allow,
        "band_usd": band,
        "min_trade_usd": min_trade,
        "turnover_left_usd": left,
    }
    low, high = sorted((t1, t2))
    a = hedge + sizing.limit_trade(low, hedge, **kw)[0]
    b = hedge + sizing.limit_trade(high, hedge, **kw)[0]
    assert a <= b + 1e-9
    assert abs(a - hedge) <= max(0.0, left) + 1e-9  # never beyond the turnover left
