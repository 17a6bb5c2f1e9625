"""The walk-forward evaluation's report: printed lines, files, the chart, MLflow runs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import mlflow
import numpy as np
import polars as pl
import pytest
from mlflow import MlflowClient

from oihedge.models.metrics import classification_metrics
from oihedge.models.tracking import configure_tracking
from oihedge.models.windows import WalkForwardEvaluation, Window
from oihedge.models.windows_report import lines, log_to_mlflow, write_outputs

T0 = datetime(2025, 6, 1, tzinfo=UTC)


def result(ablation: bool = True) -> WalkForwardEvaluation:
    """Three windows; the model ranks the positives first in the first two only."""
    rng = np.random.default_rng(1)
    windows = []
    for i in range(3):
        y = np.zeros(400)
        y[:20] = 1
        good = np.where(y == 1, 0.3, 0.02) if i < 2 else rng.random(400) * 0.1
        metrics = {
            "model": classification_metrics(y, good),
            "vol_only": classification_metrics(y, rng.random(400) * 0.1),
            "logistic": classification_metrics(
                y, np.where(y == 1, 0.1, 0.05) if i == 2 else rng.random(400) * 0.1
            ),
        }
        variants = (
            {"-oi_divergence": 0.1, "+oi_divergence": 0.4, "-volatility": 0.9} if ablation else {}
        )
        start = T0 + timedelta(days=30 * i)
        windows.append(
            Window(start, start + timedelta(days=30), 1000, 400, 20, 5, metrics, variants)
        )
    families = {"oi_divergence": ("oi_div_xvenue_4h",), "volatility": ("vol_rv_24h_pct",)}
    return WalkForwardEvaluation(windows, families)


def test_the_printed_report_has_a_row_per_window_and_the_summary():
    res = result()
    text = lines(res)
    ratio = np.mean([w.metrics["model"].pr_auc for w in res.windows]) / 0.05
    assert text[0].split()[:3] == ["window", "base", "events"]
    assert text[1].startswith("2025-06-01..2025-07-01  0.0500      5")
    assert "3 windows, mean base rate 0.0500" in text[4]
    model = next(line for line in text if line.strip().startswith("model "))
    assert f"({ratio:.1f}x the base rate)" in model and "best in 2" in model
    assert "model beats, windows of 3: vol_only 2, logistic 2; every rival at once 2" in text
    drop = next(line for line in text if line.strip().startswith("oi_divergence"))
    # (0.1 - 1) twice and 0.1 - 0.0455 once, over three windows; alone: 0.4 instead of 0.1
    assert "drop -0.5818" in drop and "alone -0.2818" in drop and "(3 windows)" in drop
    assert not any(line.strip().startswith("ablation") for line in lines(result(False)))


def test_files_and_the_chart_are_written(tmp_path):
    paths = write_outputs(result(), tmp_path)
    assert [p.name for p in paths] == ["windows.csv", "ablation.csv", "pr_auc.png"]
    table = pl.read_csv(paths[0])
    assert table.height == 9 and set(table["scorer"]) == {"model", "vol_only", "logistic"}
    assert pl.read_csv(paths[1])["family"].to_list() == ["oi_divergence", "volatility"]
    assert paths[2].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in write_outputs(result(False), tmp_path / "b")] == [
        "windows.csv",
        "pr_auc.png",
    ]


def test_the_study_is_one_parent_run_with_a_child_per_window(tmp_path):
    configure_tracking(
        f"sqlite:///{tmp_path}/mlflow.db", experiment="wf", artifact_root=tmp_path / "artifacts"
    )
    try:
        paths = write_outputs(result(), tmp_path / "out")
        run_id = log_to_mlflow(result(), paths, run_name="walk-forward", params={"window": "30d"})
        client = MlflowClient()
        parent = client.get_run(run_id)
        assert parent.data.params["window"] == "30d"
        assert parent.data.metrics["model.windows_best"] == 2
        assert parent.data.metrics["model_beats.vol_only"] == 2
        assert {a.path for a in client.list_artifacts(run_id)} == {
            "windows.csv",
            "ablation.csv",
            "pr_auc.png",
        }
        children = client.search_runs(
            [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{run_id}'"
        )
        assert sorted(c.data.params["start"][:10] for c in children) == [
            "2025-06-01",
            "2025-07-01",
            "2025-07-31",
        ]
        child = children[0].data.metrics
        assert child["base_rate"] == pytest.approx(0.05)
        assert child["ablation.drop.oi_divergence"] == pytest.approx(0.1)
        assert child["ablation.alone.oi_divergence"] == pytest.approx(0.4)
        assert {"model.pr_auc", "vol_only.ece", "logistic.brier"} <= set(child)
        # without events the event recall is NaN: not logged rather than logged as NaN
        assert "logistic.event_recall_at_alert" not in child
    finally:
        mlflow.set_tracking_uri("")
