"""The feature registry: every feature by name, the named specs, and the batch build.

``FEATURES`` maps a name to its :class:`~oihedge.features.graph.Feature` (family, window, unit,
meaning, graph). ``SPECS`` holds the named, versioned specs a model can be trained on;
:func:`build_features` computes a spec's table over a panel frame (``features/`` never
opens the store: the caller loads the panel and hands it over).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import polars as pl

from oihedge.features import correlation, depth, funding, oi_divergence, options, volatility
from oihedge.features.batch.engine import compute
from oihedge.features.graph import Feature, ScalarNode
from oihedge.features.spec import FeatureParams, FeatureSpec, ResolvedParams
from oihedge.features.stream import accept
from oihedge.features.windows import full_span, min_history

FAMILIES: tuple[str, ...] = (
    "oi_divergence",
    "funding",
    "correlation",
    "volatility",
    "depth",
    "options",
)


def _catalogue() -> dict[str, Feature]:
    out: dict[str, Feature] = {}
    for module in (oi_divergence, funding, correlation, volatility, depth, options):
        for feature in module.FEATURES:
            if feature.name in out:
                raise ValueError(f"feature {feature.name!r} is defined twice")
            out[feature.name] = feature
    return out


FEATURES: dict[str, Feature] = _catalogue()

#: every feature of the first five families, venue-name independent: one model serves
#: any set of venues (frozen: trained models reference it)
CORE_V1 = FeatureSpec(
    name="core",
    version=1,
    features=tuple(n for n, feat in FEATURES.items() if feat.family != "options"),
    params=FeatureParams(),
)
#: ``core`` v1 plus the options family (null for symbols without listed options)
CORE_V2 = FeatureSpec(
    name="core",
    version=2,
    features=CORE_V1.features
    + tuple(n for n, feat in FEATURES.items() if feat.family == "options"),
    params=FeatureParams(),
)
#: specs by ``name@vN``; a bare name is its version 1 (what configs and model cards
#: written before versions were named refer to)
SPECS: dict[str, FeatureSpec] = {
    f"{spec.name}@v{spec.version}": spec for spec in (CORE_V1, CORE_V2)
}


def get_spec(name: str, version: int | None = None) -> FeatureSpec:
    """The spec ``name@vN`` (or ``name`` with ``version``; a bare name is version 1);
    ``ValueError`` naming the known ones otherwise."""
    key = name if "@v" in name else f"{name}@v{1 if version is None else version}"
    try:
        return SPECS[key]
    except KeyError:
        known = ", ".join(["core", *SPECS])
        raise ValueError(f"unknown feature spec {name!r}; known: {known}") from None


def graph(spec: FeatureSpec) -> dict[str, ScalarNode]:
    """The graph root of each feature of a resolved spec, in spec order."""
    params = resolved_params(spec)
    unknown = [name for name in spec.features if name not in FEATURES]
    if unknown:
        raise ValueError(f"spec {spec.name!r}: unknown feature {unknown[0]!r}")
    return {name: FEATURES[name].build(params) for name in spec.features}


def resolved_params(spec: FeatureSpec) -> ResolvedParams:
    """The parameters of a resolved spec; ``ValueError`` when its bar is not known."""
    if isinstance(spec.params, ResolvedParams):
        return spec.params
    if not spec.params.resolved:
        raise ValueError(f"spec {spec.name!r} must be resolved (bar known), got {spec.params!r}")
    return spec.params.resolve()  # (both set by hand on a FeatureParams)


def warmup(spec: FeatureSpec) -> dict[str, timedelta]:
    """Per feature of a resolved spec: history needed before it can have a value."""
    params = resolved_params(spec)
    return {name: min_history(node, params) for name, node in graph(spec).items()}


def lookback(spec: FeatureSpec) -> timedelta:
    """History to load before the first wanted decision time: the longest chain of
    windows plus the staleness and funding age, so the first rows see the same inputs
    as in a run over the whole panel (values agree up to float rounding)."""
    p = resolved_params(spec)
    spans = [full_span(node, p) for node in graph(spec).values()]
    return max(spans) + max(p.max_staleness, p.funding_max_age) + p.bar


@dataclass(frozen=True)
class FeatureBuild:
    """A built feature table and how it was made."""

    table: pl.DataFrame
    spec: FeatureSpec
    rows_in: int
    rows_used: int
    quarantined: dict[str, int]


def build_features(
    panel: pl.DataFrame,
    spec: FeatureSpec,
    *,
    bar: timedelta | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    progress: Callable[[float], None] | None = None,
) -> FeatureBuild:
    """The feature table of ``spec`` over ``panel``, for decision times in [start, end).

    ``panel`` is a market panel frame in any row order (it is read as a stream; see
    :mod:`oihedge.features.stream`). ``bar`` defaults to the spec's, else the panel's inferred
    bar. The table has ``ts`` (decision time), ``symbol`` and one Float64 column per
    feature in spec order; nulls where inputs are missing or too short.
    """
    accepted = accept(panel, bar=bar or spec.params.bar)
    resolved = spec.resolve(accepted.bar)
    table = compute(accepted.screening, graph(resolved), resolved.params, progress=progress)
    if start is not None:
        table = table.filter(pl.col("ts") >= start)
    if end is not None:
        table = table.filter(pl.col("ts") < end)
    if progress is not None:
        progress(1.0)
    return FeatureBuild(
        table=table,
        spec=resolved,
        rows_in=accepted.rows_in,
        rows_used=accepted.rows_used,
        quarantined=accepted.quarantined,
    )
