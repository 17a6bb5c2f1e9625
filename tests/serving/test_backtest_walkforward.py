"""Walk-forward refits: no training row's label window reaches past its refit time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from oihedge.features.schema import UTC_US
from oihedge.models.train import TrainingData
from oihedge.serving.backtest.walkforward import (
    DEFAULT_MODEL_PARAMS,
    WalkForwardSettings,
    refit_times,
    walk_forward,
)

T0 = datetime(2025, 1, 1, tzinfo=UTC)
H = timedelta(hours=4)
DAYS = 30


def tables(seed: int = 0) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Hourly features (one informative column) and labels for two symbols."""
    rng = np.random.default_rng(seed)
    ts = [T0 + timedelta(hours=i) for i in range(DAYS * 24)]
    frames, labels = [], []
    for symbol in ("BTC", "ETH"):
        x = rng.normal(size=len(ts))
        y = ((x + 0.5 * rng.normal(size=len(ts))) > 1.6).astype(np.int8)
        keys = {"ts": pl.Series(ts, dtype=UTC_US), "symbol": [symbol] * len(ts)}
        frames.append(pl.DataFrame({**keys, "x": x, "noise": rng.normal(size=len(ts))}))
        labels.append(pl.DataFrame({**keys, "y_cascade_4h": y}))
    return pl.concat(frames), pl.concat(labels)


class Recorder:
    """A fitter that records each training set and returns a model scoring its index."""

    def __init__(self) -> None:
        self.seen: list[TrainingData] = []

    def __call__(self, rows: TrainingData) -> object:
        self.seen.append(rows)
        k = len(self.seen)

        class Constant:
            def predict_proba(self, X: np.ndarray) -> np.ndarray:
                return np.full(len(X), k / 10)

        return Constant()


SETTINGS = WalkForwardSettings(
    train_window=timedelta(days=10), retrain_every=timedelta(days=5), min_positives=1
)


def run(settings: WalkForwardSettings = SETTINGS, **kw):
    features, labels = tables()
    recorder = Recorder()
    wf = walk_forward(
        features, labels, ("x", "noise"), "y_cascade_4h", H, settings, fitter=recorder, **kw
    )
    return wf, recorder, features


def test_refit_times():
    last = T0 + timedelta(days=DAYS)
    times = refit_times(T0, last, SETTINGS)
    assert times == [T0 + timedelta(days=d) for d in (10, 15, 20, 25, 30)]
    assert refit_times(T0, last, SETTINGS, start=T0 + timedelta(days=21))[0] == T0 + timedelta(
        days=21
    )
    assert refit_times(T0, T0 + timedelta(days=9), SETTINGS) == []


def test_training_never_sees_a_label_window_past_the_refit():
    wf, recorder, features = run()
    assert len(recorder.seen) == len(wf.refits) == 4  # 10, 15, 20, 25 d (30 d is past the end)
    labelled = features["ts"]
    for refit, rows in zip(wf.refits, recorder.seen, strict=True):
        times = rows.frame["ts"]
        assert times.max() + H < refit.at  # purged: the label window ended before the refit
        assert times.min() == T0  # expanding window: from the first row
        # every row that is allowed is used (both symbols)
        assert rows.frame.height == int((labelled + H < refit.at).sum())
        assert (refit.train_start, refit.train_end, refit.fitted) == (
            times.min(),
            times.max(),
            True,
        )


def test_each_block_is_scored_by_the_model_fitted_at_its_start():
    wf, _, _ = run()
    p = wf.probability.sort("ts", "symbol")
    before = p.filter(pl.col("ts") < wf.refits[0].at)
    assert before["p"].null_count() == before.height  # no model yet
    for k, refit in enumerate(wf.refits, start=1):
        block = p.filter(pl.col("ts") >= refit.at)
        if refit.until is not None:
            block = block.filter(pl.col("ts") < refit.until)
        assert block.height and (block["p"] == k / 10).all()


def test_rolling_window_keeps_only_the_last_max_train():
    settings = WalkForwardSettings(
        train_window=timedelta(days=10),
        retrain_every=timedelta(days=5),
        max_train=timedelta(days=3),
        min_positives=1,
    )
    wf, recorder, _ = run(settings)
    for refit, rows in zip(wf.refits, recorder.seen, strict=True):
        assert rows.frame["ts"].min() >= refit.at - H - timedelta(days=3)
        assert rows.frame["ts"].max() + H < refit.at


def test_a_refit_without_enough_positives_keeps_the_previous_model():
    settings = WalkForwardSettings(
        train_window=timedelta(days=10), retrain_every=timedelta(days=5), min_positives=10**6
    )
    wf, recorder, _ = run(settings)
    assert recorder.seen == [] and not any(r.fitted for r in wf.refits)
    assert "positive labels" in wf.refits[0].note
    assert wf.probability["p"].null_count() == wf.probability.height


def test_the_severity_is_fitted_on_each_refits_purged_rows_only():
    features, labels = tables()
    # an accelerating fall: the 4 h drop to the lowest close grows with time, so a fit that
    # saw rows past its refit would show a larger severity
    hours = features["ts"].dt.epoch("s") / 3600.0
    hours = hours - hours.min()
    features = features.with_columns(pl.lit(2.0).alias("vol_rv_24h_pct"))
    labels = labels.with_columns((1e6 - hours**2).alias("y_ref_close"))
    wf = walk_forward(
        features, labels, ("x", "noise"), "y_cascade_4h", H, SETTINGS, fitter=Recorder()
    )
    scale = 2.0 * (4 / 24) ** 0.5
    t = labels["ts"].dt.epoch("s") / 3600.0 - labels["ts"].dt.epoch("s").min() / 3600.0
    drops = labels.with_columns((100.0 * (1.0 - (1e6 - (t + 4) ** 2) / (1e6 - t**2))).alias("drop"))
    for refit in wf.refits:
        seen = drops.filter(pl.col("y_cascade_4h") == 1, pl.col("ts") + H < refit.at)["drop"]
        assert refit.severity_k == pytest.approx(seen.mean() / scale)
        block = wf.probability.filter(pl.col("ts") >= refit.at)
        if refit.until is not None:
            block = block.filter(pl.col("ts") < refit.until)
        assert (block["severity_k"] == refit.severity_k).all()
    assert wf.probability.filter(pl.col("ts") < wf.refits[0].at)["severity_k"].is_null().all()


def test_a_refit_without_severity_rows_keeps_the_previous_severity():
    features, labels = tables()
    features = features.with_columns(pl.lit(2.0).alias("vol_rv_24h_pct"))
    early = pl.col("ts") < T0 + timedelta(days=10)  # positives only in the first 10 days
    hours = (labels["ts"].dt.epoch("s") - labels["ts"].dt.epoch("s").min()) / 3600.0
    labels = labels.with_columns(
        pl.when(early).then(pl.col("y_cascade_4h")).otherwise(0).alias("y_cascade_4h"),
        (1000.0 * 0.97 ** (hours / 4)).alias("y_ref_close"),  # a 3 % drop every 4 h
    )
    settings = WalkForwardSettings(
        train_window=timedelta(days=10),
        retrain_every=timedelta(days=5),
        max_train=timedelta(days=3),
        min_positives=1,
    )
    wf = walk_forward(
        features, labels, ("x", "noise"), "y_cascade_4h", H, settings, fitter=Recorder()
    )
    first, *later = wf.refits
    assert first.severity_k == pytest.approx(3.0 / (2.0 * (4 / 24) ** 0.5))
    assert later and all(r.severity_k == first.severity_k for r in later)  # not a loop index


def test_the_default_fitter_gives_probabilities():
    features, labels = tables()
    settings = WalkForwardSettings(
        train_window=timedelta(days=20),
        retrain_every=timedelta(days=20),
        params={**DEFAULT_MODEL_PARAMS, "num_boost_round": 20, "min_data_in_leaf": 20},
    )
    wf = walk_forward(features, labels, ("x", "noise"), "y_cascade_4h", H, settings)
    p = wf.probability.filter(pl.col("ts") >= wf.refits[0].at)["p"].to_numpy()
    assert wf.refits[0].fitted and ((p >= 0) & (p <= 1)).all()
    scored = wf.probability.join(labels, on=["ts", "symbol"]).drop_nulls("p")
    high = scored.filter(pl.col("p") > scored["p"].median())
    assert high["y_cascade_4h"].mean() > scored["y_cascade_4h"].mean()  # it learned x


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"train_window": timedelta(0)}, "train_window must be a positive duration"),
        ({"n_splits": 0}, "n_splits must be >= 1"),
        ({"max_train": timedelta(hours=-1)}, "max_train must be a positive duration"),
    ],
)
def test_settings_are_checked(change, match):
    with pytest.raises(ValueError, match=match):
        WalkForwardSettings(**change)


def test_default_params_are_the_shipped_configuration():
    from oihedge.pipelines.cli.config import load_config

    assert load_config(env={}).backtest.model.model_dump() == DEFAULT_MODEL_PARAMS


def test_tuning_once_uses_only_the_first_training_window():
    features, labels = tables()
    settings = WalkForwardSettings(
        train_window=timedelta(days=20), retrain_every=timedelta(days=20), tune_trials=2
    )
    recorder = Recorder()
    wf = walk_forward(
        features, labels, ("x", "noise"), "y_cascade_4h", H, settings, fitter=recorder
    )
    assert set(wf.params) >= {"learning_rate", "num_boost_round", "scale_pos_weight"}
    assert wf.params != DEFAULT_MODEL_PARAMS  # tuned, then kept for every refit
    assert len(recorder.seen) == 1
