"""Feature specs: the named, versioned set of features a model is trained on and served with.

A :class:`FeatureSpec` is frozen: an ordered tuple of feature names plus the
:class:`FeatureParams` that shape them (bar length, staleness, warm-up coverage, ...).
Resolved for a panel (:meth:`FeatureSpec.resolve`), its parameters are
:class:`ResolvedParams`, whose bar and staleness are durations, never ``None``: what
every feature is built with.
Its :meth:`FeatureSpec.hash` is the sha256 of a canonical JSON form, so the spec stored
next to a model can be compared with the one the live loop builds: equal hash, equal
features. Durations are stored as strings (``"5m"``, ``"9h"``) so the JSON is readable.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Generic, TypeVar

from oihedge.features.schema import format_duration, parse_duration

_SPEC_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")


def _duration_or_none(value: object, name: str) -> timedelta | None:
    if value is None:
        return None
    if not isinstance(value, str | timedelta):
        raise ValueError(f"{name} must be a duration such as '2h', got {value!r}")
    return parse_duration(value)


@dataclass(frozen=True)
class FeatureParams:
    """Parameters shared by every feature of a spec (all windows are durations).

    - ``bar``: bar length of the panel; ``None`` means "infer it from the panel".
    - ``max_staleness``: a venue whose latest visible row is older than this at decision
      time is left out of cross-venue features; ``None`` means two bars.
    - ``funding_max_age``: how long a settled funding rate is carried forward (funding is
      only published on settlement bars on most CEXs).
    - ``min_coverage``: share of a window that must hold values before a windowed feature
      is given (warm-up and gaps); never fewer than 2 values.
    - ``ref_tolerance_frac``: a change over window W compares with the row at ``ts - W``,
      or the latest row before it no older than ``min(max_staleness, frac * W)``.
    - ``ratio_floor_pct``: the price change (in %) under which the OI/price growth ratio
      uses this floor as its denominator (keeps the ratio finite in flat markets).
    """

    bar: timedelta | None = None
    max_staleness: timedelta | None = None
    funding_max_age: timedelta = timedelta(hours=9)
    min_coverage: float = 0.5
    ref_tolerance_frac: float = 0.25
    ratio_floor_pct: float = 0.1

    def __post_init__(self) -> None:
        object.__setattr__(self, "bar", _duration_or_none(self.bar, "bar"))
        object.__setattr__(
            self, "max_staleness", _duration_or_none(self.max_staleness, "max_staleness")
        )
        object.__setattr__(
            self, "funding_max_age", _duration_or_none(self.funding_max_age, "funding_max_age")
        )
        if self.funding_max_age is None:
            raise ValueError("funding_max_age must be a duration, got None")
        for name in ("min_coverage", "ref_tolerance_frac"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and 0 <= value <= 1):
                raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
        floor = self.ratio_floor_pct
        if not (isinstance(floor, int | float) and math.isfinite(floor) and floor > 0):
            raise ValueError(f"ratio_floor_pct must be a finite number > 0, got {floor!r}")

    def __eq__(self, other: object) -> bool:
        # a FeatureParams and a ResolvedParams holding the same values are equal
        if not isinstance(other, FeatureParams):
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in self.__dataclass_fields__)

    @property
    def resolved(self) -> bool:
        """True when the bar (and with it every bar-dependent default) is fixed."""
        return self.bar is not None and self.max_staleness is not None

    def resolve(self, bar: timedelta | str | None = None) -> ResolvedParams:
        """These parameters with a concrete ``bar`` and ``max_staleness`` (two bars).

        ``bar`` is used when the parameters do not fix one; a spec that fixes a bar
        refuses a different one (a model trained on 5-minute bars is not served on 1h).
        """
        given = None if bar is None else parse_duration(bar)
        if self.bar is not None and given is not None and given != self.bar:
            raise ValueError(
                f"the spec fixes bar={format_duration(self.bar)!r}, got a panel with "
                f"bar={format_duration(given)!r}"
            )
        chosen = self.bar or given
        if chosen is None:
            raise ValueError("bar must be given to resolve feature parameters, got None")
        staleness = self.max_staleness or 2 * chosen
        values = {n: getattr(self, n) for n in self.__dataclass_fields__}
        return ResolvedParams(**{**values, "bar": chosen, "max_staleness": staleness})

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; durations as strings, unresolved values as ``None``."""
        return {
            "bar": None if self.bar is None else format_duration(self.bar),
            "max_staleness": (
                None if self.max_staleness is None else format_duration(self.max_staleness)
            ),
            "funding_max_age": format_duration(self.funding_max_age),
            "min_coverage": float(self.min_coverage),
            "ref_tolerance_frac": float(self.ref_tolerance_frac),
            "ratio_floor_pct": float(self.ratio_floor_pct),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureParams:
        """Inverse of :meth:`to_dict`; unknown keys raise. Parameters with a bar and a
        staleness (a resolved spec's, stored next to a model) come back resolved."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown feature parameter {unknown[0]!r}; known: {sorted(known)}")
        params = cls(**data)
        return params.resolve() if params.resolved else params


class ResolvedParams(FeatureParams):
    """:class:`FeatureParams` fixed for one bar: ``bar`` and ``max_staleness`` are
    durations, so the feature code reads them without a ``None`` check. Made by
    :meth:`FeatureParams.resolve`; building one without them raises ``ValueError``.
    """

    # narrowed for readers and type checkers (the dataclass fields are the base's)
    bar: timedelta
    max_staleness: timedelta

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("bar", "max_staleness"):
            if getattr(self, name) is None:
                raise ValueError(f"resolved feature parameters need a {name}, got None")


P = TypeVar("P", bound=FeatureParams)


@dataclass(frozen=True)
class FeatureSpec(Generic[P]):
    """A named, versioned, ordered list of features with their parameters.

    ``FeatureSpec[ResolvedParams]`` (:data:`ResolvedSpec`) is a spec resolved for a bar.
    """

    name: str
    version: int
    features: tuple[str, ...]
    params: P = field(default_factory=FeatureParams)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _SPEC_NAME_RE.match(self.name):
            raise ValueError(
                f"spec name must be lowercase letters, digits, '_', '-', '.', got {self.name!r}"
            )
        if not isinstance(self.version, int) or self.version < 1:
            raise ValueError(f"spec version must be an integer >= 1, got {self.version!r}")
        names = tuple(self.features)
        if not names:
            raise ValueError(f"spec {self.name!r} must list at least one feature, got {names!r}")
        seen: set[str] = set()
        for feature in names:
            if feature in seen:
                raise ValueError(f"spec {self.name!r} lists feature {feature!r} twice")
            seen.add(feature)
        object.__setattr__(self, "features", names)

    def resolve(self, bar: timedelta | str | None = None) -> ResolvedSpec:
        """This spec with resolved parameters (see :meth:`FeatureParams.resolve`)."""
        return FeatureSpec(self.name, self.version, self.features, self.params.resolve(bar))

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "features": list(self.features),
            "params": self.params.to_dict(),
        }

    def to_json(self) -> str:
        """Canonical JSON: sorted keys, no whitespace; what :meth:`hash` digests."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    def hash(self) -> str:
        """sha256 hex digest of :meth:`to_json` (stable across processes and machines)."""
        return hashlib.sha256(self.to_json().encode("utf-8")).hexdigest()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureSpec:
        missing = [k for k in ("name", "version", "features") if k not in data]
        if missing:
            raise ValueError(f"feature spec is missing {missing[0]!r}, got keys {sorted(data)}")
        return cls(
            name=data["name"],
            version=data["version"],
            features=tuple(data["features"]),
            params=FeatureParams.from_dict(data.get("params", {})),
        )

    @classmethod
    def from_json(cls, text: str) -> FeatureSpec:
        return cls.from_dict(json.loads(text))


#: a spec resolved for a bar: its parameters are :class:`ResolvedParams`
ResolvedSpec = FeatureSpec[ResolvedParams]
