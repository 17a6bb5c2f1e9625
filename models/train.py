"""The cascade classifier: LightGBM on the feature table, calibrated on out-of-fold scores.

Training protocol (no look-ahead, no shuffling):

1. the walk-forward splitter yields folds with training strictly before testing, purged
   and embargoed by the label horizon;
2. for given hyperparameters, each fold trains a booster on its past and scores its test
   block; the test blocks together give the out-of-fold (OOF) scores;
3. the final booster is refit on every training row with the same parameters;
4. the calibrator is fitted on the OOF scores and labels only (never on the final
   booster's own training predictions, which are over-confident).

Class imbalance is handled deliberately: ``scale_pos_weight`` (tuned) up-weights the rare
positives so the trees split on them, and the calibrator then maps the distorted scores
back to frequencies.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import lightgbm as lgb
import numpy as np
import polars as pl
from sklearn.metrics import average_precision_score

from oihedge.models.calibrate import Method, ProbabilityCalibrator

#: LightGBM settings that are not hyperparameters: fixed for reproducibility and speed.
#: One thread: OpenMP threads spin-wait, and on a busy 2-core machine (two Optuna workers,
#: or anything else running) two threads per fit measured 4-8x slower than one.
#: 63 histogram bins: plenty for these features, and about twice as fast as 255.
FIXED_PARAMS: dict[str, Any] = {
    "objective": "binary",
    "verbosity": -1,
    "deterministic": True,
    "force_col_wise": True,
    "num_threads": 1,
    "max_bin": 63,
    "bagging_freq": 1,
}


class Splitter(Protocol):
    def split(self, times: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]: ...


@dataclass(frozen=True)
class TrainingData:
    """Feature matrix and label, one row per (ts, symbol), sorted by time."""

    frame: pl.DataFrame
    features: tuple[str, ...]
    label: str

    @property
    def X(self) -> np.ndarray:  # noqa: N802 - a design matrix is X by convention
        """Features as float64, missing values as NaN (LightGBM handles them natively)."""
        return self.frame.select(self.features).to_numpy().astype(np.float64)

    @property
    def y(self) -> np.ndarray:
        return self.frame[self.label].to_numpy().astype(np.int8)

    @property
    def times(self) -> np.ndarray:
        return self.frame["ts"].to_numpy()

    @property
    def symbols(self) -> np.ndarray:
        return self.frame["symbol"].to_numpy()

    def take(self, idx: np.ndarray) -> TrainingData:
        return TrainingData(self.frame[idx], self.features, self.label)


def make_training_data(
    features: pl.DataFrame, labels: pl.DataFrame, feature_names: Iterable[str], label: str
) -> TrainingData:
    """Join features and labels on (ts, symbol); keep rows whose label is known.

    Rows without a label (the last horizon of the data, bars without price) are left out
    of training and evaluation; they are not negatives.
    """
    names = tuple(feature_names)
    missing = [n for n in names if n not in features.columns]
    if missing:
        raise ValueError(f"feature table lacks columns {missing}")
    if label not in labels.columns:
        raise ValueError(f"label table lacks column {label!r}")
    frame = (
        features.select("ts", "symbol", *names)
        .join(labels.select("ts", "symbol", label), on=["ts", "symbol"], how="inner")
        .filter(pl.col(label).is_not_null())
        .with_columns([pl.col(n).cast(pl.Float64) for n in names])
        .sort(["ts", "symbol"])
    )
    if frame.is_empty():
        raise ValueError("features and labels share no labelled (ts, symbol) rows")
    return TrainingData(frame, names, label)


def _train_booster(
    X: np.ndarray,
    y: np.ndarray,
    params: dict[str, Any],
    seed: int,
) -> lgb.Booster:
    params = dict(params)
    rounds = int(params.pop("num_boost_round"))
    full = {**FIXED_PARAMS, **params, "seed": seed}
    return lgb.train(full, lgb.Dataset(X, label=y, free_raw_data=True), num_boost_round=rounds)


@dataclass(frozen=True)
class OutOfFold:
    """Out-of-fold scores (NaN where a row was in no test block) and per-fold PR-AUC."""

    scores: np.ndarray
    fold_pr_auc: tuple[float, ...]

    @property
    def mask(self) -> np.ndarray:
        return ~np.isnan(self.scores)


def out_of_fold(
    data: TrainingData,
    params: dict[str, Any],
    splitter: Splitter,
    *,
    seed: int = 0,
    on_fold: Callable[[int, float], None] | None = None,
) -> OutOfFold:
    """Walk-forward OOF scores for ``params``.

    ``on_fold(i, mean_pr_auc_so_far)`` is called after each fold (Optuna's pruning hook);
    it may raise to stop early. A fold whose test block has a single class contributes
    scores but no PR-AUC.
    """
    X, y = data.X, data.y
    scores = np.full(y.shape, np.nan)
    fold_scores: list[float] = []
    for i, (train_idx, test_idx) in enumerate(splitter.split(data.times)):
        if y[train_idx].sum() == 0:
            continue  # nothing to learn from yet
        booster = _train_booster(X[train_idx], y[train_idx], params, seed)
        scores[test_idx] = booster.predict(X[test_idx])
        if 0 < y[test_idx].sum() < len(test_idx):
            fold_scores.append(float(average_precision_score(y[test_idx], scores[test_idx])))
        if on_fold is not None and fold_scores:
            on_fold(i, float(np.mean(fold_scores)))
    return OutOfFold(scores=scores, fold_pr_auc=tuple(fold_scores))


class CascadeClassifier:
    """LightGBM booster + probability calibrator, fitted as described in the module doc.

    Fitted state: ``booster_``, ``calibrator_``, ``oof_`` (the OOF scores used to
    calibrate), ``features_``.
    """

    def __init__(
        self,
        params: dict[str, Any],
        *,
        calibration: Method = "auto",
        seed: int = 0,
    ) -> None:
        if "num_boost_round" not in params or int(params["num_boost_round"]) < 1:
            raise ValueError(f"params must set num_boost_round >= 1, got {params!r}")
        self.params = dict(params)
        self.calibration = calibration
        self.seed = seed

    def fit(self, data: TrainingData, splitter: Splitter) -> CascadeClassifier:
        """OOF scores over the walk-forward folds, calibrator on them, booster on all rows."""
        oof = out_of_fold(data, self.params, splitter, seed=self.seed)
        mask = oof.mask
        if not mask.any():
            raise ValueError("the splitter produced no test rows: cannot calibrate")
        self.calibrator_ = ProbabilityCalibrator(self.calibration).fit(
            oof.scores[mask], data.y[mask]
        )
        self.booster_ = _train_booster(data.X, data.y, self.params, self.seed)
        self.oof_ = oof
        self.features_ = data.features
        return self

    def _check(self) -> None:
        if not hasattr(self, "booster_"):
            raise RuntimeError("CascadeClassifier is not fitted: call fit() first")

    def predict_raw(self, X: np.ndarray) -> np.ndarray:
        """Uncalibrated booster scores in [0, 1]."""
        self._check()
        return self.booster_.predict(np.asarray(X, dtype=np.float64))

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Calibrated probability of a cascade within the horizon, per row."""
        raw = self.predict_raw(X)
        return self.calibrator_.predict(raw)

    def contributions(self, X: np.ndarray) -> np.ndarray:
        """Per-feature SHAP contributions (log-odds of the raw booster); last column: bias."""
        self._check()
        return self.booster_.predict(np.asarray(X, dtype=np.float64), pred_contrib=True)
