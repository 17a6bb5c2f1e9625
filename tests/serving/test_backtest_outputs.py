"""What a backtest leaves behind, piece by piece (the whole run is in
tests/pipelines/test_cli_backtest.py and tests/models/test_cli_registry.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl

from oihedge.serving.backtest.outputs import TRUTH, _model_params, cascade_events, coverage

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def test_cascade_events_prefer_the_simulator_s_ground_truth(tmp_path):
    labels = pl.DataFrame({"symbol": ["BTC"], "start": [T0]})
    assert cascade_events(labels, tmp_path) == (labels, "label events")
    truth = pl.DataFrame({"symbol": ["ETH", "NEAR"], "start": [T0, T0]})
    (tmp_path / TRUTH).parent.mkdir(parents=True)
    truth.write_parquet(tmp_path / TRUTH)
    events, source = cascade_events(labels, tmp_path)
    assert events.equals(truth) and source == "simulated cascades (ground truth)"


def test_coverage_names_the_venues_with_a_price_and_with_oi_in_the_window():
    panel = pl.DataFrame(
        {
            "ts": [T0, T0 + timedelta(hours=1), T0 + timedelta(hours=1)],
            "venue": ["okx", "bybit", "okx"],
            "symbol": ["BTC", "BTC", "BTC"],
            "close": [1.0, 1.0, None],
            "oi_usd": [5.0, None, 7.0],
        }
    )
    got = coverage(panel, ["BTC", "ETH"], T0 + timedelta(hours=1))
    assert got == {
        "BTC": {"price_venues": ["bybit"], "oi_venues": ["okx"]},
        "ETH": {"price_venues": [], "oi_venues": []},
    }


def test_the_mlflow_params_name_the_version_scored():
    assert _model_params(None) == {}
    scored = {"name": "m", "version": "3", "run_id": None, "ref": "champion", "uri": "u"}
    assert _model_params(scored) == {
        "model_name": "m",
        "model_version": "3",
        "model_run_id": "",
        "model_ref": "champion",
        "model_uri": "u",
    }


def test_the_run_logs_the_trader_plots_and_the_dashboard_s_data_files(tmp_path):
    """`log_backtest` keeps every file but the bars ledger: the USD equity and policy
    plots under plots/, the equity and cascade events beside the metrics."""
    import mlflow
    from backtest_cascade import write_report
    from mlflow import MlflowClient

    from oihedge.models.tracking import configure_tracking
    from oihedge.serving.backtest.outputs import log_backtest

    folder = write_report(tmp_path / "bt")
    table = pl.read_csv(folder / "metrics.csv")
    paths = sorted(p for p in [*folder.iterdir(), *(folder / "plots").iterdir()] if p.is_file())
    report = {
        "window": "w",
        "weights": {"BTC": 0.6, "NEAR": 0.4},
        "portfolio_usd": 1e6,
        "probability": "given",
        "git_commit": "abc",
        "model": None,
    }
    configure_tracking(
        f"sqlite:///{tmp_path}/mlflow.db", experiment="bt", artifact_root=tmp_path / "artifacts"
    )
    try:
        run_id = log_backtest(
            report, table, paths, run_name="bt", train_window="10d", retrain_every="5d"
        )
        client = MlflowClient()
        logged = {a.path for d in ("plots", "backtest") for a in client.list_artifacts(run_id, d)}
    finally:
        mlflow.set_tracking_uri("")
    assert {"plots/equity_usd.png", "plots/policy_BTC.png", "plots/policy_NEAR.png"} <= logged
    assert {"backtest/equity.parquet", "backtest/events.parquet"} <= logged
    assert "backtest/bars.parquet" not in logged
