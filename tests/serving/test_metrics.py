"""Prometheus metrics: own registry, loopback only, the names the dashboards read."""

from __future__ import annotations

import urllib.request

import pytest

from oihedge.serving.live.metrics import LoopMetrics


def test_two_loops_do_not_share_metrics_and_text_has_every_family():
    a, b = LoopMetrics(), LoopMetrics()
    a.latency.observe(0.0004)
    a.error("venue_timeout")
    a.orders.labels(status="filled").inc()
    a.set_model_version("7")
    text = a.text()
    assert 'oihedge_errors_total{kind="venue_timeout"} 1.0' in text
    assert 'oihedge_orders_total{status="filled"} 1.0' in text
    assert 'oihedge_model_version_info{version="7"} 1.0' in text
    assert 'oihedge_decision_latency_seconds_bucket{le="0.0005"} 1.0' in text
    assert "venue_timeout" not in b.text()


def test_served_on_loopback_only():
    metrics = LoopMetrics()
    port = metrics.serve(0)
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    finally:
        metrics.close()
    assert b"oihedge_bars_total" in body
    with pytest.raises(ValueError, match="loopback only"):
        metrics.serve(0, addr="0.0.0.0")


def test_a_gauge_set_through_the_loop_metrics_follows_every_change():
    import math

    metrics = LoopMetrics()
    gauge = metrics.probability_of("BTC")
    for value in (0.1, 0.1, 0.2, math.nan, math.nan, 0.2, 0.2, 0.0):
        metrics.set(gauge, value)
        got = metrics.registry.get_sample_value("oihedge_probability", {"symbol": "BTC"})
        assert got == value or (math.isnan(got) and math.isnan(value))
    gauge.set(0.7)  # set behind its back: the next different value still lands
    metrics.set(metrics.probability_of("BTC"), 0.3)
    assert metrics.registry.get_sample_value("oihedge_probability", {"symbol": "BTC"}) == 0.3


def test_counters_alerted_on_start_at_zero_and_the_kill_switch_at_nan():
    import math

    from oihedge.serving.live.metrics import ALERTED_ERROR_KINDS, ORDER_STATUSES

    metrics = LoopMetrics()
    sample = metrics.registry.get_sample_value
    for status in ORDER_STATUSES:
        assert sample("oihedge_orders_total", {"status": status}) == 0.0, status
    for kind in ALERTED_ERROR_KINDS:
        assert sample("oihedge_errors_total", {"kind": kind}) == 0.0, kind
    assert math.isnan(sample("oihedge_kill_switch_engaged"))  # not seen yet, not "released"
    metrics.set_kill_switch(True)
    assert sample("oihedge_kill_switch_engaged") == 1.0
    metrics.set_kill_switch(False)
    assert sample("oihedge_kill_switch_engaged") == 0.0


def test_every_order_outcome_of_the_executor_is_exported_from_the_start():
    import re

    from oihedge.serving.execution import executor as execution
    from oihedge.serving.live.metrics import ORDER_STATUSES

    doc = execution.Submission.__doc__ or ""
    outcomes = set(re.findall(r"``(\w+)``", doc)) - {"outcome"}
    assert outcomes == set(ORDER_STATUSES)


def test_a_decision_sets_tier_target_position_and_time():
    from oihedge.serving.policy.policy import TIERS, VOL_TIER

    metrics = LoopMetrics()
    sample = metrics.registry.get_sample_value
    metrics.decided("BTC", tier="high", target_usd=5000.0, position_usd=1200.0, at=1.7e9)
    metrics.decided("ETH", tier=VOL_TIER, target_usd=300.0, position_usd=300.0)
    assert sample("oihedge_hedge_target_usd", {"symbol": "BTC"}) == 5000.0
    assert sample("oihedge_hedge_position_usd", {"symbol": "BTC"}) == 1200.0
    assert sample("oihedge_last_decision_timestamp_seconds", {"symbol": "BTC"}) == 1.7e9
    assert sample("oihedge_last_decision_timestamp_seconds", {"symbol": "ETH"}) > 1.7e9
    for tier in (*TIERS, VOL_TIER):
        assert sample("oihedge_tier", {"symbol": "BTC", "oihedge_tier": tier}) == (
            1.0 if tier == "high" else 0.0
        )
    metrics.decided("BTC", tier="full", target_usd=8000.0, position_usd=5000.0, at=1.7e9 + 300)
    assert sample("oihedge_tier", {"symbol": "BTC", "oihedge_tier": "high"}) == 0.0
    assert sample("oihedge_tier", {"symbol": "BTC", "oihedge_tier": "full"}) == 1.0
    assert sample("oihedge_last_decision_timestamp_seconds", {"symbol": "BTC"}) == 1.7e9 + 300
    with pytest.raises(ValueError, match="nope"):
        metrics.decided("BTC", tier="nope", target_usd=0.0, position_usd=0.0)
