"""The Models page: the registered versions of the served model, their aliases and gate
verdicts, and the champion's history, read from the MLflow registry the caller pointed
MLflow at (``models.tracking.configure_tracking``)."""

from __future__ import annotations

from typing import Any

from models import registry
from models.version_checks import serving_refusal


def model_versions(name: str) -> list[dict[str, Any]]:
    """Every version of ``name``, newest first: ``version``, ``aliases``, ``created``
    (UTC), ``source``, ``run_id`` (from the source, when it names a run) and ``gate``:
    ``"passed (may serve)"`` or ``"refused: <why>"`` (:func:`serving_refusal`)."""
    rows = []
    for v in registry.versions(name):
        refusal = serving_refusal(name, v["version"], v["tags"])
        source = str(v.get("source") or "")
        run_id = source.split("/")[1] if source.startswith("runs:/") else v["tags"].get("run_id")
        rows.append(
            {
                "version": v["version"],
                "aliases": v["aliases"],
                "created": v["created"],
                "source": source,
                "run_id": run_id,
                "gate": "passed (may serve)" if refusal is None else f"refused: {refusal}",
                "may_serve": refusal is None,
            }
        )
    return rows


def champion_history(name: str) -> list[dict[str, Any]]:
    """Every move of the ``champion`` alias, newest first (:func:`registry.history`)."""
    return list(reversed(registry.history(name)))
