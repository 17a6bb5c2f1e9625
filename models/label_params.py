"""The cascade label's parameters: :class:`LabelParams` for one group of symbols, and
:class:`LabelConfig`, the majors' and the altcoins' (wider thresholds for altcoins).

What each parameter means is in :mod:`oihedge.models.labels`, which computes the label."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import timedelta

from oihedge.features.schema import format_duration, parse_duration

LABEL_PREFIX = "y_"
_DURATION_FIELDS = ("horizon", "vol_window", "liq_window")
_VOL_ESTIMATORS = ("mad", "std")


@dataclass(frozen=True)
class LabelParams:
    """Parameters of the cascade label for one group of symbols.

    Attributes:
        horizon: look-ahead ``H``; the label at ``t`` is about ``(t, t + H]``.
        oi_drop_pct: minimum fall of aggregate OI within ``H``, percent (0-100).
        price_drop_k: minimum price fall in units of trailing volatility scaled to ``H``.
        vol_window: trailing window of the per-bar return volatility.
        vol_estimator: ``"mad"`` (robust, 1.4826 x median absolute return) or ``"std"``.
        min_price_drop_pct: floor of the price threshold, percent (0 = no floor).
        liq_quantile: trailing quantile that the window's largest long-liquidation bar
            must exceed to confirm (only where liquidation data exists).
        liq_window: trailing window of that quantile.
        use_liquidations: require the liquidation confirmation where data exists.
        min_history_coverage: share of ``vol_window`` / ``liq_window`` that must hold
            observations for the volatility / quantile to be defined (0-1].
        min_window_coverage: share of the future window's bars that must be observed
            (price and OI) for a negative label (0-1].
    """

    horizon: timedelta = timedelta(hours=4)
    oi_drop_pct: float = 5.0
    price_drop_k: float = 2.0
    vol_window: timedelta = timedelta(hours=24)
    vol_estimator: str = "mad"
    min_price_drop_pct: float = 0.0
    liq_quantile: float = 0.99
    liq_window: timedelta = timedelta(days=7)
    use_liquidations: bool = True
    min_history_coverage: float = 0.5
    min_window_coverage: float = 0.5

    def __post_init__(self) -> None:
        for name in _DURATION_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, timedelta) or value <= timedelta(0):
                raise ValueError(f"{name} must be a positive timedelta, got {value!r}")
        _check_range("oi_drop_pct", self.oi_drop_pct, 0.0, 100.0, low_open=True, high_open=True)
        _check_range(
            "price_drop_k", self.price_drop_k, 0.0, math.inf, low_open=True, high_open=True
        )
        _check_range("min_price_drop_pct", self.min_price_drop_pct, 0.0, 100.0, high_open=True)
        _check_range("liq_quantile", self.liq_quantile, 0.0, 1.0, low_open=True, high_open=True)
        _check_range("min_history_coverage", self.min_history_coverage, 0.0, 1.0, low_open=True)
        _check_range("min_window_coverage", self.min_window_coverage, 0.0, 1.0, low_open=True)
        if self.vol_estimator not in _VOL_ESTIMATORS:
            raise ValueError(
                f"vol_estimator must be one of {_VOL_ESTIMATORS}, got {self.vol_estimator!r}"
            )
        if not isinstance(self.use_liquidations, bool):
            raise ValueError(f"use_liquidations must be a bool, got {self.use_liquidations!r}")

    @property
    def label_column(self) -> str:
        """Name of the binary label column, e.g. ``y_cascade_4h``."""
        return f"{LABEL_PREFIX}cascade_{format_duration(self.horizon)}"


def _check_range(
    name: str,
    value: object,
    low: float,
    high: float,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    number = value if isinstance(value, int | float) and not isinstance(value, bool) else math.nan
    ok = (
        math.isfinite(number)
        and (number > low if low_open else number >= low)
        and (number < high if high_open else number <= high)
    )
    if not ok:
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ValueError(f"{name} must be a finite number in {interval}, got {value!r}")


@dataclass(frozen=True)
class LabelConfig:
    """Label parameters per symbol: ``majors`` by default, ``altcoin`` for ``altcoins``.

    Both share one ``horizon`` (one label column). Build it from configuration values
    with :meth:`from_mapping`.
    """

    majors: LabelParams = field(default_factory=LabelParams)
    altcoin: LabelParams = field(
        default_factory=lambda: LabelParams(oi_drop_pct=8.0, price_drop_k=2.5)
    )
    altcoins: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        for name in ("majors", "altcoin"):
            if not isinstance(getattr(self, name), LabelParams):
                raise ValueError(f"{name} must be LabelParams, got {getattr(self, name)!r}")
        if isinstance(self.altcoins, str):
            raise ValueError(f"altcoins must be a collection of symbols, got {self.altcoins!r}")
        object.__setattr__(self, "altcoins", frozenset(self.altcoins))
        if self.majors.horizon != self.altcoin.horizon:
            raise ValueError(
                "altcoin.horizon must equal majors.horizon (one label column), got "
                f"{self.altcoin.horizon!r} vs {self.majors.horizon!r}"
            )

    @property
    def horizon(self) -> timedelta:
        return self.majors.horizon

    @property
    def label_column(self) -> str:
        return self.majors.label_column

    def for_symbol(self, symbol: str) -> LabelParams:
        """The parameters that apply to ``symbol``."""
        return self.altcoin if symbol in self.altcoins else self.majors

    @classmethod
    def from_mapping(cls, labels: Mapping[str, object], altcoins: Iterable[str]) -> LabelConfig:
        """Build from plain configuration values (e.g. ``config.labels.model_dump()``).

        ``labels`` holds :class:`LabelParams` fields (durations as ``timedelta`` or text
        such as ``"4h"``) and an optional ``altcoin`` mapping whose fields override the
        majors' for the altcoins. Unknown keys raise ``ValueError`` naming the key.
        """
        base = dict(labels)
        overrides = base.pop("altcoin", None) or {}
        if not isinstance(overrides, Mapping):
            raise ValueError(f"altcoin must be a mapping, got {overrides!r}")
        if "horizon" in overrides:
            raise ValueError("altcoin.horizon cannot be set: the horizon is shared")
        majors = LabelParams(**_coerce(base, "labels"))
        altcoin = replace(majors, **_coerce(dict(overrides), "labels.altcoin"))
        return cls(majors=majors, altcoin=altcoin, altcoins=frozenset(altcoins))


def _coerce(values: dict[str, object], where: str) -> dict[str, object]:
    known = {f.name for f in fields(LabelParams)}
    out: dict[str, object] = {}
    for key, value in values.items():
        if key not in known:
            raise ValueError(f"{where}.{key} is not a label parameter (known: {sorted(known)})")
        if key in _DURATION_FIELDS and isinstance(value, str):
            try:
                value = parse_duration(value)
            except ValueError as err:
                raise ValueError(f"{where}.{key}: {err}") from None
        out[key] = value
    return out
