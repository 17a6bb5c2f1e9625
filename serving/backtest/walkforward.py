"""Walk-forward probabilities for the backtest: at every bar, a model fitted only before it.

Refit times are ``r_0 = first feature time + train_window`` (or the requested backtest
start, if later), then every ``retrain_every``. At each refit ``r`` a
:class:`~oihedge.models.train.CascadeClassifier` is fitted, with fixed hyperparameters, on every
labelled row whose label window ended before ``r`` (``t + horizon < r``: purged, so no
training label looks past the refit), optionally only the last ``max_train`` of them; its
calibrator is fitted on out-of-fold scores from a purged :class:`~oihedge.models.splits.
WalkForwardSplit` inside that training set. The model then scores the feature rows with
``r <= t < r_next``: the probability at ``t`` reads only the features at ``t`` (point in
time by construction in ``features/``) and a model fitted at ``r <= t``. Bars before
``r_0`` have no probability (null).

Hyperparameters are fixed (``params``, from the configuration) so that a retrain is one
fit, not a search; with ``tune_trials > 0`` they are tuned once, by Optuna on the first
training window only (in memory, nothing logged), and kept for every later refit.

A refit whose training rows hold fewer than ``min_positives`` cascades, or whose fit
fails (e.g. no out-of-fold fold with a positive to calibrate on), keeps the previous model
(or none yet) and says so in its :class:`Refit` record.

The hedge policy's cascade severity (:mod:`oihedge.models.severity`) is fitted at each refit on
the same purged training rows and travels with the model: every bar the model scores
carries its ``severity_k`` next to ``p``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

import numpy as np
import polars as pl

from oihedge.features.schema import UTC_US
from oihedge.models.severity import CLOSE, SEVERITY_VOL, fit_severity, severity_rows
from oihedge.models.splits import WalkForwardSplit
from oihedge.models.train import CascadeClassifier, TrainingData, make_training_data

__all__ = [
    "DEFAULT_MODEL_PARAMS",
    "Refit",
    "WalkForward",
    "WalkForwardSettings",
    "refit_times",
    "walk_forward",
]

#: LightGBM hyperparameters of the backtest's refits (the `[backtest.model]` defaults):
#: shallow, strongly regularised trees, cheap enough to refit several times in a backtest
DEFAULT_MODEL_PARAMS: dict[str, Any] = {
    "learning_rate": 0.05,
    "num_boost_round": 100,
    "num_leaves": 15,
    "min_data_in_leaf": 300,
    "feature_fraction": 0.6,
    "bagging_fraction": 0.7,
    "lambda_l2": 10.0,
    "scale_pos_weight": 1.0,
}


class Predictor(Protocol):
    def predict_proba(self, X: np.ndarray) -> np.ndarray: ...


#: fits a model on the training rows of one refit (injectable for tests)
Fitter = Callable[[TrainingData], Predictor]


@dataclass(frozen=True)
class WalkForwardSettings:
    """How the backtest refits its model.

    Attributes:
        train_window: history before the first refit (the first model's training span).
        retrain_every: time between refits.
        max_train: rolling training window (None: every earlier labelled row).
        n_splits: walk-forward folds inside a training set for the OOF calibration.
        params: LightGBM hyperparameters (``num_boost_round`` included).
        calibration: ``auto``, ``isotonic`` or ``platt`` (:mod:`oihedge.models.calibrate`).
        seed: LightGBM (and tuning) seed.
        tune_trials: Optuna trials on the first training window (0: use ``params``).
        min_positives: fewest positive labels a refit needs.
    """

    train_window: timedelta = timedelta(days=60)
    retrain_every: timedelta = timedelta(days=30)
    max_train: timedelta | None = None
    n_splits: int = 2
    params: Mapping[str, Any] = field(default_factory=lambda: dict(DEFAULT_MODEL_PARAMS))
    calibration: str = "auto"
    seed: int = 0
    tune_trials: int = 0
    min_positives: int = 20

    def __post_init__(self) -> None:
        for name in ("train_window", "retrain_every"):
            value = getattr(self, name)
            if not (isinstance(value, timedelta) and value > timedelta(0)):
                raise ValueError(f"{name} must be a positive duration, got {value!r}")
        if self.max_train is not None and self.max_train <= timedelta(0):
            raise ValueError(f"max_train must be a positive duration, got {self.max_train!r}")
        if self.n_splits < 1:
            raise ValueError(f"n_splits must be >= 1, got {self.n_splits!r}")
        if self.tune_trials < 0:
            raise ValueError(f"tune_trials must be >= 0, got {self.tune_trials!r}")
        if self.min_positives < 1:
            raise ValueError(f"min_positives must be >= 1, got {self.min_positives!r}")


@dataclass(frozen=True)
class Refit:
    """One refit: when, on which rows, and whether a new model came out of it.

    ``at``: refit time (the model scores bars ``at <= t < until``). ``train_start`` /
    ``train_end``: first and last training row time (None without rows). ``fitted``:
    False when the previous model was kept (``note`` says why). ``severity_k``: the
    cascade severity fitted on the same rows (None: too few events, the previous kept).
    """

    at: datetime
    until: datetime | None
    train_start: datetime | None
    train_end: datetime | None
    n_rows: int
    n_positive: int
    fitted: bool
    note: str = ""
    severity_k: float | None = None


@dataclass(frozen=True)
class WalkForward:
    """Walk-forward probabilities (``ts``, ``symbol``, ``p``, ``severity_k``; null before
    the first model) and the refits that produced them."""

    probability: pl.DataFrame
    refits: tuple[Refit, ...]
    params: dict[str, Any]


def refit_times(
    first: datetime, last: datetime, settings: WalkForwardSettings, start: datetime | None = None
) -> list[datetime]:
    """Refit times ``r_0, r_0 + retrain_every, ...`` up to ``last``.

    ``r_0 = max(first + train_window, start)``; empty when that is after ``last``.
    """
    r = first + settings.train_window
    if start is not None and start > r:
        r = start
    out = []
    while r <= last:
        out.append(r)
        r += settings.retrain_every
    return out


def walk_forward(
    features: pl.DataFrame,
    labels: pl.DataFrame,
    feature_names: tuple[str, ...],
    label_column: str,
    horizon: timedelta,
    settings: WalkForwardSettings,
    *,
    start: datetime | None = None,
    fitter: Fitter | None = None,
    progress: Callable[[float], None] | None = None,
) -> WalkForward:
    """Probabilities for every row of ``features`` from models refit as the module says.

    ``features``: the feature table (``ts``, ``symbol``, ``feature_names``); ``labels``:
    :func:`oihedge.models.labels.cascade_labels` output with ``label_column`` for ``horizon``.
    ``fitter`` replaces the default :class:`CascadeClassifier` fit (tests).
    """
    table = features.sort("ts", "symbol")
    data = make_training_data(table, labels, feature_names, label_column)
    first, last = table["ts"].min(), table["ts"].max()
    times = refit_times(first, last, settings, start)  # type: ignore[arg-type]
    params = dict(settings.params)
    if settings.tune_trials and times:
        params = _tune_once(data, times[0], horizon, settings)
    fit = fitter or _default_fitter(params, horizon, settings)
    label_times = data.times
    ts_np = table["ts"].dt.replace_time_zone(None).to_numpy()
    X = table.select(feature_names).to_numpy().astype(np.float64)
    p = np.full(table.height, np.nan)
    k_col = np.full(table.height, np.nan)
    sev = (  # a table without the columns (a test's): the policy keeps its stress_k
        severity_rows(table, labels, label_column, horizon)
        if SEVERITY_VOL in table.columns and CLOSE in labels.columns
        else None
    )
    sev_times = None if sev is None else sev["ts"].dt.replace_time_zone(None).to_numpy()
    model: Predictor | None = None
    k: float | None = None
    refits = []
    for i, r in enumerate(times):
        until = times[i + 1] if i + 1 < len(times) else None
        idx = _training_rows(label_times, r, horizon, settings.max_train)
        rows = data.take(idx)
        n_pos = int(rows.y.sum()) if idx.size else 0
        fitted, note = False, ""
        if n_pos < settings.min_positives:
            note = f"{n_pos} positive labels < min_positives={settings.min_positives}: kept"
        else:
            try:
                model, fitted = fit(rows), True
            except ValueError as err:
                note = f"fit failed ({err}): kept"
        if model is not None and sev is not None and sev_times is not None:
            fitted_sev = fit_severity(
                sev.filter(_training_rows_mask(sev_times, r, horizon, settings.max_train))
            )
            k = fitted_sev.k if fitted_sev is not None else k
        if model is not None:
            block = (ts_np >= _np(r)) & (ts_np < _np(until)) if until else ts_np >= _np(r)
            if block.any():
                p[block] = model.predict_proba(X[block])
                k_col[block] = np.nan if k is None else k
        refits.append(
            Refit(
                at=r,
                until=until,
                train_start=rows.frame["ts"].min() if idx.size else None,  # type: ignore[arg-type]
                train_end=rows.frame["ts"].max() if idx.size else None,  # type: ignore[arg-type]
                n_rows=int(idx.size),
                n_positive=n_pos,
                fitted=fitted,
                note=note,
                severity_k=k if model is not None else None,
            )
        )
        if progress is not None:
            progress((i + 1) / len(times))
    probability = table.select(
        pl.col("ts").cast(UTC_US),
        "symbol",
        pl.Series("p", p).fill_nan(None),
        pl.Series("severity_k", k_col).fill_nan(None),
    )
    return WalkForward(probability=probability, refits=tuple(refits), params=params)


def _np(moment: datetime) -> np.datetime64:
    return np.datetime64(moment.replace(tzinfo=None), "us")


def _training_rows(
    label_times: np.ndarray, refit: datetime, horizon: timedelta, max_train: timedelta | None
) -> np.ndarray:
    """Rows whose label window ``(t, t + horizon]`` ended before ``refit`` (and, with
    ``max_train``, that start no earlier than ``refit - horizon - max_train``)."""
    return np.flatnonzero(_training_rows_mask(label_times, refit, horizon, max_train))


def _training_rows_mask(
    label_times: np.ndarray, refit: datetime, horizon: timedelta, max_train: timedelta | None
) -> np.ndarray:
    mask = label_times + np.timedelta64(horizon) < _np(refit)
    if max_train is not None:
        mask &= label_times >= _np(refit - horizon - max_train)
    return mask


def _default_fitter(
    params: dict[str, Any], horizon: timedelta, settings: WalkForwardSettings
) -> Fitter:
    def fit(rows: TrainingData) -> Predictor:
        splitter = WalkForwardSplit(settings.n_splits, horizon=horizon)
        return CascadeClassifier(
            params,
            calibration=settings.calibration,  # type: ignore[arg-type]
            seed=settings.seed,
        ).fit(rows, splitter)

    return fit


def _tune_once(
    data: TrainingData, first_refit: datetime, horizon: timedelta, settings: WalkForwardSettings
) -> dict[str, Any]:
    """Optuna on the first training window only; in memory, nothing logged."""
    from oihedge.models.tune import tune

    rows = data.take(_training_rows(data.times, first_refit, horizon, settings.max_train))
    result = tune(
        rows,
        WalkForwardSplit(settings.n_splits, horizon=horizon),
        n_trials=settings.tune_trials,
        study_name=f"backtest-{first_refit:%Y%m%dT%H%M}",
        storage=None,
        seed=settings.seed,
    )
    return {k: v for k, v in result.best_params.items() if not _nan(v)}


def _nan(value: object) -> bool:
    return isinstance(value, float) and math.isnan(value)
