"""``oihedge evaluate --walk-forward``: the model and its rivals over many windows.

The command's body: read the panel, build the features and labels as ``train`` does, run
:func:`oihedge.models.windows.evaluate_windows` with the ``[evaluate]`` windows and the fixed
``[backtest.model]`` hyperparameters (no tuning inside a window, as the backtest's
walk-forward), print the per-window table, the summary and the ablation, write the files
and log the study to MLflow (one parent run, a child per window).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

from oihedge.pipelines.cli.common import CliError, console, emit_json, out
from oihedge.pipelines.cli.config import Config, readable_duration


def run_walk_forward(
    cfg: Config,
    panel_dir: Path | None,
    *,
    start: datetime | None,
    end: datetime | None,
    ablation: bool,
    out_dir: Path,
    json_out: Path | None,
) -> None:
    """Evaluate, print, write ``out_dir`` and ``json_out``, log to MLflow."""
    from oihedge.features.registry import get_spec
    from oihedge.models.label_params import LabelConfig
    from oihedge.models.windows import WindowSettings, evaluate_windows, window_bounds
    from oihedge.models.windows_report import lines, log_to_mlflow, write_outputs
    from oihedge.models.workflow import prepare
    from oihedge.pipelines.cli.common import load_panel, setup_tracking

    began = time.perf_counter()
    folder = panel_dir or cfg.data.panel_dir
    panel = load_panel(cfg, panel_dir)
    labels = LabelConfig.from_mapping(cfg.labels.model_dump(), cfg.universe.altcoins)
    try:
        settings = WindowSettings(
            params=cfg.backtest.model.model_dump(),
            window=cfg.evaluate.window,
            step=cfg.evaluate.step,
            start=start.replace(tzinfo=UTC) if start else None,
            end=end.replace(tzinfo=UTC) if end else None,
            min_train=cfg.evaluate.min_train,
            n_splits=cfg.backtest.n_splits,
            calibration=cfg.backtest.calibration,
            alert_rate=cfg.train.alert_rate,
        )
    except ValueError as err:
        raise CliError(f"--start/--end: {err}") from None
    prepared = prepare(panel, get_spec(cfg.train.feature_spec), labels, holdout_fraction=0.25)
    data = prepared.data
    first, last = data.frame["ts"].min(), data.frame["ts"].max()
    if not window_bounds(first, last, settings):
        raise CliError(
            f"--panel {folder}: no window of {readable_duration(settings.window)} fits between"
            f" {first:%Y-%m-%d %H:%M} and {last:%Y-%m-%d %H:%M}"
            + (
                " after --start"
                if start
                else f" after min_train {readable_duration(settings.min_train)}"
            )
            + ": use a longer panel, an earlier --start or a shorter evaluate.window"
        )
    console.print(
        f"walk-forward on {folder}: {data.frame.height} labelled rows, "
        f"{data.frame['symbol'].n_unique()} symbols, windows of "
        f"{readable_duration(settings.window)} from "
        f"{'--start' if start else 'min_train ' + readable_duration(settings.min_train)}"
        + (f", ablation of {len(prepared.spec.features)} features" if ablation else ""),
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    try:
        result = evaluate_windows(
            data,
            prepared.features,
            prepared.events,
            labels.horizon,
            settings,
            ablation=ablation,
            progress=lambda line: console.print(
                line, markup=False, highlight=False, soft_wrap=True
            ),
        )
    except ValueError as err:
        raise CliError(f"--panel {folder}: {err}") from None
    if result.empty:
        console.print(
            f"the panel leaves {len(result.empty)} of {len(data.features)} features empty "
            f"(no data for them; no ablation row for a family made of them): "
            f"{', '.join(result.empty)}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    for line in lines(result):
        out.print(line, markup=False, highlight=False, soft_wrap=True)
    files = write_outputs(result, out_dir)
    for path in files:
        console.print(f"wrote {path}", markup=False, highlight=False)
    setup_tracking(cfg)
    run_id = log_to_mlflow(
        result,
        files,
        run_name=f"walk-forward-{cfg.universe.name}",
        params={
            "panel": str(folder),
            "window": readable_duration(settings.window),
            "step": readable_duration(settings.step or settings.window),
            "min_train": readable_duration(settings.min_train),
            "ablation": ablation,
            "feature_spec": cfg.train.feature_spec,
            "horizon": readable_duration(labels.horizon),
            **{f"model.{k}": v for k, v in settings.params.items()},
        },
    )
    seconds = time.perf_counter() - began
    console.print(f"MLflow run {run_id}; {seconds:.0f} s", markup=False, highlight=False)
    record = result.record()
    record |= {"mlflow_run_id": run_id, "seconds": seconds}
    emit_json(record, json_out)
