from __future__ import annotations

import numpy as np
import pytest

from oihedge.models.train import CascadeClassifier, make_training_data, out_of_fold
from oihedge.models.tune import tune
from tests_support import TwoBlockSplit, synthetic_training_frame

PARAMS = {
    "learning_rate": 0.1,
    "num_boost_round": 60,
    "num_leaves": 7,
    "min_data_in_leaf": 20,
    "feature_fraction": 1.0,
    "bagging_fraction": 1.0,
    "lambda_l2": 1.0,
    "scale_pos_weight": 3.0,
}


def _data(**kw):
    frame = synthetic_training_frame(**kw)
    return make_training_data(
        frame.drop("y_cascade_4h"),
        frame.select("ts", "symbol", "y_cascade_4h"),
        ["f_signal", "f_noise"],
        "y_cascade_4h",
    )


def test_oof_scores_only_on_test_blocks():
    data = _data()
    oof = out_of_fold(data, PARAMS, TwoBlockSplit(2))
    first_test = len(data.y) // 3  # TwoBlockSplit(2): the first third is never tested
    assert np.isnan(oof.scores[: first_test - 1]).all()
    assert not np.isnan(oof.scores[first_test + 1 :]).any()
    assert len(oof.fold_pr_auc) == 2 and min(oof.fold_pr_auc) > data.y.mean() * 2


def test_classifier_learns_and_is_calibrated_on_oof():
    data = _data(n_bars=6000)
    model = CascadeClassifier(PARAMS).fit(data, TwoBlockSplit(3))
    test = _data(n_bars=4000, seed=9)
    p = model.predict_proba(test.X)
    raw = model.predict_raw(test.X)
    # scale_pos_weight inflates raw scores; the OOF calibrator brings them back to frequencies
    assert raw.mean() > test.y.mean() * 1.3
    assert abs(p.mean() - test.y.mean()) < 0.02
    assert np.corrcoef(p, test.X[:, 0])[0, 1] > 0.5
    contrib = model.contributions(test.X[:5])
    assert contrib.shape == (5, 3)
    assert np.abs(contrib[:, 0]).mean() > np.abs(contrib[:, 1]).mean()


def test_deterministic():
    data = _data()
    a = CascadeClassifier(PARAMS, seed=3).fit(data, TwoBlockSplit(2)).predict_proba(data.X)
    b = CascadeClassifier(PARAMS, seed=3).fit(data, TwoBlockSplit(2)).predict_proba(data.X)
    assert np.array_equal(a, b)


def test_errors():
    with pytest.raises(ValueError, match="num_boost_round"):
        CascadeClassifier({"learning_rate": 0.1})
    with pytest.raises(RuntimeError, match="not fitted"):
        CascadeClassifier(PARAMS).predict_proba(np.zeros((1, 2)))
    frame = synthetic_training_frame(n_bars=10)
    with pytest.raises(ValueError, match=r"lacks columns \['nope'\]"):
        make_training_data(frame, frame, ["nope"], "y_cascade_4h")


def test_tune_in_memory_finds_a_working_model():
    data = _data(n_bars=3000)
    result = tune(data, TwoBlockSplit(2), n_trials=6, study_name="t", storage=None, seed=1)
    assert result.n_trials + result.n_pruned == 6
    assert result.best_value > data.y.mean() * 2
    assert set(result.best_params) >= {"learning_rate", "num_boost_round", "scale_pos_weight"}
    with pytest.raises(ValueError, match="n_trials must be >= 1"):
        tune(data, TwoBlockSplit(2), n_trials=0, study_name="t")
