"""The registry through a team MLflow tracking server backed by PostgreSQL (issue #6).

A throwaway PostgreSQL on loopback holds the backend store; ``mlflow server`` runs on
loopback in its own process group with proxied artifacts (``--artifacts-destination``),
started exactly as mlflow/README.md documents. oihedge talks to it only over HTTP.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from oihedge.models import registry
from oihedge.models.artifact import log_cascade_model
from oihedge.models.gate import gate
from oihedge.models.metrics import classification_metrics
from oihedge.models.tracking import configure_tracking
from oihedge.models.train import CascadeClassifier, TrainingData, make_training_data
from pg_support import PostgresCluster, free_port
from tests_support import TINY_PARAMS as PARAMS
from tests_support import TOY_SPEC as SPEC
from tests_support import TwoBlockSplit, synthetic_training_frame

pytestmark = pytest.mark.postgres

MLFLOW = Path(sys.executable).with_name("mlflow")
FEATURES = ["f_signal", "f_noise"]


def _wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            state = f"exited {proc.returncode}" if proc.poll() is not None else "not healthy"
            pytest.fail(f"mlflow server {state} after start:\n{log.read_text()[-4000:]}")
        time.sleep(0.25)


@pytest.fixture
def mlflow_server(
    postgres: PostgresCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, str, Path]]:
    """(server URL, backend database, artifacts folder); tracking and registry point at it."""
    database = postgres.create_database("mlflow_server")
    artifacts = tmp_path / "server-artifacts"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "mlflow-server.log"
    command = [
        str(MLFLOW),
        "server",
        *("--backend-store-uri", postgres.url(database)),
        *("--artifacts-destination", str(artifacts)),
        *("--host", "127.0.0.1", "--port", str(port), "--workers", "1"),
    ]
    with open(log, "w") as handle:
        proc = subprocess.Popen(
            command, stdout=handle, stderr=subprocess.STDOUT, cwd=tmp_path, start_new_session=True
        )
    try:
        _wait_healthy(url, proc, log, timeout_s=90)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        monkeypatch.setenv("MLFLOW_REGISTRY_URI", url)
        yield url, database, artifacts
    finally:
        mlflow.set_tracking_uri("")
        mlflow.set_registry_uri("")
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _train(seed: int, *, unrelated: bool = False) -> CascadeClassifier:
    frame = synthetic_training_frame(n_bars=3000, seed=seed)
    if unrelated:  # a label unrelated to the features: clearly worse on the holdout
        rng = np.random.default_rng(5)
        frame = frame.with_columns(f_signal=rng.normal(size=frame.height))
    data = make_training_data(frame, frame, FEATURES, "y_cascade_4h")
    return CascadeClassifier(PARAMS).fit(data, TwoBlockSplit(2))


def _log_and_register(model: CascadeClassifier, experiment_id: str, name: str) -> str:
    card = {
        "features": list(model.features_),
        "feature_spec": SPEC,
        "horizon": "4h",
        "dataset": {"hash": "d"},
        "git_commit": "deadbeef",
    }
    example = pd.DataFrame({f: [0.0, 1.0] for f in FEATURES})
    with mlflow.start_run(experiment_id=experiment_id):
        info = log_cascade_model(model, card, input_example=example)
    return registry.register(info.model_uri, name, {"horizon": "4h"})


def _metrics(model: CascadeClassifier, hold: TrainingData) -> dict[str, float]:
    m = classification_metrics(hold.y, model.predict_proba(hold.X))
    return {"pr_auc": m.pr_auc, "brier": m.brier}


def test_register_promote_rollback_and_load_through_a_postgres_backed_server(
    mlflow_server: tuple[str, str, Path], postgres: PostgresCluster
) -> None:
    url, database, artifacts = mlflow_server
    experiment_id = configure_tracking(url, experiment="registry-server")
    assert mlflow.get_tracking_uri() == url and mlflow.get_registry_uri() == url
    name = registry.model_name("server")
    holdout = synthetic_training_frame(n_bars=3000, seed=42)
    hold = make_training_data(holdout, holdout, FEATURES, "y_cascade_4h")
    good, bad = _train(1), _train(2, unrelated=True)
    margins = {"pr_auc": 0.01, "brier": 0.001}

    v1 = _log_and_register(bad, experiment_id, name)
    v2 = _log_and_register(good, experiment_id, name)
    assert registry.alias_version(name, registry.CHALLENGER) == v2
    registry.promote(name, v1, gate(_metrics(bad, hold), None, margins, window="w"))
    verdict = gate(_metrics(good, hold), _metrics(bad, hold), margins, window="w")
    assert verdict.passed
    registry.promote(name, v2, verdict)
    assert registry.alias_version(name, registry.CHAMPION) == v2

    refused = gate(_metrics(bad, hold), _metrics(good, hold), margins, window="w")
    with pytest.raises(registry.RegistryError, match="gate refused"):
        registry.promote(name, v1, refused)
    assert registry.alias_version(name, registry.CHAMPION) == v2
    assert {v["version"]: v["tags"] for v in registry.versions(name)}[v1]["gate_passed"] == "false"

    registry.rollback(name, reason="test")
    assert registry.alias_version(name, registry.CHAMPION) == v1
    registry.promote(name, v2, refused, force=True, reason="incident 7", user="alice")
    assert [h["action"] for h in registry.history(name)] == [
        "promote",
        "promote",
        "rollback",
        "force",
    ]

    loaded = registry.load_champion(name, SPEC)
    assert loaded.version == v2
    frame = hold.frame.select(hold.features).to_pandas()
    assert np.array_equal(
        loaded.pyfunc.predict(frame)["p_cascade"].to_numpy(), good.predict_proba(hold.X)
    )
    with pytest.raises(registry.FeatureSpecMismatchError, match="feature spec version differs"):
        registry.load_champion(name, {**SPEC, "version": 2})

    # the registry lives in PostgreSQL and the model files behind the server's artifact proxy
    rows = postgres.query(
        database,
        "select a.alias, a.version from registered_model_aliases a order by a.alias",
    )
    assert rows == [("challenger", int(v2)), ("champion", int(v2))]
    assert sorted(r[0] for r in postgres.query(database, "select version from model_versions")) == [
        int(v1),
        int(v2),
    ]
    assert len(list(artifacts.rglob("booster.txt"))) == 2
