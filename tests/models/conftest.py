from __future__ import annotations

from pathlib import Path

import mlflow
import pytest


@pytest.fixture
def local_mlflow(tmp_path: Path, monkeypatch):
    """A throwaway SQLite tracking + registry store; restores the previous URIs."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    experiment = mlflow.create_experiment(
        "test", artifact_location=(tmp_path / "artifacts").as_uri()
    )
    yield experiment
    mlflow.set_tracking_uri("")
    mlflow.set_registry_uri("")
