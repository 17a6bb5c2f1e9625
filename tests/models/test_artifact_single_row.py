"""The single-row fast path (models/single_row.py) and the pyfunc's per-vector scoring
(models/artifact.py): the same numbers as ``Booster.predict``, handles freed."""

from __future__ import annotations

import gc
import json
import pickle
import threading
from pathlib import Path
from types import SimpleNamespace

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

import oihedge.models.single_row as single_row
from oihedge.models.artifact import CascadePyfunc
from oihedge.models.calibrate import ProbabilityCalibrator
from oihedge.models.single_row import SingleRowBooster

N_FEATURES = 12


def _data(n: int, seed: int, missing: float = 0.15) -> np.ndarray:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, N_FEATURES))
    X[rng.random(X.shape) < missing] = np.nan
    X[rng.random(X.shape) < 0.05] = 0.0  # exact zeros: LightGBM's sparse row path
    return X


@pytest.fixture(scope="module")
def booster() -> lgb.Booster:
    X = _data(4000, seed=0)
    rng = np.random.default_rng(1)
    signal = np.nan_to_num(X[:, 0]) + 0.5 * np.nan_to_num(X[:, 1]) - np.isnan(X[:, 2])
    y = (signal + rng.normal(size=len(X)) > 0.8).astype(int)
    params = {"objective": "binary", "num_leaves": 15, "verbose": -1, "seed": 3, "num_threads": 1}
    return lgb.train(params, lgb.Dataset(X, y), num_boost_round=80)


@pytest.fixture(scope="module")
def rows() -> np.ndarray:
    X = _data(1500, seed=7, missing=0.3)
    X[0] = np.nan  # every feature missing
    X[1] = 0.0
    X[2, :] = 1e300  # beyond every threshold
    X[3, :] = -1e300
    return X


def test_predict_equals_booster_predict_on_many_rows_with_nan(booster, rows):
    fast = SingleRowBooster(booster)
    expected = booster.predict(rows)
    got = np.array([fast.predict(r) for r in rows])
    assert np.isnan(rows).any(axis=1).sum() > 1000  # NaN inputs are exercised
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    assert len(np.unique(np.round(got, 6))) > 100  # the rows reach different leaves


def test_contributions_equal_pred_contrib_and_sum_to_the_raw_score(booster, rows):
    fast = SingleRowBooster(booster)
    expected = booster.predict(rows, pred_contrib=True)
    raw = booster.predict(rows, raw_score=True)
    got = np.stack([fast.contributions(r) for r in rows])
    assert got.shape == (len(rows), N_FEATURES + 1)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(got.sum(axis=1), raw, rtol=0, atol=1e-9)
    assert np.abs(got[:, 0]).mean() > np.abs(got[:, -2]).mean()  # the signal feature leads


def test_contributions_rows_equal_contributions_one_row_at_a_time(booster, rows):
    fast = SingleRowBooster(booster)
    got = fast.contributions_rows(rows[:300])
    assert got.shape == (300, N_FEATURES + 1)
    np.testing.assert_allclose(
        got, np.stack([fast.contributions(r) for r in rows[:300]]), rtol=0, atol=1e-12
    )
    with pytest.raises(ValueError, match=rf"rows of {N_FEATURES} features, got shape"):
        fast.contributions_rows(rows[0])
    fast.close()
    with pytest.raises(RuntimeError, match="closed"):
        fast.contributions_rows(rows[:2])


def test_input_forms_list_int_and_strided_views(booster, rows):
    fast = SingleRowBooster(booster)
    expected = booster.predict(rows[:5])
    assert fast.predict(rows[4].tolist()) == pytest.approx(expected[4], abs=1e-12)
    column_major = np.asfortranarray(rows[:5])
    assert fast.predict(column_major[3]) == pytest.approx(expected[3], abs=1e-12)  # strided row
    ints = np.arange(N_FEATURES)
    assert fast.predict(ints) == pytest.approx(booster.predict(ints.reshape(1, -1))[0], abs=1e-12)


def test_best_iteration_is_honoured_as_booster_predict_does(booster, rows):
    early = lgb.Booster(model_str=booster.model_to_string())
    early.best_iteration = 7
    fast = SingleRowBooster(early)
    expected = early.predict(rows[:200])
    assert not np.allclose(expected, booster.predict(rows[:200]))  # 7 trees, not 80
    got = np.array([fast.predict(r) for r in rows[:200]])
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


def test_bad_inputs_and_boosters_are_refused(booster):
    fast = SingleRowBooster(booster)
    with pytest.raises(ValueError, match=r"one row of 12 features, got shape \(11,\)"):
        fast.predict(np.zeros(N_FEATURES - 1))
    with pytest.raises(ValueError, match=r"got shape \(1, 12\)"):
        fast.contributions(np.zeros((1, N_FEATURES)))
    with pytest.raises(TypeError, match="must be a lightgbm.Booster, got dict"):
        SingleRowBooster({})  # type: ignore[arg-type]
    X = _data(600, seed=2, missing=0.0)
    y = np.arange(600) % 3
    multi = lgb.train(
        {"objective": "multiclass", "num_class": 3, "verbose": -1, "num_threads": 1},
        lgb.Dataset(X, y),
        3,
    )
    with pytest.raises(ValueError, match="one output per row, got 3 models per iteration"):
        SingleRowBooster(multi)


def test_close_frees_both_handles_once_and_refuses_later_calls(booster, monkeypatch):
    freed = []
    real_free = single_row._free
    monkeypatch.setattr(single_row, "_free", lambda h: freed.append(h.value) or real_free(h))
    fast = SingleRowBooster(booster)
    handles = {fast._normal.value, fast._contrib.value}
    fast.close()
    fast.close()  # idempotent
    assert fast.closed and set(freed) == handles and len(freed) == 2
    with pytest.raises(RuntimeError, match="closed"):
        fast.predict(np.zeros(N_FEATURES))


def test_garbage_collection_frees_the_handles(booster, monkeypatch):
    freed = []
    real_free = single_row._free
    monkeypatch.setattr(single_row, "_free", lambda h: freed.append(h.value) or real_free(h))
    fast = SingleRowBooster(booster)
    fast.predict(np.zeros(N_FEATURES))
    del fast
    gc.collect()
    assert len(freed) == 2


def test_the_booster_is_kept_alive_while_the_fast_path_exists(booster, rows):
    expected = booster.predict(rows[:20])
    fast = SingleRowBooster(lgb.Booster(model_str=booster.model_to_string()))  # only ref
    gc.collect()
    got = [fast.predict(r) for r in rows[:20]]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


def test_pickle_rebuilds_the_handles(booster, rows):
    fast = pickle.loads(pickle.dumps(SingleRowBooster(booster)))
    assert fast.predict(rows[10]) == pytest.approx(booster.predict(rows[10:11])[0], abs=1e-12)


def test_concurrent_calls_give_the_same_numbers(booster, rows):
    fast = SingleRowBooster(booster)
    expected = booster.predict(rows)
    results: dict[int, list[float]] = {}

    def work(k: int) -> None:
        results[k] = [fast.predict(r) for r in rows]

    threads = [threading.Thread(target=work, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got in results.values():
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("method", ["platt", "isotonic"])
def test_pyfunc_per_vector_path_equals_its_batch_path(tmp_path: Path, booster, rows, method):
    raw_fit = booster.predict(rows)
    y = (np.random.default_rng(4).random(len(raw_fit)) < raw_fit).astype(int)
    calibrator = ProbabilityCalibrator(method=method).fit(raw_fit, y)
    features = [f"f{i}" for i in range(N_FEATURES)]
    (tmp_path / "booster.txt").write_text(booster.model_to_string(), "utf-8")
    (tmp_path / "calibrator.json").write_text(json.dumps(calibrator.to_dict()), "utf-8")
    (tmp_path / "card.json").write_text(json.dumps({"features": features}), "utf-8")
    artifacts = {
        k: str(tmp_path / f)
        for k, f in (
            ("booster", "booster.txt"),
            ("calibrator", "calibrator.json"),
            ("card", "card.json"),
        )
    }
    model = CascadePyfunc()
    model.load_context(SimpleNamespace(artifacts=artifacts))  # type: ignore[arg-type]
    batch = model.predict(None, pd.DataFrame(rows[:300], columns=features))
    for i in range(300):
        p, raw = model.predict_vector(rows[i])
        assert raw == pytest.approx(batch["p_raw"].iloc[i], abs=1e-12)
        assert p == pytest.approx(batch["p_cascade"].iloc[i], abs=1e-12)
        # the calibrator is applied after, unchanged
        assert p == calibrator.predict(np.array([raw]))[0]
    contrib = model.contributions(rows[5])
    np.testing.assert_allclose(
        contrib, booster.predict(rows[5:6], pred_contrib=True)[0], rtol=0, atol=1e-12
    )


def test_without_lightgbms_private_library_the_booster_predicts_with_one_warning(
    booster, rows, monkeypatch
):
    with monkeypatch.context() as m:
        m.delattr(lgb.basic, "_LIB")
        assert single_row._load_library() is None  # what the import finds: no C functions
    monkeypatch.setattr(single_row, "_init", None)
    monkeypatch.setattr(single_row, "_warned", False)
    with pytest.warns(RuntimeWarning, match=r"Booster.predict\(\.\.\., num_threads=1\)") as seen:
        fast = SingleRowBooster(booster)
        again = SingleRowBooster(booster)
    assert len(seen) == 1 and fast._normal is None and again._contrib is None
    np.testing.assert_allclose(
        [fast.predict(r) for r in rows[:200]], booster.predict(rows[:200]), rtol=0, atol=1e-12
    )
    np.testing.assert_allclose(fast.predict_rows(rows), booster.predict(rows), rtol=0, atol=1e-12)
    expected = booster.predict(rows[:50], pred_contrib=True)
    np.testing.assert_allclose(fast.contributions(rows[3]), expected[3], rtol=0, atol=1e-12)
    np.testing.assert_allclose(fast.contributions_rows(rows[:50]), expected, rtol=0, atol=1e-12)
    fast.close()
    assert fast.closed
    with pytest.raises(RuntimeError, match="closed"):
        fast.predict(rows[0])


def test_the_fast_path_needs_the_boosters_private_handle(booster, monkeypatch):
    monkeypatch.setattr(single_row, "_warned", True)  # (announced already)
    assert single_row._fast_path(booster)
    assert not single_row._fast_path(SimpleNamespace())  # a Booster without ``_handle``
    assert not single_row._fast_path(SimpleNamespace(_handle=0))
