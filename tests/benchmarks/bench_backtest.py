"""The walk-forward hedge backtest: 180 days x 3 symbols (x 4 venues) of 5-minute bars.

    .venv/bin/python tests/benchmarks/bench_backtest.py [--days 180] [--seed 7]

Timed, from the validated panel in memory to the metrics table, with the shipped
configuration: the feature table (every feature of the ``core`` spec), the cascade labels
and label events, the market frame, the walk-forward probabilities (a LightGBM refit with
out-of-fold calibration every 30 days after the first 60: four refits), the five policies
(the hedge policy's ``decide`` once per symbol and bar: 3 x 34,560 calls) and the metrics.
Not timed: simulating the panel (done once, in a child process, cached in the temp folder
under a hash of the simulator's source, so a changed simulator is simulated again),
reading and validating it, plots and MLflow.
Prints the time per stage and the table; exits 1 above 60 s.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import timedelta
from pathlib import Path

import polars as pl

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))
sys.path.insert(0, str(HERE))

from _measure import cached_sim_panel, check, peak_rss_mib  # noqa: E402

from oihedge.features.registry import get_spec  # noqa: E402
from oihedge.features.screening import validate  # noqa: E402
from oihedge.models.label_params import LabelConfig  # noqa: E402
from oihedge.pipelines.cli.backtest import backtest_settings, walk_forward_settings  # noqa: E402
from oihedge.pipelines.cli.config import load_config  # noqa: E402
from oihedge.serving.backtest.run import backtest_panel  # noqa: E402

TARGET_S = 60.0
WEIGHTS = {"BTC": 0.4, "ETH": 0.4, "NEAR": 0.2}


def load_panel(days: int, seed: int) -> pl.DataFrame:
    """The simulated panel, validated; simulated once per simulator version."""
    return validate(pl.read_parquet(cached_sim_panel(days, seed)), bar=timedelta(minutes=5)).valid


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="hedge backtest benchmark")
    parser.add_argument("--days", type=int, default=180)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    cfg = load_config(env={})
    panel = load_panel(args.days, args.seed)
    n_symbols = panel["symbol"].n_unique()
    print(f"[backtest] {panel.height:,} panel rows, {n_symbols} symbols, {args.days} days")
    start = time.perf_counter()
    run = backtest_panel(
        panel,
        backtest_settings(cfg, WEIGHTS),
        spec=get_spec(cfg.train.feature_spec),
        labels=LabelConfig.from_mapping(cfg.labels.model_dump(), cfg.universe.altcoins),
        walk_forward_settings=walk_forward_settings(cfg),
        volume_window=cfg.backtest.volume_window,
    )
    table = run.result.table(loss_window=cfg.backtest.loss_window)
    total = time.perf_counter() - start
    stages = ", ".join(f"{k} {v:.1f} s" for k, v in run.seconds.items())
    assert run.walk_forward is not None
    n_bars = run.result.runs["model"].equity.height
    print(f"  stages: {stages}")
    print(
        f"  window {run.result.start} .. {run.result.end}: {n_bars:,} bars x "
        f"{len(WEIGHTS)} symbols; {len(run.walk_forward.refits)} refits"
    )
    print(
        f"  total {total:.1f} s; peak RSS {peak_rss_mib():.0f} MiB "
        f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)"
    )
    with pl.Config(tbl_cols=20, tbl_width_chars=250, float_precision=4):
        print(table)
    failures: list[str] = []
    check("backtest under 60 s", total < TARGET_S, f"{total:.1f} s", failures)
    print(f"\n{'all targets met' if not failures else 'missed: ' + ', '.join(failures)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
