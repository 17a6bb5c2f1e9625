"""CLI commands of the model stage: train and evaluate; the registry's commands (promote,
rollback, models list) are :mod:`oihedge.pipelines.cli.registry`, registered with these.

`train` runs :func:`oihedge.models.workflow.run_training` and then checks that the calibrated
probability reaches the hedge policy's entry level on the held-out window
(:func:`entry_check`). `evaluate` scores a registered version (resolved and loaded by
:func:`oihedge.models.registry.load_version`) beside the baselines on a held-out window, or with
--walk-forward refits the model and its rivals over many windows
(:mod:`oihedge.pipelines.cli.walkforward`).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import click
import polars as pl
from rich.table import Table

from oihedge.pipelines.cli import registry as cli_registry
from oihedge.pipelines.cli.common import (
    CliError,
    config_option,
    emit_json,
    history_option,
    json_option,
    load_cli_config,
    load_panel,
    load_panel_with_history,
    out,
    out_dir_option,
    panel_option,
    progress_bar,
    setup_tracking,
)
from oihedge.pipelines.cli.config import Config

#: metric -> column header (short, so the table fits the terminal)
SHOWN = {
    "pr_auc": "PR-AUC",
    "roc_auc": "ROC-AUC",
    "brier": "Brier",
    "log_loss": "logloss",
    "ece": "ECE",
    "precision_at_alert": "prec@α",
    "recall_at_alert": "rec@α",
    "event_recall_at_alert": "evt rec@α",
    "mean_lead_time_h": "lead h",
}


def metrics_table(title: str, table: pl.DataFrame) -> Table:
    """A rich table: one row per scorer, the main metrics as columns."""
    alert = table["alert_rate"][0] if "alert_rate" in table.columns else float("nan")
    view = Table(title=title, caption=f"α: alerts on the top {alert:.1%} of bars by score")
    view.add_column("scorer", no_wrap=True, min_width=16)
    for header in SHOWN.values():
        view.add_column(header, justify="right", no_wrap=True)
    for row in table.iter_rows(named=True):
        cells = [f"{row[m]:.3f}" if row[m] == row[m] else "n/a" for m in SHOWN]
        view.add_row(row["scorer"], *cells)
    return view


@click.command()
@panel_option
@click.option(
    "--trials",
    type=click.IntRange(min=1),
    default=None,
    help="Optuna trials (default: train.n_trials).",
)
@click.option("--storage", default=None, help="Optuna storage URL (default: train.storage).")
@click.option("--study", "study_name", default=None, help="Optuna study name to join.")
@out_dir_option(Path("out/train"), "Where plots are kept.")
@config_option
@json_option
def train(
    panel_dir: Path | None,
    trials: int | None,
    storage: str | None,
    study_name: str | None,
    out_dir: Path,
    config_path: Path | None,
    json_out: Path | None,
) -> None:
    """Tune (Optuna), train, calibrate, evaluate against baselines, and register a model.

    The last train.holdout_fraction of the panel's time span is held out (after a purged
    gap of one horizon); the model and every baseline are scored on it. The new version of
    oihedge-cascade-<universe> gets the alias `challenger`; `oihedge promote` decides
    whether it becomes `champion`.
    """
    from oihedge.features.registry import get_spec
    from oihedge.models.label_params import LabelConfig
    from oihedge.models.tracking import git_commit
    from oihedge.models.workflow import TrainSettings

    cfg = load_cli_config(
        config_path,
        **{"train.n_trials": trials, "train.storage": storage, "train.study_name": study_name},
    )
    panel = load_panel(cfg, panel_dir)
    setup_tracking(cfg)
    settings = TrainSettings(
        universe=cfg.universe.name,
        spec=get_spec(cfg.train.feature_spec),
        labels=LabelConfig.from_mapping(cfg.labels.model_dump(), cfg.universe.altcoins),
        n_trials=cfg.train.n_trials,
        n_splits=cfg.train.n_splits,
        holdout_fraction=cfg.train.holdout_fraction,
        storage=_storage(cfg.train.storage),
        study_name=cfg.train.study_name,
        seed=cfg.train.seed,
        timeout_s=cfg.train.timeout.total_seconds() if cfg.train.timeout else None,
        alert_rate=cfg.train.alert_rate,
        calibration=cfg.train.calibration,
        experiment=cfg.mlflow.experiment,
    )
    stages = ("features", "labels", "tune", "train", "register")
    with progress_bar() as bar:
        tasks = {s: bar.add_task(s, total=1.0) for s in stages}
        outcome = _train_or_explain(
            panel,
            settings,
            git_commit=git_commit(),
            progress=lambda s, f: bar.update(tasks[s], completed=f),
            plots_dir=out_dir / "plots",
        )
    table = outcome.evaluation.table()
    out.print(metrics_table(f"held-out {outcome.evaluation.window}", table))
    out.print(
        f"tuning: {outcome.tune.n_trials} complete, {outcome.tune.n_pruned} pruned; "
        f"best OOF PR-AUC {outcome.tune.best_value:.4f} (study {outcome.tune.study_name})"
    )
    out.print(
        f"registered {outcome.model_name} v{outcome.version} as challenger (run {outcome.run_id})"
    )
    for path in outcome.plots:
        out.print(f"plot: {path}")
    check = entry_check(outcome, cfg)
    out.print(check["line"])
    emit_json(
        {
            "model": outcome.model_name,
            "version": outcome.version,
            "run_id": outcome.run_id,
            "window": outcome.evaluation.window,
            "metrics": table.to_dicts(),
            "tune": {
                "best_value": outcome.tune.best_value,
                "trials": outcome.tune.n_trials,
                "pruned": outcome.tune.n_pruned,
                "params": outcome.tune.best_params,
            },
            "labels": outcome.label_summary,
            "severity": (outcome.card or {}).get("severity"),
            "entry_check": {k: v for k, v in check.items() if k != "line"},
        },
        json_out,
    )


def entry_check(outcome: Any, cfg: Config) -> dict[str, Any]:
    """Whether the trained model's calibrated probability reaches the hedge policy's
    entry level on the held-out window (:func:`oihedge.serving.backtest.gate.probability_vs_entry`
    on the held-out rows, with the severity the model card carries and the configured
    policy parameters). The model is registered by then: a check that cannot be made says
    why, it does not fail the command."""
    from oihedge.models.severity import card_severity_k
    from oihedge.serving.backtest.gate import probability_vs_entry
    from oihedge.serving.policy.params import PolicyParams

    window = outcome.evaluation.window
    try:
        prepared = outcome.prepared
        rows = prepared.feature_rows(prepared.holdout_idx)
        symbols = sorted(rows["symbol"].unique().to_list())
        params = {s: PolicyParams(**cfg.policy_params(s)) for s in symbols}
        return probability_vs_entry(
            rows,
            outcome.holdout_p,
            params,
            severity_k=card_severity_k(outcome.card),
            window=window,
            calibrator_max=outcome.calibrator_max,
        )
    except (AttributeError, KeyError, TypeError, ValueError) as err:
        line = f"entry level: not checked ({type(err).__name__}: {err})"
        return {"window": window, "warning": None, "error": str(err), "line": line}


def _train_or_explain(*args: Any, **kwargs: Any) -> Any:
    from oihedge.models.workflow import run_training

    try:
        return run_training(*args, **kwargs)
    except ValueError as err:  # data that cannot be trained on: one clear line
        raise CliError(str(err)) from None


def _storage(url: str) -> str:
    """Make a relative SQLite Optuna storage absolute and create its folder."""
    from oihedge.models.tracking import absolute_sqlite

    return absolute_sqlite(url)


@click.command()
@click.option(
    "--model",
    "model_ref",
    default="champion",
    show_default=True,
    help="Alias (champion, challenger) or version number.",
)
@panel_option
@history_option
@click.option(
    "--start",
    type=click.DateTime(),
    default=None,
    help="Window start, UTC (default: the model's recorded held-out start).",
)
@click.option("--end", type=click.DateTime(), default=None, help="Window end, UTC.")
@click.option(
    "--walk-forward",
    "walk_forward",
    is_flag=True,
    help="Refit the model and its rivals before each of many windows ([evaluate]) and "
    "score each window (no registered model is read; --start/--end bound the windows).",
)
@click.option(
    "--ablation",
    is_flag=True,
    help="With --walk-forward: also refit with each feature family removed and alone.",
)
@out_dir_option(
    Path("out/evaluate"),
    "With --walk-forward: folder for windows.csv, ablation.csv and pr_auc.png.",
)
@config_option
@json_option
def evaluate(
    model_ref: str,
    panel_dir: Path | None,
    history_dir: Path | None,
    start: datetime | None,
    end: datetime | None,
    walk_forward: bool,
    ablation: bool,
    out_dir: Path,
    config_path: Path | None,
    json_out: Path | None,
) -> None:
    """Metrics of a registered model and the baselines on a held-out window; with
    --walk-forward, the model and its rivals refitted and scored over many windows."""
    from datetime import UTC

    from oihedge.models.holdout import assess, parse_window, prepare_for
    from oihedge.models.registry import RegistryError, load_version, model_name

    cfg = load_cli_config(config_path)
    if ablation and not walk_forward:
        raise CliError("--ablation needs --walk-forward")
    if walk_forward:
        from oihedge.pipelines.cli.walkforward import run_walk_forward

        run_walk_forward(
            cfg,
            panel_dir,
            start=start,
            end=end,
            ablation=ablation,
            out_dir=out_dir,
            json_out=json_out,
        )
        return
    setup_tracking(cfg, existing=True)
    name = model_name(cfg.universe.name)
    try:
        loaded = load_version(name, model_ref)
    except RegistryError as err:
        raise CliError(str(err)) from None
    model, card = loaded.pyfunc, loaded.card
    panel, new_start = load_panel_with_history(cfg, panel_dir, history_dir)
    window_start = start.replace(tzinfo=UTC) if start else None
    if window_start is None and new_start is not None:
        window_start = max(new_start, parse_window(card, None))
    try:
        prepared = prepare_for(panel, card, start=window_start)
    except ValueError as err:
        first, last = panel["ts"].min(), panel["ts"].max()
        raise CliError(
            f"--panel {panel_dir or cfg.data.panel_dir} ({first:%Y-%m-%d %H:%M} .. "
            f"{last:%Y-%m-%d %H:%M} UTC), {name} {model_ref}: {err}"
        ) from None
    evaluation = assess(
        prepared,
        {f"model ({model_ref})": model},
        end=end.replace(tzinfo=UTC) if end else None,
        alert_rate=cfg.train.alert_rate,
    )
    table = evaluation.table()
    out.print(metrics_table(f"{name} {model_ref} on {evaluation.window}", table))
    emit_json(
        {"model": name, "ref": model_ref, "window": evaluation.window, "metrics": table.to_dicts()},
        json_out,
    )


def register(app: click.Group) -> None:
    """Add ``train`` and ``evaluate`` to ``app``, and the registry's commands (``promote``,
    ``rollback``, ``models``: :mod:`oihedge.pipelines.cli.registry`)."""
    for command in (train, evaluate):
        app.add_command(command)
    cli_registry.register(app)
