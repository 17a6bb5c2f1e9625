from __future__ import annotations

import numpy as np
import pytest

from oihedge.models.calibrate import ProbabilityCalibrator
from oihedge.models.metrics import expected_calibration_error


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


def test_isotonic_steps_keep_the_raw_order():
    """The isotonic fit pools the top scores into one step; the output still orders them
    as the raw scores do, and moves no probability by more than TIE_BREAK."""
    from sklearn.metrics import average_precision_score

    from oihedge.models.calibrate import TIE_BREAK

    scores, y = _overconfident(20_000, seed=3)
    cal = ProbabilityCalibrator("isotonic").fit(scores[:10_000], y[:10_000])
    test_s, test_y = scores[10_000:], y[10_000:]
    p = cal.predict(test_s)
    step = np.interp(test_s, cal.x_, cal.y_)
    assert np.unique(step).size < test_s.size // 100  # the step function ties most rows
    order = np.argsort(test_s, kind="stable")
    strictly = np.diff(test_s[order]) > 1e-6  # closer raw scores fall below float resolution
    assert (np.diff(p[order])[strictly] > 0).all()
    assert np.abs(p - step).max() <= 2 * TIE_BREAK
    assert average_precision_score(test_y, p) == pytest.approx(
        average_precision_score(test_y, test_s), abs=1e-6
    )
    assert average_precision_score(test_y, step) < average_precision_score(test_y, p)


def test_platt_never_ranks_upside_down():
    """Scores ordered against the labels (a model that failed out of fold) give the base
    rate to every row, not a falling map."""
    rng = np.random.default_rng(5)
    scores = rng.random(3_000)
    y = (rng.random(3_000) < 0.2 * (1 - scores)).astype(int)  # higher score, fewer events
    cal = ProbabilityCalibrator("platt").fit(scores, y)
    assert cal.coef_ == 0.0
    p = cal.predict(np.array([0.05, 0.5, 0.95]))
    assert p == pytest.approx([y.mean()] * 3, abs=1e-8)
    assert (np.diff(p) > 0).all()  # the raw order breaks the ties
    again = ProbabilityCalibrator.from_dict(cal.to_dict()).predict(np.array([0.05, 0.5, 0.95]))
    assert again == pytest.approx(p, abs=0)
