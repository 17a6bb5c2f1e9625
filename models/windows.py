"""Walk-forward evaluation over many windows: the model and its rivals, refitted before
each window, on the same rows.

One held-out window is a small sample (a few cascade events decide its PR-AUC). Here the
evaluated period is cut into consecutive windows of ``window`` length, every ``step``; for
each window every scorer is fitted on the rows *before* it and scores the window's rows:

- a window is scored when its training rows hold both classes, the model can be fitted
  and calibrated on them, and its own rows hold a positive; otherwise it is skipped with
  the reason (``progress``);
- training rows are every labelled row with ``t + gap < window start`` (``gap`` =
  ``embargo``, default the label horizon: purged and embargoed as in :mod:`oihedge.models.splits`),
  from the first row (expanding); the first window starts ``min_train`` after the first row;
- ``model``: :class:`oihedge.models.train.CascadeClassifier` with *fixed* hyperparameters (no
  tuning inside a window, as the backtest's walk-forward), calibrated on purged
  walk-forward out-of-fold scores of its training rows;
- ``vol_only``: the same classifier restricted to the volatility family (price returns and
  realised volatility): no OI, funding or correlation. The rival that tests the mission's
  premise that OI and funding announce cascades before price does;
- ``logistic``, ``fixed_rule``, ``oi_deviation_rule``, ``funding_rule``: the baselines of
  :func:`oihedge.models.evaluate.baseline_scores`, fitted on the same training rows.

**Families** (:data:`FAMILIES`): features are grouped by the prefix of their name. With
``ablation`` the model is refitted per window with each family removed and with each
family alone; a family's effect is the mean change in PR-AUC against the full model over
the windows (``drop``: what removing it costs, negative when the family helps; ``alone``:
that family's model against the full one). A family absent from the feature set, or
whose features hold no value in the data (``empty``: e.g. a panel without liquidation
feeds), has no ablation row, never a faked one.

No window is chosen, tuned or calibrated on its own rows.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import polars as pl
from sklearn.metrics import average_precision_score

from oihedge.features.schema import format_duration
from oihedge.models.evaluate import baseline_scores, evaluate
from oihedge.models.metrics import ClassificationMetrics
from oihedge.models.splits import WalkForwardSplit
from oihedge.models.train import CascadeClassifier, TrainingData

#: feature family -> name prefixes (a feature belongs to the first family whose prefix
#: its name starts with; ``other`` otherwise)
FAMILIES: dict[str, tuple[str, ...]] = {
    "oi_divergence": ("oi_",),
    "funding": ("funding_",),
    "correlation": ("corr_",),
    "volatility": ("vol_",),
    "liquidations": ("liq_",),
    "depth": ("depth_",),
    "options": ("opt_",),
}
#: the family the ``vol_only`` rival is restricted to
VOL_ONLY_FAMILY = "volatility"
#: the scorers of every window, in table order (a rule whose columns are absent is skipped)
SCORERS = ("model", "vol_only", "logistic", "fixed_rule", "oi_deviation_rule", "funding_rule")

Progress = Callable[[str], None]


def family_of(feature: str) -> str:
    """The family of a feature name (see :data:`FAMILIES`)."""
    for family, prefixes in FAMILIES.items():
        if feature.startswith(prefixes):
            return family
    return "other"


def family_features(features: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """Family -> the given features in it (families with no feature are left out)."""
    out: dict[str, list[str]] = {}
    for name in features:
        out.setdefault(family_of(name), []).append(name)
    return {k: tuple(v) for k, v in out.items()}


@dataclass(frozen=True)
class WindowSettings:
    """How the evaluated period is cut and how each window's scorers are fitted.

    ``window``/``step``: window length and the distance between window starts (``step``
    defaults to ``window``: consecutive windows). ``start``/``end``: the first window's
    start and the last window's end (default: ``min_train`` after the first row, and the
    last row). ``params``: the fixed LightGBM hyperparameters (``num_boost_round``
    included); ``n_splits``: out-of-fold folds for the calibrator; ``embargo``: the gap
    between training rows and a window (default: the label horizon).
    """

    params: Mapping[str, Any]
    window: timedelta = timedelta(days=30)
    step: timedelta | None = None
    start: datetime | None = None
    end: datetime | None = None
    min_train: timedelta = timedelta(days=60)
    n_splits: int = 2
    calibration: str = "auto"
    alert_rate: float = 0.05
    embargo: timedelta | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("window", "min_train"):
            if not getattr(self, name) > timedelta(0):
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if self.step is not None and not self.step > timedelta(0):
            raise ValueError(f"step must be > 0, got {self.step!r}")
        for name in ("start", "end"):
            moment = getattr(self, name)
            if moment is not None and moment.tzinfo is None:
                raise ValueError(f"{name} must be timezone-aware, got {moment!r}")
        if self.start is not None and self.end is not None and not self.start < self.end:
            raise ValueError(f"start must be before end, got {self.start} and {self.end}")


def window_bounds(
    first: datetime, last: datetime, settings: WindowSettings
) -> list[tuple[datetime, datetime]]:
    """``[start, end)`` of each window between the data's ``first`` and ``last`` row (a
    last window shorter than ``window`` is kept when it holds at least half a window)."""
    start = settings.start or first + settings.min_train
    end = settings.end or last + timedelta(microseconds=1)
    step = settings.step or settings.window
    out = []
    while start < end:
        stop = min(start + settings.window, end)
        if stop - start >= settings.window / 2:
            out.append((start, stop))
        start += step
    return out


@dataclass(frozen=True)
class Window:
    """One evaluated window: its rows and every scorer's metrics."""

    start: datetime
    end: datetime
    train_rows: int
    rows: int
    positives: int
    events: int
    metrics: dict[str, ClassificationMetrics]
    #: variant name ("-oi_divergence", "+funding", ...) -> the model's PR-AUC (ablation)
    variants: dict[str, float] = field(default_factory=dict)

    @property
    def base_rate(self) -> float:
        return self.positives / self.rows if self.rows else math.nan

    def best(self) -> str:
        """The scorer with the highest PR-AUC (NaN never wins)."""
        ranked = [(m.pr_auc, k) for k, m in self.metrics.items() if not math.isnan(m.pr_auc)]
        return max(ranked)[1] if ranked else ""

    def record(self) -> dict[str, Any]:
        """The window as the ``--json`` output writes it."""
        return {
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "train_rows": self.train_rows,
            "rows": self.rows,
            "base_rate": self.base_rate,
            "positives": self.positives,
            "events": self.events,
            "metrics": [{"scorer": k, **m.as_dict()} for k, m in self.metrics.items()],
            **({"ablation": dict(self.variants)} if self.variants else {}),
        }


@dataclass(frozen=True)
class WalkForwardEvaluation:
    """Every window of one walk-forward evaluation, with its summary and ablation."""

    windows: list[Window]
    families: dict[str, tuple[str, ...]]
    #: the model's features with no value in any row (a family made only of them is absent)
    empty: tuple[str, ...] = ()

    @property
    def scorers(self) -> list[str]:
        """Every scorer of any window, in table order."""
        return list(dict.fromkeys(k for w in self.windows for k in w.metrics))

    def table(self) -> pl.DataFrame:
        """One row per (window, scorer): start, end, base rate, and the metrics."""
        return pl.DataFrame(
            [
                {
                    "start": w.start,
                    "end": w.end,
                    "base_rate": w.base_rate,
                    "events": w.events,
                    "scorer": k,
                    **m.as_dict(),
                }
                for w in self.windows
                for k, m in w.metrics.items()
            ]
        )

    def summary(self) -> dict[str, Any]:
        """Per scorer: mean and median PR-AUC, ROC-AUC, Brier, ECE over the windows, the
        windows it is best in, and (model only) the windows it beats each rival in."""
        scorers = self.scorers
        best = [w.best() for w in self.windows]
        out: dict[str, Any] = {
            "windows": len(self.windows),
            "mean_base_rate": _mean([w.base_rate for w in self.windows]),
            "scorers": {},
        }
        for name in scorers:
            rows = [w.metrics[name] for w in self.windows if name in w.metrics]
            entry: dict[str, Any] = {"windows_best": best.count(name)}
            for metric in ("pr_auc", "roc_auc", "brier", "ece"):
                values = [getattr(m, metric) for m in rows]
                entry[f"mean_{metric}"] = _mean(values)
                entry[f"median_{metric}"] = _median(values)
            out["scorers"][name] = entry
        if "model" in scorers:
            out["model_beats"] = {
                rival: sum(
                    1
                    for w in self.windows
                    if rival in w.metrics and _beats(w.metrics["model"], w.metrics[rival])
                )
                for rival in scorers
                if rival != "model"
            }
            out["model_beats_all"] = sum(
                1
                for w in self.windows
                if all(_beats(w.metrics["model"], m) for k, m in w.metrics.items() if k != "model")
            )
        return out

    def ablation(self) -> pl.DataFrame:
        """Per family: the mean PR-AUC change against the full model when the family is
        removed (``drop``) and when it is used alone (``alone``), and the windows behind
        each mean; absent families have no rows. Empty without an ablation run."""
        rows = []
        for family in FAMILIES:
            count = len(self.families.get(family, ()))
            entry: dict[str, Any] = {"family": family, "features": count}
            for kind, sign in (("drop", "-"), ("alone", "+")):
                deltas = [
                    w.variants[sign + family] - w.metrics["model"].pr_auc
                    for w in self.windows
                    if sign + family in w.variants and "model" in w.metrics
                ]
                entry[f"{kind}_mean_delta_pr_auc"] = _mean(deltas)
                entry[f"{kind}_windows"] = len(deltas)
            rows.append(entry)
        table = pl.DataFrame(rows)
        return table.filter((pl.col("drop_windows") > 0) | (pl.col("alone_windows") > 0))

    def record(self) -> dict[str, Any]:
        """``windows``, ``summary`` and (when run) ``ablation``: the ``--json`` shape."""
        out: dict[str, Any] = {
            "windows": [w.record() for w in self.windows],
            "summary": self.summary(),
            "families": {k: list(v) for k, v in self.families.items()},
            "empty_features": list(self.empty),
        }
        ablation = self.ablation()
        if ablation.height:
            out["ablation"] = ablation.to_dicts()
        return out


def _beats(a: ClassificationMetrics, b: ClassificationMetrics) -> bool:
    return not math.isnan(a.pr_auc) and (math.isnan(b.pr_auc) or a.pr_auc > b.pr_auc)


def _mean(values: list[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return float(statistics.fmean(kept)) if kept else math.nan


def _median(values: list[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return float(statistics.median(kept)) if kept else math.nan


def evaluate_windows(
    data: TrainingData,
    features: pl.DataFrame,
    events: pl.DataFrame,
    horizon: timedelta,
    settings: WindowSettings,
    *,
    ablation: bool = False,
    progress: Progress | None = None,
) -> WalkForwardEvaluation:
    """Fit every scorer before each window and score the window (module docstring).

    ``data``: the labelled rows (the model's features and the label); ``features``: every
    feature column keyed by ``ts``/``symbol`` (the rules may read columns the model leaves
    out); ``events``: label events (``symbol``, ``start``) for the event metrics. Raises
    ``ValueError`` when no window holds rows and training rows.
    """
    note = progress or (lambda _line: None)
    times = data.frame["ts"]
    bounds = window_bounds(times.min(), times.max(), settings)
    rows = data.frame.height
    empty = tuple(f for f in data.features if data.frame[f].fill_nan(None).null_count() == rows)
    families = family_features(tuple(f for f in data.features if f not in empty))
    gap = settings.embargo or horizon
    t = times.to_numpy()
    windows = []
    for start, end in bounds:
        label = f"window {start:%Y-%m-%d %H:%M}..{end:%Y-%m-%d %H:%M}"
        test_idx = np.flatnonzero((t >= _np(start)) & (t < _np(end)))
        train_idx = np.flatnonzero(t + np.timedelta64(gap) < _np(start))
        if test_idx.size == 0 or train_idx.size == 0:
            note(f"{label}: skipped ({train_idx.size} training rows, {test_idx.size} rows)")
            continue
        train, test = data.take(train_idx), data.take(test_idx)
        if not 0 < int(train.y.sum()) < train_idx.size or not test.y.any():
            note(
                f"{label}: skipped ({int(train.y.sum())} positive of {train_idx.size} "
                f"training rows, {int(test.y.sum())} of its {test_idx.size} rows: nothing to"
                " learn from or to score)"
            )
            continue
        try:
            scores = {"model": _fit_score(train, test, data.features, horizon, settings)}
            vol = families.get(VOL_ONLY_FAMILY, ())
            if vol:
                scores["vol_only"] = _fit_score(train, test, vol, horizon, settings)
        except ValueError as err:  # e.g. no positive in the calibration folds
            note(f"{label}: skipped (the model cannot be fitted on its training rows: {err})")
            continue
        keys = data.frame.select("ts", "symbol")
        scores.update(
            baseline_scores(
                train,
                test,
                features_train=_rows(keys[train_idx], features),
                features_holdout=_rows(keys[test_idx], features),
            )
        )
        ordered = {k: scores[k] for k in SCORERS if k in scores}
        in_window = events.filter(pl.col("start").is_between(start, end, closed="left"))
        evaluation = evaluate(
            test, ordered, events=in_window, horizon=horizon, alert_rate=settings.alert_rate
        )
        variants = _ablation(train, test, families, horizon, settings) if ablation else {}
        window = Window(
            start=start,
            end=end,
            train_rows=int(train_idx.size),
            rows=int(test_idx.size),
            positives=int(test.y.sum()),
            events=in_window.height,
            metrics=evaluation.metrics,
            variants=variants,
        )
        windows.append(window)
        cells = "  ".join(f"{k} {m.pr_auc:.3f}" for k, m in window.metrics.items())
        note(f"{label}: base rate {window.base_rate:.4f}  {cells}")
    if not windows:
        raise ValueError(
            f"no window of {format_duration(settings.window)} between {times.min():%Y-%m-%d %H:%M}"
            f" and {times.max():%Y-%m-%d %H:%M} holds evaluated rows and training rows with"
            f" both classes (min_train {format_duration(settings.min_train)}): use a longer"
            " panel or a shorter window"
        )
    return WalkForwardEvaluation(windows, families, empty)


def _np(moment: datetime) -> np.datetime64:
    """``moment`` (timezone-aware) as numpy's UTC microseconds, as the ``ts`` column."""
    return np.datetime64(moment.astimezone(UTC).replace(tzinfo=None), "us")


def _rows(keys: pl.DataFrame, features: pl.DataFrame) -> pl.DataFrame:
    return keys.join(features, on=["ts", "symbol"], how="left", maintain_order="left")


def _fit_score(
    train: TrainingData,
    test: TrainingData,
    names: tuple[str, ...],
    horizon: timedelta,
    settings: WindowSettings,
) -> np.ndarray:
    """The fixed-hyperparameter classifier on ``names``: fitted on ``train``, calibrated on
    its purged out-of-fold scores, scoring ``test``."""
    fit_on = TrainingData(train.frame, names, train.label)
    splitter = WalkForwardSplit(settings.n_splits, horizon=horizon, embargo=settings.embargo)
    model = CascadeClassifier(
        dict(settings.params), calibration=settings.calibration, seed=settings.seed
    ).fit(fit_on, splitter)
    return model.predict_proba(TrainingData(test.frame, names, test.label).X)


def _ablation(
    train: TrainingData,
    test: TrainingData,
    families: dict[str, tuple[str, ...]],
    horizon: timedelta,
    settings: WindowSettings,
) -> dict[str, float]:
    """The model's PR-AUC with each family removed (``-family``) and alone (``+family``)."""
    y = test.y  # a scored window holds a positive (evaluate_windows)
    out = {}
    every = train.features
    for family in FAMILIES:
        own = families.get(family, ())
        if not own:
            continue
        rest = tuple(f for f in every if f not in own)
        for sign, names in (("-", rest), ("+", own)):
            if names:
                p = _fit_score(train, test, names, horizon, settings)
                out[sign + family] = float(average_precision_score(y, p))
    return out
