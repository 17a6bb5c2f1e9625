"""What a backtest run leaves behind: its report, its files and its MLflow run.

- :func:`backtest_report`: the run's report (window, weights, the probability's source,
  the metrics table, the refits, the data coverage, the git commit), what `oihedge
  backtest` writes as metrics.json and prints with ``--json``;
- :func:`write_outputs`: the metrics (CSV, JSON), the ledgers, equity and cascade events
  (Parquet) and the plots;
  :func:`write_claims`: the source article's claims measured on the run;
- :func:`log_backtest`: a `backtest` MLflow run with the report's params, every policy's
  metrics and the files as artifacts (the bars ledger stays on disk).

The caller points MLflow at its store first (``oihedge.models.tracking.configure_tracking``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import polars as pl

from oihedge.models.tracking import git_commit, owner_tags
from oihedge.serving.backtest.claims import Claim, claims_json, claims_markdown, measure_claims
from oihedge.serving.backtest.engine import BacktestResult, BacktestSettings
from oihedge.serving.backtest.plots import write_plots
from oihedge.serving.backtest.run import PanelBacktest

#: beside a simulated panel: the simulator's ground-truth cascades
TRUTH = Path("_truth") / "cascades.parquet"


def coverage(panel: pl.DataFrame, symbols: Sequence[str], start: datetime) -> dict[str, Any]:
    """Per symbol, the venues with a price and the venues with OI in the window."""
    rows = panel.filter(pl.col("symbol").is_in(list(symbols)), pl.col("ts") >= start)
    out: dict[str, Any] = {}
    for symbol in symbols:
        part = rows.filter(pl.col("symbol") == symbol)
        out[symbol] = {
            "price_venues": sorted(part.filter(pl.col("close").is_not_null())["venue"].unique()),
            "oi_venues": sorted(part.filter(pl.col("oi_usd").is_not_null())["venue"].unique()),
        }
    return out


def cascade_events(label_events: pl.DataFrame, panel_dir: Path) -> tuple[pl.DataFrame, str]:
    """The cascade events the table's cascade metrics are measured on, and their source:
    the simulator's ground truth (``_truth/cascades.parquet`` beside a simulated panel),
    else the label events (real data has no ground truth)."""
    truth_path = panel_dir / TRUTH
    if truth_path.exists():
        return pl.read_parquet(truth_path), "simulated cascades (ground truth)"
    return label_events, "label events"


def refit_rows(run: PanelBacktest) -> list[dict[str, Any]]:
    """The walk-forward refits of ``run`` as plain rows (none when a registered model
    scored it)."""
    if run.walk_forward is None:
        return []
    return [
        {
            "at": str(r.at),
            "until": str(r.until) if r.until else None,
            "train_start": str(r.train_start),
            "train_end": str(r.train_end),
            "n_rows": r.n_rows,
            "n_positive": r.n_positive,
            "fitted": r.fitted,
            "note": r.note,
        }
        for r in run.walk_forward.refits
    ]


def backtest_report(
    run: PanelBacktest,
    table: pl.DataFrame,
    *,
    weights: dict[str, float],
    window: str,
    cover: dict[str, Any],
    refits: list[dict[str, Any]],
    scored: dict[str, Any] | None,
    portfolio_usd: float,
) -> dict[str, Any]:
    """The run's report; ``scored``: the registered version scored (None: walk-forward)."""
    result = run.result
    probability = (
        f"registered model {scored['name']} v{scored['version']} ({scored['ref']})"
        if scored
        else "walk-forward refits"
    )
    return {
        "window": window,
        "start": str(result.start),
        "end": str(result.end),
        "bar": str(result.bar),
        "weights": weights,
        "portfolio_usd": portfolio_usd,
        "probability": probability,
        "model": scored,
        "metrics": table.to_dicts(),
        "refits": refits,
        "model_params": run.walk_forward.params if run.walk_forward else None,
        "coverage": cover,
        "label_events_in_window": run.events.filter(
            pl.col("start").is_between(result.start, result.end),
            pl.col("symbol").is_in(list(weights)),
        ).height,
        "seconds": {k: round(v, 2) for k, v in run.seconds.items()},
        "git_commit": git_commit(),
    }


def write_claims(
    run: PanelBacktest,
    settings: BacktestSettings,
    *,
    events: pl.DataFrame,
    horizon: timedelta,
    altcoins: Sequence[str],
    folder: Path,
    report: dict[str, Any],
) -> tuple[list[Claim], list[Path]]:
    """The source article's claims measured on this run: claims.md and claims.json in
    ``folder``, and ``report["claims"]``. Returns the claims and the two files."""
    claims = measure_claims(run, settings, events=events, horizon=horizon, altcoins=altcoins)
    report["claims"] = claims_json(claims)
    folder.mkdir(parents=True, exist_ok=True)
    md, js = folder / "claims.md", folder / "claims.json"
    md.write_text(claims_markdown(claims, title=f"The seed's claims, {report['window']}"), "utf-8")
    js.write_text(json.dumps(report["claims"], indent=2, allow_nan=False) + "\n", "utf-8")
    return claims, [md, js]


def write_outputs(
    run: PanelBacktest, table: pl.DataFrame, report: dict[str, Any], folder: Path, panel_dir: Path
) -> list[Path]:
    """metrics.csv, metrics.json (the report), trades.parquet and bars.parquet (every
    policy's ledgers; only the hedge policy's rows carry ``p``, ``p_entry`` and ``tier``),
    equity.parquet (every policy's equity, USD, per bar), events.parquet (the cascade
    events of :func:`cascade_events` in the window, with their ``source``) and the plots
    in ``folder``; returns the files written."""
    folder.mkdir(parents=True, exist_ok=True)
    table.write_csv(folder / "metrics.csv")
    (folder / "metrics.json").write_text(json.dumps(report, indent=2, default=str) + "\n", "utf-8")
    runs = run.result.runs
    pl.concat(
        [r.trades.with_columns(pl.lit(n).alias("policy")) for n, r in runs.items()]
    ).write_parquet(folder / "trades.parquet")
    pl.concat(
        [r.bars.with_columns(pl.lit(n).alias("policy")) for n, r in runs.items()],
        how="diagonal",  # the hedge policy's extra columns are null on the other rows
    ).write_parquet(folder / "bars.parquet")
    pl.concat(
        [r.equity.with_columns(pl.lit(n).alias("policy")) for n, r in runs.items()]
    ).write_parquet(folder / "equity.parquet")
    truth_path = Path(panel_dir) / TRUTH
    truth = pl.read_parquet(truth_path) if truth_path.exists() else None
    events, source = cascade_events(run.events, Path(panel_dir))
    window_events(events, run.result).with_columns(pl.lit(source).alias("source")).write_parquet(
        folder / "events.parquet"
    )
    plots = write_plots(
        run.result,
        run.events,
        folder / "plots",
        truth=truth,
        table=table,
        cascades=events,
        cascades_source=source,
    )
    names = ("metrics.csv", "metrics.json", "trades.parquet", "bars.parquet")
    names += ("equity.parquet", "events.parquet")
    return [folder / n for n in names] + list(plots.values())


def window_events(events: pl.DataFrame, result: BacktestResult) -> pl.DataFrame:
    """``symbol``, ``start``, ``end`` and ``trough_ts`` of the cascade ``events`` of the
    portfolio's symbols that overlap the run's window (``end``, ``trough_ts``: the start
    when the events lack them), by start."""
    end = pl.col("end") if "end" in events.columns else pl.col("start")
    trough = pl.col("trough_ts") if "trough_ts" in events.columns else pl.col("start")
    return (
        events.select("symbol", "start", end.alias("end"), trough.alias("trough_ts"))
        .filter(
            pl.col("symbol").is_in(list(result.settings.weights)),
            pl.col("start") <= result.end,
            pl.col("end") >= result.start,
        )
        .sort("start", "symbol")
    )


def log_backtest(
    report: dict[str, Any],
    table: pl.DataFrame,
    paths: list[Path],
    *,
    run_name: str,
    train_window: str,
    retrain_every: str,
) -> str:
    """Log the run to MLflow as a `backtest` run named ``run_name``; returns its id."""
    # owner tags: a killed backtest's run is failed by the next train, like its own runs
    with mlflow.start_run(run_name=run_name, tags=owner_tags()) as active:
        mlflow.set_tags({"oihedge.kind": "backtest", "git_commit": report["git_commit"]})
        mlflow.log_params(
            {
                "window": report["window"],
                "weights": json.dumps(report["weights"]),
                "portfolio_usd": report["portfolio_usd"],
                "probability": report["probability"],
                "train_window": train_window,
                "retrain_every": retrain_every,
                **_model_params(report.get("model")),
            }
        )
        for row in table.iter_rows(named=True):
            mlflow.log_metrics(
                {
                    f"{row['policy']}.{k}": float(v)
                    for k, v in row.items()
                    if k != "policy" and v is not None and np.isfinite(v)
                }
            )
        for path in paths:
            if path.name == "bars.parquet":
                continue  # every policy x symbol x bar: kept on disk, too large for the store
            mlflow.log_artifact(str(path), "plots" if path.suffix == ".png" else "backtest")
    return str(active.info.run_id)


def _model_params(scored: dict[str, Any] | None) -> dict[str, str]:
    """The MLflow params naming the registered version scored (none for walk-forward)."""
    if not scored:
        return {}
    keys = ("name", "version", "run_id", "ref", "uri")
    return {f"model_{k}": str(scored.get(k) or "") for k in keys}
