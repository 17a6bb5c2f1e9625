"""The Models page: the registered versions of the served model, their aliases and gate
verdicts, and the champion's history, read from the MLflow registry the caller pointed
MLflow at (``oihedge.models.tracking.configure_tracking``)."""

from __future__ import annotations

from typing import Any

from oihedge.models import registry
from oihedge.models.version_checks import serving_refusal


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


def served_model(name: str, version: str | None) -> dict[str, Any]:
    """The Live page's view of the version the loop serves: ``name`` and either its
    ``aliases`` and ``gate`` verdict, or ``registry`` saying why they are unknown."""
    if version is None:
        return {"name": name, "registry": "no model served"}
    found = {v["version"]: v for v in registry.versions(name)}
    entry = found.get(str(version))
    if entry is None:
        return {"name": name, "registry": f"version {version} not in the registry"}
    refusal = serving_refusal(name, entry["version"], entry["tags"])
    return {
        "name": name,
        "aliases": entry["aliases"],
        "gate": "passed (may serve)" if refusal is None else f"refused: {refusal}",
    }
