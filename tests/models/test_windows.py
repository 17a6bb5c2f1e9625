"""Walk-forward evaluation over many windows: bounds, rivals, families, no look-ahead."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from oihedge.models.train import TrainingData
from oihedge.models.windows import (
    WindowSettings,
    evaluate_windows,
    family_features,
    family_of,
    window_bounds,
)

T0 = datetime(2025, 1, 1, tzinfo=UTC)
H = timedelta(hours=4)
PARAMS = {
    "num_boost_round": 25,
    "num_leaves": 7,
    "learning_rate": 0.1,
    "min_data_in_leaf": 50,
    "lambda_l2": 1.0,
}
FEATURES = ("oi_div_xvenue_4h", "funding_z_7d", "vol_rv_24h_pct", "corr_ret_port_24h")


def synthetic(days: int = 160, seed: int = 3) -> tuple[TrainingData, pl.DataFrame, pl.DataFrame]:
    """Hourly rows for two symbols: OI divergence announces the label, volatility is noise,
    funding a weak echo; ``oi_dev_24h_pct`` lets the OI-deviation rule fire on it too."""
    rng = np.random.default_rng(seed)
    n = days * 24
    ts = [T0 + timedelta(hours=i) for i in range(n)]
    rows = []
    for symbol in ("BTC", "ETH"):
        div = rng.gamma(2.0, 2.0, n)
        logit = -5.0 + 0.45 * div
        y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(float)
        rows.append(
            pl.DataFrame(
                {
                    "ts": ts,
                    "symbol": symbol,
                    "oi_div_xvenue_4h": div,
                    "funding_z_7d": 0.3 * div + rng.normal(0, 2, n),
                    "vol_rv_24h_pct": rng.normal(3, 1, n),
                    "corr_ret_port_24h": rng.normal(0.5, 0.1, n),
                    "oi_dev_24h_pct": 2.0 * div + rng.normal(0, 3, n),
                    "y": y,
                }
            )
        )
    frame = pl.concat(rows).sort("ts", "symbol")
    data = TrainingData(frame.select("ts", "symbol", *FEATURES, "y"), FEATURES, "y")
    features = frame.drop("y")
    starts = frame.filter(pl.col("y") == 1).select("symbol", pl.col("ts").alias("start"))
    return data, features, starts


@pytest.fixture(scope="module")
def case():
    return synthetic()


def settings(**kw) -> WindowSettings:
    base = {"params": PARAMS, "window": timedelta(days=30), "min_train": timedelta(days=50)}
    return WindowSettings(**{**base, **kw})


def test_windows_are_consecutive_after_the_minimum_training_span():
    last = T0 + timedelta(days=159, hours=23)
    bounds = window_bounds(T0, last, settings())
    assert [b[0] for b in bounds] == [T0 + timedelta(days=d) for d in (50, 80, 110, 140)]
    assert bounds[0][1] == T0 + timedelta(days=80)
    # the last window is cut at the data's end; one shorter than half a window is dropped
    assert bounds[-1][1] == last + timedelta(microseconds=1) and len(bounds) == 4
    assert len(window_bounds(T0, T0 + timedelta(days=96), settings())) == 2  # 16 days kept
    assert len(window_bounds(T0, T0 + timedelta(days=94), settings())) == 1  # 14 days not
    stepped = window_bounds(T0, last, settings(step=timedelta(days=20)))
    assert [b[0] - T0 for b in stepped[:3]] == [timedelta(days=d) for d in (50, 70, 90)]
    start = T0 + timedelta(days=60)
    assert window_bounds(T0, last, settings(start=start))[0][0] == start


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"window": timedelta(0)}, "window must be > 0"),
        ({"step": timedelta(hours=-1)}, "step must be > 0"),
        ({"start": datetime(2025, 3, 1)}, "start must be timezone-aware"),
        ({"start": T0, "end": T0}, "start must be before end"),
    ],
)
def test_bad_settings_are_refused(kw, message):
    with pytest.raises(ValueError, match=message):
        settings(**kw)


def test_features_fall_into_families_by_prefix():
    assert family_of("oi_div_xvenue_4h") == "oi_divergence"
    assert family_of("funding_neg_x_oi_dev_24h") == "funding"
    assert family_of("vol_ret_1h_pct") == "volatility"
    assert family_of("liq_long_1h_bp_oi") == "liquidations"
    assert family_of("something_else") == "other"
    assert family_features(FEATURES)["volatility"] == ("vol_rv_24h_pct",)


def test_every_window_scores_the_model_and_its_rivals_fitted_before_it(case):
    data, features, events = case
    result = evaluate_windows(data, features, events, H, settings())
    assert len(result.windows) == 4
    t = data.frame["ts"]
    for w in result.windows:
        assert list(w.metrics) == [
            "model",
            "vol_only",
            "logistic",
            "fixed_rule",
            "oi_deviation_rule",
            "funding_rule",
        ]
        # purged and embargoed: training rows end one horizon before the window
        assert w.train_rows == int((t + H < w.start).sum())
        assert w.rows == int(t.is_between(w.start, w.end, closed="left").sum())
        assert w.positives == int(
            data.frame.filter(pl.col("ts").is_between(w.start, w.end, closed="left"))["y"].sum()
        )
        assert 0 < w.events == w.positives  # every positive row is an event here
        # divergence announces the label: the model beats the volatility-only rival
        assert w.metrics["model"].pr_auc > w.metrics["vol_only"].pr_auc + 0.05
    summary = result.summary()
    assert summary["windows"] == 4
    assert summary["model_beats"]["vol_only"] == 4
    assert summary["scorers"]["model"]["mean_pr_auc"] == pytest.approx(
        np.mean([w.metrics["model"].pr_auc for w in result.windows])
    )
    assert sum(s["windows_best"] for s in summary["scorers"].values()) == 4
    record = result.record()
    assert [
        set(m) >= {"scorer", "pr_auc", "roc_auc", "brier", "event_recall_at_alert"}
        for m in record["windows"][0]["metrics"]
    ] == [True] * 6
    assert set(record["windows"][0]) >= {"start", "end", "base_rate", "positives", "events"}
    assert "ablation" not in record
    table = result.table()
    assert table.height == 24 and table["scorer"].n_unique() == 6


def test_a_window_never_sees_labels_from_its_own_rows_or_later(case):
    data, features, events = case
    clean = evaluate_windows(data, features, events, H, settings())
    second = clean.windows[1]
    # scramble the labels of the horizon just before the second window (inside its purge)
    # and of every row after it: its metrics must not move (its fits read only rows at
    # least a horizon before its start, and it scores its own rows)
    rng = np.random.default_rng(0)
    frame = data.frame.with_columns(
        pl.when(
            (pl.col("ts") >= second.end)
            | pl.col("ts").is_between(second.start - H, second.start, closed="left")
        )
        .then(pl.Series(rng.integers(0, 2, data.frame.height).astype(float)))
        .otherwise(pl.col("y"))
        .alias("y")
    )
    scrambled = evaluate_windows(
        TrainingData(frame, data.features, data.label), features, events, H, settings()
    )
    before, after = second, scrambled.windows[1]
    assert (before.start, before.train_rows) == (after.start, after.train_rows)
    assert before.metrics == after.metrics
    # later windows do train on the scrambled rows: their scores change
    assert clean.windows[3].metrics["model"] != scrambled.windows[3].metrics["model"]


def test_the_ablation_shows_what_each_family_adds(case):
    data, features, events = case
    # a liquidation feature the data never fills: no ablation row for its family
    names = (*data.features, "liq_long_1h_bp_oi")
    frame = data.frame.with_columns(pl.lit(None, dtype=pl.Float64).alias("liq_long_1h_bp_oi"))
    data = TrainingData(frame, names, data.label)
    result = evaluate_windows(
        data, features, events, H, settings(start=T0 + timedelta(days=90)), ablation=True
    )
    assert result.empty == ("liq_long_1h_bp_oi",)
    assert result.record()["empty_features"] == ["liq_long_1h_bp_oi"]
    assert "liquidations" not in result.families
    table = {r["family"]: r for r in result.ablation().iter_rows(named=True)}
    assert set(table) == {"oi_divergence", "funding", "correlation", "volatility"}
    assert all(r["drop_windows"] == len(result.windows) == 2 for r in table.values())
    # removing OI divergence costs the most; divergence alone keeps most of the model
    assert table["oi_divergence"]["drop_mean_delta_pr_auc"] < -0.05
    assert table["oi_divergence"]["drop_mean_delta_pr_auc"] == min(
        r["drop_mean_delta_pr_auc"] for r in table.values()
    )
    assert (
        table["oi_divergence"]["alone_mean_delta_pr_auc"]
        > table["volatility"]["alone_mean_delta_pr_auc"]
    )
    assert abs(table["correlation"]["drop_mean_delta_pr_auc"]) < 0.05
    assert math.isfinite(table["funding"]["alone_mean_delta_pr_auc"])
    assert [r["family"] for r in result.record()["ablation"]] == list(table)


def test_no_window_with_training_rows_is_a_clear_error(case):
    data, features, events = case
    with pytest.raises(
        ValueError, match="no window of 30d between 2025-01-01 00:00 and .* use a longer"
    ):
        evaluate_windows(data, features, events, H, settings(min_train=timedelta(days=400)))
