from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from oihedge.models.metrics import (
    alert_threshold,
    classification_metrics,
    event_alerts,
    expected_calibration_error,
    reliability_curve,
)


def test_perfectly_calibrated_has_small_ece():
    rng = np.random.default_rng(1)
    p = rng.random(200_000)
    y = (rng.random(p.size) < p).astype(int)
    assert expected_calibration_error(y, p) < 0.01
    mean_p, freq, count = reliability_curve(y, p)
    assert count.sum() == p.size
    assert np.allclose(mean_p, freq, atol=0.01)


def test_ece_of_constant_wrong_forecast():
    y = np.array([0, 0, 0, 1])
    assert expected_calibration_error(y, np.full(4, 0.75)) == pytest.approx(0.5)


def test_alert_rate_and_precision_recall():
    y = np.array([0] * 90 + [1] * 10)
    p = np.concatenate([np.linspace(0, 0.5, 90), np.linspace(0.6, 1.0, 10)])
    m = classification_metrics(y, p, alert_rate=0.1)
    assert m.pr_auc == pytest.approx(1.0)
    assert m.roc_auc == pytest.approx(1.0)
    assert m.precision_at_alert == pytest.approx(1.0)
    assert m.recall_at_alert == pytest.approx(1.0)
    assert m.alert_rate == pytest.approx(0.1)
    with pytest.raises(ValueError, match="alert_rate must be in"):
        alert_threshold(p, 1.5)


def test_event_recall_and_lead_time():
    t0 = np.datetime64("2025-01-01T00:00")
    times = t0 + np.arange(0, 48) * np.timedelta64(1, "h")
    symbols = np.array(["BTC"] * 48)
    alerts = np.zeros(48, dtype=bool)
    alerts[[8, 9, 30]] = True
    starts = np.array([t0 + np.timedelta64(10, "h"), t0 + np.timedelta64(40, "h")])
    recall, lead = event_alerts(
        starts, np.array(["BTC", "BTC"]), times, symbols, alerts, timedelta(hours=4)
    )
    assert recall == 0.5  # the second event had no alert within 4h before it
    assert lead == pytest.approx(2.0)


def test_single_class_metrics_are_nan():
    m = classification_metrics(np.zeros(10), np.linspace(0, 1, 10))
    assert np.isnan(m.pr_auc) and np.isnan(m.roc_auc)
    assert m.brier == pytest.approx(np.mean(np.linspace(0, 1, 10) ** 2))
