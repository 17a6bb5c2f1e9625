"""Point MLflow at the configured tracking and registry store, and pick the experiment.

The default store is a SQLite file under ``mlflow/`` with artifacts beside it, so nothing
needs a server; any other tracking URI (``http://127.0.0.1:5000``,
``postgresql+psycopg2://...``) works the same way.
"""

from __future__ import annotations

import os
from pathlib import Path

import mlflow
from mlflow import MlflowClient

_SQLITE = "sqlite:///"


def configure_tracking(
    tracking_uri: str,
    *,
    registry_uri: str = "",
    experiment: str = "oihedge",
    artifact_root: str | os.PathLike[str] | None = None,
) -> str:
    """Set the tracking/registry URIs, create the experiment if needed; return its id.

    A relative SQLite path is taken from the current directory and its folder is created.
    ``artifact_root`` is where a new experiment keeps its artifacts (a local folder or a
    URI); an existing experiment keeps the location it was created with.
    """
    tracking_uri = _absolute_sqlite(tracking_uri)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(_absolute_sqlite(registry_uri) if registry_uri else tracking_uri)
    client = MlflowClient()
    found = client.get_experiment_by_name(experiment)
    if found is not None:
        mlflow.set_experiment(experiment_id=found.experiment_id)
        return str(found.experiment_id)
    location = None
    if artifact_root is not None:
        text = str(artifact_root)
        if "://" in text:
            location = text
        else:
            folder = Path(text).resolve()
            folder.mkdir(parents=True, exist_ok=True)
            location = folder.as_uri()
    experiment_id = client.create_experiment(experiment, artifact_location=location)
    mlflow.set_experiment(experiment_id=experiment_id)
    return str(experiment_id)


def _absolute_sqlite(uri: str) -> str:
    if not uri.startswith(_SQLITE):
        return uri
    path = Path(uri[len(_SQLITE) :])
    if not path.is_absolute():
        path = Path.cwd() / path
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"{_SQLITE}{path}"
