"""`oihedge evaluate --walk-forward` end to end on a small simulated panel."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest
from mlflow import MlflowClient

from oihedge.models.windows import SCORERS
from oihedge.pipelines.cli.main import main


@pytest.fixture(scope="module")
def sim_panel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from oihedge.pipelines.sim.simulate import SimulationConfig, simulate
    from oihedge.pipelines.store import PanelStore

    folder = tmp_path_factory.mktemp("sim")
    result = simulate(SimulationConfig(days=40, seed=3, bar=timedelta(minutes=5)))
    PanelStore(folder).append(result.panel, source="test", arrival_order=True)
    return folder


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("OIHEDGE_MLFLOW__TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.setenv("OIHEDGE_MLFLOW__ARTIFACT_ROOT", str(tmp_path / "artifacts"))
    monkeypatch.setenv("OIHEDGE_EVALUATE__WINDOW", "8d")
    monkeypatch.setenv("OIHEDGE_EVALUATE__MIN_TRAIN", "15d")
    monkeypatch.setenv("OIHEDGE_BACKTEST__MODEL__NUM_BOOST_ROUND", "20")
    return tmp_path


def test_walk_forward_scores_every_window_and_logs_the_study(sim_panel, env, capsys):
    out = env / "wf"
    args = ["evaluate", "--walk-forward", "--panel", str(sim_panel), "--out", str(out)]
    code = main([*args, "--json", str(env / "wf.json")])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads((env / "wf.json").read_text())
    # 40 days from 2025-01-01 12:05: windows from day 15 every 8 days (the last, under half
    # a window, dropped)
    assert [w["start"][:16] for w in report["windows"]] == [
        "2025-01-16T12:05",
        "2025-01-24T12:05",
        "2025-02-01T12:05",
    ]
    first = report["windows"][0]
    assert [m["scorer"] for m in first["metrics"]] == list(SCORERS)  # (names: test_windows)
    assert set(first) >= {"start", "end", "base_rate", "positives", "events", "metrics"}
    assert report["summary"]["windows"] == 3
    assert sum(s["windows_best"] for s in report["summary"]["scorers"].values()) == 3
    assert report["empty_features"] == []  # the simulator fills every core feature
    assert "ablation" not in report
    for name in ("windows.csv", "pr_auc.png"):
        assert (out / name).stat().st_size > 0
    assert pl.read_csv(out / "windows.csv").height == 18
    lines = captured.out.splitlines()
    assert lines[0].split()[:3] == ["window", "base", "events"]
    assert any(line.startswith("model beats, windows of 3:") for line in lines)
    assert "walk-forward on" in captured.err and "MLflow run" in captured.err
    client = MlflowClient(f"sqlite:///{env}/mlflow.db")
    parent = client.get_run(report["mlflow_run_id"])
    assert parent.data.params["window"] == "8d" and parent.data.params["ablation"] == "False"
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert len(children) == 3


def test_the_ablation_adds_a_row_per_family(sim_panel, env, capsys, monkeypatch):
    monkeypatch.setenv("OIHEDGE_EVALUATE__WINDOW", "25d")  # one window, to the end
    args = ["evaluate", "--walk-forward", "--ablation", "--panel", str(sim_panel)]
    code = main([*args, "--out", str(env / "ab"), "--json", str(env / "ab.json")])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads((env / "ab.json").read_text())
    families = {r["family"] for r in report["ablation"]}
    assert {"oi_divergence", "funding", "correlation", "volatility"} <= families
    assert all(r["drop_windows"] == 1 for r in report["ablation"])
    assert pl.read_csv(env / "ab" / "ablation.csv").height == len(report["ablation"])
    assert "ablation (mean PR-AUC change" in captured.out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--ablation"], "oihedge: error: --ablation needs --walk-forward"),
        (
            ["--walk-forward", "--start", "2025-02-09"],
            "no window of 8d fits between 2025-01-01 12:05 and 2025-02-09 20:00 after --start",
        ),
    ],
)
def test_bad_walk_forward_requests_are_one_line(sim_panel, env, capsys, extra, message):
    code = main(["evaluate", "--panel", str(sim_panel), "--out", str(env / "x"), *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err
