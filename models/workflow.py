"""`oihedge train` as one function: features + labels -> tune -> train -> calibrate ->
evaluate -> log -> register.

Time is split once: the development period (tuning folds, the final fit, the calibrator,
the cascade severity of :mod:`oihedge.models.severity`) and, after a purged gap of one horizon,
the held-out period (evaluation and the promotion gate). Nothing fitted sees the held-out
rows: a development row's label window ends before the held-out start. The caller (the
CLI) loads the panel and sets the MLflow tracking URI; this module takes frames and plain
settings.

A train first marks FAILED the runs of its experiment that a killed train left RUNNING
(:func:`oihedge.models.tracking.fail_orphaned_runs`: only runs whose owning process is gone; a
concurrent train's runs are kept), and tags its own run with its owner
(:func:`oihedge.models.tracking.owner_tags`). The study's parent run and the trial runs end with
the tuning (:mod:`oihedge.models.tune`); the train run ends with this function, FAILED when it
raises.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import polars as pl

from oihedge.features.registry import build_features
from oihedge.features.schema import format_duration
from oihedge.features.spec import FeatureSpec
from oihedge.models import registry
from oihedge.models.artifact import log_cascade_model
from oihedge.models.calibrate import TIE_BREAK
from oihedge.models.evaluate import Evaluation, baseline_scores, evaluate, write_plots
from oihedge.models.fingerprint import panel_fingerprint
from oihedge.models.label_params import LabelConfig
from oihedge.models.label_report import label_events, label_report
from oihedge.models.labels import cascade_labels
from oihedge.models.severity import CLOSE, SEVERITY_VOL, Severity, fit_severity, severity_rows
from oihedge.models.splits import WalkForwardSplit, holdout_split
from oihedge.models.tracking import fail_orphaned_runs, owner_tags
from oihedge.models.train import CascadeClassifier, TrainingData, make_training_data
from oihedge.models.tune import TuneResult, tune

Progress = Callable[[str, float], None]

log = logging.getLogger(__name__)


#: what the model choice study (#21) kept and why; it travels with every model card
MODEL_CHOICE: dict[str, object] = {
    "chosen_on": "purged inner walk-forward folds only (the real panel before 2025-06-01, "
    "the development part of simulated seeds 7-9), never the reported windows",
    "kept": [
        f"calibrated output tie-broken by the raw score (weight {TIE_BREAK}): the isotonic "
        "step function put the top 1 % of rows on one value and cost PR-AUC on every "
        "inner-fold set",
        "a falling Platt map is replaced by the base rate (an inner fold fitted slope -0.14)",
    ],
    "not_kept": [
        "stronger or weaker regularisation",
        "slower learning",
        "class weighting",
        "linear trees",
        "boosting from the logistic fit",
        "rank average with logistic",
        "per-symbol z-scores",
        "normalised OI level",
        "monotone constraints",
        "calibration per asset class",
    ],
    "why_not": "each helped some inner-fold sets and lost on others (README, #21 table)",
}


@dataclass(frozen=True)
class TrainSettings:
    """Everything `oihedge train` needs besides the panel (plain values, no config object)."""

    universe: str
    spec: FeatureSpec
    labels: LabelConfig
    n_trials: int = 20
    n_splits: int = 4
    holdout_fraction: float = 0.25
    storage: str | None = None
    study_name: str = ""
    seed: int = 0
    timeout_s: float | None = None
    alert_rate: float = 0.05
    calibration: str = "auto"
    experiment: str = "oihedge"

    def resolved_study_name(self) -> str:
        return self.study_name or (
            f"oihedge-{self.universe}-{self.spec.name}-v{self.spec.version}-"
            f"{format_duration(self.labels.horizon)}"
        )


@dataclass(frozen=True)
class Prepared:
    """Features and labels of one panel, joined, with the development/held-out split."""

    features: pl.DataFrame
    labels: pl.DataFrame
    data: TrainingData
    dev_idx: np.ndarray
    holdout_idx: np.ndarray
    spec: FeatureSpec
    events: pl.DataFrame
    horizon: timedelta

    @property
    def dev(self) -> TrainingData:
        return self.data.take(self.dev_idx)

    @property
    def holdout(self) -> TrainingData:
        return self.data.take(self.holdout_idx)

    def feature_rows(self, idx: np.ndarray) -> pl.DataFrame:
        """Every feature column (not only the spec's), row-aligned with ``data.take(idx)``."""
        keys = self.data.frame[idx].select("ts", "symbol")
        return keys.join(self.features, on=["ts", "symbol"], how="left", maintain_order="left")


def prepare(
    panel: pl.DataFrame,
    spec: FeatureSpec,
    labels: LabelConfig,
    *,
    holdout_fraction: float | None = 0.25,
    holdout_start: Any = None,
    progress: Progress | None = None,
) -> Prepared:
    """Build features and labels and split off the held-out period."""
    note = progress or (lambda _stage, _f: None)
    built = build_features(panel, spec, progress=lambda f: note("features", f))
    label_frame = cascade_labels(panel, labels, bar=built.spec.params.bar)
    note("labels", 1.0)
    data = make_training_data(built.table, label_frame, built.spec.features, labels.label_column)
    dev_idx, holdout_idx = holdout_split(
        data.times,
        horizon=labels.horizon,
        holdout_fraction=None if holdout_start is not None else holdout_fraction,
        start=holdout_start,
    )
    events = label_events(label_frame, labels)
    return Prepared(
        built.table, label_frame, data, dev_idx, holdout_idx, built.spec, events, labels.horizon
    )


#: fewer positive (cascade) rows than this in the development period cannot train a model
MIN_DEV_POSITIVES = 30


def check_enough_positives(prepared: Prepared) -> None:
    """Refuse, with the counts, a panel too short or too calm to learn or evaluate from."""
    dev_pos, hold_pos = int(prepared.dev.y.sum()), int(prepared.holdout.y.sum())
    if dev_pos < MIN_DEV_POSITIVES or hold_pos == 0:
        raise ValueError(
            f"the panel holds {dev_pos} positive (cascade) rows in the development period "
            f"and {hold_pos} in the held-out period; training needs at least "
            f"{MIN_DEV_POSITIVES} and evaluation at least 1: use a longer panel"
        )


def training_severity(
    prepared: Prepared, label_column: str, *, min_rows: int = 5
) -> tuple[Severity | None, str]:
    """The cascade severity fitted on the development rows only (the rows the final model
    is trained on: their label windows end before the held-out start), and a note saying
    why there is none (empty when fitted)."""
    if SEVERITY_VOL not in prepared.features.columns or CLOSE not in prepared.labels.columns:
        return None, f"no {SEVERITY_VOL} feature or {CLOSE} label column: the policy's stress_k"
    rows = severity_rows(prepared.features, prepared.labels, label_column, prepared.horizon)
    dev_keys = prepared.dev.frame.select("ts", "symbol")
    rows = rows.join(dev_keys, on=["ts", "symbol"], how="semi")
    severity = fit_severity(rows, min_rows=min_rows)
    if severity is None:
        return None, (
            f"{rows.height} positive development rows with a drop and a volatility < "
            f"min_rows={min_rows}: the policy's stress_k"
        )
    return severity, ""


def calibrator_ceiling(model: CascadeClassifier) -> float:
    """The highest probability the fitted calibrator can give (it is monotone in the raw
    score, so the larger of its outputs at raw scores 0 and 1)."""
    return float(np.max(model.calibrator_.predict(np.array([0.0, 1.0]))))


@dataclass(frozen=True)
class TrainOutcome:
    """What `oihedge train` produced. ``card``: the model card as registered;
    ``prepared``: the features, labels and split it was trained on; ``holdout_p``: the
    model's calibrated probability on ``prepared.holdout`` rows (row-aligned);
    ``calibrator_max``: :func:`calibrator_ceiling`."""

    run_id: str
    model_uri: str
    model_name: str
    version: str
    tune: TuneResult
    evaluation: Evaluation
    label_summary: dict[str, Any]
    plots: tuple[Path, ...]
    card: dict[str, Any] | None = None
    prepared: Prepared | None = None
    holdout_p: np.ndarray | None = None
    calibrator_max: float | None = None


def feature_spec_card(spec: FeatureSpec) -> dict[str, Any]:
    """The spec as stored with the model and compared by the serving check."""
    return {
        "name": spec.name,
        "version": spec.version,
        "features": list(spec.features),
        "hash": spec.hash(),
    }


def holdout_evaluation(
    prepared: Prepared, model_scores: dict[str, np.ndarray], *, alert_rate: float
) -> Evaluation:
    """The given model scores and every baseline (fitted on the development rows only) on
    the held-out rows; the models first, in the given order."""
    dev, hold = prepared.dev, prepared.holdout
    scores = dict(model_scores)
    scores.update(
        baseline_scores(
            dev,
            hold,
            features_train=prepared.feature_rows(prepared.dev_idx),
            features_holdout=prepared.feature_rows(prepared.holdout_idx),
        )
    )
    t0, t1 = hold.frame["ts"].min(), hold.frame["ts"].max()
    events = prepared.events.filter(pl.col("start").is_between(t0, t1))
    return evaluate(hold, scores, events=events, horizon=prepared.horizon, alert_rate=alert_rate)


def run_training(
    panel: pl.DataFrame,
    settings: TrainSettings,
    *,
    git_commit: str,
    progress: Progress | None = None,
    plots_dir: Path | None = None,
) -> TrainOutcome:
    """The whole of `oihedge train` (see the module docstring). MLflow must be configured.

    Plots are logged to the run and, with ``plots_dir``, also kept there as PNG files.
    """
    note = progress or (lambda _stage, _f: None)
    horizon = settings.labels.horizon
    experiment = mlflow.set_experiment(settings.experiment)
    orphans = fail_orphaned_runs([experiment.experiment_id])
    if orphans:
        log.warning(
            "marked FAILED %d run(s) left RUNNING by a process that is gone: %s",
            len(orphans),
            ", ".join(orphans),
        )
    prepared = prepare(
        panel,
        settings.spec,
        settings.labels,
        holdout_fraction=settings.holdout_fraction,
        progress=note,
    )
    dev = prepared.dev
    check_enough_positives(prepared)
    splitter = WalkForwardSplit(settings.n_splits, horizon=horizon)
    fingerprint = panel_fingerprint(panel)
    summary = label_report(prepared.labels, prepared.events).to_dict()
    tags = {"oihedge.kind": "train", "git_commit": git_commit, "universe": settings.universe}
    with mlflow.start_run(
        run_name=f"train-{settings.universe}", tags={**tags, **owner_tags()}
    ) as run:
        mlflow.log_params(_run_params(settings, prepared, fingerprint, git_commit))
        mlflow.log_dict(summary, "labels/label_report.json")

        done = [0]

        def on_trial(study: Any, trial: Any) -> None:
            done[0] += 1
            note("tune", done[0] / settings.n_trials)

        result = tune(
            dev,
            splitter,
            n_trials=settings.n_trials,
            study_name=settings.resolved_study_name(),
            storage=settings.storage,
            seed=settings.seed,
            timeout_s=settings.timeout_s,
            experiment_id=experiment.experiment_id,
            callbacks=[on_trial],
        )
        mlflow.log_params({f"best.{k}": v for k, v in result.best_params.items()})
        mlflow.log_metric("tune.best_oof_pr_auc", result.best_value)
        mlflow.set_tag("optuna.parent_run_id", result.parent_run_id or "")

        model = CascadeClassifier(
            result.best_params,
            calibration=settings.calibration,  # type: ignore[arg-type]
            seed=settings.seed,
        ).fit(dev, splitter)
        note("train", 1.0)
        severity, severity_note = training_severity(prepared, settings.labels.label_column)
        if severity is not None:
            mlflow.log_metrics(
                {"severity.k": severity.k, "severity.n_rows": float(severity.n_rows)}
            )
        holdout_p = model.predict_proba(prepared.holdout.X)
        evaluation = holdout_evaluation(
            prepared, {"model": holdout_p}, alert_rate=settings.alert_rate
        )
        for scorer, metrics in evaluation.metrics.items():
            mlflow.log_metrics(
                {f"holdout.{scorer}.{k}": v for k, v in metrics.as_dict().items() if np.isfinite(v)}
            )
        mlflow.log_table(evaluation.table().to_pandas(), "evaluation/holdout_metrics.json")
        with tempfile.TemporaryDirectory() as tmp:
            folder = plots_dir if plots_dir is not None else Path(tmp)
            plot_paths = write_plots(evaluation, prepared.holdout, model, folder)
            for path in plot_paths:
                mlflow.log_artifact(str(path), "plots")
            kept = tuple(plot_paths) if plots_dir is not None else ()
        card = {
            "features": list(model.features_),
            "feature_spec": feature_spec_card(prepared.spec),
            "horizon": format_duration(horizon),
            "label": settings.labels.label_column,
            "label_params": _label_params(settings.labels),
            "dataset": fingerprint,
            "holdout": {"start": evaluation.window_start, "end": evaluation.window_end},
            "git_commit": git_commit,
            "seed": settings.seed,
            "calibrator": model.calibrator_.method_,
            "model_choice": MODEL_CHOICE,
            "severity": None if severity is None else severity.card(),
        }
        if severity is None:
            card["severity_note"] = severity_note
        example = prepared.holdout.frame.select(model.features_).head(5).to_pandas()
        info = log_cascade_model(model, card, input_example=example)
        name = registry.model_name(settings.universe)
        version = registry.register(info.model_uri, name, _version_tags(card, evaluation))
        note("register", 1.0)
    return TrainOutcome(
        run.info.run_id,
        info.model_uri,
        name,
        version,
        result,
        evaluation,
        summary,
        kept,
        card=card,
        prepared=prepared,
        holdout_p=holdout_p,
        calibrator_max=calibrator_ceiling(model),
    )


def _label_params(labels: LabelConfig) -> dict[str, Any]:
    def plain(params: Any) -> dict[str, Any]:
        return {
            k: (format_duration(v) if isinstance(v, timedelta) else v)
            for k, v in asdict(params).items()
        }

    return {
        "majors": plain(labels.majors),
        "altcoin": plain(labels.altcoin),
        "altcoins": sorted(labels.altcoins),
    }


def _run_params(
    settings: TrainSettings, prepared: Prepared, fingerprint: dict[str, Any], git_commit: str
) -> dict[str, Any]:
    dev_t, hold_t = prepared.dev.frame["ts"], prepared.holdout.frame["ts"]
    return {
        "universe": settings.universe,
        "feature_spec": f"{prepared.spec.name}@v{prepared.spec.version}",
        "feature_spec_hash": prepared.spec.hash(),
        "n_features": len(prepared.spec.features),
        "horizon": format_duration(settings.labels.horizon),
        "label": settings.labels.label_column,
        "n_trials": settings.n_trials,
        "n_splits": settings.n_splits,
        "seed": settings.seed,
        "calibration": settings.calibration,
        "dataset_hash": fingerprint["hash"],
        "dataset_rows": fingerprint["rows"],
        "dataset_start": fingerprint["start"],
        "dataset_end": fingerprint["end"],
        "dataset_venues": ",".join(fingerprint["venues"]),
        "dataset_symbols": ",".join(fingerprint["symbols"]),
        "dev_start": str(dev_t.min()),
        "dev_end": str(dev_t.max()),
        "holdout_start": str(hold_t.min()),
        "holdout_end": str(hold_t.max()),
        "dev_rows": prepared.dev.frame.height,
        "dev_positive_rate": round(float(prepared.dev.y.mean()), 6),
        "holdout_rows": prepared.holdout.frame.height,
        "git_commit": git_commit,
    }


def _version_tags(card: dict[str, Any], evaluation: Evaluation) -> dict[str, object]:
    model = evaluation.metrics["model"]
    return {
        "feature_spec": f"{card['feature_spec']['name']}@v{card['feature_spec']['version']}",
        "feature_spec_hash": card["feature_spec"]["hash"],
        "dataset_hash": card["dataset"]["hash"],
        "dataset_window": f"{card['dataset']['start']}/{card['dataset']['end']}",
        "horizon": card["horizon"],
        "label_params": card["label_params"],
        "holdout_window": evaluation.window,
        "holdout_pr_auc": f"{model.pr_auc:.6f}",
        "holdout_brier": f"{model.brier:.6f}",
        "holdout_ece": f"{model.ece:.6f}",
        "git_commit": card["git_commit"],
        "severity_k": "none" if card["severity"] is None else f"{card['severity']['k']:.6f}",
    }
