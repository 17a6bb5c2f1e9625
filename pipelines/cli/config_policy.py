"""``[policy]`` and ``[policy.altcoin]``: the hedge policy's parameters of the majors and
the altcoins' overrides.

Both models are derived from the fields of ``oihedge.serving.policy.params.PolicyParams``, the one
declaration of the parameters (its cost fields come from ``[costs]``): a key's type and
default are the field's, and its value is checked by the field's own rule
(:func:`~oihedge.serving.policy.params.check_value`), so an error names the key. The rules
between keys are checked by building a ``PolicyParams`` of the majors' values and one of
the altcoins' (``[policy]`` overridden by ``[policy.altcoin]``).

Pydantic models derived from the dataclass rather than PolicyParams made a pydantic
model: serving keeps a plain frozen dataclass (built per symbol, replaced in the
backtest's sweeps) and its errors as ``ValueError``; the configuration keeps what only it
needs (durations written ``"4h"``, unknown keys refused, the key and source named).
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Sequence
from datetime import timedelta
from typing import Annotated, Any

from pydantic import AfterValidator, create_model, model_validator

from oihedge.pipelines.cli.config_types import Duration, Section
from oihedge.serving.policy.params import COST_FIELDS, PolicyParams, check_value

#: the shipped ``[policy.altcoin]`` overrides (default_config.toml; a test holds them equal)
ALTCOIN_OVERRIDES: dict[str, Any] = {
    "stress_move_min": 0.02,
    "div_entry": 0.12,
    "div_exit": 0.10,
    "oi_high_pct": 8.0,
    "funding_z_entry": 2.5,
    "funding_z_exit": 2.4,
    "exit_confirm": timedelta(hours=2),
    "min_hold": timedelta(hours=8),
    "hedge_ratio_max": 0.6,
    "max_hedge_usd": 2_000_000.0,
    "no_trade_band": 0.08,
    "max_daily_turnover": 2.0,
}

#: the configuration's type of each kind of field: a duration is written ``"4h"``
_KEY_TYPES: dict[object, object] = {float: float, int: int, timedelta: Duration}


def policy_keys() -> tuple[dataclasses.Field[Any], ...]:
    """The fields of ``PolicyParams`` that are ``[policy]`` keys (all but the cost model)."""
    return tuple(f for f in dataclasses.fields(PolicyParams) if f.name not in COST_FIELDS)


def _key_type(name: str, kind: object) -> Any:
    """The pydantic type of the key ``name``: its field's type, checked by its rule."""
    if kind not in _KEY_TYPES:
        raise TypeError(f"PolicyParams.{name}: no configuration type for {kind!r}")
    return Annotated[_KEY_TYPES[kind], AfterValidator(lambda v: check_value(name, v))]


def _models() -> tuple[type[Section], type[Section]]:
    """``[policy]`` (defaults: PolicyParams') and ``[policy.altcoin]`` (every key optional)."""
    hints = typing.get_type_hints(PolicyParams)
    keys = {f.name: (_key_type(f.name, hints[f.name]), f.default) for f in policy_keys()}
    values = create_model(
        "PolicyValues",
        __base__=Section,
        __module__=__name__,
        __doc__="Hedge-policy parameters of one asset class (PolicyParams' fields).",
        **keys,
    )
    overrides = create_model(
        "PolicyAltcoinConfig",
        __base__=Section,
        __module__=__name__,
        __doc__="Overrides of ``[policy]`` for the altcoins; ``None``: the majors' value.",
        **{name: (kind | None, None) for name, (kind, _) in keys.items()},
    )
    return values, overrides


PolicyValues, PolicyAltcoinConfig = _models()


class PolicyConfig(PolicyValues):
    """``[policy]``: the majors' values, and ``[policy.altcoin]`` overrides."""

    altcoin: PolicyAltcoinConfig = PolicyAltcoinConfig(**ALTCOIN_OVERRIDES)

    @model_validator(mode="after")
    def _related(self) -> PolicyConfig:
        _check_set(self.model_dump(exclude={"altcoin"}), "policy")
        _check_set(self._altcoin_values(), "policy.altcoin (with [policy])")
        return self

    def values_for(self, symbol: str, altcoins: Sequence[str]) -> dict[str, Any]:
        """Keyword arguments of ``PolicyParams`` for ``symbol``.

        The ``[policy]`` values, overridden by the non-empty ``[policy.altcoin]`` ones when
        ``symbol`` is one of ``altcoins`` (normally ``universe.altcoins``).
        """
        if symbol in altcoins:
            return self._altcoin_values()
        return self.model_dump(exclude={"altcoin"})

    def _altcoin_values(self) -> dict[str, Any]:
        values = self.model_dump(exclude={"altcoin"})
        overrides = self.altcoin.model_dump()
        values.update({k: v for k, v in overrides.items() if v is not None})
        return values


def _check_set(values: dict[str, Any], where: str) -> None:
    """Build the ``PolicyParams`` of ``values`` (each key already within its range): the
    rules between keys, named with ``where`` (the table, or the tables merged)."""
    try:
        PolicyParams(**values)
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None
