"""The CLI against the registry, where a champion alias may have been moved behind the
gate's back (the MLflow UI): `backtest --model` records the version it scored (name,
version, run id) in its report, JSON and MLflow run; `promote` gates against the champion
the gate knows; `models list` says which versions the live loop would serve."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import mlflow
import numpy as np
import polars as pl
import pytest
from mlflow import MlflowClient

from oihedge.features.registry import get_spec
from oihedge.models import registry
from oihedge.models.artifact import log_cascade_model
from oihedge.models.gate import gate
from oihedge.models.label_params import LabelConfig
from oihedge.models.tracking import configure_tracking
from oihedge.models.train import CascadeClassifier, make_training_data
from oihedge.models.workflow import _label_params, feature_spec_card
from oihedge.pipelines.cli.main import main
from tests_support import TINY_PARAMS, TwoBlockSplit

BAR = timedelta(minutes=5)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Iterator[tuple[Path, str, str]]:
    """A simulated panel on disk (``<folder>/panel``) and an MLflow store holding one
    logged model over the core features: the folder, the model URI and its run id."""
    from oihedge.pipelines.sim.simulate import SimulationConfig, simulate
    from oihedge.pipelines.store import PanelStore

    folder = tmp_path_factory.mktemp("cli")
    uri = f"sqlite:///{folder / 'mlflow' / 'm.db'}"
    panel = simulate(SimulationConfig(days=4, seed=5, bar=BAR)).panel
    PanelStore(folder / "panel").append(panel, source="test", arrival_order=True)
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
    experiment = configure_tracking(uri, artifact_root=folder / "mlflow" / "artifacts")
    with mlflow.start_run(experiment_id=experiment) as run:
        info = log_cascade_model(model, card)
    yield folder, info.model_uri, run.info.run_id
    mlflow.set_tracking_uri("")
    mlflow.set_registry_uri("")


_universes = itertools.count()


@pytest.fixture
def workspace(store, monkeypatch) -> tuple[Path, str, str, str]:
    """A registered model of its own for the test: version 1 promoted through the gate
    (champion), version 2 (the same model) registered after it. Returns the folder, the
    registered model's name, the run id that logged the model and the version 1."""
    folder, model_uri, run_id = store
    universe = f"cli{next(_universes)}"
    monkeypatch.chdir(folder)
    monkeypatch.setenv("OIHEDGE_MLFLOW__TRACKING_URI", f"sqlite:///{folder / 'mlflow' / 'm.db'}")
    monkeypatch.setenv("OIHEDGE_MLFLOW__ARTIFACT_ROOT", str(folder / "mlflow" / "artifacts"))
    monkeypatch.setenv("OIHEDGE_UNIVERSE__NAME", universe)
    name = registry.model_name(universe)
    v1 = registry.register(model_uri, name, {})
    registry.promote(name, v1, gate({"pr_auc": 0.5}, None, {"pr_auc": 0}, window="w"))
    registry.register(model_uri, name, {})
    return folder, name, run_id, v1


def test_backtest_model_records_the_version_it_scored(workspace, capsys):
    folder, name, run_id, v1 = workspace
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
        filter_string=f"params.model_name = '{name}'", search_all_experiments=True
    )
    assert len(runs) == 1
    params = runs.iloc[0]
    assert params["params.model_name"] == name and params["params.model_version"] == v1
    assert params["params.model_run_id"] == run_id and params["params.model_ref"] == "champion"


def test_promote_gates_against_the_champion_the_gate_knows(workspace, capsys):
    folder, name, _, v1 = workspace
    # the MLflow UI's alias editor: version 2 is champion without a gate
    MlflowClient().set_registered_model_alias(name, "champion", "2")
    code = main(["promote", "--panel", str(folder / "panel"), "--version", "2", "--json", "-"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    # with --json -, stdout is the JSON alone and the tables and notes are on stderr
    assert "the champion alias points at v2, which was not promoted" in captured.err
    assert f"vs champion v{v1}" in captured.err
    result = json.loads(captured.out)
    assert result["promoted"] and result["entry"]["previous"] == v1
    # compared with version 1's metrics (without a champion every row passes unjudged)
    assert all(row["champion"] is not None for row in result["gate"]["rows"])


def test_models_list_says_which_versions_the_loop_would_serve(workspace, capsys, tmp_path):
    folder, name, _, v1 = workspace
    MlflowClient().set_registered_model_alias(name, "champion", "2")
    code = main(["models", "list", "--json", str(tmp_path / "list.json")])
    printed = capsys.readouterr().out
    assert code == 0
    versions = {
        v["version"]: v for v in json.loads((tmp_path / "list.json").read_text())["versions"]
    }
    assert versions[v1]["serving_refusal"] is None
    assert "no gate verdict" in versions["2"]["serving_refusal"]
    assert "champion v2 is not served by the live loop" in printed


def test_a_new_period_in_its_own_folder_is_scored_with_the_history_before_it(workspace, capsys):
    """evaluate / backtest --model on a folder holding only the data after the model's
    training: the rows before it (features' warm-up, the baselines' training rows) come
    from --history, and the command says which rows it used."""
    from oihedge.pipelines.store import PanelStore

    folder, _, _, _ = workspace
    panel = PanelStore(folder / "panel").read()
    cut = panel["ts"].min() + timedelta(days=3)
    PanelStore(folder / "old").append(panel.filter(pl.col("ts") < cut), source="test")
    PanelStore(folder / "new").append(panel.filter(pl.col("ts") >= cut), source="test")
    new = ["--panel", str(folder / "new")]
    # without the history the new period alone has no rows to fit the baselines on
    assert main(["evaluate", *new]) == 2
    err = capsys.readouterr().err
    assert "0 development" in err and len(err.strip().splitlines()) == 1
    code = main(["evaluate", *new, "--history", str(folder / "old"), "--json", "-"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert f"history: {panel.filter(pl.col('ts') < cut).height} rows of {folder / 'old'}" in (
        captured.err
    )
    assert json.loads(captured.out)["window"].startswith(str(cut))
    bt = ["backtest", *new, "--history", str(folder / "old"), "--model", "champion"]
    code = main([*bt, "--no-mlflow", "--out", str(folder / "bt-new"), "--json", "-"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert json.loads(captured.out)["window"].startswith(f"{cut:%Y-%m-%d %H:%M}")
    # a walk-forward backtest refits on its own panel: no history to take
    assert main(["backtest", *new, "--history", str(folder / "old")]) == 2
    assert "--history needs --model" in capsys.readouterr().err
