"""Guards: caps refuse (never resize), the order-rate window slides, the kill switch."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from oihedge.pipelines.cli.config import load_config
from oihedge.serving.execution.guards import (
    Caps,
    OrderGuard,
    engage_kill_switch,
    kill_switch_engaged,
    kill_switch_reason,
    release_kill_switch,
)
from oihedge.serving.execution.orders import OrderIntent

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
SELL = OrderIntent(
    venue="binanceusdm",
    symbol="BTC",
    market="BTC/USDT:USDT",
    side="sell",
    amount=1.0,
    notional_usd=60_000.0,
    price_usd=60_000.0,
    reduce_only=False,
    client_order_id="oh1",
    decision_ts=NOW,
    target_usd=60_000.0,
)
BUY = replace(SELL, side="buy", reduce_only=True, client_order_id="oh2")


def guard(order_usd=100_000.0, hedge_usd=200_000.0, per_minute=3) -> OrderGuard:
    return OrderGuard(Caps(order_usd, hedge_usd, per_minute))


def test_an_order_within_the_caps_is_admitted():
    verdict = guard().admit(SELL, hedge_usd=0.0, now=NOW)
    assert verdict.allowed and verdict.reason == ""


def test_an_order_above_max_order_is_refused_and_logged_not_resized(caplog):
    caplog.set_level(logging.WARNING, logger="oihedge.serving.execution.guards")
    big = replace(SELL, amount=2.0, notional_usd=120_000.0)
    verdict = guard().admit(big, hedge_usd=0.0, now=NOW)
    assert not verdict.allowed
    assert verdict.reason == "order notional $120,000.00 exceeds max_order_usd $100,000.00"
    assert big.amount == 2.0  # the order is untouched
    (record,) = caplog.records
    assert record.event == "guard_refusal" and record.client_order_id == "oh1"
    assert record.notional_usd == 120_000.0 and "exceeds max_order_usd" in record.getMessage()


def test_max_order_applies_to_reductions_too():
    big = replace(BUY, amount=2.0, notional_usd=120_000.0)
    assert not guard().admit(big, hedge_usd=500_000.0, now=NOW).allowed


def test_the_hedge_cap_refuses_growth_but_not_reduction():
    g = guard()
    verdict = g.admit(SELL, hedge_usd=150_000.0, now=NOW)
    assert not verdict.allowed
    assert verdict.reason == "hedge after order $210,000.00 exceeds max_hedge_usd $200,000.00"
    assert g.admit(BUY, hedge_usd=250_000.0, now=NOW).allowed  # above the cap: reducing is fine
    assert g.admit(SELL, hedge_usd=140_000.0, now=NOW).allowed  # exactly at the cap


def test_the_rate_limit_window_slides():
    g = guard(per_minute=3)
    for i in range(3):
        assert g.admit(SELL, hedge_usd=0.0, now=NOW + timedelta(seconds=10 * i)).allowed
    refused = g.admit(SELL, hedge_usd=0.0, now=NOW + timedelta(seconds=59))
    assert not refused.allowed
    assert refused.reason == "3 orders in the last minute: max_orders_per_minute 3 reached"
    # refusals do not count; the first order leaves the window 60 s after it was admitted
    assert g.admit(SELL, hedge_usd=0.0, now=NOW + timedelta(seconds=60)).allowed
    assert not g.admit(SELL, hedge_usd=0.0, now=NOW + timedelta(seconds=61)).allowed


def test_naive_time_is_refused():
    with pytest.raises(ValueError, match="now must be timezone-aware"):
        guard().admit(SELL, hedge_usd=0.0, now=datetime(2025, 1, 1))


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((0.0, 1.0, 1), "max_order_usd must be > 0, got 0.0"),
        ((1.0, float("nan"), 1), "max_hedge_usd must be > 0, got nan"),
        ((1.0, 1.0, 0), "max_orders_per_minute must be an integer >= 1, got 0"),
        ((1.0, 1.0, 1.5), "max_orders_per_minute must be an integer >= 1, got 1.5"),
    ],
)
def test_caps_are_checked_when_built(args, match):
    with pytest.raises(ValueError, match=match):
        Caps(*args)


def test_caps_from_the_live_config():
    live = load_config(env={}).live
    caps = Caps(live.max_order_usd, live.max_hedge_usd, live.max_orders_per_minute)
    assert caps.max_order_usd <= caps.max_hedge_usd and caps.max_orders_per_minute >= 1
    assert live.kill_switch_file.name == "KILL"
    env = {"OIHEDGE_LIVE__MAX_ORDER_USD": "5000", "OIHEDGE_LIVE__RESEND_WINDOW": "2m"}
    live = load_config(env=env).live
    assert live.max_order_usd == 5000.0 and live.resend_window == timedelta(minutes=2)


# -- kill switch --------------------------------------------------------------------------


def test_kill_switch_engage_reason_release(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="oihedge.serving.execution.guards")
    path = tmp_path / "live" / "KILL"
    assert not kill_switch_engaged(path) and kill_switch_reason(path) is None
    engage_kill_switch(path, "venue acting up", now=NOW)
    assert kill_switch_engaged(path)
    assert kill_switch_reason(path) == "venue acting up"
    assert json.loads(path.read_text())["engaged_at"] == NOW.isoformat()
    engage_kill_switch(path, "second reason")  # keeps the first engagement
    assert kill_switch_reason(path) == "venue acting up"
    assert release_kill_switch(path, "fixed") is True
    assert not kill_switch_engaged(path) and release_kill_switch(path, "again") is False
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "kill switch engaged: venue acting up",
        "kill switch already engaged (" + str(path) + "); new reason: second reason",
        "kill switch released: fixed",
    ]
    assert caplog.records[0].levelno == logging.CRITICAL


def test_a_touched_file_is_a_kill_switch(tmp_path):
    path = tmp_path / "KILL"
    path.touch()
    assert kill_switch_engaged(path) and kill_switch_reason(path) == ""
    path.write_text("manual stop\n")
    assert kill_switch_reason(path) == "manual stop"
