"""oihedge.serving.live.model_watch.ChampionWatch against a real (SQLite) MLflow registry: the loop
serves only a champion promoted through the gate (or forced with a reason); an alias set
behind the gate's back (the MLflow UI's alias editor) is refused and the last good model
kept."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator

import mlflow
import pytest
from mlflow import MlflowClient

from oihedge.models import registry
from oihedge.models.gate import GateVerdict, gate
from oihedge.serving.live.model_watch import ChampionWatch
from tests_support import TOY_SPEC, log_toy_model


@pytest.fixture(scope="module")
def logged(tmp_path_factory) -> Iterator[str]:
    """A SQLite tracking + registry store holding one logged model (its URI): each test
    registers it, as new versions, under a registered model of its own."""
    folder = tmp_path_factory.mktemp("watch")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        patch.setenv("MLFLOW_REGISTRY_URI", uri)
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        experiment = mlflow.create_experiment("t", artifact_location=(folder / "art").as_uri())
        info, _ = log_toy_model(experiment)
        yield info.model_uri
        mlflow.set_tracking_uri("")
        mlflow.set_registry_uri("")


_names = itertools.count()


@pytest.fixture
def name(logged) -> str:
    return registry.model_name(f"watch{next(_names)}")


def _register(model_uri: str, name: str) -> str:
    return registry.register(model_uri, name, {"horizon": "4h"})


def _passed() -> GateVerdict:
    return gate({"pr_auc": 0.5}, None, {"pr_auc": 0.0}, window="w")


def _errors(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def test_an_alias_set_behind_the_gate_is_refused_and_the_last_good_model_kept(logged, name, caplog):
    v1 = _register(logged, name)
    registry.promote(name, v1, _passed())
    watch = ChampionWatch(name, TOY_SPEC)
    assert watch.start().kind == "loaded" and watch.version == v1
    served = watch.predictor
    v2 = _register(logged, name)
    # what the MLflow UI's alias editor does: the alias moves, no gate, no history
    MlflowClient().set_registered_model_alias(name, "champion", v2)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="oihedge.serving.live.model_watch"):
        event = watch.poll()
        assert event is not None and event.kind == "refused"
        assert event.version == v2 and event.serving == v1
        assert "gate" in event.detail
        assert watch.version == v1 and watch.predictor is served
        assert watch.poll() is None  # not retried (nor logged) every bar
    assert len(_errors(caplog)) == 1 and f"v{v2}" in _errors(caplog)[0]
    # promoted through the gate afterwards: the alias did not move, the watch picks it up
    registry.promote(name, v2, _passed())
    event = watch.poll()
    assert event is not None and event.kind == "loaded" and watch.version == v2


def test_no_gated_champion_at_start_serves_nothing_with_one_clear_error(logged, name, caplog):
    v1 = _register(logged, name)
    MlflowClient().set_registered_model_alias(name, "champion", v1)
    watch = ChampionWatch(name, TOY_SPEC)
    with caplog.at_level(logging.INFO, logger="oihedge.serving.live.model_watch"):
        event = watch.start()
        assert watch.poll() is None and watch.poll() is None
    assert event.kind == "unavailable" and event.version == v1 and event.serving is None
    assert watch.predictor is None and watch.version is None
    errors = _errors(caplog)
    assert len(errors) == 1
    assert "no gate verdict" in errors[0] and "oihedge promote" in errors[0]
    assert "no model is served" in errors[0]


@pytest.mark.parametrize(
    ("tags", "served"),
    [
        ({"gate_passed": "false", "gate": '{"passed": false}'}, False),  # refused by the gate
        ({"forced_by": "alice"}, False),  # a forced promotion without its reason
        ({"forced_by": "alice", "forced_reason": "incident 42"}, True),
    ],
)
def test_only_a_passed_verdict_or_a_forced_promotion_with_its_reason_is_served(
    logged, name, tags, served
):
    v1 = _register(logged, name)
    client = MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(name, v1, key, value)
    client.set_registered_model_alias(name, "champion", v1)
    event = ChampionWatch(name, TOY_SPEC).start()
    assert (event.kind == "loaded") is served


def test_a_forced_promotion_is_served(logged, name):
    v1 = _register(logged, name)
    refused = gate({"pr_auc": float("nan")}, None, {"pr_auc": 0.0}, window="w")
    registry.promote(name, v1, refused, force=True, reason="incident 42", user="alice")
    event = ChampionWatch(name, TOY_SPEC).start()
    assert event.kind == "loaded" and event.version == v1
