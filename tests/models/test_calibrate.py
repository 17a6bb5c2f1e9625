from __future__ import annotations

import numpy as np
import pytest

from models.calibrate import ProbabilityCalibrator
from models.metrics import expected_calibration_error


def _overconfident(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    true_p = rng.beta(0.5, 8, n)
    y = (rng.random(n) < true_p).astype(int)
    scores = np.clip(true_p**0.5, 0, 1)  # ranks right, probabilities far too high
    return scores, y


@pytest.mark.parametrize("method", ["isotonic", "platt"])
def test_calibration_reduces_ece(method):
    scores, y = _overconfident(20_000)
    fit_s, fit_y, test_s, test_y = scores[:10_000], y[:10_000], scores[10_000:], y[10_000:]
    cal = ProbabilityCalibrator(method).fit(fit_s, fit_y)
    before = expected_calibration_error(test_y, test_s)
    after = expected_calibration_error(test_y, cal.predict(test_s))
    assert before > 0.1
    assert after < 0.03
    assert cal.method_ == method


def test_auto_picks_by_positive_count():
    scores, y = _overconfident(20_000)
    assert (
        ProbabilityCalibrator("auto", min_positives_isotonic=10).fit(scores, y).method_
        == "isotonic"
    )
    assert (
        ProbabilityCalibrator("auto", min_positives_isotonic=10**6).fit(scores, y).method_
        == "platt"
    )


@pytest.mark.parametrize("method", ["isotonic", "platt"])
def test_roundtrip_gives_identical_probabilities(method):
    scores, y = _overconfident(5_000)
    cal = ProbabilityCalibrator(method).fit(scores, y)
    again = ProbabilityCalibrator.from_dict(cal.to_dict())
    grid = np.linspace(0, 1, 1001)
    assert np.array_equal(cal.predict(grid), again.predict(grid))


def test_monotone_and_bounded():
    scores, y = _overconfident(5_000)
    out = ProbabilityCalibrator("isotonic").fit(scores, y).predict(np.linspace(-1, 2, 500))
    assert np.all(np.diff(out) >= 0)
    assert out.min() >= 0 and out.max() <= 1


def test_errors():
    with pytest.raises(ValueError, match="method must be"):
        ProbabilityCalibrator("beta")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs both classes, got 0 positives"):
        ProbabilityCalibrator().fit(np.array([0.1, 0.2]), np.array([0, 0]))
    with pytest.raises(ValueError, match="must be finite"):
        ProbabilityCalibrator().fit(np.array([np.nan, 0.2]), np.array([0, 1]))
    with pytest.raises(RuntimeError, match="not fitted"):
        ProbabilityCalibrator().predict(np.array([0.5]))
