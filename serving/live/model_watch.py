"""The model the loop asks: the registry's champion, reloaded when the alias moves.

:class:`ChampionWatch` loads the champion through :func:`oihedge.models.registry.load_champion`,
which serves only a version promoted through the gate (a passed gate verdict, or a forced
promotion with its reason, in the version's tags: an alias set in the MLflow UI is
refused, :class:`~oihedge.models.registry.UngatedModelError`) and checks the model's feature spec
against the running one. Every ``check_every`` bars it asks the registry which version the
alias points at; when it moved, it loads the new version. A version that is refused (not
gated, or another feature spec) or fails to load for any other reason is logged once as
an error and **the last good model stays in service**; the refused version is not tried
again until the alias moves elsewhere, except that a version refused for want of a gate
verdict is served as soon as it gets one (``oihedge promote`` on the same version). With
no good model at start the watch serves none (event ``unavailable``: the loop runs
without probabilities), in one error line saying why. Each change is returned as a
:class:`ModelEvent` (the loop writes it to the decision log and the state store).

Each provider also gives the cascade severity the serving model carries
(``severity_k``: :func:`oihedge.models.severity.card_severity_k` of its card; None: the policy's
``stress_k``), so the hedge policy prices the probability with the severity fitted with
*this* model, and a new champion brings its own.

:class:`StaticModel` serves one given predictor (tests, benchmarks, a replay with a model
file). A predictor is anything with ``predict_vector(x) -> (p, raw)`` and
``contributions(x) -> array`` (:class:`oihedge.models.artifact.CascadePyfunc`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from oihedge.models.registry import (
    FeatureSpecMismatchError,
    LoadedModel,
    UngatedModelError,
    alias_version,
    load_champion,
    resolve,
    serving_refusal,
)
from oihedge.models.severity import card_severity_k
from oihedge.models.single_row import SingleRowBooster

__all__ = [
    "ChampionWatch",
    "ModelEvent",
    "ModelProvider",
    "Predictor",
    "RowPredictor",
    "StaticModel",
    "row_predictor",
]

log = logging.getLogger(__name__)


class Predictor(Protocol):
    """The per-vector model interface the loop calls. A predictor may also offer
    ``predict_vectors(X) -> (p, raw)`` over the rows of a 2-D array (:class:`RowPredictor`
    does): the loop then scores a bar's symbols in one call."""

    def predict_vector(self, x: np.ndarray) -> tuple[float, float]: ...

    def contributions(self, x: np.ndarray) -> np.ndarray: ...


class RowPredictor:
    """A booster + calibrator predictor for one vector at a time.

    The booster goes through LightGBM's single-row fast path
    (:class:`oihedge.models.single_row.SingleRowBooster`, built once per model): no per-call
    predictor setup and no OpenMP region (``Booster.predict`` spreads even one row over
    its threads: ~9 ms per call measured with two busy cores). The result is identical:
    the same trees, the same calibrator, the same ``(calibrated, raw)`` as
    :meth:`oihedge.models.artifact.CascadePyfunc.predict_vector`.
    """

    def __init__(
        self, booster: Any, calibrator: Any, *, rows: SingleRowBooster | None = None
    ) -> None:
        self.booster = booster
        self.calibrator = calibrator
        self.rows = rows if rows is not None else SingleRowBooster(booster)

    def predict_vector(self, x: np.ndarray) -> tuple[float, float]:
        raw = self.rows.predict(x)
        return float(self.calibrator.predict(np.array([raw]))[0]), raw

    def predict_vectors(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(calibrated, raw) for each row of ``X`` (a bar's symbols): the rows scored one
        by one on the fast path, then calibrated in one call (the calibrator's numpy
        setup, ~15 us, is paid once per bar instead of once per symbol). Row ``i`` equals
        ``predict_vector(X[i])``."""
        raw = self.rows.predict_rows(X)
        return self.calibrator.predict(raw), raw

    def contributions(self, x: np.ndarray) -> np.ndarray:
        return self.rows.contributions(x)

    def contributions_rows(self, X: np.ndarray) -> np.ndarray:
        """:meth:`contributions` of each row of ``X``, in one call."""
        return self.rows.contributions_rows(X)


def row_predictor(predictor: Any) -> Any:
    """``predictor`` as a :class:`RowPredictor` when it exposes ``booster`` and
    ``calibrator`` (the fitted classifier does) or its own
    :class:`~oihedge.models.single_row.SingleRowBooster` ``rows`` and ``calibrator`` (the loaded
    pyfunc: its fast path is reused), else unchanged."""
    rows = getattr(predictor, "rows", None)
    if isinstance(rows, SingleRowBooster):
        calibrator = getattr(predictor, "calibrator", None)
        if calibrator is None or isinstance(predictor, RowPredictor):
            return predictor
        # the pyfunc: its own fast path and calibrator, with the batch scoring added
        return RowPredictor(rows.booster, calibrator, rows=rows)
    booster = getattr(predictor, "booster", None) or getattr(predictor, "booster_", None)
    calibrator = getattr(predictor, "calibrator", None) or getattr(predictor, "calibrator_", None)
    if booster is None or calibrator is None:
        return predictor
    return RowPredictor(booster, calibrator)


@dataclass(frozen=True)
class ModelEvent:
    """A change of the serving model.

    ``kind``: ``loaded`` (now serving ``version``), ``refused`` (``version`` was not
    promoted through the gate, or has another feature spec; ``detail`` says which; the
    previous model stays), ``load_failed`` (``version`` could not be
    loaded; the previous model stays), ``unavailable`` (no champion could be loaded at
    all: the loop runs without probabilities, holding or increasing hedges only).
    """

    kind: str
    version: str | None
    serving: str | None
    detail: str = ""


class ModelProvider(Protocol):
    """What the loop reads its model from."""

    @property
    def predictor(self) -> Predictor | None: ...

    @property
    def version(self) -> str | None: ...

    @property
    def severity_k(self) -> float | None: ...

    def start(self) -> ModelEvent: ...

    def poll(self) -> ModelEvent | None: ...


class StaticModel:
    """One fixed predictor (``version`` is what the decision log records; ``severity_k``
    the cascade severity it carries, None: the policy's ``stress_k``)."""

    def __init__(
        self,
        predictor: Predictor | None,
        version: str | None = "static",
        *,
        severity_k: float | None = None,
    ) -> None:
        self._predictor = None if predictor is None else row_predictor(predictor)
        self._version = version if predictor is not None else None
        self._severity_k = card_severity_k({"severity": {"k": severity_k}})

    @property
    def severity_k(self) -> float | None:
        return None if self._predictor is None else self._severity_k

    @property
    def predictor(self) -> Predictor | None:
        return self._predictor

    @property
    def version(self) -> str | None:
        return self._version

    def start(self) -> ModelEvent:
        if self._predictor is None:
            return ModelEvent("unavailable", None, None, "no model given")
        return ModelEvent("loaded", self._version, self._version)

    def poll(self) -> ModelEvent | None:
        return None


class ChampionWatch:
    """The champion of ``name``, checked against ``running_spec`` (the running feature
    spec card, :func:`oihedge.models.workflow.feature_spec_card`), re-read every ``check_every``
    polls (the loop polls once per bar) and at most once per ``min_interval_s`` seconds.
    ``loader`` / ``version_of`` default to the registry's
    :func:`~oihedge.models.registry.load_champion` and the champion's
    :func:`~oihedge.models.registry.alias_version`; ``refusal_of(name, version)`` (why a version
    may not serve, None: it may; default :func:`ungated_refusal`) is asked again about a
    version the loader refused as ungated (all replaceable in tests)."""

    def __init__(
        self,
        name: str,
        running_spec: dict[str, Any],
        *,
        check_every: int = 1,
        min_interval_s: float = 0.0,
        loader: Callable[[str, dict[str, Any]], LoadedModel] | None = None,
        version_of: Callable[[str], str | None] | None = None,
        refusal_of: Callable[[str, str], str | None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not (isinstance(check_every, int) and check_every >= 1):
            raise ValueError(f"check_every must be an integer >= 1, got {check_every!r}")
        if not min_interval_s >= 0:
            raise ValueError(f"min_interval_s must be >= 0, got {min_interval_s!r}")
        self.min_interval_s = float(min_interval_s)
        self._clock = clock
        self._last_check: float | None = None
        self.name = name
        self.running_spec = running_spec
        self.check_every = check_every
        self._load = loader or load_champion
        self._version_of = version_of or (lambda n: alias_version(n, "champion"))
        self._refusal_of = refusal_of or ungated_refusal
        self._ungated = False  # the refused version was refused for want of a gate verdict
        self._model: LoadedModel | None = None
        self._predictor: Predictor | None = None
        self._severity_k: float | None = None
        self._refused: str | None = None
        self._polls = 0

    @property
    def predictor(self) -> Predictor | None:
        """The serving model's per-vector predictor (None: no model loaded)."""
        return self._predictor

    @property
    def version(self) -> str | None:
        """The serving model's registry version (None: no model loaded)."""
        return None if self._model is None else self._model.version

    @property
    def severity_k(self) -> float | None:
        """The cascade severity the serving model's card carries (None: none, or no
        model; the policy then uses its ``stress_k``)."""
        return self._severity_k

    def start(self) -> ModelEvent:
        """Load the champion (a refusal leaves the loop without a model)."""
        try:
            target = self._version_of(self.name)
        except Exception as err:  # reported by the load attempt below
            log.warning("champion alias of %s could not be read: %s", self.name, err)
            target = None
        event = self._try_load(target)
        if self._model is None and event.kind != "unavailable":
            event = ModelEvent("unavailable", event.version, None, event.detail)
        return event

    def poll(self) -> ModelEvent | None:
        """Every ``check_every`` calls: reload if the alias moved; the event, else None."""
        self._polls += 1
        if self._polls % self.check_every:
            return None
        # and at most once per min_interval_s of wall time: a replay runs hundreds of
        # bars a second, and each alias lookup is a registry round trip
        now = self._clock()
        if self._last_check is not None and now - self._last_check < self.min_interval_s:
            return None
        self._last_check = now
        try:
            target = self._version_of(self.name)
        except Exception as err:  # the registry being down must not stop the loop
            log.warning("champion alias of %s could not be read: %s", self.name, err)
            return None
        if target is None or target == self.version:
            return None
        if target == self._refused and not self._gated_since(target):
            return None
        return self._try_load(target)

    def _gated_since(self, target: str) -> bool:
        """Whether ``target``, refused as ungated, now carries a gate verdict (it was
        promoted through the gate after its alias was set)."""
        if not self._ungated:
            return False
        try:
            return self._refusal_of(self.name, target) is None
        except Exception as err:  # the registry being down must not stop the loop
            log.warning("gate tags of %s v%s could not be read: %s", self.name, target, err)
            return False

    def _keeping(self) -> str:
        serving = self.version
        if serving is not None:
            return f"keeping v{serving}"
        return "no model is served: the loop runs without probabilities"

    def _try_load(self, target: str | None) -> ModelEvent:
        serving = self.version
        self._ungated = False
        try:
            model = self._load(self.name, self.running_spec)
        except UngatedModelError as err:
            self._refused, self._ungated = target, True
            log.error(
                "champion %s v%s refused: %s; promote it with `oihedge promote --version %s` "
                "(or move the alias back); %s",
                self.name,
                target,
                err,
                target,
                self._keeping(),
            )
            return ModelEvent("refused", target, serving, f"not gated: {err}")
        except FeatureSpecMismatchError as err:
            self._refused = target
            log.error(
                "champion %s v%s refused (feature spec): %s; %s",
                self.name,
                target,
                err,
                self._keeping(),
            )
            return ModelEvent("refused", target, serving, str(err))
        except Exception as err:  # any load failure keeps the last good model
            self._refused = target
            log.error(
                "champion %s v%s failed to load: %s; %s", self.name, target, err, self._keeping()
            )
            kind = "load_failed" if serving is not None or target is not None else "unavailable"
            return ModelEvent(kind, target, serving, f"{type(err).__name__}: {err}")
        self._model, self._refused = model, None
        self._predictor = row_predictor(model.python_model)
        self._severity_k = card_severity_k(model.card)
        log.info(
            "serving %s v%s (severity k %s)",
            self.name,
            model.version,
            "none: stress_k" if self._severity_k is None else f"{self._severity_k:.3f}",
        )
        detail = "" if self._severity_k is None else f"severity_k={self._severity_k:.6g}"
        return ModelEvent("loaded", model.version, model.version, detail)


def ungated_refusal(name: str, version: str) -> str | None:
    """Why the registry's version ``version`` of ``name`` may not serve
    (:func:`oihedge.models.registry.serving_refusal` of its tags), None: it may."""
    return serving_refusal(name, version, resolve(name, version).tags)
