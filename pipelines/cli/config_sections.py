"""The configuration's sections other than ``[policy]`` (pipelines/cli/config_policy.py): one
frozen model per TOML table, their defaults those of ``pipelines/default_config.toml``
(a test holds them equal)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator

from oihedge.pipelines.cli.config_types import (
    Duration,
    FolderPath,
    MlflowUri,
    NonNegative,
    Positive,
    Prob,
    Section,
    StorageUrl,
    SymbolList,
    SymbolWeights,
    Venue,
    VenueList,
)


class DataConfig(Section):
    panel_dir: FolderPath = Path("data/panel")
    bar: Duration = timedelta(minutes=5)


class UniverseConfig(Section):
    name: str = Field("default", pattern=r"^[a-z0-9][a-z0-9_-]*$")
    venues: VenueList = Field(("binanceusdm", "bybit", "okx", "hyperliquid"), min_length=1)
    symbols: SymbolList = Field(("BTC", "ETH", "NEAR"), min_length=1)
    altcoins: SymbolList = ("NEAR", "DOGE", "HYPE")


class SimulateConfig(Section):
    days: float = Field(30.0, gt=0, le=3650)
    seed: int = Field(7, ge=0)
    out_dir: FolderPath = Path("data/sim")
    #: a Deribit-like options venue for BTC and ETH (the opt_* columns core@v2 reads)
    options: bool = True


class LabelThresholds(Section):
    oi_drop_pct: float = Field(8.0, gt=0, lt=100)
    price_drop_k: float = Field(2.5, gt=0)


class LabelsConfig(Section):
    horizon: Duration = timedelta(hours=4)
    oi_drop_pct: float = Field(5.0, gt=0, lt=100)
    price_drop_k: float = Field(2.0, gt=0)
    vol_window: Duration = timedelta(hours=24)
    altcoin: LabelThresholds = LabelThresholds()


class IngestConfig(Section):
    """Defaults of `oihedge ingest` (see the [ingest] table of default_config.toml)."""

    lookback: Duration = timedelta(days=30)
    max_attempts: int = Field(6, ge=1, le=20)
    backoff_base_s: float = Field(0.5, ge=0)
    backoff_cap_s: float = Field(30.0, gt=0)
    flush_rows: int = Field(50_000, ge=1)
    concurrent: bool = True
    #: also snapshot the option chains of the symbols Deribit lists options for
    options: bool = True


class TrainConfig(Section):
    feature_spec: str = Field("core", min_length=1)
    n_trials: int = Field(20, ge=1)
    n_splits: int = Field(4, ge=1, le=20)
    holdout_fraction: float = Field(0.25, gt=0, lt=1)
    storage: StorageUrl = "sqlite:///mlflow/optuna.db"
    study_name: str = ""
    seed: int = Field(0, ge=0)
    timeout: Duration | None = None
    alert_rate: float = Field(0.05, gt=0, lt=1)
    calibration: Literal["auto", "isotonic", "platt"] = "auto"


class GateMargins(Section):
    pr_auc: float = Field(0.0, ge=0)
    brier: float = Field(0.0, ge=0)
    tail_excess: float = Field(0.0, ge=0)
    fees_slippage_annual: float = Field(0.0, ge=0)


class EvaluateConfig(Section):
    """``[evaluate]``: `oihedge evaluate --walk-forward` (models/windows.py)."""

    window: Duration = timedelta(days=30)
    step: Duration | None = None
    min_train: Duration = timedelta(days=60)


class RegistryConfig(Section):
    margins: GateMargins = GateMargins()


class MlflowConfig(Section):
    tracking_uri: MlflowUri = Field("sqlite:///mlflow/mlflow.db", min_length=1)
    registry_uri: MlflowUri = ""
    artifact_root: FolderPath = Path("mlflow/artifacts")
    experiment: str = Field("oihedge", min_length=1)


class CostsConfig(Section):
    """``[costs]``: the cost model of the backtest and the paper broker
    (oihedge.serving.policy.costs)."""

    taker_fee_bps: NonNegative = 5.0
    slippage_base_bps: NonNegative = 1.0
    slippage_size_bps: NonNegative = 300.0
    slippage_vol_bps: NonNegative = 10.0
    stress_multiplier: Annotated[float, Field(ge=1, allow_inf_nan=False)] = 3.0
    fallback_volume_24h_usd: Positive = 50_000_000.0
    fallback_vol_ann: NonNegative = 1.0


class BacktestModelConfig(Section):
    """``[backtest.model]``: fixed LightGBM hyperparameters of the walk-forward refits."""

    learning_rate: Annotated[float, Field(gt=0, le=1)] = 0.05
    num_boost_round: int = Field(100, ge=1)
    num_leaves: int = Field(15, ge=2)
    min_data_in_leaf: int = Field(300, ge=1)
    feature_fraction: Prob = 0.6
    bagging_fraction: Prob = 0.7
    lambda_l2: NonNegative = 10.0
    scale_pos_weight: Positive = 1.0


class BacktestConfig(Section):
    """``[backtest]``: the walk-forward hedge backtest (serving/backtest*.py)."""

    portfolio_usd: Positive = 10_000_000.0
    weights: SymbolWeights = Field(default_factory=dict)
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


class LiveConfig(Section):
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
    weights: SymbolWeights = Field(default_factory=dict)
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
    #: snapshot Deribit's option chains (BTC, ETH) every bar into the opt_* columns
    options: bool = True

    @model_validator(mode="after")
    def _feeds(self) -> LiveConfig:
        from oihedge.pipelines.ingest.venues import VENUES

        unknown = sorted(set(self.feeds) - set(VENUES))
        if unknown:
            raise ValueError(
                f"feeds names an unknown venue {unknown[0]!r}; known venues: "
                f"{', '.join(sorted(VENUES))}"
            )
        return self
