"""The registry's one loader (:func:`oihedge.models.registry.load_version`) and who a promotion
gates against whom (:func:`oihedge.models.promotion.contest`, :func:`oihedge.models.promotion.contenders`).
The held-out and hedge sides run end to end in tests/models/test_cli_registry.py."""

from __future__ import annotations

import mlflow
import pytest
from mlflow import MlflowClient

from oihedge.models import promotion, registry
from oihedge.models.gate import gate
from tests_support import log_toy_model


def test_load_version_loads_the_version_an_alias_names(local_mlflow):
    name = registry.model_name("loader")
    info, run_id = log_toy_model(local_mlflow)
    uri = info.model_uri
    v1 = registry.register(uri, name, {})
    loaded = registry.load_version(name, "challenger")
    assert (loaded.version, loaded.run_id, loaded.uri) == (v1, run_id, f"models:/{name}/{v1}")
    assert loaded.card["horizon"] == "4h" and loaded.as_dict()["source"] == uri
    assert loaded.as_dict() == registry.resolve(name, v1).as_dict()
    assert registry.load_version(name, v1).version == v1
    with pytest.raises(registry.RegistryError, match="has no alias 'nope'"):
        registry.load_version(name, "nope")
    with pytest.raises(registry.RegistryError, match="has no version 9"):
        registry.load_version(name, "9")


def test_a_model_without_a_card_is_refused(local_mlflow):
    class Plain(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):  # noqa: ANN001, ARG002
            return model_input

    name = registry.model_name("plain")
    with mlflow.start_run(experiment_id=local_mlflow):
        info = mlflow.pyfunc.log_model(name="model", python_model=Plain())
    version = registry.register(info.model_uri, name, {})
    with pytest.raises(registry.RegistryError, match=f"models:/{name}/{version} is not an oihedge"):
        registry.load_version(name, version)


def test_the_contest_gates_against_the_champion_the_gate_knows(local_mlflow):
    name = registry.model_name("contest")
    with pytest.raises(registry.RegistryError, match="has no challenger"):
        promotion.contest(name)
    uri = log_toy_model(local_mlflow)[0].model_uri
    v1 = registry.register(uri, name, {})
    first = promotion.contest(name)
    assert (first.challenger, first.champion, first.aliased) == (v1, None, None)
    assert list(promotion.contenders(first)) == ["challenger"]
    registry.promote(name, v1, gate({"pr_auc": 0.5}, None, {"pr_auc": 0.0}, window="w"))
    v2 = registry.register(uri, name, {})
    v3 = registry.register(uri, name, {})
    MlflowClient().set_registered_model_alias(name, registry.CHAMPION, v3)  # the MLflow UI
    match = promotion.contest(name, v2)
    assert (match.challenger, match.champion, match.aliased) == (v2, v1, v3)
    assert match.alias_outside_gate
    loaded = promotion.contenders(match)
    assert {k: m.version for k, m in loaded.items()} == {"challenger": v2, "champion": v1}
