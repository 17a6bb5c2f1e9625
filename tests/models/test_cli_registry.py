"""`oihedge backtest --model REF` records the registry version it scored (name, version,
run id) in its report, its JSON output and its MLflow run."""

from __future__ import annotations

import json
from datetime import timedelta

import mlflow
import numpy as np
import polars as pl
import pytest

from features.registry import get_spec
from models import registry
from models.artifact import log_cascade_model
from models.labels import LabelConfig
from models.tracking import configure_tracking
from models.train import CascadeClassifier, make_training_data
from models.workflow import _label_params, feature_spec_card
from pipelines.cli import main
from tests_support import TINY_PARAMS, TwoBlockSplit

BAR = timedelta(minutes=5)


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """A simulated panel on disk and an MLflow store where version 1 of the universe's
    model is champion and version 2 (the same model) is the latest."""
    from pipelines.simulate import SimulationConfig, simulate
    from pipelines.store import PanelStore

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow' / 'm.db'}"
    monkeypatch.setenv("OIHEDGE_MLFLOW__TRACKING_URI", uri)
    monkeypatch.setenv("OIHEDGE_MLFLOW__ARTIFACT_ROOT", str(tmp_path / "mlflow" / "artifacts"))
    monkeypatch.setenv("OIHEDGE_UNIVERSE__NAME", "btmodel")
    panel = simulate(SimulationConfig(days=4, seed=3, bar=BAR)).panel
    PanelStore(tmp_path / "panel").append(panel, source="test", arrival_order=True)

    spec = get_spec("core").resolve(BAR)
    rng = np.random.default_rng(0)
    n = 1000
    frame = pl.DataFrame({f: rng.normal(size=n) for f in spec.features}).with_columns(
        ts=pl.datetime_range(
            panel["ts"].min(), panel["ts"].min() + BAR * (n - 1), BAR, time_zone="UTC"
        ),
        symbol=pl.lit("BTC"),
        y_cascade_4h=pl.Series((rng.random(n) < 0.2).astype(np.int8)),
    )
    data = make_training_data(frame, frame, list(spec.features), "y_cascade_4h")
    model = CascadeClassifier(TINY_PARAMS).fit(data, TwoBlockSplit(2))
    card = {
        "features": list(spec.features),
        "feature_spec": feature_spec_card(spec),
        "horizon": "4h",
        "label": "y_cascade_4h",
        "label_params": _label_params(LabelConfig(altcoins=frozenset({"NEAR"}))),
        "holdout": {"start": str(panel["ts"].min() + timedelta(days=2))},
        "dataset": {"hash": "d"},
        "git_commit": "test",
    }
    experiment = configure_tracking(uri, artifact_root=tmp_path / "mlflow" / "artifacts")
    with mlflow.start_run(experiment_id=experiment) as run:
        info = log_cascade_model(model, card)
    name = registry.model_name("btmodel")
    v1 = registry.register(info.model_uri, name, {})
    registry.promote(name, v1, registry.gate({"pr_auc": 0.5}, None, {"pr_auc": 0}, window="w"))
    registry.register(info.model_uri, name, {})
    yield tmp_path, name, v1, run.info.run_id
    mlflow.set_tracking_uri("")
    mlflow.set_registry_uri("")


def test_backtest_model_records_the_version_it_scored(workspace, capsys):
    folder, name, v1, run_id = workspace
    out = folder / "bt"
    args = ["backtest", "--panel", str(folder / "panel"), "--model", "champion"]
    code = main([*args, "--out", str(out), "--json", str(folder / "bt.json")])
    printed = capsys.readouterr().out
    assert code == 0
    expected = {
        "ref": "champion",
        "name": name,
        "version": v1,
        "run_id": run_id,
        "uri": f"models:/{name}/{v1}",
    }
    report = json.loads((folder / "bt.json").read_text())
    assert {k: report["model"][k] for k in expected} == expected
    assert report["probability"] == f"registered model {name} v{v1} (champion)"
    assert json.loads((out / "metrics.json").read_text())["model"] == report["model"]
    assert f"{name} v{v1}" in printed and run_id in printed
    runs = mlflow.search_runs(
        search_all_experiments=True, filter_string="tags.oihedge.kind = 'backtest'"
    )
    assert len(runs) == 1
    params = runs.iloc[0]
    assert params["params.model_name"] == name and params["params.model_version"] == v1
    assert params["params.model_run_id"] == run_id and params["params.model_ref"] == "champion"
