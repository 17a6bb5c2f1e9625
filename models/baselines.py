"""The rules a trader would use without a model, scored on the same rows as the model.

- :class:`FixedRuleBaseline`: the mission's fixed rule, an alert when cross-venue OI
  divergence exceeds 8% or OI stands more than 15% above its 24h mean;
- :class:`OiDeviationRuleBaseline`: the 15% OI-deviation trigger alone (what the
  divergence half of the fixed rule adds is the difference between the two);
- :class:`FundingRuleBaseline`: an alert when funding is extreme against its own week
  (|z| above a level) while OI is above its 24h mean;
- :class:`LogisticBaseline`: logistic regression on the model's own features.

Every baseline is fitted on the training window only (``fit``) and scores any window
(``predict_proba``). A rule's score is the frequency of cascades observed in the training
window when the rule fired, and when it did not: a rule is binary, and those two
frequencies make its Brier score and calibration comparable with the model's.
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod

import numpy as np
import polars as pl
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


class _RuleBaseline(ABC):
    """A binary rule turned into two frequencies learned on the training window."""

    name = "rule"

    @abstractmethod
    def fired(self, frame: pl.DataFrame) -> np.ndarray:
        """Boolean per row: the rule raises an alert (a missing input never fires)."""

    def fit(self, frame: pl.DataFrame, y: np.ndarray) -> _RuleBaseline:
        """Learn P(cascade | fired) and P(cascade | not fired) on the training rows."""
        fired = self.fired(frame)
        y = np.asarray(y, dtype=float)
        base = float(y.mean())
        self.rate_fired_ = float(y[fired].mean()) if fired.any() else base
        self.rate_quiet_ = float(y[~fired].mean()) if (~fired).any() else base
        self.fire_rate_ = float(fired.mean())
        return self

    def predict_proba(self, frame: pl.DataFrame) -> np.ndarray:
        if not hasattr(self, "rate_fired_"):
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit() first")
        return np.where(self.fired(frame), self.rate_fired_, self.rate_quiet_)


def _column(frame: pl.DataFrame, name: str) -> np.ndarray:
    if name not in frame.columns:
        raise ValueError(f"baseline needs feature column {name!r}, which the table lacks")
    return frame[name].cast(pl.Float64).fill_null(np.nan).to_numpy()


class FixedRuleBaseline(_RuleBaseline):
    """Alert when ``divergence > divergence_threshold`` or ``deviation > deviation_threshold``.

    Defaults: cross-venue OI divergence over 4h above 8 (percentage points) or OI more than 15
    (percent) above its 24h mean. A missing feature never fires.
    """

    name = "fixed_rule"

    def __init__(
        self,
        divergence_col: str = "oi_div_xvenue_4h",
        deviation_col: str = "oi_dev_24h_pct",
        divergence_threshold: float = 8.0,
        deviation_threshold: float = 15.0,
    ) -> None:
        if divergence_threshold <= 0 or deviation_threshold <= 0:
            raise ValueError(
                "rule thresholds must be > 0, got "
                f"{divergence_threshold!r} and {deviation_threshold!r}"
            )
        self.divergence_col = divergence_col
        self.deviation_col = deviation_col
        self.divergence_threshold = divergence_threshold
        self.deviation_threshold = deviation_threshold

    def fired(self, frame: pl.DataFrame) -> np.ndarray:
        div = _column(frame, self.divergence_col)
        dev = _column(frame, self.deviation_col)
        with np.errstate(invalid="ignore"):
            return (div > self.divergence_threshold) | (dev > self.deviation_threshold)


class OiDeviationRuleBaseline(_RuleBaseline):
    """Alert when OI stands more than ``threshold`` percent above its 24h mean (default 15)."""

    name = "oi_deviation_rule"

    def __init__(self, deviation_col: str = "oi_dev_24h_pct", threshold: float = 15.0) -> None:
        if threshold <= 0:
            raise ValueError(f"threshold must be > 0, got {threshold!r}")
        self.deviation_col = deviation_col
        self.threshold = threshold

    def fired(self, frame: pl.DataFrame) -> np.ndarray:
        dev = _column(frame, self.deviation_col)
        with np.errstate(invalid="ignore"):
            return dev > self.threshold


class FundingRuleBaseline(_RuleBaseline):
    """Alert when |funding z-score| > ``z_threshold`` and OI is above its 24h mean."""

    name = "funding_rule"

    def __init__(
        self,
        funding_z_col: str = "funding_z_7d",
        deviation_col: str = "oi_dev_24h_pct",
        z_threshold: float = 2.0,
    ) -> None:
        if z_threshold <= 0:
            raise ValueError(f"z_threshold must be > 0, got {z_threshold!r}")
        self.funding_z_col = funding_z_col
        self.deviation_col = deviation_col
        self.z_threshold = z_threshold

    def fired(self, frame: pl.DataFrame) -> np.ndarray:
        z = _column(frame, self.funding_z_col)
        dev = _column(frame, self.deviation_col)
        with np.errstate(invalid="ignore"):
            return (np.abs(z) > self.z_threshold) & (dev > 0)


class LogisticBaseline:
    """Standardised logistic regression on the model's features.

    Missing values are filled with the training window's medians (learned in ``fit``,
    ``medians_``); classes are balanced in the fit and the output is recalibrated to the
    training base rate by the intercept shift, so its probabilities stay comparable.
    """

    name = "logistic"

    def __init__(self, features: tuple[str, ...], C: float = 0.1) -> None:  # noqa: N803
        if not features:
            raise ValueError("LogisticBaseline needs at least one feature")
        if C <= 0:
            raise ValueError(f"C must be > 0, got {C!r}")
        self.features = tuple(features)
        self.C = C

    def _matrix(self, frame: pl.DataFrame) -> np.ndarray:
        X = np.column_stack([_column(frame, f) for f in self.features])
        return np.where(np.isnan(X), self.medians_, X)

    def fit(self, frame: pl.DataFrame, y: np.ndarray) -> LogisticBaseline:
        raw = np.column_stack([_column(frame, f) for f in self.features])
        with warnings.catch_warnings():  # an all-missing column: its median is NaN -> 0
            warnings.simplefilter("ignore", RuntimeWarning)
            medians = np.nanmedian(raw, axis=0)
        self.medians_ = np.where(np.isnan(medians), 0.0, medians)
        y = np.asarray(y, dtype=int)
        self.pipeline_ = make_pipeline(
            StandardScaler(), LogisticRegression(C=self.C, class_weight="balanced", max_iter=500)
        )
        self.pipeline_.fit(self._matrix(frame), y)
        # undo the balanced weighting: shift log-odds by the prior ratio
        rate = float(np.clip(y.mean(), 1e-6, 1 - 1e-6))
        self.logit_shift_ = float(np.log(rate / (1 - rate)))
        return self

    def predict_proba(self, frame: pl.DataFrame) -> np.ndarray:
        if not hasattr(self, "pipeline_"):
            raise RuntimeError("LogisticBaseline is not fitted: call fit() first")
        logit = self.pipeline_.decision_function(self._matrix(frame)) + self.logit_shift_
        return 1.0 / (1.0 + np.exp(-logit))
