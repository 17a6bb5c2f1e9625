"""CLI command of the backtest stage: `oihedge backtest`.

With ``--model REF`` (an alias or a version number) the probability is that registered
model's: the reference is resolved to one version first and that version is loaded
(:func:`oihedge.models.registry.load_version`), so the report (``model``: name, version, run id,
URI and the reference given), the JSON output and the MLflow run (params ``model_name``,
``model_version``, ``model_run_id``, ``model_ref``) say which model was scored even after
the alias has moved on. The report, the files and the MLflow run are
:mod:`oihedge.serving.backtest.outputs`'s.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import polars as pl
from rich import box
from rich.table import Table

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
    resolve_weights,
    setup_tracking,
)
from oihedge.pipelines.cli.config import Config

if TYPE_CHECKING:
    from oihedge.serving.backtest.engine import BacktestSettings
    from oihedge.serving.backtest.walkforward import WalkForwardSettings

#: metric -> (column title, format) on the terminal; fractions are shown in percent (the
#: CSV and JSON hold every metric as a plain number, total return and turnover included)
_SHOWN: dict[str, tuple[str, str]] = {
    "worst_24h_loss": ("worst\n24h loss", "pct"),
    "max_drawdown": ("max\nDD", "pct"),
    "cvar_95_daily": ("CVaR95\ndaily", "pct"),
    "fees_slippage_annual": ("fees+slip\n/yr", "pct"),
    "funding_annual": ("funding\n/yr", "pct"),
    "time_hedged": ("time\nhedged", "pct"),
    "mean_hedge_ratio": ("mean\nhedge", "pct"),
    "trades": ("trades", "int"),
    "upside_capture": ("upside\nkept", "pct"),
    "cascades_protected": ("cascades\nhedged", "pct"),
    "cascade_loss_offset": ("cascade\nloss off", "pct"),
}


def parse_weights(text: str) -> dict[str, float]:
    """``"BTC=0.4,ETH=0.4,NEAR=0.2"`` -> ``{"BTC": 0.4, ...}``; raises :class:`CliError`."""
    weights: dict[str, float] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        symbol, sep, value = item.partition("=")
        try:
            weight = float(value) if sep else math.nan
        except ValueError:
            weight = math.nan
        if not symbol.strip() or not (math.isfinite(weight) and weight > 0):
            raise CliError(f"--weights: {item!r} is not SYMBOL=WEIGHT with a weight > 0")
        weights[symbol.strip()] = weight
    if not weights:
        raise CliError(f"--weights: no SYMBOL=WEIGHT in {text!r}")
    return weights


def backtest_settings(cfg: Config, weights: dict[str, float]) -> BacktestSettings:
    """The engine's settings from the configuration (also for `oihedge promote`)."""
    from oihedge.serving.backtest.engine import BacktestSettings
    from oihedge.serving.policy.costs import CostModel
    from oihedge.serving.policy.params import PolicyParams

    bt = cfg.backtest
    return BacktestSettings(
        portfolio_usd=bt.portfolio_usd,
        weights=weights,
        params={s: PolicyParams(**cfg.policy_params(s)) for s in weights},
        costs=CostModel(**cfg.costs.model_dump()),
        static_fractions=bt.static_fractions,
        vol_targets=bt.vol_targets,
        model_budgets=bt.model_budgets,
        schedule=bt.schedule,
        rule_entry_pp=bt.rule_entry_pp,
        rule_exit_pp=bt.rule_exit_pp,
        rule_exit_confirm=bt.rule_exit_confirm,
    )


def walk_forward_settings(cfg: Config) -> WalkForwardSettings:
    """The walk-forward refit settings from ``[backtest]`` and ``[backtest.model]``."""
    from oihedge.serving.backtest.walkforward import WalkForwardSettings

    bt = cfg.backtest
    return WalkForwardSettings(
        train_window=bt.train_window,
        retrain_every=bt.retrain_every,
        max_train=bt.max_train,
        n_splits=bt.n_splits,
        params=bt.model.model_dump(),
        calibration=bt.calibration,
        seed=cfg.train.seed,
        tune_trials=bt.tune_trials,
        min_positives=bt.min_positives,
    )


def _registered_scorer(
    cfg: Config, ref: str
) -> tuple[Callable[[pl.DataFrame], Any], dict, dict[str, Any]]:
    """A scorer (feature table -> probabilities) from a registered model, its card, and
    the version it is (``ref``, ``name``, ``version``, ``run_id``, ``source``, ``uri``)."""
    from oihedge.models.registry import RegistryError, load_version, model_name

    setup_tracking(cfg, existing=True)
    try:
        loaded = load_version(model_name(cfg.universe.name), ref)
    except RegistryError as err:
        raise CliError(str(err)) from None
    model, card = loaded.pyfunc, loaded.card

    def score(table: pl.DataFrame) -> Any:
        return model.predict(table.select(card["features"]).to_pandas())["p_cascade"].to_numpy()

    return score, card, {"ref": ref, **loaded.as_dict()}


def _utc(moment: datetime | None) -> datetime | None:
    return None if moment is None else moment.replace(tzinfo=UTC)


def _format(value: float, kind: str) -> str:
    if value != value:
        return "n/a"
    if kind == "pct":
        return f"{100 * value:.2f}%" if abs(value) < 1 else f"{100 * value:.0f}%"
    return f"{value:.1f}x" if kind == "x" else f"{int(value)}"


def metrics_view(title: str, table: pl.DataFrame) -> Table:
    """The metrics table for the terminal (fractions in percent)."""
    view = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    view.add_column("policy", no_wrap=True, min_width=max(map(len, table["policy"]), default=6))
    for title_, _ in _SHOWN.values():
        view.add_column(title_, justify="right", no_wrap=True)
    for row in table.iter_rows(named=True):
        view.add_row(row["policy"], *[_format(row[k], kind) for k, (_, kind) in _SHOWN.items()])
    return view


@click.command()
@panel_option
@history_option
@out_dir_option(None, "Where the table, ledgers and plots go (default: backtest.out_dir).")
@click.option(
    "--start",
    type=click.DateTime(),
    default=None,
    help="Window start, UTC (default: the first refit). Walk-forward refits start here too, "
    "or after backtest.train_window of history if that is later.",
)
@click.option("--end", type=click.DateTime(), default=None, help="Window end (inclusive), UTC.")
@click.option(
    "--weights",
    default=None,
    help="Portfolio weights, e.g. BTC=0.4,ETH=0.4,NEAR=0.2 (default: backtest.weights).",
)
@click.option(
    "--model",
    "model_ref",
    default=None,
    help="Score with a registered model (alias or version) instead of walk-forward refits;"
    " the window then starts at its held-out start.",
)
@click.option("--train-window", default=None, help="History before the first refit (e.g. 60d).")
@click.option("--retrain-every", default=None, help="Time between refits (e.g. 30d).")
@click.option("--no-mlflow", is_flag=True, help="Do not log the run to MLflow.")
@config_option
@json_option
def backtest(
    panel_dir: Path | None,
    history_dir: Path | None,
    out_dir: Path | None,
    start: datetime | None,
    end: datetime | None,
    weights: str | None,
    model_ref: str | None,
    train_window: str | None,
    retrain_every: str | None,
    no_mlflow: bool,
    config_path: Path | None,
    json_out: Path | None,
) -> None:
    """Walk-forward hedge backtest: the model's policy against no hedge, a static hedge, a
    static hedge of the model's average size, the fixed divergence rule and a
    perfect-foresight hedge, on the same data and costs.

    At each bar the model in use was fitted only on labels that ended before its refit
    (every backtest.retrain_every after backtest.train_window of history). Prints and
    saves the metrics table (metrics.csv, metrics.json), the ledgers (Parquet) and the
    plots (PNG) under --out, and logs them to MLflow as a `backtest` run.
    """
    from oihedge.features.registry import get_spec
    from oihedge.models.label_params import LabelConfig
    from oihedge.serving.backtest import outputs
    from oihedge.serving.backtest.run import backtest_panel

    cfg = load_cli_config(
        config_path,
        **{
            "backtest.out_dir": out_dir,
            "backtest.train_window": train_window,
            "backtest.retrain_every": retrain_every,
            "backtest.weights": parse_weights(weights) if weights else None,
        },
    )
    if model_ref is None:
        if history_dir is not None:
            raise CliError("--history needs --model: a walk-forward backtest refits on --panel")
        panel, new_start = load_panel(cfg, panel_dir), None
    else:
        panel, new_start = load_panel_with_history(cfg, panel_dir, history_dir)
    chosen = resolve_weights(cfg, sorted(panel["symbol"].unique()))
    settings = backtest_settings(cfg, chosen)
    spec = get_spec(cfg.train.feature_spec)
    labels = LabelConfig.from_mapping(cfg.labels.model_dump(), cfg.universe.altcoins)
    scorer, window_start, severity_k, scored = None, _utc(start), None, None
    if model_ref is not None:
        from oihedge.features.schema import infer_bar
        from oihedge.models.holdout import labels_from_card, parse_window, spec_from_card
        from oihedge.models.severity import card_severity_k

        scorer, card, scored = _registered_scorer(cfg, model_ref)
        out.print(
            f"scoring {scored['name']} v{scored['version']} ({model_ref}; "
            f"run {scored['run_id'] or 'unknown'})"
        )
        severity_k = card_severity_k(card)  # the severity fitted with the model
        spec = spec_from_card(card, infer_bar(panel))  # the card holds the resolved spec
        labels = labels_from_card(card)
        window_start = parse_window(card, window_start)
        if new_start is not None and start is None:  # score the new period
            window_start = max(window_start, new_start)
        first, last = panel["ts"].min(), panel["ts"].max()
        if window_start >= last:
            raise CliError(
                f"--panel {panel_dir or cfg.data.panel_dir} spans {first:%Y-%m-%d %H:%M} .. "
                f"{last:%Y-%m-%d %H:%M} UTC, before {scored['name']} v{scored['version']}'s "
                f"held-out window starts ({window_start:%Y-%m-%d %H:%M} UTC): give a panel "
                "that covers it, or --start"
            )
    stages = ("features", "labels", "market", "score" if scorer else "walk-forward", "policies")
    with progress_bar() as bar:
        tasks = {s: bar.add_task(s, total=1.0) for s in stages}
        run = backtest_panel(
            panel,
            settings,
            spec=spec,
            labels=labels,
            walk_forward_settings=walk_forward_settings(cfg),
            scorer=scorer,
            severity_k=severity_k,
            start=window_start,
            end=_utc(end),
            volume_window=cfg.backtest.volume_window,
            progress=lambda s, f: bar.update(tasks[s], completed=f),
        )
    result = run.result
    panel_folder = panel_dir or cfg.data.panel_dir
    events, events_source = outputs.cascade_events(run.events, Path(panel_folder))
    table = result.table(
        loss_window=cfg.backtest.loss_window, cvar_level=cfg.backtest.cvar_level, events=events
    )
    window = f"{result.start:%Y-%m-%d %H:%M} .. {result.end:%Y-%m-%d %H:%M} UTC"
    out.print(metrics_view(f"backtest {', '.join(chosen)} on {window}", table))
    cover = outputs.coverage(panel, list(chosen), result.start)
    for symbol, c in cover.items():
        out.print(
            f"  {symbol}: price from {', '.join(c['price_venues']) or 'none'}; "
            f"OI from {', '.join(c['oi_venues']) or 'none'}"
        )
    refits = outputs.refit_rows(run)
    for r in refits:
        out.print(
            f"  refit {r['at']}: {r['n_rows']} rows ({r['n_positive']} positive) up to "
            f"{r['train_end']}{'' if r['fitted'] else ' - ' + r['note']}"
        )
    report = outputs.backtest_report(
        run,
        table,
        weights=chosen,
        window=window,
        cover=cover,
        refits=refits,
        scored=scored,
        portfolio_usd=cfg.backtest.portfolio_usd,
    )
    in_window = int(table["events"][0])
    report["cascade_events"] = {"source": events_source, "in_window": in_window}
    out.print(f"  cascade metrics on {in_window} {events_source} in the window")
    claims, claim_paths = outputs.write_claims(
        run,
        settings,
        events=events,
        horizon=labels.horizon,
        altcoins=cfg.universe.altcoins,
        folder=cfg.backtest.out_dir,
        report=report,
    )
    for claim in claims:
        verdict = {True: "holds", False: "does not hold", None: "n.a."}[claim.holds]
        out.print(f"  claim: {claim.claim} -> {verdict}: {claim.value}")
    folder = cfg.backtest.out_dir
    paths = outputs.write_outputs(run, table, report, folder, panel_folder) + claim_paths
    for path in paths:
        out.print(f"wrote {path}")
    if not no_mlflow:
        setup_tracking(cfg)
        run_id = outputs.log_backtest(
            report,
            table,
            paths,
            run_name=f"backtest-{cfg.universe.name}",
            train_window=str(cfg.backtest.train_window),
            retrain_every=str(cfg.backtest.retrain_every),
        )
        out.print(f"MLflow run {run_id}")
    emit_json(report, json_out)


def register(app: click.Group) -> None:
    """Add ``backtest`` to ``app``."""
    app.add_command(backtest)
