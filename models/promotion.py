"""What `oihedge promote` runs: who is gated against whom, their scores on one held-out
window, and the gate's verdict.

1. :func:`contest` names the challenger (the version given, else the ``challenger``
   alias) and the champion the gate knows (:func:`oihedge.models.registry.gated_champion`: a
   champion alias set outside `promote`, e.g. in the MLflow UI, is neither the bar to
   beat nor recorded as the previous champion); :func:`contenders` loads both.
2. :func:`measure` scores them on the challenger's held-out window
   (:func:`oihedge.models.holdout.prepare_for`, :func:`oihedge.models.holdout.assess`).
3. The hedge side of the gate (tail loss at equal mean hedge, fees and slippage, the
   policy's activity) is a backtest of the hedge policy each model drives: the serving
   side measures it (``oihedge.serving.backtest.gate``) and the caller passes it in as numbers;
   :func:`verdict` joins both and asks :func:`oihedge.models.gate.gate`.

:func:`oihedge.models.registry.promote` then records the verdict and moves ``champion``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import polars as pl

from oihedge.models.gate import GateVerdict, gate
from oihedge.models.holdout import assess, prepare_for
from oihedge.models.registry import (
    CHALLENGER,
    CHAMPION,
    LoadedModel,
    RegistryError,
    alias_version,
    gated_champion,
    load_version,
)
from oihedge.models.workflow import Prepared


@dataclass(frozen=True)
class Contest:
    """The versions of ``name`` a promotion compares: ``challenger`` (the version to
    promote), ``champion`` (the champion the gate knows, None before the first) and
    ``aliased`` (the version the ``champion`` alias points at, None when unset)."""

    name: str
    challenger: str
    champion: str | None
    aliased: str | None

    @property
    def alias_outside_gate(self) -> bool:
        """The ``champion`` alias points at a version the gate did not promote."""
        return self.aliased is not None and self.aliased != self.champion


def contest(name: str, version: str | None = None) -> Contest:
    """The contest for promoting ``version`` of ``name`` (default: its challenger).

    Raises :class:`oihedge.models.registry.RegistryError` when there is no challenger.
    """
    version = version or alias_version(name, CHALLENGER)
    if version is None:
        raise RegistryError(f"{name} has no challenger: run `oihedge train` first")
    return Contest(name, version, gated_champion(name), alias_version(name, CHAMPION))


def contenders(match: Contest) -> dict[str, LoadedModel]:
    """``challenger`` and, when there is another version to beat, ``champion``, loaded
    (:func:`oihedge.models.registry.load_version`, which raises ``RegistryError``)."""
    loaded = {"challenger": load_version(match.name, match.challenger)}
    if match.champion is not None and match.champion != match.challenger:
        loaded["champion"] = load_version(match.name, match.champion)
    return loaded


@dataclass(frozen=True)
class Measured:
    """The contenders' scores on one held-out window: ``prepared`` (the features, labels
    and events of :func:`oihedge.models.holdout.prepare_for`, for the hedge side), ``window``
    (its text) and ``metrics`` (scorer -> metric -> value; the contenders and the
    baselines)."""

    prepared: Prepared
    window: str
    metrics: dict[str, dict[str, float]]


def measure(
    panel: pl.DataFrame, loaded: Mapping[str, LoadedModel], *, alert_rate: float
) -> Measured:
    """Score ``loaded`` on the challenger's recorded held-out window of ``panel`` (its
    card says which); raises ``ValueError`` when the panel does not cover it."""
    prepared = prepare_for(panel, loaded["challenger"].card)
    evaluation = assess(prepared, {k: m.pyfunc for k, m in loaded.items()}, alert_rate=alert_rate)
    metrics = {k: m.as_dict() for k, m in evaluation.metrics.items()}
    return Measured(prepared, evaluation.window, metrics)


def verdict(
    measured: Measured,
    hedge: Mapping[str, Mapping[str, float]],
    margins: dict[str, float],
) -> GateVerdict:
    """The gate's verdict on the challenger: its held-out metrics with its ``hedge``
    metrics (contender -> metric -> value, from the backtest of its hedge policy on the
    same window) against the champion's, with ``margins`` (:func:`oihedge.models.gate.gate`)."""
    metrics = {k: dict(v) for k, v in measured.metrics.items()}
    for scorer, values in hedge.items():
        metrics[scorer].update(values)
    return gate(metrics["challenger"], metrics.get("champion"), margins, window=measured.window)
