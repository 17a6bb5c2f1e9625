"""Typed, validated configuration: one TOML file of documented defaults, then overrides.

Sources, later winning: ``pipelines/default_config.toml`` (shipped, documented), a user
file (``--config FILE``), environment variables ``OIHEDGE_<SECTION>__<KEY>`` (nested keys
joined by ``__``), and the command's own flags. The result is a frozen
:class:`Config`; a bad value raises :class:`ConfigError` naming the key, the value and
where it came from.

Values are checked beyond their types where a wrong one would silently disable something:
symbols are upper-cased (an environment key arrives lower-cased: ``OIHEDGE_LIVE__WEIGHTS__BTC``
is ``btc``) and must look like base assets; venues must be in the venue table; weights of
the live loop must name universe symbols; URLs must have a scheme their library serves;
paths must not be empty; the label windows must be whole bars of ``data.bar``.

Secrets are not configuration: API keys are read from the environment by the broker only
and never pass through here (an ``OIHEDGE_*`` variable without ``__`` is ignored).

This module is the entry: :class:`Config` and :func:`load_config`; the value types are in
``config_types``, the sections in ``config_sections`` and ``config_policy``, the layers
(files, environment, flags) and the error lines in ``config_sources``.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from datetime import timedelta
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from oihedge.pipelines.cli.config_policy import PolicyAltcoinConfig, PolicyConfig, PolicyValues
from oihedge.pipelines.cli.config_sections import (
    BacktestConfig,
    BacktestModelConfig,
    CostsConfig,
    DataConfig,
    EvaluateConfig,
    GateMargins,
    IngestConfig,
    LabelsConfig,
    LabelThresholds,
    LiveConfig,
    MlflowConfig,
    RegistryConfig,
    SimulateConfig,
    TrainConfig,
    UniverseConfig,
)
from oihedge.pipelines.cli.config_sources import (
    ENV_PREFIX,
    describe,
    env_overrides,
    merge,
    origin_of,
    parse_scalar,
    path_keys,
    read_toml,
    rebased,
    set_dotted,
)
from oihedge.pipelines.cli.config_types import ConfigError, Section

__all__ = [
    "ENV_PREFIX",
    "BacktestConfig",
    "BacktestModelConfig",
    "Config",
    "ConfigError",
    "CostsConfig",
    "DataConfig",
    "EvaluateConfig",
    "GateMargins",
    "IngestConfig",
    "LabelThresholds",
    "LabelsConfig",
    "LiveConfig",
    "MlflowConfig",
    "PolicyAltcoinConfig",
    "PolicyConfig",
    "PolicyValues",
    "RegistryConfig",
    "SimulateConfig",
    "TrainConfig",
    "UniverseConfig",
    "default_config_text",
    "label_window_off_bar",
    "load_config",
    "readable_duration",
]


class Config(Section):
    """The whole configuration; sections mirror the TOML tables."""

    data: DataConfig = DataConfig()
    universe: UniverseConfig = UniverseConfig()
    simulate: SimulateConfig = SimulateConfig()
    labels: LabelsConfig = LabelsConfig()
    ingest: IngestConfig = IngestConfig()
    mlflow: MlflowConfig = MlflowConfig()
    train: TrainConfig = TrainConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    registry: RegistryConfig = RegistryConfig()
    policy: PolicyConfig = PolicyConfig()
    costs: CostsConfig = CostsConfig()
    backtest: BacktestConfig = BacktestConfig()
    live: LiveConfig = LiveConfig()

    def policy_params(self, symbol: str) -> dict[str, Any]:
        """Keyword arguments of ``oihedge.serving.policy.params.PolicyParams`` for ``symbol``: the
        ``[policy]`` values (``[policy.altcoin]`` for the universe's altcoins) and
        ``costs``, the ``[costs]`` model the policy prices a hedge trade with (the one the
        backtest and the paper broker charge)."""
        from oihedge.serving.policy.costs import (
            CostModel,  # the CLI's configuration reaches every stage
        )

        values = self.policy.values_for(symbol, self.universe.altcoins)
        values["costs"] = CostModel(**self.costs.model_dump())
        return values


def default_config_text() -> str:
    """The shipped, commented default configuration file."""
    return (
        resources.files("oihedge.pipelines.cli").joinpath("default_config.toml").read_text("utf-8")
    )


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
        user = read_toml(Path(path))
        folder = Path(path).resolve().parent
        merge(tree, rebased(user, folder, path_keys(Config)), origins, origin=str(path))
    for dotted, raw in env_overrides(os.environ if env is None else env).items():
        set_dotted(tree, dotted, parse_scalar(raw), origins, origin="environment")
    for dotted, value in (overrides or {}).items():
        if value is not None:
            set_dotted(tree, dotted, value, origins, origin="command line")
    try:
        config = Config.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(describe(err, tree, origins)) from None
    _cross_check(config, origins)
    return config


def readable_duration(delta: timedelta) -> str:
    """``timedelta(minutes=270)`` -> ``"4h30m"``: days, hours, minutes, seconds."""
    seconds = int(delta.total_seconds())
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


def label_window_off_bar(config: Config, bar: timedelta) -> tuple[str, timedelta] | None:
    """The first label window (its key and duration) that is not a whole number of
    ``bar``; None when every one is."""
    for key, window in (
        ("labels.horizon", config.labels.horizon),
        ("labels.vol_window", config.labels.vol_window),
    ):
        if window % bar:
            return key, window
    return None


def _cross_check(config: Config, origins: Mapping[str, str]) -> None:
    """Rules across sections, each of which would otherwise disable hedging or labelling
    without a word: raises :class:`ConfigError` naming the key, the value and its origin.
    """
    symbols = config.universe.symbols
    unknown = [s for s in config.live.weights if s not in symbols]
    if unknown:
        raise ConfigError(
            f"config key 'live.weights' ({origin_of(origins, 'live.weights')}): "
            f"{unknown[0]!r} is not in universe.symbols ({', '.join(symbols)}); the live "
            "loop trades only the universe's symbols, so its weight would hedge nothing"
        )
    bar = config.data.bar
    off = label_window_off_bar(config, bar)
    if off:
        key, window = off
        raise ConfigError(
            f"config key {key!r} ({origin_of(origins, key)}): {key} = "
            f"{readable_duration(window)} is not a whole number of bars of data.bar = "
            f"{readable_duration(bar)} ({origin_of(origins, 'data.bar')})"
        )
