"""Score a registered model on a held-out window, beside the baselines, from a panel.

Used by `oihedge evaluate` and by the promotion gate, which scores the challenger and the
champion on the *same* window. The features are rebuilt with the model's own spec (whose
hash must match the running feature code) and the labels with the model's own label
parameters; the baselines are fitted on the rows before the window.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import polars as pl

from oihedge.features.registry import get_spec
from oihedge.features.schema import infer_bar
from oihedge.features.spec import FeatureSpec
from oihedge.models.evaluate import Evaluation
from oihedge.models.label_params import LabelConfig
from oihedge.models.registry import check_feature_spec
from oihedge.models.workflow import Prepared, feature_spec_card, holdout_evaluation, prepare


def spec_from_card(card: dict[str, Any], bar: timedelta | None = None) -> FeatureSpec:
    """The running code's spec named in ``card``, checked against the card's spec."""
    stored = card["feature_spec"]
    spec = get_spec(stored["name"], stored.get("version"))
    if bar is not None:
        spec = spec.resolve(bar)
    check_feature_spec(stored, feature_spec_card(spec))
    return spec


def labels_from_card(card: dict[str, Any]) -> LabelConfig:
    """The label configuration the model was trained with."""
    params = card["label_params"]
    majors = dict(params["majors"])
    altcoin = {k: v for k, v in params["altcoin"].items() if k != "horizon"}
    return LabelConfig.from_mapping({**majors, "altcoin": altcoin}, params.get("altcoins", []))


def parse_window(card: dict[str, Any], start: datetime | None) -> datetime:
    """The window start: ``start`` if given, else the model's recorded holdout start."""
    if start is not None:
        return start
    return datetime.fromisoformat(str(card["holdout"]["start"]))


def prepare_for(
    panel: pl.DataFrame, card: dict[str, Any], *, start: datetime | None = None
) -> Prepared:
    """Features (the model's spec) and labels (its parameters), split at the window start."""
    spec = spec_from_card(card, infer_bar(panel))
    return prepare(panel, spec, labels_from_card(card), holdout_start=parse_window(card, start))


def assess(
    prepared: Prepared,
    models: dict[str, Any],
    *,
    end: datetime | None = None,
    alert_rate: float = 0.05,
) -> Evaluation:
    """Metrics of each pyfunc model in ``models`` (name -> model) and of the baselines,
    all on the same held-out rows (up to ``end``, if given)."""
    if end is not None:
        cutoff = np.datetime64(end.astimezone(UTC).replace(tzinfo=None), "us")
        keep = prepared.holdout_idx[prepared.data.times[prepared.holdout_idx] <= cutoff]
        prepared = replace(prepared, holdout_idx=keep)
    if prepared.holdout_idx.size == 0:
        raise ValueError("the held-out window holds no labelled rows")
    frame = prepared.holdout.frame.select(prepared.holdout.features).to_pandas()
    scores = {name: m.predict(frame)["p_cascade"].to_numpy() for name, m in models.items()}
    return holdout_evaluation(prepared, scores, alert_rate=alert_rate)
