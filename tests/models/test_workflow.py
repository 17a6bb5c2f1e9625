"""`oihedge train` end to end on a small simulated panel, and the CLI around the registry."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta

import mlflow
import numpy as np
import polars as pl
import pytest

from oihedge.features.registry import get_spec
from oihedge.features.screening import validate
from oihedge.models import registry
from oihedge.models.label_params import LabelConfig
from oihedge.models.severity import CLOSE, card_severity_k
from oihedge.models.workflow import (
    MODEL_CHOICE,
    TrainSettings,
    prepare,
    run_training,
    training_severity,
)
from oihedge.pipelines.sim.simulate import SimulationConfig, simulate


@pytest.fixture(scope="module")
def sim_panel() -> pl.DataFrame:
    result = simulate(SimulationConfig(days=24, seed=11))
    return validate(result.panel, bar=timedelta(minutes=5), arrival_order=True).valid


def test_prepare_splits_without_leakage(sim_panel):
    labels = LabelConfig(altcoins=frozenset({"NEAR"}))
    prepared = prepare(sim_panel, get_spec("core"), labels, holdout_fraction=0.3)
    dev_t = prepared.data.times[prepared.dev_idx]
    hold_t = prepared.data.times[prepared.holdout_idx]
    # no development label window (t, t + H] reaches the held-out period
    assert dev_t.max() + np.timedelta64(4, "h") < hold_t.min()
    assert set(prepared.data.frame["symbol"].unique()) == {"BTC", "ETH", "NEAR"}
    assert prepared.data.y.sum() > 0
    # baselines read every feature, row-aligned with the training rows
    rows = prepared.feature_rows(prepared.holdout_idx)
    assert rows.height == prepared.holdout_idx.size
    assert rows["ts"].to_list() == prepared.holdout.frame["ts"].to_list()


def test_run_training_registers_a_challenger(sim_panel, local_mlflow, tmp_path):
    settings = TrainSettings(
        universe="unit",
        spec=get_spec("core"),
        labels=LabelConfig(altcoins=frozenset({"NEAR"})),
        n_trials=2,
        n_splits=2,
        holdout_fraction=0.3,
        storage=f"sqlite:///{tmp_path / 'optuna.db'}",
        experiment="test",
    )
    stages: list[str] = []
    outcome = run_training(
        sim_panel,
        settings,
        git_commit="abc123",
        progress=lambda s, f: stages.append(s),
        plots_dir=tmp_path / "plots",
    )
    assert {"features", "labels", "tune", "train", "register"} <= set(stages)
    assert outcome.version == "1"
    assert registry.alias_version(outcome.model_name, "challenger") == "1"
    table = outcome.evaluation.table()
    assert table["scorer"].to_list()[0] == "model"
    assert {"fixed_rule", "funding_rule", "logistic"} <= set(table["scorer"])
    assert all(
        (tmp_path / "plots" / n).exists()
        for n in ("pr_curve.png", "reliability.png", "importance_gain.png", "shap_mean_abs.png")
    )
    run = mlflow.get_run(outcome.run_id)
    assert run.data.params["git_commit"] == "abc123"
    assert len(run.data.params["dataset_hash"]) == 64
    assert "holdout.model.pr_auc" in run.data.metrics
    # the study parent run and one child run per trial
    children = mlflow.search_runs(
        experiment_ids=[run.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{outcome.tune.parent_run_id}'",
    )
    assert len(children) == 2
    # nothing is left RUNNING by a normal train (the study parent run was), and every run
    # names its owning process (what the next train checks before failing a RUNNING run)
    runs = mlflow.search_runs(experiment_ids=[run.info.experiment_id])
    assert len(runs) == 4 and set(runs["status"]) == {"FINISHED"}
    assert runs["tags.oihedge.owner.pid"].notna().all()
    loaded = mlflow.pyfunc.load_model(outcome.model_uri)
    card = loaded.metadata.metadata["oihedge"]
    assert card["features"] == list(get_spec("core").features)
    assert card["feature_spec"]["hash"] == get_spec("core").resolve(timedelta(minutes=5)).hash()
    assert card["git_commit"] == "abc123" and card["horizon"] == "4h"
    # what the model choice study kept, and why, travels with the model
    assert (
        card["model_choice"]["kept"] and "monotone constraints" in card["model_choice"]["not_kept"]
    )
    assert card["model_choice"] == json.loads(json.dumps(MODEL_CHOICE))
    tags = {v["version"]: v["tags"] for v in registry.versions(outcome.model_name)}["1"]
    assert json.loads(tags["label_params"])["majors"]["oi_drop_pct"] == 5.0
    # the cascade severity travels with the model: fitted on the development rows only
    severity, _ = training_severity(outcome.prepared, settings.labels.label_column)
    assert severity is not None and card["severity"] == severity.card()
    assert card_severity_k(card) == pytest.approx(severity.k)
    assert float(tags["severity_k"]) == pytest.approx(severity.k, rel=1e-5)
    assert outcome.holdout_p.shape == (outcome.prepared.holdout_idx.size,)
    assert outcome.calibrator_max >= outcome.holdout_p.max()


def test_the_severity_is_fitted_on_the_development_rows_only(sim_panel):
    labels = LabelConfig(altcoins=frozenset({"NEAR"}))
    prepared = prepare(sim_panel, get_spec("core"), labels, holdout_fraction=0.3)
    severity, note = training_severity(prepared, labels.label_column)
    assert severity is not None and note == "" and severity.k > 0
    hold_start = prepared.data.times[prepared.holdout_idx].min()
    cut = pl.lit(hold_start).cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    # every close from the held-out start on halved (a crash the development rows' drop
    # windows must not see): the severity does not move
    late = pl.col("ts") >= cut
    crashed = prepared.labels.with_columns(
        pl.when(late).then(pl.col(CLOSE) * 0.5).otherwise(pl.col(CLOSE)).alias(CLOSE)
    )
    again, _ = training_severity(replace(prepared, labels=crashed), labels.label_column)
    assert again == severity
    # and with the development closes halved every other hour, it does
    odd = (pl.col("ts").dt.hour() % 2 == 1) & ~late
    deeper = prepared.labels.with_columns(
        pl.when(odd).then(pl.col(CLOSE) * 0.5).otherwise(pl.col(CLOSE)).alias(CLOSE)
    )
    moved, _ = training_severity(replace(prepared, labels=deeper), labels.label_column)
    assert moved.k > 2 * severity.k
    none, why = training_severity(prepared, labels.label_column, min_rows=10**6)
    assert none is None and "min_rows=1000000" in why
