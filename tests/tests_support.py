"""Helpers shared by the tests (importable from subprocesses, unlike conftest)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl

from oihedge.features.schema import PANEL_SCHEMA


def make_panel(
    n_bars: int = 12,
    venues: tuple[str, ...] = ("binanceusdm", "hyperliquid"),
    symbols: tuple[str, ...] = ("BTC", "ETH"),
    start: datetime = datetime(2025, 1, 1, tzinfo=UTC),
    bar: timedelta = timedelta(minutes=5),
    price: float = 100.0,
) -> pl.DataFrame:
    """A tiny, valid panel: a gentle ramp in price and OI per (venue, symbol)."""
    rows = []
    for v_i, venue in enumerate(venues):
        for s_i, symbol in enumerate(symbols):
            for i in range(n_bars):
                ts = start + bar * (i + 1)
                close = price * (1 + s_i) * (1 + 0.001 * i)
                rows.append(
                    {
                        "ts": ts,
                        "venue": venue,
                        "symbol": symbol,
                        "close": close,
                        "high": close * 1.002,
                        "low": close * 0.998,
                        "volume_usd": 1e6 + i,
                        "oi_usd": 1e8 * (1 + v_i) * (1 + 0.002 * i),
                        "funding_rate": 1e-4,
                        "spot_close": close * 0.9995,
                        "spot_depth_usd": 5e6,
                        "liq_long_usd": 0.0,
                        "liq_short_usd": None,
                        "known_at": ts + timedelta(seconds=30),
                    }
                )
    return pl.DataFrame(rows, schema=PANEL_SCHEMA)


def make_bad_rows(panel: pl.DataFrame) -> pl.DataFrame:
    """Three invalid rows built from ``panel``: negative OI, NaN close, null venue."""
    base = panel.head(1).with_columns(pl.col("ts") + timedelta(days=365))
    return pl.concat(
        [
            base.with_columns(pl.lit(-5.0).alias("oi_usd")),
            base.with_columns(pl.lit(math.nan).alias("close"), pl.col("ts") + timedelta(minutes=5)),
            base.with_columns(pl.lit(None, dtype=pl.String).alias("venue")),
        ]
    )


def write_offset_panel(root: str, offset: int) -> None:
    """Append one small panel with OI shifted by ``offset`` (run in a subprocess)."""
    from oihedge.pipelines.store import PanelStore

    panel = make_panel(n_bars=50, venues=("okx",), symbols=("BTC",))
    PanelStore(root).append(panel.with_columns((pl.col("oi_usd") + offset).alias("oi_usd")))


class TwoBlockSplit:
    """A minimal time-ordered splitter for tests: train on the first part, test on the rest."""

    def __init__(self, n_splits: int = 2) -> None:
        self.n_splits = n_splits

    def split(self, times):  # noqa: ANN001, ANN201 - mirrors oihedge.models.train.Splitter
        import numpy as np

        order = np.argsort(times, kind="stable")
        edges = np.linspace(0, len(order), self.n_splits + 2).astype(int)
        for i in range(1, self.n_splits + 1):
            yield order[: edges[i]], order[edges[i] : edges[i + 1]]


def synthetic_training_frame(n_bars: int = 3000, seed: int = 0, shift: float = 0.0):
    """(ts, symbol, f_signal, f_noise, y) where y depends on f_signal; ``shift`` moves it."""
    import numpy as np

    rng = np.random.default_rng(seed)
    ts = [datetime(2025, 1, 1, tzinfo=UTC) + timedelta(minutes=5 * i) for i in range(n_bars)]
    signal = rng.normal(size=n_bars)
    noise = rng.normal(size=n_bars)
    p = 1 / (1 + np.exp(-(2.5 * (signal + shift) - 3.5)))
    y = (rng.random(n_bars) < p).astype(np.int8)
    return pl.DataFrame(
        {
            "ts": ts,
            "symbol": ["BTC"] * n_bars,
            "f_signal": signal,
            "f_noise": noise,
            "y_cascade_4h": y,
        },
        schema_overrides={"ts": pl.Datetime("us", "UTC")},
    )


#: a small, fast LightGBM configuration for tests that need any fitted model
TINY_PARAMS = {
    "learning_rate": 0.1,
    "num_boost_round": 40,
    "num_leaves": 7,
    "min_data_in_leaf": 20,
    "feature_fraction": 1.0,
    "bagging_fraction": 1.0,
    "lambda_l2": 1.0,
    "scale_pos_weight": 2.0,
}
#: the feature spec card of models trained on :func:`synthetic_training_frame`
TOY_SPEC = {"name": "test-spec", "version": 1, "features": ["f_signal", "f_noise"], "hash": "abc"}


def log_toy_model(
    experiment: str,
    model: Any = None,
    *,
    spec: dict[str, Any] | None = None,
    git_commit: str = "test",
) -> tuple[Any, str]:
    """``model`` (default: a tiny classifier fitted on :func:`synthetic_training_frame`)
    logged as an oihedge model in a new run of ``experiment``, with the smallest card the
    registry accepts (``spec``: default :data:`TOY_SPEC`). Returns (ModelInfo, run id)."""
    import mlflow

    from oihedge.models.artifact import log_cascade_model
    from oihedge.models.train import CascadeClassifier, make_training_data

    if model is None:
        frame = synthetic_training_frame(n_bars=1500)
        data = make_training_data(frame, frame, ["f_signal", "f_noise"], "y_cascade_4h")
        model = CascadeClassifier(TINY_PARAMS).fit(data, TwoBlockSplit(2))
    card = {
        "features": list(model.features_),
        "feature_spec": TOY_SPEC if spec is None else spec,
        "horizon": "4h",
        "dataset": {"hash": "d"},
        "git_commit": git_commit,
    }
    with mlflow.start_run(experiment_id=experiment) as run:
        info = log_cascade_model(model, card)
    return info, run.info.run_id
