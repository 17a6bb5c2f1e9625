"""The rebalancer: targets to orders, lot rounding, reduce-only, client order ids."""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oihedge.serving.execution.orders import (
    CLIENT_ID_RULES,
    InstrumentRules,
    OrderIntent,
    client_order_id,
)
from oihedge.serving.execution.rebalancer import plan_orders, round_to_step, targets_on_venue

TS = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
KEY = ("binanceusdm", "BTC")
RULES = {
    KEY: InstrumentRules(
        "binanceusdm",
        "BTC",
        "BTC/USDT:USDT",
        amount_step=0.001,
        min_amount=0.001,
        min_notional_usd=5.0,
    )
}


def plan(
    target: float, position: float = 0.0, price: float = 60_000.0, rules=RULES
) -> list[OrderIntent]:
    return plan_orders(
        {KEY: target}, {KEY: position}, {"BTC": price}, rules, strategy_id="s1", decision_ts=TS
    )


# -- client order ids ---------------------------------------------------------------------


def test_client_id_is_deterministic_and_depends_on_every_input():
    base = client_order_id("s1", "binanceusdm", "BTC", TS, 6000.0)
    assert base == client_order_id("s1", "binanceusdm", "BTC", TS, 6000.0)
    # the same instant in another timezone, and float noise below a cent, give the same id
    assert base == client_order_id(
        "s1", "binanceusdm", "BTC", TS.astimezone(timezone(timedelta(hours=2))), 6000.000001
    )
    others = {
        client_order_id("s2", "binanceusdm", "BTC", TS, 6000.0),
        client_order_id("s1", "bybit", "BTC", TS, 6000.0),
        client_order_id("s1", "binanceusdm", "ETH", TS, 6000.0),
        client_order_id("s1", "binanceusdm", "BTC", TS + timedelta(minutes=5), 6000.0),
        client_order_id("s1", "binanceusdm", "BTC", TS, 6000.5),
    }
    assert base not in others and len(others) == 5


@pytest.mark.parametrize("venue", [*CLIENT_ID_RULES, "somevenue"])
def test_client_id_fits_the_venue(venue):
    cid = client_order_id("strategy_with-long_name", venue, "BTC", TS, 1e9)
    rule = CLIENT_ID_RULES.get(venue)
    max_len = rule.max_len if rule else 32
    assert len(cid) == max_len
    assert re.fullmatch(rule.pattern if rule else r"[A-Za-z0-9]{1,32}", cid)


def test_client_id_table_matches_the_venues_documented_limits():
    assert CLIENT_ID_RULES["binanceusdm"].max_len == 36  # newClientOrderId
    assert CLIENT_ID_RULES["bybit"].max_len == 36  # orderLinkId
    assert CLIENT_ID_RULES["okx"].max_len == 32  # clOrdId, alphanumeric only
    assert re.fullmatch(CLIENT_ID_RULES["hyperliquid"].pattern, "0x" + "ab" * 16)  # 128-bit cloid


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("", "okx", "BTC", TS, 1.0), "strategy_id must be non-empty"),
        (("s", "okx", "BTC", datetime(2025, 1, 1), 1.0), "timezone-aware"),
        (("s", "okx", "BTC", TS, float("nan")), "target_usd must be finite, got nan"),
    ],
)
def test_client_id_bad_inputs(args, match):
    with pytest.raises(ValueError, match=match):
        client_order_id(*args)


# -- planning -----------------------------------------------------------------------------


def test_open_a_short_from_flat():
    (order,) = plan(6_000.0)
    assert (order.side, order.amount, order.reduce_only) == ("sell", 0.1, False)
    assert order.notional_usd == pytest.approx(6_000.0)
    assert order.market == "BTC/USDT:USDT" and order.target_usd == 6_000.0
    assert order.client_order_id == client_order_id("s1", "binanceusdm", "BTC", TS, 6_000.0)
    assert order.hedge_change_usd == pytest.approx(6_000.0) and order.signed_amount == -0.1


def test_amounts_are_rounded_to_the_lot():
    (order,) = plan(6_031.0)  # 0.10051666 BTC -> 0.101
    assert order.amount == 0.101
    (order,) = plan(6_000.0, position=-0.0004)  # 0.0996 -> 0.1
    assert order.amount == 0.1


def test_reduce_is_reduce_only_and_never_larger_than_the_short():
    (order,) = plan(3_000.0, position=-0.1)
    assert (order.side, order.amount, order.reduce_only) == ("buy", 0.05, True)
    assert order.hedge_change_usd == pytest.approx(-3_000.0)


def test_closing_buys_back_the_exact_short_even_below_the_minimum_notional():
    (order,) = plan(0.0, position=-0.00123456)
    assert (order.side, order.amount, order.reduce_only) == ("buy", 0.00123456, True)
    # 0.00123456 x 60,000 = $74 > $5; now with a price that makes it $0.12
    (order,) = plan(0.0, position=-0.001, price=120.0)
    assert order.amount == 0.001 and order.notional_usd < 5.0


def test_reduce_only_flag_follows_the_venue():
    rules = {KEY: InstrumentRules("binanceusdm", "BTC", "BTC/USDT:USDT", 0.001, reduce_only=False)}
    (order,) = plan(0.0, position=-0.1, rules=rules)
    assert order.side == "buy" and not order.reduce_only


def test_small_changes_are_not_sent_and_logged(caplog):
    caplog.set_level(logging.INFO, logger="oihedge.serving.execution.rebalancer")
    assert plan(6_010.0, position=-0.1) == []  # 0.000166 BTC rounds to 0 lots
    assert plan(6_000.0, position=-0.1) == []
    assert plan(20.0) == []  # 0.00033 BTC rounds to zero lots
    rules = {KEY: InstrumentRules("binanceusdm", "BTC", "BTC/USDT:USDT", 0.0001, 0.001)}
    assert plan(50.0, rules=rules) == []  # 0.0008 BTC < min amount 0.001
    assert "below min amount 0.001" in caplog.text
    rules = {KEY: InstrumentRules("binanceusdm", "BTC", "BTC/USDT:USDT", 0.001, 0.001, 500.0)}
    assert plan(300.0, rules=rules) == []
    assert "below min $500.00" in caplog.text


def test_a_long_position_is_sold_through_zero_without_reduce_only():
    (order,) = plan(6_000.0, position=0.05)
    assert (order.side, order.amount, order.reduce_only) == ("sell", 0.15, False)


def test_positions_without_a_target_are_left_alone():
    out = plan_orders({}, {KEY: -1.0}, {"BTC": 1.0}, RULES, strategy_id="s", decision_ts=TS)
    assert out == []


def test_prices_per_instrument_win_over_prices_per_symbol():
    out = plan_orders(
        {KEY: 6_000.0}, {}, {KEY: 30_000.0, "BTC": 60_000.0}, RULES, strategy_id="s", decision_ts=TS
    )  # type: ignore[dict-item]
    assert out[0].amount == 0.2


def test_targets_on_venue():
    assert targets_on_venue({"BTC": 1.0, "ETH": 2.0}, "okx") == {
        ("okx", "BTC"): 1.0,
        ("okx", "ETH"): 2.0,
    }


@pytest.mark.parametrize(
    ("target", "prices", "rules", "match"),
    [
        (-1.0, {"BTC": 1.0}, RULES, "target for binanceusdm/BTC must be finite and >= 0, got -1.0"),
        (float("inf"), {"BTC": 1.0}, RULES, "got inf"),
        (1.0, {}, RULES, "price for binanceusdm/BTC must be a finite number > 0, got None"),
        (1.0, {"BTC": 0.0}, RULES, "got 0.0"),
        (1.0, {"BTC": 1.0}, {}, "no instrument rules for binanceusdm/BTC"),
    ],
)
def test_bad_inputs_name_the_instrument(target, prices, rules, match):
    with pytest.raises(ValueError, match=re.escape(match)):
        plan_orders({KEY: target}, {}, prices, rules, strategy_id="s", decision_ts=TS)


def test_round_to_step_is_exact_on_the_grid():
    assert round_to_step(0.3, 0.1) == 0.3
    assert round_to_step(0.30000000000000004, 0.1) == 0.3
    assert round_to_step(1.23456, 0.001) == 1.235
    assert round_to_step(12.0, 5.0) == 10.0  # half to even: 2.4 lots -> 2


@settings(max_examples=200, deadline=None)
@given(
    target=st.floats(0, 5e6),
    position=st.floats(-100, 1),
    price=st.floats(100, 200_000),
)
def test_after_the_order_the_position_is_within_half_a_lot_of_the_target(target, position, price):
    position = round_to_step(position, 0.001)
    out = plan(target, position=position, price=price)
    after = position + (out[0].signed_amount if out else 0.0)
    desired = -target / price
    if out:
        order = out[0]
        assert order.amount > 0
        if order.reduce_only:  # never crosses zero
            assert after * position >= 0 and abs(after) <= abs(position) + 1e-12
        if target == 0:
            assert after == pytest.approx(0.0, abs=1e-12)
        else:
            assert abs(after - desired) <= 0.0005 + 1e-9
    else:  # not sent: the change is below a lot, the minimum amount or the minimum notional
        gap = abs(desired - position)
        assert gap <= 0.0015 or gap * price < 5.0 + 0.001 * price
