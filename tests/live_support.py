"""Helpers for the live-loop tests and benchmark: a simulated panel, a small model on the
real feature spec, and a loop wired to a paper broker in a temp folder.

Importable from the benchmark (no pytest fixtures here).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from oihedge.features.online.engine import OnlineFeatures
from oihedge.features.registry import CORE_V1, build_features
from oihedge.features.spec import FeatureSpec
from oihedge.models.label_params import LabelConfig
from oihedge.models.labels import cascade_labels
from oihedge.models.train import CascadeClassifier, make_training_data
from oihedge.serving.execution.brokers import PaperBroker
from oihedge.serving.execution.executor import Executor
from oihedge.serving.execution.guards import Caps, OrderGuard
from oihedge.serving.execution.state import StateStore
from oihedge.serving.live.decision_log import DecisionLog
from oihedge.serving.live.loop import HedgeLoop, LoopSettings
from oihedge.serving.live.metrics import LoopMetrics
from oihedge.serving.live.model_watch import ModelProvider, StaticModel
from oihedge.serving.policy.costs import CostModel
from oihedge.serving.policy.params import PolicyParams
from tests_support import TINY_PARAMS

HEDGE_VENUE = "binanceusdm"
PARAMS = {**TINY_PARAMS, "num_boost_round": 30}


class TwoBlocks:
    """Time-ordered splitter: train on the first half, calibrate on the second."""

    n_splits = 1

    def split(self, times):  # noqa: ANN001, ANN201 - mirrors oihedge.models.train.Splitter
        order = np.argsort(times, kind="stable")
        half = len(order) // 2
        yield order[:half], order[half:]


def simulated_panel(days: float, seed: int = 3, *, lag: bool = True) -> pl.DataFrame:
    """A simulated panel (4 venues x 3 symbols, 5-minute bars). ``lag=False``: every row
    is known at its bar close (``known_at = ts``) and no row is corrupted, so the
    backtest's timing (a bar's price known at its close) holds exactly."""
    from oihedge.pipelines.sim.simulate import SimulationConfig, simulate

    config = SimulationConfig(days=days, seed=seed)
    if not lag:
        config = replace(config, bad_row_rate=0.0)
    panel = simulate(config).panel
    if not lag:
        panel = panel.with_columns(pl.col("ts").alias("known_at"))
    return panel


class FittedPredictor:
    """A fitted :class:`CascadeClassifier` with the pyfunc's per-vector interface."""

    def __init__(self, model: CascadeClassifier) -> None:
        self.model = model
        self.booster = model.booster_
        self.calibrator = model.calibrator_
        self.features = tuple(model.features_)

    def predict_vector(self, x: np.ndarray) -> tuple[float, float]:
        raw = self.booster.predict(np.asarray(x, dtype=np.float64).reshape(1, -1))
        return float(self.calibrator.predict(raw)[0]), float(raw[0])

    def contributions(self, x: np.ndarray) -> np.ndarray:
        return self.booster.predict(
            np.asarray(x, dtype=np.float64).reshape(1, -1), pred_contrib=True
        )[0]

    def predict_table(self, table: pl.DataFrame) -> pl.DataFrame:
        """``ts``, ``symbol``, ``p`` over a feature table (the batch path)."""
        X = table.select(self.features).to_numpy().astype(np.float64)
        p = self.calibrator.predict(self.booster.predict(X))
        return table.select("ts", "symbol").with_columns(pl.Series("p", p, dtype=pl.Float64))


#: the demo's tuned champion's parameters (``make demo``, seed 7: 400 trees of up to 34
#: leaves), to be trained on a long panel with the cascade label alone
CHAMPION_SIZE = {
    **TINY_PARAMS,
    "num_boost_round": 400,
    "num_leaves": 34,
    "learning_rate": 0.13727,
    "min_data_in_leaf": 287,
    "feature_fraction": 0.915142,
    "bagging_fraction": 0.83038,
    "bagging_freq": 1,
    "lambda_l2": 0.00359364,
}


def fit_model(
    panel: pl.DataFrame,
    spec: FeatureSpec = CORE_V1,
    *,
    params: Mapping[str, Any] | None = None,
    augment: bool = True,
) -> FittedPredictor:
    """A LightGBM + calibrator on ``spec``'s features of ``panel``: small (30 trees) by
    default (a few seconds), or with ``params`` (e.g. :data:`CHAMPION_SIZE`).
    ``augment``: the top 5 % of cross-venue divergence are positives too (a short
    simulation has few cascades: two classes in every block, a probability that moves);
    False: the cascade label alone (a long panel)."""
    from oihedge.features.screening import validate

    table = build_features(panel, spec).table
    labels = LabelConfig()
    y = cascade_labels(validate(panel).valid, labels)
    data = make_training_data(table, y, spec.features, labels.label_column)
    if augment:
        div = data.frame["oi_div_xvenue_4h"].fill_null(0.0)
        extra = div >= div.quantile(0.95)
        label = (data.frame[labels.label_column].cast(pl.Boolean) | extra).cast(pl.Int8)
        data = replace(data, frame=data.frame.with_columns(label.alias(labels.label_column)))
    model = CascadeClassifier(dict(params or PARAMS), calibration="platt")
    return FittedPredictor(model.fit(data, TwoBlocks()))


class Dial:
    """A model whose probability the test sets (contributions: one feature moves)."""

    def __init__(self, p: float) -> None:
        self.p = p

    def predict_vector(self, x: np.ndarray) -> tuple[float, float]:
        return self.p, self.p

    def contributions(self, x: np.ndarray) -> np.ndarray:
        out = np.zeros(len(CORE_V1.features) + 1)
        out[0] = self.p
        return out


@dataclass
class Rig:
    """A loop and everything around it (paths in ``folder``)."""

    loop: HedgeLoop
    store: StateStore
    broker: PaperBroker
    executor: Executor
    log_path: Path
    folder: Path

    def close(self) -> None:
        self.loop.log.close()
        self.broker.close()
        self.store.close()


def policy_params(symbols: tuple[str, ...], **overrides: Any) -> dict[str, PolicyParams]:
    return {s: PolicyParams(**overrides) for s in symbols}


def make_rig(
    folder: Path,
    *,
    symbols: tuple[str, ...] = ("BTC", "ETH", "NEAR"),
    venues: tuple[str, ...] = ("binanceusdm", "bybit", "hyperliquid", "okx"),
    model: ModelProvider | None = None,
    predictor: Any = None,
    params: Mapping[str, PolicyParams] | None = None,
    portfolio_usd: float = 10_000_000.0,
    broker_cls: type[PaperBroker] = PaperBroker,
    caps: Caps | None = None,
    top_k: int = 5,
    bar: timedelta = timedelta(minutes=5),
    metrics: LoopMetrics | None = None,
    durable: bool = False,
    explain: Mapping[str, Any] | None = None,
) -> Rig:
    """A loop on ``CORE_V1`` with a paper broker and state in ``folder``. ``explain``:
    ``explain_min_change`` / ``explain_max_age`` for :class:`LoopSettings` (default:
    its defaults)."""
    folder.mkdir(parents=True, exist_ok=True)
    # durable=False: writes stay visible to a restart in-process; only fsync is skipped
    store = StateStore(folder / "state.sqlite", durable=durable)
    costs = CostModel()
    broker = broker_cls(HEDGE_VENUE, folder / "state.sqlite", costs=costs, durable=durable)
    caps = caps or Caps(max_order_usd=1e9, max_hedge_usd=1e10, max_orders_per_minute=1000)
    executor = Executor(
        store,
        {HEDGE_VENUE: broker},
        OrderGuard(caps),
        kill_switch_file=folder / "KILL",
        resend_window=timedelta(minutes=10),
    )
    settings = LoopSettings(
        strategy_id="test",
        hedge_venue=HEDGE_VENUE,
        params=dict(params or policy_params(symbols)),
        portfolio_usd={s: portfolio_usd / len(symbols) for s in symbols},
        venues=venues,
        top_k=top_k,
        **dict(explain or {}),
    )
    features = OnlineFeatures(CORE_V1, bar=bar, symbols=symbols)
    log_path = folder / "decisions.jsonl"
    loop = HedgeLoop(
        features,
        model or StaticModel(predictor, "test-1"),
        executor,
        settings,
        decision_log=DecisionLog(log_path),
        metrics=metrics,
    )
    return Rig(loop, store, broker, executor, log_path, folder)


def read_log(path: Path) -> list[dict[str, Any]]:
    import json

    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@dataclass
class Parity:
    """The replay and the backtest of the same panel, same policy, same model.

    ``live`` / ``backtest``: final signed position per symbol, base units (negative: a
    short hedge). ``live_trades`` / ``backtest_trades``: ``(decided_at, symbol, qty)`` in
    order, ``qty`` in base units, positive when it grows the short.
    """

    live: dict[str, float]
    backtest: dict[str, float]
    backtest_hedge_usd: dict[str, float]
    final_price: dict[str, float]
    live_trades: list[tuple[Any, str, float]]
    backtest_trades: list[tuple[Any, str, float]]
    summary: Any
    #: decisions whose SHAP contributions were computed for them (not carried over)
    explained: int = 0

    def differences(self) -> dict[str, float]:
        """live - backtest, base units, per symbol."""
        return {s: self.live.get(s, 0.0) - self.backtest[s] for s in self.backtest}

    def mismatches(self, *, rel: float = 1e-7, abs_units: float = 1e-8) -> list[str]:
        """What differs beyond the lot rounding (1e-8 base units) and float noise."""
        out = []
        live_keys = [(t, s) for t, s, _ in self.live_trades]
        back_keys = [(t, s) for t, s, _ in self.backtest_trades]
        if live_keys != back_keys:
            first = next(
                (i for i, (a, b) in enumerate(zip(live_keys, back_keys, strict=False)) if a != b),
                min(len(live_keys), len(back_keys)),
            )
            out.append(
                f"trade times differ from trade {first}: live {live_keys[first : first + 2]} "
                f"vs backtest {back_keys[first : first + 2]} ({len(live_keys)} vs "
                f"{len(back_keys)} trades)"
            )
        for (t, s, a), (_, _, b) in zip(self.live_trades, self.backtest_trades, strict=False):
            if abs(a - b) > rel * abs(b) + abs_units:
                out.append(f"trade {s} at {t}: live qty {a!r} vs backtest {b!r}")
        for symbol, diff in self.differences().items():
            if abs(diff) > rel * abs(self.backtest[symbol]) + abs_units:
                out.append(
                    f"{symbol}: live position {self.live.get(symbol, 0.0)!r} vs backtest "
                    f"{self.backtest[symbol]!r}"
                )
        return out


def replay_vs_backtest(
    panel: pl.DataFrame,
    predictor: Any,
    folder: Path,
    *,
    symbols: tuple[str, ...] = ("BTC", "ETH", "NEAR"),
    portfolio_usd: float = 9e6,
    top_k: int = 5,
) -> Parity:
    """Replay ``panel`` through the live loop (paper broker) and backtest the same panel
    with the same policy parameters, the same cost model and the same model's
    probabilities (``predictor.predict_table`` over the batch features).

    ``panel`` should have every row known at its bar close (``simulated_panel(...,
    lag=False)``): the backtest's timing, a bar's price known at its close.
    """
    from oihedge.serving.backtest.engine import BacktestSettings, run_backtest
    from oihedge.serving.backtest.market import build_market
    from oihedge.serving.feeds.replay import ReplaySource

    built = build_features(panel, CORE_V1)
    market = build_market(panel, built.table, max_staleness=built.spec.params.max_staleness)
    settings = BacktestSettings(
        portfolio_usd=portfolio_usd,
        weights={s: 1.0 for s in symbols},
        params=policy_params(symbols),
        costs=CostModel(),
        policies=("model",),
    )
    result = run_backtest(
        market, built.table, settings, probability=predictor.predict_table(built.table)
    )
    run = result.runs["model"]
    trades = run.trades.sort("decided_at", "symbol")
    backtest_trades = list(
        zip(
            trades["decided_at"].to_list(),
            trades["symbol"].to_list(),
            trades["qty"].to_list(),
            strict=True,
        )
    )
    last = run.bars.sort("ts").group_by("symbol").last()
    hedge = dict(zip(last["symbol"].to_list(), last["hedge_usd"].to_list(), strict=True))
    price = dict(zip(last["symbol"].to_list(), last["price"].to_list(), strict=True))
    shorted = {s: 0.0 for s in symbols}
    for _, s, qty in backtest_trades:
        shorted[s] += qty

    rig = make_rig(folder, predictor=predictor, portfolio_usd=portfolio_usd, top_k=top_k)
    try:
        summary = rig.loop.run(ReplaySource(panel))
        explained = rig.loop.explainer.computed
        orders = sorted(rig.store.orders(), key=lambda o: (o.decision_ts, o.symbol))
    finally:
        rig.close()
    live_trades = [
        (o.decision_ts, o.symbol, o.amount if o.side == "sell" else -o.amount) for o in orders
    ]
    return Parity(
        live=dict(summary.positions),
        backtest={s: -shorted[s] for s in symbols},
        backtest_hedge_usd=hedge,
        final_price=price,
        live_trades=live_trades,
        backtest_trades=backtest_trades,
        summary=summary,
        explained=explained,
    )


class DivergenceDial:
    """A deterministic model of the features: p rises with the cross-venue OI divergence
    (``div`` gives p = 1), so a replay hedges and unhedges as divergence comes and goes
    and decides the same way on every run of the same panel (restarts included)."""

    column = "oi_div_xvenue_4h"

    def __init__(self, div: float = 6.0) -> None:
        self.div = div
        self.i = CORE_V1.features.index(self.column)

    def predict_vector(self, x: np.ndarray) -> tuple[float, float]:
        v = float(x[self.i])
        p = 0.0 if not np.isfinite(v) else float(min(1.0, max(0.0, v / self.div)))
        return p, p

    def contributions(self, x: np.ndarray) -> np.ndarray:
        out = np.zeros(len(CORE_V1.features) + 1)
        out[self.i] = float(np.nan_to_num(x[self.i]))
        return out


def replay_in_folder(panel_path: Path, folder: Path, *, durable: bool = False) -> None:
    """A replay of the Parquet panel at ``panel_path`` with its state and decision log in
    ``folder``, as ``oihedge live --replay`` runs one (a store that is not durable, the
    paper broker; ``durable``: state and log written as a live loop writes them); prints
    ``started`` once the loop has started, ``done`` at the end. What the crash test runs
    in a process it kills."""
    from oihedge.serving.feeds.replay import ReplaySource

    source = ReplaySource(pl.read_parquet(panel_path))
    rig = make_rig(folder, predictor=DivergenceDial(), portfolio_usd=9e6, durable=durable)
    rig.loop.log.durable = durable
    rig.loop.start()
    print("started", flush=True)
    try:
        rig.loop.run(source)
    finally:
        rig.close()
    print("done", flush=True)


REPO = Path(__file__).resolve().parents[1]
_CHILD = (
    "import sys; from pathlib import Path; sys.path[:0] = [{repo!r}, {tests!r}];"
    " from live_support import replay_in_folder;"
    " replay_in_folder(Path({panel!r}), Path({folder!r}), durable={durable!r})"
)


def start_replay(panel: Path, folder: Path, durable: bool) -> subprocess.Popen[str]:
    """:func:`replay_in_folder` in a child process, returned once it has started."""
    code = _CHILD.format(
        repo=str(REPO),
        tests=str(REPO / "tests"),
        panel=str(panel),
        folder=str(folder),
        durable=durable,
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    line = child.stdout.readline().strip()
    if line != "started":
        child.kill()
        raise AssertionError(f"the replay did not start: {line!r} {child.stderr.read()}")
    return child


def finish_replay(child: subprocess.Popen[str]) -> None:
    out, err = child.communicate(timeout=120)
    assert child.returncode == 0 and "done" in out, err
