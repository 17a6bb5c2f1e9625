"""Prometheus metrics: own registry, loopback only, the names the dashboards read."""

from __future__ import annotations

import urllib.request

import pytest

from serving.metrics import LoopMetrics


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
