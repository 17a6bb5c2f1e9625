"""Whether a registered version may serve, from what the registry holds about it: its tags
say it was promoted through the gate (:func:`serving_refusal`), and its model card's
feature spec is the running feature code's (:func:`check_feature_spec`).

Pure: both read dictionaries (a version's tags, two feature-spec cards);
:mod:`oihedge.models.registry` reads them from MLflow and acts on the answer
(:func:`oihedge.models.registry.load_alias`, :func:`oihedge.models.registry.gated_champion`).
"""

from __future__ import annotations

import json
from typing import Any

#: version tag written by :func:`oihedge.models.registry.promote` when the version becomes champion
PROMOTION = "promotion"


class FeatureSpecMismatchError(ValueError):
    """The model's feature spec is not the running feature code's."""


def check_feature_spec(model_spec: dict[str, Any], running_spec: dict[str, Any]) -> None:
    """Raise :class:`FeatureSpecMismatchError` naming the first difference."""
    for key in ("name", "version"):
        if model_spec.get(key) != running_spec.get(key):
            raise FeatureSpecMismatchError(
                f"feature spec {key} differs: model has {model_spec.get(key)!r}, "
                f"running code has {running_spec.get(key)!r}"
            )
    ours, theirs = list(model_spec.get("features", [])), list(running_spec.get("features", []))
    if ours != theirs:
        missing = [f for f in ours if f not in theirs]
        extra = [f for f in theirs if f not in ours]
        if missing or extra:
            raise FeatureSpecMismatchError(
                f"feature lists differ: the model needs {missing} that the running code lacks"
                f" and the code has {extra} the model does not know"
            )
        first = next(i for i, (a, b) in enumerate(zip(ours, theirs, strict=True)) if a != b)
        raise FeatureSpecMismatchError(
            f"feature order differs at position {first}: model {ours[first]!r}, "
            f"running code {theirs[first]!r}"
        )
    if model_spec.get("hash") != running_spec.get("hash"):
        raise FeatureSpecMismatchError(
            f"feature spec hash differs: model {model_spec.get('hash')!r}, "
            f"running code {running_spec.get('hash')!r} (same names, different parameters)"
        )


def serving_refusal(name: str, version: str, tags: dict[str, str]) -> str | None:
    """Why version ``version`` of ``name`` may not serve, from its ``tags``; None when it
    was promoted through :func:`oihedge.models.registry.promote`: tag ``promotion`` records a
    promotion of this very ``<name>/<version>`` with a passed gate, or forced with a
    reason. A version without that tag (promoted before it existed) may serve when it
    carries a passed gate verdict (``gate_passed`` ``true`` backed by a passed ``gate``)
    or a forced promotion with its reason (``forced_by`` and a non-blank
    ``forced_reason``)."""
    if PROMOTION not in tags:
        return _former_tags_refusal(tags)
    try:
        promotion = json.loads(tags[PROMOTION])
    except ValueError:
        promotion = None
    if not isinstance(promotion, dict):
        return f"its {PROMOTION!r} tag is not a promotion record"
    if promotion.get("as") != f"{name}/{version}":
        return (
            f"its promotion was recorded for {promotion.get('as')}, not for {name}/{version} "
            "(a version copied from another registered model)"
        )
    if promotion.get("action") == "promote" and promotion.get("gate_passed") is True:
        return None
    if promotion.get("action") == "force" and str(promotion.get("reason") or "").strip():
        return None
    return f"its {PROMOTION!r} tag records neither a passed gate nor a forced promotion's reason"


def _former_tags_refusal(tags: dict[str, str]) -> str | None:
    if tags.get("forced_by") and (tags.get("forced_reason") or "").strip():
        return None
    passed = tags.get("gate_passed")
    if passed == "true":
        try:
            verdict = json.loads(tags.get("gate", ""))
        except ValueError:
            verdict = None
        if isinstance(verdict, dict) and verdict.get("passed") is True:
            return None
        return "its gate_passed tag is not backed by a passed gate verdict (tag 'gate')"
    if passed == "false":
        return "the gate refused it (gate_passed=false) and it was not forced with a reason"
    if tags.get("forced_by"):
        return "it was forced without a recorded reason (tag 'forced_reason')"
    return (
        "it carries no gate verdict and no forced promotion: its alias was set outside "
        "`oihedge promote` (e.g. in the MLflow UI)"
    )
