"""Typed, validated configuration: one TOML file of documented defaults, then overrides.

Sources, later winning: ``pipelines/default_config.toml`` (shipped, documented), a user
file (``--config FILE``), environment variables ``OIHEDGE_<SECTION>__<KEY>`` (nested keys
joined by ``__``), and the command's own flags. The result is a frozen
:class:`Config`; a bad value raises :class:`ConfigError` naming the key, the value and
where it came from.

Secrets are not configuration: API keys are read from the environment by the broker only
and never pass through here (an ``OIHEDGE_*`` variable without ``__`` is ignored).
"""

from __future__ import annotations

import copy
import os
import tomllib
from collections.abc import Mapping
from datetime import timedelta
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from features.schema import parse_duration

ENV_PREFIX = "OIHEDGE_"


class ConfigError(ValueError):
    """A configuration key has a bad value, or a config file cannot be read."""


def _split_list(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
StrList = Annotated[tuple[str, ...], BeforeValidator(_split_list)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Section):
    panel_dir: Path = Path("data/panel")
    bar: Duration = timedelta(minutes=5)


class UniverseConfig(_Section):
    name: str = Field("default", pattern=r"^[a-z0-9][a-z0-9_-]*$")
    venues: StrList = Field(("binanceusdm", "bybit", "okx", "hyperliquid"), min_length=1)
    symbols: StrList = Field(("BTC", "ETH", "NEAR"), min_length=1)
    altcoins: StrList = ("NEAR", "DOGE", "HYPE")


class SimulateConfig(_Section):
    days: float = Field(30.0, gt=0, le=3650)
    seed: int = Field(7, ge=0)
    out_dir: Path = Path("data/sim")


class LabelThresholds(_Section):
    oi_drop_pct: float = Field(8.0, gt=0, lt=100)
    price_drop_k: float = Field(2.5, gt=0)


class LabelsConfig(_Section):
    horizon: Duration = timedelta(hours=4)
    oi_drop_pct: float = Field(5.0, gt=0, lt=100)
    price_drop_k: float = Field(2.0, gt=0)
    vol_window: Duration = timedelta(hours=24)
    altcoin: LabelThresholds = LabelThresholds()


class MlflowConfig(_Section):
    tracking_uri: str = Field("sqlite:///mlflow/mlflow.db", min_length=1)
    registry_uri: str = ""
    artifact_root: Path = Path("mlflow/artifacts")
    experiment: str = Field("oihedge", min_length=1)


class Config(_Section):
    """The whole configuration; sections mirror the TOML tables."""

    data: DataConfig = DataConfig()
    universe: UniverseConfig = UniverseConfig()
    simulate: SimulateConfig = SimulateConfig()
    labels: LabelsConfig = LabelsConfig()
    mlflow: MlflowConfig = MlflowConfig()


def default_config_text() -> str:
    """The shipped, commented default configuration file."""
    return resources.files("pipelines").joinpath("default_config.toml").read_text("utf-8")


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, object] | None = None,
) -> Config:
    """Build the configuration from defaults, ``path``, ``env`` and ``overrides``.

    ``overrides`` maps dotted keys (``"data.panel_dir"``) to values, e.g. from CLI flags;
    ``None`` values are ignored (a flag that was not given). ``env`` defaults to
    ``os.environ``. Raises :class:`ConfigError`.
    """
    tree = tomllib.loads(default_config_text())
    origins: dict[str, str] = {}
    if path is not None:
        user = _read_toml(Path(path))
        _merge(tree, user, origins, origin=str(path))
    for dotted, raw in _env_overrides(os.environ if env is None else env).items():
        _set_dotted(tree, dotted, _parse_scalar(raw), origins, origin="environment")
    for dotted, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(tree, dotted, value, origins, origin="command line")
    try:
        return Config.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(_describe(err, tree, origins)) from None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} does not exist") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {err}") from None


def _env_overrides(env: Mapping[str, str]) -> dict[str, str]:
    out = {}
    for name, value in env.items():
        if name.startswith(ENV_PREFIX) and "__" in name[len(ENV_PREFIX) :]:
            dotted = name[len(ENV_PREFIX) :].lower().replace("__", ".")
            out[dotted] = value
    return out


def _parse_scalar(raw: str) -> object:
    """Read an environment value as a TOML literal when it is one, else as a string."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _merge(
    tree: dict[str, Any],
    new: Mapping[str, Any],
    origins: dict[str, str],
    *,
    origin: str,
    prefix: str = "",
) -> None:
    for key, value in new.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and isinstance(tree.get(key), dict):
            _merge(tree[key], value, origins, origin=origin, prefix=f"{dotted}.")
        else:
            tree[key] = copy.deepcopy(value)
            origins[dotted] = origin


def _set_dotted(
    tree: dict[str, Any], dotted: str, value: object, origins: dict[str, str], *, origin: str
) -> None:
    node = tree
    parts = dotted.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"config key {dotted!r} ({origin}): {part!r} is not a section")
        node = child
    node[parts[-1]] = value
    origins[dotted] = origin


def _describe(err: ValidationError, tree: Mapping[str, Any], origins: dict[str, str]) -> str:
    lines = []
    for item in err.errors():
        dotted = ".".join(str(p) for p in item["loc"])
        origin = origins.get(dotted, "defaults")
        if item["type"] == "extra_forbidden":
            lines.append(f"config key {dotted!r} ({origin}) is not a known setting")
            continue
        value = _lookup(tree, dotted)
        message = item["msg"].removeprefix("Value error, ")
        lines.append(f"config key {dotted!r} = {value!r} ({origin}): {message}")
    return "; ".join(lines)


def _lookup(tree: Mapping[str, Any], dotted: str) -> object:
    node: object = tree
    for part in dotted.split("."):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        else:
            return None
    return node
