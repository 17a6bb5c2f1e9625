"""Held-out evaluation: the model and every baseline, the same metrics on the same rows.

Baselines are fitted on the training window only; the model's probabilities come from a
model that never saw the held-out window. Plots are written as PNG files (and logged to
MLflow by the caller).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
import polars as pl

from oihedge.models import plots
from oihedge.models.baselines import (
    FixedRuleBaseline,
    FundingRuleBaseline,
    LogisticBaseline,
    OiDeviationRuleBaseline,
)
from oihedge.models.metrics import ClassificationMetrics, classification_metrics
from oihedge.models.train import CascadeClassifier, TrainingData


@dataclass(frozen=True)
class Evaluation:
    """Metrics per scorer (``model`` first, then the baselines) on one held-out window."""

    window_start: str
    window_end: str
    metrics: dict[str, ClassificationMetrics]
    scores: dict[str, np.ndarray]

    def table(self) -> pl.DataFrame:
        """One row per scorer, one column per metric."""
        return pl.DataFrame([{"scorer": k, **m.as_dict()} for k, m in self.metrics.items()])

    @property
    def window(self) -> str:
        return f"{self.window_start}/{self.window_end}"


def baseline_scores(
    train: TrainingData,
    holdout: TrainingData,
    *,
    features_train: pl.DataFrame,
    features_holdout: pl.DataFrame,
) -> dict[str, np.ndarray]:
    """Fit each baseline on the training window and score the held-out rows.

    ``features_*`` carry every feature column (the rules may read columns the model's
    spec leaves out), row-aligned with ``train`` / ``holdout``. A rule whose columns are
    absent is skipped, not faked.
    """
    out: dict[str, np.ndarray] = {}
    for rule in (FixedRuleBaseline(), OiDeviationRuleBaseline(), FundingRuleBaseline()):
        try:
            rule.fit(features_train, train.y)
        except ValueError:
            continue
        out[rule.name] = rule.predict_proba(features_holdout)
    logistic = LogisticBaseline(train.features).fit(train.frame, train.y)
    out[logistic.name] = logistic.predict_proba(holdout.frame)
    return out


def evaluate(
    holdout: TrainingData,
    scores: dict[str, np.ndarray],
    *,
    events: pl.DataFrame | None = None,
    horizon: timedelta = timedelta(hours=4),
    alert_rate: float = 0.05,
) -> Evaluation:
    """Metrics of every score on ``holdout``; event metrics when ``events`` has
    ``symbol`` and ``start`` columns (the label events of the held-out window)."""
    kwargs = {}
    if events is not None and events.height:
        kwargs = {
            "times": holdout.times,
            "symbols": holdout.symbols,
            "event_starts": events["start"].to_numpy(),
            "event_symbols": events["symbol"].to_numpy(),
        }
    metrics = {
        name: classification_metrics(holdout.y, p, alert_rate=alert_rate, horizon=horizon, **kwargs)
        for name, p in scores.items()
    }
    ts = holdout.frame["ts"]
    return Evaluation(str(ts.min()), str(ts.max()), metrics, scores)


def write_plots(
    evaluation: Evaluation, holdout: TrainingData, model: CascadeClassifier, folder: Path
) -> list[Path]:
    """PR curves, reliability diagram, gain importance and mean |SHAP| as PNG files."""
    y = holdout.y
    names = list(model.features_)
    gain = model.booster_.feature_importance(importance_type="gain")
    contrib = model.contributions(holdout.X)[:, :-1]
    return [
        plots.pr_curves(y, evaluation.scores, folder / "pr_curve.png"),
        plots.reliability(y, evaluation.scores, folder / "reliability.png"),
        plots.importance(names, gain, "Feature importance (gain)", folder / "importance_gain.png"),
        plots.importance(
            names,
            np.abs(contrib).mean(axis=0),
            "Mean |SHAP| (log-odds)",
            folder / "shap_mean_abs.png",
        ),
    ]
