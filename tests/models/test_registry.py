from __future__ import annotations

import mlflow
import numpy as np
import pytest

from oihedge.models import registry
from oihedge.models.gate import gate
from oihedge.models.metrics import classification_metrics
from oihedge.models.train import CascadeClassifier, make_training_data
from tests_support import TINY_PARAMS as PARAMS
from tests_support import TOY_SPEC as SPEC
from tests_support import TwoBlockSplit, log_toy_model, synthetic_training_frame


def _train(frame, features=("f_signal", "f_noise")):
    data = make_training_data(frame, frame, list(features), "y_cascade_4h")
    return CascadeClassifier(PARAMS).fit(data, TwoBlockSplit(2)), data


def _log(model, experiment, spec=SPEC):
    return log_toy_model(experiment, model, spec=spec, git_commit="deadbeef")


def test_artifact_roundtrip_gives_identical_probabilities(local_mlflow):
    model, data = _train(synthetic_training_frame(n_bars=2000))
    info, _ = _log(model, local_mlflow)
    loaded = mlflow.pyfunc.load_model(info.model_uri)
    frame = data.frame.select(data.features).to_pandas()
    out = loaded.predict(frame)
    assert np.array_equal(out["p_cascade"].to_numpy(), model.predict_proba(data.X))
    fast = loaded.unwrap_python_model()
    p, raw = fast.predict_vector(data.X[7])
    assert p == model.predict_proba(data.X[7:8])[0] and raw == model.predict_raw(data.X[7:8])[0]
    assert loaded.metadata.get_input_schema().input_names() == ["f_signal", "f_noise"]
    with open(mlflow.pyfunc.get_model_dependencies(info.model_uri)) as handle:
        requirements = handle.read().split()
    assert any(r.startswith("lightgbm==") for r in requirements)


def test_register_gate_promote_rollback_and_spec_check(local_mlflow):
    name = registry.model_name("unit")
    holdout = synthetic_training_frame(n_bars=3000, seed=42)
    hold = make_training_data(holdout, holdout, ["f_signal", "f_noise"], "y_cascade_4h")

    def metrics(model):
        m = classification_metrics(hold.y, model.predict_proba(hold.X))
        return {"pr_auc": m.pr_auc, "brier": m.brier}

    good, _ = _train(synthetic_training_frame(n_bars=3000, seed=1))
    # the second model sees a label unrelated to its features: clearly worse on the holdout
    bad_frame = synthetic_training_frame(n_bars=3000, seed=2)
    rng = np.random.default_rng(5)
    bad_frame = bad_frame.with_columns(f_signal=rng.normal(size=bad_frame.height))
    bad, _ = _train(bad_frame)

    v1 = registry.register(_log(good, local_mlflow)[0].model_uri, name, {"horizon": "4h"})
    assert registry.alias_version(name, "challenger") == v1
    first = gate(metrics(good), None, {"pr_auc": 0.0, "brier": 0.0}, window="w")
    registry.promote(name, v1, first)
    assert registry.alias_version(name, "champion") == v1

    v2 = registry.register(_log(bad, local_mlflow)[0].model_uri, name, {"horizon": "4h"})
    verdict = gate(metrics(bad), metrics(good), {"pr_auc": 0.01, "brier": 0.001}, window="w")
    assert not verdict.passed
    with pytest.raises(registry.RegistryError, match="gate refused"):
        registry.promote(name, v2, verdict)
    assert registry.alias_version(name, "champion") == v1
    tags = {v["version"]: v["tags"] for v in registry.versions(name)}
    assert tags[v2]["gate_passed"] == "false"

    # a better challenger passes the same gate
    better, _ = _train(synthetic_training_frame(n_bars=6000, seed=3))
    v3 = registry.register(_log(better, local_mlflow)[0].model_uri, name, {"horizon": "4h"})
    verdict3 = gate(metrics(better), metrics(good), {"pr_auc": 0.02, "brier": 0.002}, window="w")
    assert verdict3.passed
    registry.promote(name, v3, verdict3)
    assert registry.alias_version(name, "champion") == v3

    registry.rollback(name)
    assert registry.alias_version(name, "champion") == v1
    assert [h["action"] for h in registry.history(name)] == ["promote", "promote", "rollback"]

    # forced promotion needs a message and records who and why
    with pytest.raises(ValueError, match="needs a reason"):
        registry.promote(name, v2, verdict, force=True)
    registry.promote(name, v2, verdict, force=True, reason="incident 42", user="alice")
    tags = {v["version"]: v["tags"] for v in registry.versions(name)}
    assert tags[v2]["forced_by"] == "alice" and tags[v2]["forced_reason"] == "incident 42"

    loaded = registry.load_champion(name, SPEC)
    assert loaded.version == v2
    with pytest.raises(registry.FeatureSpecMismatchError, match="feature spec version differs"):
        registry.load_champion(name, {**SPEC, "version": 2})
    with pytest.raises(
        registry.FeatureSpecMismatchError, match="feature order differs at position 0"
    ):
        registry.load_champion(name, {**SPEC, "features": ["f_noise", "f_signal"]})
    with pytest.raises(registry.FeatureSpecMismatchError, match=r"needs \['f_noise'\]"):
        registry.load_champion(name, {**SPEC, "features": ["f_signal", "f_extra"]})


def test_no_champion_errors(local_mlflow):
    with pytest.raises(registry.RegistryError, match="no 'champion' alias"):
        registry.load_champion("oihedge-cascade-none", SPEC)


def test_load_champion_serves_only_a_version_promoted_through_the_gate(local_mlflow):
    from mlflow import MlflowClient

    model, _ = _train(synthetic_training_frame(n_bars=1500))
    info, run_id = _log(model, local_mlflow)
    name = registry.model_name("gated")
    passed = gate({"pr_auc": 0.5}, None, {"pr_auc": 0.0}, window="w")
    refused = gate({"pr_auc": 0.1}, {"pr_auc": 0.5}, {"pr_auc": 0.0}, window="w")
    client = MlflowClient()

    v1 = registry.register(info.model_uri, name, {})
    client.set_registered_model_alias(name, "champion", v1)  # the MLflow UI's alias editor
    with pytest.raises(registry.UngatedModelError, match="no gate verdict"):
        registry.load_champion(name, SPEC)
    registry.promote(name, v1, passed)
    assert registry.load_champion(name, SPEC).version == v1

    # v1's gate re-run and refused later, v2 promoted, then rolled back to v1: v1 serves
    v2 = registry.register(info.model_uri, name, {})
    registry.promote(name, v2, passed)
    with pytest.raises(registry.RegistryError, match="gate refused"):
        registry.promote(name, v1, refused)
    assert {v["version"]: v["tags"] for v in registry.versions(name)}[v1]["gate_passed"] == "false"
    registry.rollback(name)
    assert registry.load_champion(name, SPEC).version == v1

    # an alias moved in the UI is neither the champion to beat nor a rollback target
    v3 = registry.register(info.model_uri, name, {})
    client.set_registered_model_alias(name, "champion", v3)
    assert registry.alias_version(name, "champion") == v3
    assert registry.gated_champion(name) == v1
    assert registry.promote(name, v2, passed)["previous"] == v1
    assert registry.rollback(name)["version"] == v1
    client.set_registered_model_alias(name, "champion", v3)
    assert registry.rollback(name, reason="undo the UI")["version"] == v1  # not in history
    assert registry.alias_version(name, "champion") == v1

    # the UI's "Promote model" copies a version with its tags into another registered model
    other = registry.model_name("copied")
    copy = client.copy_model_version(f"models:/{name}/{v1}", other)
    client.set_registered_model_alias(other, "champion", copy.version)
    with pytest.raises(registry.UngatedModelError, match=f"recorded for {name}/{v1}"):
        registry.load_champion(other, SPEC)

    found = registry.resolve(name, "champion")
    assert (found.version, found.run_id, found.uri) == (v1, run_id, f"models:/{name}/{v1}")
    assert registry.resolve(name, v2).version == v2
    with pytest.raises(registry.RegistryError, match="has no version 9"):
        registry.resolve(name, "9")
    with pytest.raises(registry.RegistryError, match="has no alias 'nope'"):
        registry.resolve(name, "nope")
