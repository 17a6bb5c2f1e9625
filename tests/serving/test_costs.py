"""The cost model: fees, slippage and funding charged exactly as documented."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oihedge.pipelines.cli.config import load_config
from oihedge.serving.policy.costs import MAX_SLIPPAGE_BPS, CostBreakdown, CostModel

MODEL = CostModel(
    taker_fee_bps=5.0,
    slippage_base_bps=1.0,
    slippage_size_bps=300.0,
    slippage_vol_bps=10.0,
    stress_multiplier=3.0,
    fallback_volume_24h_usd=64_000_000.0,
    fallback_vol_ann=1.0,
)
EXACT = {"rel": 1e-12}


def test_fee_and_slippage_are_exact():
    # 1M of 64M daily volume: sqrt(1/64) = 0.125 -> 300 x 0.125 = 37.5 bps of impact;
    # vol 50 %/yr -> 10 x 0.5 = 5 bps; half-spread 1 bps: 43.5 bps in all.
    cost = MODEL.trade_cost(1_000_000.0, 100.0, vol_ann=0.5, volume_24h_usd=64_000_000.0)
    assert cost.fee_usd == pytest.approx(500.0, **EXACT)
    assert cost.slippage_bps == pytest.approx(43.5, **EXACT)
    assert cost.slippage_usd == pytest.approx(4_350.0, **EXACT)
    assert cost.total_usd == pytest.approx(4_850.0, **EXACT)
    assert cost.fill_price == pytest.approx(100.435, **EXACT)  # a buy pays up


def test_sell_fills_below_the_price_and_costs_the_same():
    buy = MODEL.trade_cost(1_000_000.0, 100.0, vol_ann=0.5, volume_24h_usd=64_000_000.0)
    sell = MODEL.trade_cost(-1_000_000.0, 100.0, vol_ann=0.5, volume_24h_usd=64_000_000.0)
    assert sell.notional_usd == -1_000_000.0
    assert sell.fill_price == pytest.approx(99.565, **EXACT)
    assert (sell.fee_usd, sell.slippage_usd) == (buy.fee_usd, buy.slippage_usd)


def test_stress_multiplies_the_whole_slippage_not_the_fee():
    calm = MODEL.trade_cost(1_000_000.0, 100.0, vol_ann=0.5, volume_24h_usd=64_000_000.0)
    stress = MODEL.trade_cost(
        1_000_000.0, 100.0, vol_ann=0.5, volume_24h_usd=64_000_000.0, stress=True
    )
    assert stress.slippage_bps == pytest.approx(3 * 43.5, **EXACT)
    assert stress.slippage_usd == pytest.approx(13_050.0, **EXACT)
    assert stress.fee_usd == calm.fee_usd


def test_slippage_grows_with_size_and_volatility():
    kw = {"volume_24h_usd": 1e8}
    sizes = [MODEL.slippage_bps(n, vol_ann=0.6, **kw) for n in (1e4, 1e5, 1e6, 1e7)]
    vols = [MODEL.slippage_bps(1e6, vol_ann=v, **kw) for v in (0.2, 0.6, 1.5, 3.0)]
    assert sizes == sorted(sizes) and len(set(sizes)) == 4
    assert vols == sorted(vols) and len(set(vols)) == 4


@pytest.mark.parametrize("volume", [None, math.nan, 0.0, -5.0])
def test_unknown_volume_uses_the_fallback(volume):
    cost = MODEL.trade_cost(1_000_000.0, 100.0, vol_ann=0.5, volume_24h_usd=volume)
    assert cost.slippage_bps == pytest.approx(43.5, **EXACT)  # fallback is 64M here


@pytest.mark.parametrize("vol", [None, math.nan])
def test_unknown_volatility_uses_the_fallback(vol):
    bps = MODEL.slippage_bps(1_000_000.0, vol_ann=vol, volume_24h_usd=64_000_000.0)
    assert bps == pytest.approx(1.0 + 37.5 + 10.0 * 1.0, **EXACT)


def test_slippage_is_capped_so_a_sell_never_fills_at_zero():
    cost = MODEL.trade_cost(-1e12, 10.0, vol_ann=5.0, volume_24h_usd=1e6, stress=True)
    assert cost.slippage_bps == MAX_SLIPPAGE_BPS
    assert cost.fill_price == pytest.approx(5.0, **EXACT)


def test_zero_order_costs_nothing():
    cost = MODEL.trade_cost(0.0, 50.0, vol_ann=0.5, volume_24h_usd=1e8, stress=True)
    assert cost == CostBreakdown(0.0, 0.0, 0.0, 0.0, 50.0)


@pytest.mark.parametrize(
    ("short", "rate", "dt", "expected"),
    [
        (1_000_000.0, 0.0001, timedelta(hours=8), -100.0),  # positive rate: the short receives
        (1_000_000.0, 0.0001, timedelta(hours=1), -12.5),  # pro rata
        (1_000_000.0, -0.0002, timedelta(hours=4), 100.0),  # negative rate: the short pays
        (2_000_000.0, 0.0003, timedelta(days=1), -1_800.0),
        (1_000_000.0, 0.0001, timedelta(0), 0.0),
        (0.0, 0.01, timedelta(hours=8), 0.0),
    ],
)
def test_funding_sign_and_amount(short, rate, dt, expected):
    assert MODEL.funding_cost(short, rate, dt) == pytest.approx(expected, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (
            lambda: MODEL.trade_cost(1e6, 0.0, vol_ann=0.5, volume_24h_usd=1e8),
            r"price must be a finite number > 0, got 0.0",
        ),
        (
            lambda: MODEL.trade_cost(math.inf, 1.0, vol_ann=0.5, volume_24h_usd=1e8),
            r"notional_usd must be finite, got inf",
        ),
        (
            lambda: MODEL.trade_cost(1e6, 1.0, vol_ann=-0.1, volume_24h_usd=1e8),
            r"vol_ann must be a finite number >= 0, got -0.1",
        ),
        (
            lambda: MODEL.trade_cost(1e6, 1.0, vol_ann=0.5, volume_24h_usd=math.inf),
            r"volume_24h_usd must be finite, got inf",
        ),
        (
            lambda: MODEL.funding_cost(-1.0, 0.0001, timedelta(hours=1)),
            r"short_notional_usd must be >= 0, got -1.0",
        ),
        (
            lambda: MODEL.funding_cost(1.0, math.nan, timedelta(hours=1)),
            r"funding_rate_8h must be finite, got nan",
        ),
        (
            lambda: MODEL.funding_cost(1.0, 0.0001, timedelta(hours=-1)),
            r"dt must be >= 0, got datetime.timedelta\(days=-1",
        ),
    ],
)
def test_bad_arguments_are_named(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"taker_fee_bps": -1.0}, r"taker_fee_bps must be a finite number >= 0, got -1.0"),
        ({"stress_multiplier": 0.5}, r"stress_multiplier must be >= 1, got 0.5"),
        ({"fallback_volume_24h_usd": 0.0}, r"fallback_volume_24h_usd must be > 0, got 0.0"),
        ({"slippage_vol_bps": math.nan}, r"slippage_vol_bps must be a finite number >= 0"),
    ],
)
def test_bad_parameters_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CostModel(**kwargs)


def test_config_builds_the_default_model():
    """``[costs]`` keys are the model's arguments, with the same defaults."""
    cfg = load_config(env={})
    assert CostModel(**cfg.costs.model_dump()) == CostModel()
    env = {"OIHEDGE_COSTS__TAKER_FEE_BPS": "2.5"}
    assert CostModel(**load_config(env=env).costs.model_dump()).taker_fee_bps == 2.5


@settings(max_examples=200, deadline=None)
@given(
    notional=st.floats(-1e9, 1e9),
    price=st.floats(1e-6, 1e6),
    vol=st.one_of(st.none(), st.floats(0, 10)),
    volume=st.one_of(st.none(), st.floats(0, 1e11)),
    stress=st.booleans(),
)
def test_costs_are_never_negative_and_fills_move_against_the_order(
    notional, price, vol, volume, stress
):
    cost = CostModel().trade_cost(
        notional, price, vol_ann=vol, volume_24h_usd=volume, stress=stress
    )
    assert cost.fee_usd >= 0 and cost.slippage_usd >= 0
    assert cost.fill_price > 0
    if notional > 0:
        assert cost.fill_price >= price
    elif notional < 0:
        assert cost.fill_price <= price
