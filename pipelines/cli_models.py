"""CLI commands of the model stage: train, evaluate, promote, rollback, models list.

`promote` gates the challenger against the champion the gate knows
(:func:`models.registry.gated_champion`): a champion alias set outside `promote` (the
MLflow UI) is neither the bar to beat nor recorded as the previous champion. `models list`
shows, per version, whether the live loop would serve it as champion (its gate verdict or
forced promotion, :func:`models.registry.serving_refusal`).
"""

from __future__ import annotations

import getpass
import subprocess
from datetime import datetime
from pathlib import Path
from typing import Any

import click
import polars as pl
from rich.table import Table

from features.schema import validate
from pipelines.cli_common import (
    CliError,
    check_bar_windows,
    config_option,
    console,
    emit_json,
    json_option,
    load_cli_config,
    out,
    out_dir_option,
    panel_option,
    progress_bar,
)
from pipelines.config import Config
from pipelines.store import PanelStore

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


def git_commit() -> str:
    """The commit of the running code (``unknown`` outside a git checkout)."""
    here = Path(__file__).resolve().parent
    try:
        proc = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=here,
            capture_output=True,
            text=True,
            check=False,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    commit = proc.stdout.strip() if proc.returncode == 0 else "unknown"
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=here,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return f"{commit}-dirty" if dirty and commit != "unknown" else commit


def load_panel(cfg: Config, panel_dir: Path | None) -> pl.DataFrame:
    """Read the panel folder and validate it (quarantined rows are reported, not used);
    the label windows must be whole numbers of the panel's own bars."""
    from models.labels import infer_bar

    folder = panel_dir or cfg.data.panel_dir
    store = PanelStore(folder)
    if not store.files():
        raise CliError(f"--panel {folder}: no panel files found (run `oihedge simulate` first?)")
    panel = store.read()
    if panel["ts"].n_unique() > 1:
        check_bar_windows(cfg, infer_bar(panel["ts"]), source=f"--panel {folder}")
    result = validate(panel, source=str(folder))
    if result.n_quarantined:
        reasons = ", ".join(f"{k}: {v}" for k, v in result.reasons().items())
        out.print(
            f"[yellow]{result.n_quarantined} panel rows fail validation and are left "
            f"out ({reasons})[/yellow]"
        )
    return result.valid


history_option = click.option(
    "--history",
    "history_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Panel folder whose rows before --panel's first bar give the features' warm-up and "
    "the baselines' training rows (default: data.panel_dir, when --panel is another folder).",
)


def load_panel_with_history(
    cfg: Config, panel_dir: Path | None, history_dir: Path | None
) -> tuple[pl.DataFrame, datetime | None]:
    """The panel to score and, when ``--panel`` holds only a new period, the history before
    it: ``history_dir`` or else ``data.panel_dir`` (when it is another folder holding a
    panel). Returns the joined panel and the new period's first bar (None without history).
    The rows taken are said on stderr."""
    panel = load_panel(cfg, panel_dir)
    source = history_dir
    if source is None and panel_dir is not None:
        default = cfg.data.panel_dir
        if Path(default).resolve() != Path(panel_dir).resolve() and PanelStore(default).files():
            source = default
    if source is None:
        return panel, None
    first = panel["ts"].min()
    before = load_panel(cfg, source).filter(pl.col("ts") < first)
    if before.is_empty():
        raise CliError(f"--history {source}: no rows before --panel's first bar {first}")
    console.print(
        f"history: {before.height} rows of {source} ({before['ts'].min():%Y-%m-%d %H:%M} .. "
        f"{before['ts'].max():%Y-%m-%d %H:%M} UTC) before --panel {panel_dir} "
        f"({first:%Y-%m-%d %H:%M} .. {panel['ts'].max():%Y-%m-%d %H:%M} UTC), for the "
        "features' warm-up and the baselines' training rows; scored from "
        f"{first:%Y-%m-%d %H:%M} UTC",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    return pl.concat([before, panel], how="vertical_relaxed"), first


def setup_tracking(cfg: Config, *, existing: bool = False) -> str:
    """Point MLflow at the configured store; with ``existing`` (commands that only read the
    registry) a SQLite store that does not exist is an error rather than a new empty one
    (a command run from another folder would otherwise find "no model" there)."""
    from models.tracking import configure_tracking, sqlite_file

    uri = cfg.mlflow.tracking_uri
    where = sqlite_file(uri)
    if existing and where is not None and not where.is_file():
        relative = (
            ""
            if Path(uri[len("sqlite:///") :]).is_absolute()
            else " (a relative path is read from here)"
        )
        raise CliError(
            f"mlflow.tracking_uri = {uri}: no MLflow store at {where}{relative}: run "
            "from the project's folder or set mlflow.tracking_uri"
        )
    return configure_tracking(
        cfg.mlflow.tracking_uri,
        registry_uri=cfg.mlflow.registry_uri,
        experiment=cfg.mlflow.experiment,
        artifact_root=cfg.mlflow.artifact_root,
    )


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
    from features.registry import get_spec
    from models.labels import LabelConfig
    from models.workflow import TrainSettings

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
    entry level on the held-out window (:func:`probability_vs_entry` on the held-out rows,
    with the severity the model card carries and the configured policy parameters). The
    model is registered by then: a check that cannot be made says why, it does not fail
    the command."""
    from models.severity import card_severity_k
    from serving.policy_params import PolicyParams

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


def probability_vs_entry(
    rows: pl.DataFrame,
    p: Any,
    params: dict[str, Any],
    *,
    severity_k: float | None,
    window: str,
    calibrator_max: float | None = None,
) -> dict[str, Any]:
    """Compare calibrated probabilities with the policy's derived entry level, bar by bar.

    ``rows``: ``ts``, ``symbol`` and the signal features (:data:`serving.signals.
    SIGNAL_FEATURES`; absent ones count as missing), row-aligned with ``p``; ``params``:
    symbol -> :class:`serving.policy_params.PolicyParams`. At each row the entry level is
    ``serving.policy.pricing(signals, beta, params).p_entry`` with the signals of
    :func:`serving.signals.signals_from_row` (and ``severity_k``). Returns ``window``,
    ``bars``, ``share_at_entry`` (share of rows with ``p >= p_entry``), ``max_p``,
    ``min_p_entry``, ``median_p_entry``, ``calibrator_max``, ``warning`` (a line, or None
    when some bar reaches its entry level) and ``line``, what the CLI prints.
    """
    import math

    import numpy as np

    from serving import sizing
    from serving.policy import pricing
    from serving.signals import SIGNAL_FEATURES, signals_from_row

    probs = np.asarray(p, dtype=np.float64)
    if probs.shape != (rows.height,):
        raise ValueError(f"{probs.size} probabilities for {rows.height} rows")
    present = [c for c in SIGNAL_FEATURES if c in rows.columns]
    entries = np.full(rows.height, np.nan)
    for i, row in enumerate(rows.select("ts", "symbol", *present).iter_rows(named=True)):
        prm = params[row["symbol"]]
        signals = signals_from_row(
            row, ts=row["ts"], portfolio_usd=1.0, fresh_venues=0, severity_k=severity_k
        )
        beta = sizing.effective_beta(
            signals.beta, default=prm.beta_default, lo=prm.beta_min, hi=prm.beta_max
        )
        entries[i] = pricing(signals, beta, prm).p_entry
    ok = np.isfinite(probs) & np.isfinite(entries)
    bars = int(ok.sum())
    share = float(np.mean(probs[ok] >= entries[ok])) if bars else math.nan
    max_p = float(probs[ok].max()) if bars else math.nan
    min_entry = float(entries[ok].min()) if bars else math.nan
    median_entry = float(np.median(entries[ok])) if bars else math.nan
    warning = None
    ceiling_below = calibrator_max is not None and calibrator_max < min_entry
    if not share > 0 or ceiling_below:
        relation = "<" if max_p < min_entry else ">= (never at the same bar)"
        warning = (
            f"warning: the calibrated probability never reaches the policy's entry level "
            f"on {window} (max p {max_p:.3f} {relation} min p_entry {min_entry:.3f})"
        )
    line = warning or (
        f"entry level: {share:.1%} of the held-out bars on {window} have p >= p_entry "
        f"(median p_entry {median_entry:.3f}, max p {max_p:.3f})"
    )
    return {
        "window": window,
        "bars": bars,
        "share_at_entry": share,
        "max_p": max_p,
        "min_p_entry": min_entry,
        "median_p_entry": median_entry,
        "calibrator_max": calibrator_max,
        "severity_k": severity_k,
        "warning": warning,
        "line": line,
    }


def _train_or_explain(*args: Any, **kwargs: Any) -> Any:
    from models.workflow import run_training

    try:
        return run_training(*args, **kwargs)
    except ValueError as err:  # data that cannot be trained on: one clear line
        raise CliError(str(err)) from None


def _storage(url: str) -> str:
    """Make a relative SQLite Optuna storage absolute and create its folder."""
    from models.tracking import absolute_sqlite

    return absolute_sqlite(url)


def _load(name: str, alias_or_version: str) -> Any:
    import mlflow

    uri = (
        f"models:/{name}@{alias_or_version}"
        if not alias_or_version.isdigit()
        else f"models:/{name}/{alias_or_version}"
    )
    try:
        model = mlflow.pyfunc.load_model(uri)
    except Exception as err:  # noqa: BLE001 - MLflow raises many kinds; report which URI
        raise CliError(f"cannot load {uri}: {err}") from None
    card = (model.metadata.metadata or {}).get("oihedge")
    if not card:
        raise CliError(f"{uri} is not an oihedge model (no model card in its metadata)")
    return model, card


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

    from models.holdout import assess, parse_window, prepare_for
    from models.registry import model_name

    cfg = load_cli_config(config_path)
    if ablation and not walk_forward:
        raise CliError("--ablation needs --walk-forward")
    if walk_forward:
        from pipelines.cli_walkforward import run_walk_forward

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
    model, card = _load(name, model_ref)
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


@click.command()
@panel_option
@click.option(
    "--version", "version", default=None, help="Version to promote (default: challenger)."
)
@click.option("--force", is_flag=True, help="Promote even if the gate refuses (needs --message).")
@click.option("--message", "-m", default=None, help="Why (required with --force).")
@config_option
@json_option
def promote(
    panel_dir: Path | None,
    version: str | None,
    force: bool,
    message: str | None,
    config_path: Path | None,
    json_out: Path | None,
) -> None:
    """Gate the challenger against the champion on the same held-out window; promote if it
    is at least as good (margins: registry.margins)."""
    from models import registry
    from models.holdout import assess, prepare_for

    if force and not (message and message.strip()):
        raise CliError("--force needs --message saying why")
    cfg = load_cli_config(config_path)
    setup_tracking(cfg, existing=True)
    name = registry.model_name(cfg.universe.name)
    version = version or registry.alias_version(name, registry.CHALLENGER)
    if version is None:
        raise CliError(f"{name} has no challenger: run `oihedge train` first")
    champion = registry.gated_champion(name)
    aliased = registry.alias_version(name, registry.CHAMPION)
    if aliased is not None and aliased != champion:
        out.print(
            f"[yellow]the champion alias points at v{aliased}, which was not promoted "
            f"through the gate: gating against {'v' + champion if champion else 'no champion'}"
            "[/yellow]"
        )
    challenger_model, card = _load(name, version)
    models = {"challenger": challenger_model}
    cards = {"challenger": card}
    if champion is not None and champion != version:
        models["champion"], cards["champion"] = _load(name, champion)
    panel = load_panel(cfg, panel_dir)
    prepared = prepare_for(panel, card)
    evaluation = assess(prepared, models, alert_rate=cfg.train.alert_rate)
    metrics = {k: m.as_dict() for k, m in evaluation.metrics.items()}
    for scorer, hedge in _hedge_metrics(cfg, panel, prepared, models, cards).items():
        metrics[scorer].update(hedge)
    verdict = registry.gate(
        metrics["challenger"],
        metrics.get("champion"),
        cfg.registry.margins.model_dump(),
        window=evaluation.window,
    )
    _print_gate(verdict, name, version, champion)
    try:
        entry = registry.promote(
            name, version, verdict, force=force, reason=message, user=getpass.getuser()
        )
    except registry.RegistryError as err:
        emit_json({"promoted": False, "gate": verdict.as_dict()}, json_out)
        raise CliError(str(err)) from None
    out.print(f"champion: {name} v{entry['version']} (was {entry['previous'] or 'none'})")
    emit_json({"promoted": True, "gate": verdict.as_dict(), "entry": entry}, json_out)


def _hedge_metrics(
    cfg: Config,
    panel: pl.DataFrame,
    prepared: Any,
    models: dict[str, Any],
    cards: dict[str, dict[str, Any]] | None = None,
) -> dict[str, dict[str, float]]:
    """The hedge metrics of the gate (:func:`serving.backtest_run.panel_gate_metrics`:
    tail loss at equal mean hedge, fees and slippage, and the policy's activity) of the
    hedge policy driven by each model, each with the severity its card carries, on the
    same held-out window, with the same backtest settings and costs."""
    from models.severity import card_severity_k
    from pipelines.cli_backtest import backtest_settings, resolve_weights
    from serving.backtest_run import panel_gate_metrics, window_probability

    start = prepared.holdout.frame["ts"].min()
    weights = resolve_weights(cfg, sorted(prepared.features["symbol"].unique().to_list()))
    settings = backtest_settings(cfg, weights)
    out = {}
    for name, model in models.items():
        probability = window_probability(
            prepared.features,
            prepared.spec.features,
            model,
            start,
            severity_k=card_severity_k((cards or {}).get(name)),
        )
        out[name] = panel_gate_metrics(
            panel,
            prepared.features,
            probability,
            settings,
            max_staleness=prepared.spec.params.max_staleness,
            events=prepared.events,
            start=start,
        )
    return out


def _print_gate(verdict: Any, name: str, version: str, champion: str | None) -> None:
    view = Table(
        title=f"gate: {name} v{version} vs champion "
        f"{'v' + champion if champion else '(none)'} on {verdict.window}"
    )
    for col in ("metric", "challenger", "champion", "margin", "better is", "pass"):
        view.add_column(col)
    for r in verdict.rows:
        view.add_row(
            r.metric,
            f"{r.challenger:.4f}",
            "n/a" if r.champion is None else f"{r.champion:.4f}",
            f"{r.margin:g}",
            "higher" if r.higher_is_better else "lower",
            "yes" if r.passed else "NO",
        )
    out.print(view)
    for reason in verdict.refusals:
        out.print(f"[red]refused: {reason}[/red]")


@click.command()
@click.option("--message", "-m", default="", help="Why (kept in the history).")
@config_option
def rollback(message: str, config_path: Path | None) -> None:
    """Move `champion` back to the previous champion."""
    from models import registry

    cfg = load_cli_config(config_path)
    setup_tracking(cfg, existing=True)
    name = registry.model_name(cfg.universe.name)
    try:
        entry = registry.rollback(name, user=getpass.getuser(), reason=message)
    except registry.RegistryError as err:
        raise CliError(str(err)) from None
    out.print(f"champion: {name} v{entry['version']} (rolled back from v{entry['previous']})")


@click.group("models")
def models_group() -> None:
    """The model registry."""


@models_group.command("list")
@config_option
@json_option
def models_list(config_path: Path | None, json_out: Path | None) -> None:
    """Every version with its aliases and held-out metrics, and the champion history."""
    from models import registry

    cfg = load_cli_config(config_path)
    setup_tracking(cfg, existing=True)
    name = registry.model_name(cfg.universe.name)
    try:
        found = registry.versions(name)
        moves = registry.history(name)
    except Exception as err:  # noqa: BLE001 - MLflow's not-found is a generic exception
        raise CliError(f"{name}: {err}") from None
    view = Table(title=name)
    for col in ("version", "aliases", "created", "PR-AUC", "Brier", "gate", "serves", "dataset"):
        view.add_column(col)
    for v in found:
        tags = v["tags"]
        v["serving_refusal"] = registry.serving_refusal(name, v["version"], tags)
        view.add_row(
            v["version"],
            ",".join(v["aliases"]),
            f"{v['created']:%Y-%m-%d %H:%M}",
            tags.get("holdout_pr_auc", ""),
            tags.get("holdout_brier", ""),
            tags.get("gate_passed", ""),
            "yes" if v["serving_refusal"] is None else "no",
            tags.get("dataset_window", ""),
        )
    out.print(view)
    for v in found:
        if registry.CHAMPION in v["aliases"] and v["serving_refusal"] is not None:
            out.print(
                f"[red]champion v{v['version']} is not served by the live loop: "
                f"{v['serving_refusal']}[/red]"
            )
    history = Table(title="champion history")
    for col in ("at", "action", "version", "previous", "by", "reason"):
        history.add_column(col)
    for m in moves:
        history.add_row(
            m["at"],
            m["action"],
            str(m["version"]),
            str(m.get("previous") or ""),
            m["by"],
            m.get("reason", ""),
        )
    out.print(history)
    emit_json({"model": name, "versions": found, "history": moves}, json_out)


def register(app: click.Group) -> None:
    """Add ``train``, ``evaluate``, ``promote``, ``rollback`` and ``models`` to ``app``."""
    for command in (train, evaluate, promote, rollback, models_group):
        app.add_command(command)
