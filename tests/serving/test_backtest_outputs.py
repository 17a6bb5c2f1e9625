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
