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
"""

from __future__ import annotations

import copy
import itertools
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from datetime import timedelta
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from features.schema import parse_duration

ENV_PREFIX = "OIHEDGE_"


class ConfigError(ValueError):
    """A configuration key has a bad value, or a config file cannot be read."""


def _split_list(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


_SYMBOL = re.compile(r"^[A-Z0-9][A-Z0-9_]*$")
_SYMBOL_FORMAT = "base assets such as BTC, ETH (letters, digits and _)"


def _symbol(value: object) -> str:
    """A base asset, upper-cased (``btc`` and ``BTC`` are one symbol: environment keys
    arrive lower-cased, the panel's symbols are upper-case)."""
    text = str(value).strip().upper() if isinstance(value, str) else value
    if not isinstance(text, str) or not _SYMBOL.match(text):
        raise ValueError(f"{value!r} is not a symbol: expected {_SYMBOL_FORMAT}")
    return text


def _symbol_list(value: object) -> object:
    items = _split_list(value)
    if not isinstance(items, (list, tuple)):
        return items
    bad = [item for item in items if not (isinstance(item, str) and _SYMBOL.match(item.upper()))]
    if bad:
        raise ValueError(
            f"expected a comma-separated list of {_SYMBOL_FORMAT}, e.g. 'BTC,ETH,SOL'; "
            f"{bad[0]!r} is not one"
        )
    return [item.strip().upper() for item in items]


def _symbol_keys(value: object) -> object:
    """A symbol -> value table with its symbols upper-cased (``weights = { btc = 1 }`` or
    ``OIHEDGE_LIVE__WEIGHTS__BTC=1``, which arrives as ``btc``, mean ``BTC``)."""
    if not isinstance(value, Mapping):
        return value
    out: dict[str, object] = {}
    for key, item in value.items():
        symbol = _symbol(key)
        if symbol in out:
            raise ValueError(f"symbol {symbol!r} is given twice (as {key!r})")
        out[symbol] = item
    return out


def _known_venue(value: object) -> object:
    from pipelines.venues import VENUES

    if isinstance(value, str) and value not in VENUES:
        raise ValueError(f"unknown venue {value!r}; known venues: {', '.join(VENUES)}")
    return value


def _known_venues(value: object) -> object:
    items = _split_list(value)
    if isinstance(items, (list, tuple)):
        for item in items:
            _known_venue(item)
    return items


def _path(value: object) -> object:
    """A path that is not empty: an empty value would silently mean the current folder."""
    if isinstance(value, str) and not value.strip():
        raise ValueError("path is empty (it would mean the current folder); give a folder")
    return value


#: SQLAlchemy dialects Optuna's RDB storage can use
_STORAGE_DIALECTS = ("sqlite", "postgresql", "mysql", "mariadb", "oracle", "mssql")
#: MLflow tracking / registry URI schemes (a plain path is a local file store)
_MLFLOW_SCHEMES = (
    "file",
    "sqlite",
    "postgresql",
    "mysql",
    "mssql",
    "http",
    "https",
    "databricks",
    "databricks-uc",
    "uc",
)
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9.-]*)(\+[A-Za-z0-9_]+)?://")


def _storage_url(value: object) -> object:
    match = _URL.match(value) if isinstance(value, str) else None
    if isinstance(value, str) and (match is None or match.group(1) not in _STORAGE_DIALECTS):
        raise ValueError(
            "must be an Optuna storage URL of one of the databases "
            f"{', '.join(_STORAGE_DIALECTS)}, e.g. 'sqlite:///mlflow/optuna.db' or "
            "'postgresql+psycopg2://user@host:5432/optuna'"
        )
    return value


def _mlflow_uri(value: object) -> object:
    if not isinstance(value, str) or "://" not in value:
        return value  # a local path (the file store), or empty (registry_uri: the same)
    match = _URL.match(value)
    if match is None or match.group(1) not in _MLFLOW_SCHEMES:
        raise ValueError(
            f"unsupported MLflow URI scheme; use one of {', '.join(_MLFLOW_SCHEMES)} "
            "(e.g. 'sqlite:///mlflow/mlflow.db', 'http://127.0.0.1:5000') or a local path"
        )
    return value


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
StrList = Annotated[tuple[str, ...], BeforeValidator(_split_list)]
SymbolList = Annotated[tuple[str, ...], BeforeValidator(_symbol_list)]
VenueList = Annotated[tuple[str, ...], BeforeValidator(_known_venues)]
Venue = Annotated[str, BeforeValidator(_known_venue)]
FolderPath = Annotated[Path, BeforeValidator(_path)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Section):
    panel_dir: FolderPath = Path("data/panel")
    bar: Duration = timedelta(minutes=5)


class UniverseConfig(_Section):
    name: str = Field("default", pattern=r"^[a-z0-9][a-z0-9_-]*$")
    venues: VenueList = Field(("binanceusdm", "bybit", "okx", "hyperliquid"), min_length=1)
    symbols: SymbolList = Field(("BTC", "ETH", "NEAR"), min_length=1)
    altcoins: SymbolList = ("NEAR", "DOGE", "HYPE")


class SimulateConfig(_Section):
    days: float = Field(30.0, gt=0, le=3650)
    seed: int = Field(7, ge=0)
    out_dir: FolderPath = Path("data/sim")


class LabelThresholds(_Section):
    oi_drop_pct: float = Field(8.0, gt=0, lt=100)
    price_drop_k: float = Field(2.5, gt=0)


class LabelsConfig(_Section):
    horizon: Duration = timedelta(hours=4)
    oi_drop_pct: float = Field(5.0, gt=0, lt=100)
    price_drop_k: float = Field(2.0, gt=0)
    vol_window: Duration = timedelta(hours=24)
    altcoin: LabelThresholds = LabelThresholds()


class IngestConfig(_Section):
    """Defaults of `oihedge ingest` (see the [ingest] table of default_config.toml)."""

    lookback: Duration = timedelta(days=30)
    max_attempts: int = Field(6, ge=1, le=20)
    backoff_base_s: float = Field(0.5, ge=0)
    backoff_cap_s: float = Field(30.0, gt=0)
    flush_rows: int = Field(50_000, ge=1)
    concurrent: bool = True


class TrainConfig(_Section):
    feature_spec: str = Field("core", min_length=1)
    n_trials: int = Field(20, ge=1)
    n_splits: int = Field(4, ge=1, le=20)
    holdout_fraction: float = Field(0.25, gt=0, lt=1)
    storage: Annotated[str, BeforeValidator(_storage_url)] = "sqlite:///mlflow/optuna.db"
    study_name: str = ""
    seed: int = Field(0, ge=0)
    timeout: Duration | None = None
    alert_rate: float = Field(0.05, gt=0, lt=1)
    calibration: Literal["auto", "isotonic", "platt"] = "auto"


class GateMargins(_Section):
    pr_auc: float = Field(0.0, ge=0)
    brier: float = Field(0.0, ge=0)
    tail_excess: float = Field(0.0, ge=0)
    fees_slippage_annual: float = Field(0.0, ge=0)


class EvaluateConfig(_Section):
    """``[evaluate]``: `oihedge evaluate --walk-forward` (models/windows.py)."""

    window: Duration = timedelta(days=30)
    step: Duration | None = None
    min_train: Duration = timedelta(days=60)


class RegistryConfig(_Section):
    margins: GateMargins = GateMargins()


class MlflowConfig(_Section):
    tracking_uri: Annotated[str, BeforeValidator(_mlflow_uri)] = Field(
        "sqlite:///mlflow/mlflow.db", min_length=1
    )
    registry_uri: Annotated[str, BeforeValidator(_mlflow_uri)] = ""
    artifact_root: FolderPath = Path("mlflow/artifacts")
    experiment: str = Field("oihedge", min_length=1)


Prob = Annotated[float, Field(gt=0, le=1)]
Fraction = Annotated[float, Field(ge=0, le=1)]
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class PolicyValues(_Section):
    """Hedge-policy parameters of one asset class (serving.policy_params.PolicyParams;
    its cost fields come from ``[costs]``, see :meth:`Config.policy_params`)."""

    loss_budget: Prob = 0.05
    risk_horizon: Duration = timedelta(hours=4)
    risk_quantile: Annotated[float, Field(ge=0.5, lt=1)] = 0.95
    stress_k: Positive = 3.0
    stress_horizon: Duration = timedelta(hours=4)
    stress_move_min: Prob = 0.01
    drift_ann: NonNegative = 0.30
    baseline_fraction: Fraction = 0.0
    partial_cap: Annotated[float, Field(ge=0, lt=1)] = 0.75
    min_hedge_fraction: Fraction = 0.4
    full_min_confirmations: Annotated[int, Field(ge=0, le=3)] = 2
    div_entry: Positive = 0.08
    div_exit: NonNegative = 0.07
    oi_high_pct: Annotated[float, Field(allow_inf_nan=False)] = 5.0
    funding_neg_8h: Annotated[float, Field(allow_inf_nan=False)] = 0.0
    funding_z_entry: Positive = 2.0
    funding_z_exit: NonNegative = 1.9
    exit_confirm: Duration = timedelta(hours=1)
    exit_share: Prob = 0.5
    min_hold: Duration = timedelta(hours=4)
    hedge_ratio_max: Prob = 1.0
    max_hedge_usd: Annotated[float, Field(gt=0)] = 10_000_000.0
    beta_default: Positive = 1.0
    beta_min: Positive = 0.5
    beta_max: Positive = 1.5
    min_trade_usd: NonNegative = 1_000.0
    no_trade_band: Annotated[float, Field(ge=0, lt=1)] = 0.05
    max_daily_turnover: Positive = 3.0
    min_fresh_venues: Annotated[int, Field(ge=0)] = 2


class PolicyAltcoinConfig(_Section):
    """Overrides of ``[policy]`` for the universe's altcoins; ``None``: the majors' value."""

    loss_budget: Prob | None = None
    risk_horizon: Duration | None = None
    risk_quantile: Annotated[float, Field(ge=0.5, lt=1)] | None = None
    stress_k: Positive | None = None
    stress_horizon: Duration | None = None
    stress_move_min: Prob | None = 0.02
    drift_ann: NonNegative | None = None
    baseline_fraction: Fraction | None = None
    partial_cap: Annotated[float, Field(ge=0, lt=1)] | None = None
    min_hedge_fraction: Fraction | None = None
    full_min_confirmations: Annotated[int, Field(ge=0, le=3)] | None = None
    div_entry: Positive | None = 0.12
    div_exit: NonNegative | None = 0.10
    oi_high_pct: Annotated[float, Field(allow_inf_nan=False)] | None = 8.0
    funding_neg_8h: Annotated[float, Field(allow_inf_nan=False)] | None = None
    funding_z_entry: Positive | None = 2.5
    funding_z_exit: NonNegative | None = 2.4
    exit_confirm: Duration | None = timedelta(hours=2)
    exit_share: Prob | None = None
    min_hold: Duration | None = timedelta(hours=8)
    hedge_ratio_max: Prob | None = 0.6
    max_hedge_usd: Annotated[float, Field(gt=0)] | None = 2_000_000.0
    beta_default: Positive | None = None
    beta_min: Positive | None = None
    beta_max: Positive | None = None
    min_trade_usd: NonNegative | None = None
    no_trade_band: Annotated[float, Field(ge=0, lt=1)] | None = 0.08
    max_daily_turnover: Positive | None = 2.0
    min_fresh_venues: Annotated[int, Field(ge=0)] | None = None


class PolicyConfig(PolicyValues):
    """``[policy]``: the majors' values, and ``[policy.altcoin]`` overrides."""

    altcoin: PolicyAltcoinConfig = PolicyAltcoinConfig()

    @model_validator(mode="after")
    def _ordered(self) -> PolicyConfig:
        _check_policy_order(self.model_dump(exclude={"altcoin"}), "policy")
        _check_policy_order(self._altcoin_values(), "policy.altcoin (with [policy])")
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


def _check_policy_order(values: Mapping[str, Any], where: str) -> None:
    """Cross-key rules of the policy (the ranges are checked per key)."""
    chains = (
        ("div_exit", "div_entry"),
        ("funding_z_exit", "funding_z_entry"),
    )
    for chain in chains:
        for low, high in itertools.pairwise(chain):
            if not values[low] < values[high]:
                raise ValueError(
                    f"{where}: {low} must be below {high}, got "
                    f"{low}={values[low]!r}, {high}={values[high]!r}"
                )
    weak = (
        ("baseline_fraction", "partial_cap"),
        ("min_hedge_fraction", "partial_cap"),
        ("beta_min", "beta_default", "beta_max"),
    )
    for chain in weak:
        for low, high in itertools.pairwise(chain):
            if not values[low] <= values[high]:
                raise ValueError(
                    f"{where}: {low} must be <= {high}, got "
                    f"{low}={values[low]!r}, {high}={values[high]!r}"
                )


class CostsConfig(_Section):
    """``[costs]``: the cost model of the backtest and the paper broker (serving.costs)."""

    taker_fee_bps: NonNegative = 5.0
    slippage_base_bps: NonNegative = 1.0
    slippage_size_bps: NonNegative = 300.0
    slippage_vol_bps: NonNegative = 10.0
    stress_multiplier: Annotated[float, Field(ge=1, allow_inf_nan=False)] = 3.0
    fallback_volume_24h_usd: Positive = 50_000_000.0
    fallback_vol_ann: NonNegative = 1.0


class BacktestModelConfig(_Section):
    """``[backtest.model]``: fixed LightGBM hyperparameters of the walk-forward refits."""

    learning_rate: Annotated[float, Field(gt=0, le=1)] = 0.05
    num_boost_round: int = Field(100, ge=1)
    num_leaves: int = Field(15, ge=2)
    min_data_in_leaf: int = Field(300, ge=1)
    feature_fraction: Prob = 0.6
    bagging_fraction: Prob = 0.7
    lambda_l2: NonNegative = 10.0
    scale_pos_weight: Positive = 1.0


class BacktestConfig(_Section):
    """``[backtest]``: the walk-forward hedge backtest (serving/backtest*.py)."""

    portfolio_usd: Positive = 10_000_000.0
    weights: Annotated[dict[str, Positive], BeforeValidator(_symbol_keys)] = Field(
        default_factory=dict
    )
    train_window: Duration = timedelta(days=60)
    retrain_every: Duration = timedelta(days=30)
    max_train: Duration | None = None
    n_splits: int = Field(2, ge=1, le=20)
    calibration: Literal["auto", "isotonic", "platt"] = "auto"
    tune_trials: int = Field(0, ge=0)
    min_positives: int = Field(20, ge=1)
    static_fractions: tuple[Prob, ...] = (0.25, 0.5, 0.75, 1.0)
    vol_targets: tuple[Positive, ...] = (0.4, 0.6, 0.8, 1.2)
    model_budgets: tuple[Prob, ...] = (0.02, 0.10)
    schedule: Duration = timedelta(hours=24)
    rule_entry_pp: Positive = 8.0
    rule_exit_pp: NonNegative = 4.0
    rule_exit_confirm: Duration = timedelta(hours=2)
    volume_window: Duration = timedelta(hours=24)
    loss_window: Duration = timedelta(hours=24)
    cvar_level: Annotated[float, Field(gt=0, lt=1)] = 0.95
    out_dir: FolderPath = Path("out/backtest")
    model: BacktestModelConfig = BacktestModelConfig()

    @model_validator(mode="after")
    def _rule_levels(self) -> BacktestConfig:
        if not self.rule_exit_pp < self.rule_entry_pp:
            raise ValueError(
                f"rule_exit_pp must be below rule_entry_pp, got "
                f"rule_exit_pp={self.rule_exit_pp!r}, rule_entry_pp={self.rule_entry_pp!r}"
            )
        return self


class LiveConfig(_Section):
    """``[live]``: the live loop's state, kill switch and hard order caps (serving/)."""

    strategy_id: str = Field("oihedge", pattern=r"^[A-Za-z0-9_-]{1,32}$")
    hedge_venue: Venue = "binanceusdm"
    state_db: FolderPath = Path("data/live/state.sqlite")
    kill_switch_file: FolderPath = Path("data/live/KILL")
    max_order_usd: Positive = 10_000_000.0
    max_hedge_usd: Positive = 22_000_000.0
    max_orders_per_minute: int = Field(6, ge=1)
    resend_window: Duration = timedelta(minutes=10)
    position_tolerance_usd: NonNegative = 10.0
    paper_initial_cash_usd: NonNegative = 0.0
    portfolio_usd: NonNegative = 10_000_000.0
    weights: Annotated[dict[str, Positive], BeforeValidator(_symbol_keys)] = Field(
        default_factory=dict
    )
    decision_log: FolderPath = Path("data/live/decisions.jsonl")
    top_contributions: int = Field(5, ge=0, le=50)
    explain_min_change: NonNegative = 0.02
    explain_max_age: Duration = timedelta(hours=2)
    explain_timeout: Duration = timedelta(seconds=2)
    metrics_port: int = Field(0, ge=0, le=65535)
    model_check_every: int = Field(1, ge=1)
    model_check_interval: Duration = timedelta(seconds=30)
    panel_dir: FolderPath = Path("data/live/panel")
    warmup: Duration = timedelta(days=8)
    poll_delay: Duration = timedelta(seconds=20)
    venue_max_attempts: int = Field(2, ge=1, le=10)
    venue_timeout_s: Positive = 10.0
    #: venue -> "websocket" (perp candles streamed through ccxt.pro) or "rest" (polled);
    #: venues not listed stream where ccxt.pro offers it
    feeds: dict[str, Literal["websocket", "rest"]] = Field(default_factory=dict)
    stream_max_silence: Duration = timedelta(seconds=60)
    stream_wait: Duration = timedelta(seconds=5)

    @model_validator(mode="after")
    def _feeds(self) -> LiveConfig:
        from pipelines.venues import VENUES

        unknown = sorted(set(self.feeds) - set(VENUES))
        if unknown:
            raise ValueError(
                f"feeds names an unknown venue {unknown[0]!r}; known venues: "
                f"{', '.join(sorted(VENUES))}"
            )
        return self


class Config(_Section):
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
        """Keyword arguments of ``serving.policy_params.PolicyParams`` for ``symbol``: the
        ``[policy]`` values (``[policy.altcoin]`` for the universe's altcoins) and
        ``costs``, the ``[costs]`` model the policy prices a hedge trade with (the one the
        backtest and the paper broker charge)."""
        from serving.costs import CostModel  # the CLI's configuration reaches every stage

        values = self.policy.values_for(symbol, self.universe.altcoins)
        values["costs"] = CostModel(**self.costs.model_dump())
        return values


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
        _merge(tree, _rebased(user, Path(path).resolve().parent), origins, origin=str(path))
    for dotted, raw in _env_overrides(os.environ if env is None else env).items():
        _set_dotted(tree, dotted, _parse_scalar(raw), origins, origin="environment")
    for dotted, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(tree, dotted, value, origins, origin="command line")
    try:
        config = Config.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(_describe(err, tree, origins)) from None
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


def _origin(origins: Mapping[str, str], dotted: str) -> str:
    found = sorted({o for k, o in origins.items() if k == dotted or k.startswith(f"{dotted}.")})
    return ", ".join(found) or "defaults"


def _cross_check(config: Config, origins: Mapping[str, str]) -> None:
    """Rules across sections, each of which would otherwise disable hedging or labelling
    without a word: raises :class:`ConfigError` naming the key, the value and its origin.
    """
    symbols = config.universe.symbols
    unknown = [s for s in config.live.weights if s not in symbols]
    if unknown:
        raise ConfigError(
            f"config key 'live.weights' ({_origin(origins, 'live.weights')}): "
            f"{unknown[0]!r} is not in universe.symbols ({', '.join(symbols)}); the live "
            "loop trades only the universe's symbols, so its weight would hedge nothing"
        )
    bar = config.data.bar
    off = label_window_off_bar(config, bar)
    if off:
        key, window = off
        raise ConfigError(
            f"config key {key!r} ({_origin(origins, key)}): {key} = "
            f"{readable_duration(window)} is not a whole number of bars of data.bar = "
            f"{readable_duration(bar)} ({_origin(origins, 'data.bar')})"
        )


#: URI keys whose ``sqlite:///`` paths are files of this machine
_SQLITE_KEYS = frozenset({"mlflow.tracking_uri", "mlflow.registry_uri", "train.storage"})


def _path_keys() -> frozenset[str]:
    """Dotted keys of every path setting (``FolderPath`` fields), read from the schema."""
    keys = set()
    for name, section in Config.model_fields.items():
        model = section.annotation
        for field, info in getattr(model, "model_fields", {}).items():
            if info.annotation is Path:
                keys.add(f"{name}.{field}")
    return frozenset(keys)


def _rebased(user: Mapping[str, Any], folder: Path, prefix: str = "") -> dict[str, Any]:
    """``user`` (a config file's table) with its relative paths taken from ``folder``, the
    file's own: a file names the stores beside it, whatever folder a command runs in."""
    out: dict[str, Any] = {}
    paths = _path_keys()
    for key, value in user.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out[key] = _rebased(value, folder, f"{dotted}.")
        elif dotted in paths and isinstance(value, str) and value.strip():
            out[key] = str(folder / value) if not Path(value).is_absolute() else value
        elif dotted in _SQLITE_KEYS and isinstance(value, str) and value.startswith("sqlite:///"):
            rest = value[len("sqlite:///") :]
            out[key] = value if Path(rest).is_absolute() else f"sqlite:///{folder / rest}"
        else:
            out[key] = value
    return out


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} does not exist") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {err}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"config file {str(path)!r} is not UTF-8 text (byte {err.object[err.start]:#04x} "
            f"at offset {err.start}); TOML files must be saved as UTF-8"
        ) from None
    except IsADirectoryError:
        raise ConfigError(f"config file {str(path)!r} is a folder, not a TOML file") from None
    except OSError as err:
        raise ConfigError(f"config file {str(path)!r} cannot be read: {err.strerror}") from None


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
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            section = ".".join(parts[: i + 1])
            set_by = _origin(origins, section)
            if set_by == "defaults":  # a key nested under a value: this key is the culprit
                raise ConfigError(
                    f"config key {dotted!r} ({origin}): {section!r} is not a section "
                    f"({section} = {child!r})"
                )
            # a section given a value by the user: name that source, not this key's
            raise ConfigError(
                f"config key {section!r} ({set_by}): {section} = {child!r} is not a section,"
                f" but {dotted!r} ({origin}) sets a key inside it"
            )
        node = child
    node[parts[-1]] = value
    origins[dotted] = origin


def _describe(err: ValidationError, tree: Mapping[str, Any], origins: dict[str, str]) -> str:
    lines = []
    for item in err.errors():
        dotted = ".".join(str(p) for p in item["loc"])
        # a cross-key rule fails on a whole table: name where its changed keys came from
        inner = sorted({o for k, o in origins.items() if k.startswith(f"{dotted}.")})
        origin = origins.get(dotted) or ", ".join(inner) or "defaults"
        if item["type"] == "extra_forbidden":
            lines.append(f"config key {dotted!r} ({origin}) is not a known setting")
            continue
        value = _lookup(tree, dotted)
        message = item["msg"].removeprefix("Value error, ")
        shown = "" if isinstance(value, Mapping) else f" = {value!r}"
        lines.append(f"config key {dotted!r}{shown} ({origin}): {message}")
    return "; ".join(lines)


def _lookup(tree: Mapping[str, Any], dotted: str) -> object:
    node: object = tree
    for part in dotted.split("."):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        else:
            return None
    return node
