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
