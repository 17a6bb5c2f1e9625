"""The contract every feature passes (one parametrized class, one case per feature).

- Float64 output, one row per (decision time, symbol);
- no look-ahead: cutting the panel at ``t``, or changing / adding / removing any row
  known after ``t``, leaves every value at or before ``t`` unchanged;
- warm-up: null until the feature's minimum history has passed, then a value;
- deterministic: the same panel in any row order gives the same table;
- batch equals online within 1e-9 relative (and the same nulls) at every decision time,
  on a simulated panel with gaps, late and out-of-order bars, and on four weeks of the
  real hourly panel (all six venues and five symbols);
- the feature carries information on the simulated panel (not all null, not constant).

Run on ``core`` v2 (v1 and the options family); the simulated panel has options rows for
BTC and ETH only, so the options features are also checked null for the other symbols.
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import polars as pl
import pytest

from oihedge.features.registry import CORE_V2, FEATURES, FeatureBuild, build_features, graph
from oihedge.features.stream import decision_grid
from oihedge.features.windows import min_history

NAMES = list(CORE_V2.features)
RTOL = 1e-9


def assert_same(a: pl.DataFrame, b: pl.DataFrame, name: str, rtol: float = RTOL) -> None:
    """Equal nulls and values within ``rtol`` relative, row by row on (ts, symbol)."""
    joined = a.select("ts", "symbol", name).join(
        b.select("ts", "symbol", pl.col(name).alias("_b")), on=["ts", "symbol"], how="inner"
    )
    assert joined.height == min(a.height, b.height), f"{name}: tables cover different rows"
    x, y = joined[name].to_numpy(), joined["_b"].to_numpy()
    nx, ny = np.isnan(x), np.isnan(y)
    mismatch = np.flatnonzero(nx != ny)
    assert mismatch.size == 0, (
        f"{name}: null in one table only at {joined['ts'][int(mismatch[0])]} "
        f"{joined['symbol'][int(mismatch[0])]} ({x[mismatch[0]]!r} vs {y[mismatch[0]]!r}); "
        f"{mismatch.size} such rows"
    )
    both = ~nx
    scale = np.maximum(np.abs(x[both]), np.abs(y[both]))
    diff = np.abs(x[both] - y[both])
    bad = np.flatnonzero(diff > rtol * scale)
    assert bad.size == 0, (
        f"{name}: {bad.size} values differ by more than {rtol:g} relative; worst "
        f"{(diff / np.where(scale > 0, scale, 1)).max():.3g}"
    )


@pytest.fixture(scope="module")
def cut_time(sim_build: FeatureBuild) -> object:
    """A decision time in the middle of the simulated panel, off any round hour."""
    ts = sim_build.table["ts"].unique().sort()
    return ts[int(len(ts) * 0.55) + 7]


@pytest.fixture(scope="module")
def cut_build(sim_panel: pl.DataFrame, sim_build: FeatureBuild, cut_time: object) -> pl.DataFrame:
    """Built on the rows known by the cut only."""
    cut = sim_panel.filter(pl.col("known_at") <= cut_time)
    return build_features(cut, CORE_V2, bar=sim_build.spec.params.bar).table


@pytest.fixture(scope="module")
def perturbed_build(
    sim_panel: pl.DataFrame, sim_build: FeatureBuild, cut_time: object
) -> pl.DataFrame:
    """Built with every row known after the cut changed, some dropped, and new late rows
    (revisions of old bars known after the cut) added."""
    rng = np.random.default_rng(1)
    after = pl.col("known_at") > cut_time
    factors = pl.Series(rng.uniform(0.5, 1.5, sim_panel.height))
    changed = sim_panel.with_columns(
        [
            pl.when(after).then(pl.col(c) * factors).otherwise(pl.col(c)).alias(c)
            for c in (
                "close",
                "high",
                "low",
                "oi_usd",
                "funding_rate",
                "liq_long_usd",
                "opt_iv_atm_pct",
                "opt_rr25_pct",
            )
        ]
    ).with_columns(
        pl.max_horizontal("high", "close").alias("high"),
        pl.min_horizontal("low", "close").alias("low"),
    )
    keep = pl.Series(rng.random(sim_panel.height) > 0.2)
    changed = changed.filter(~after | keep)
    revisions = (
        sim_panel.filter(~after)
        .sample(40, seed=2)
        .with_columns(
            (pl.lit(cut_time) + timedelta(minutes=1)).alias("known_at"),
            (pl.col("oi_usd") * 3).alias("oi_usd"),
            (pl.col("opt_iv_atm_pct") * 3).alias("opt_iv_atm_pct"),
        )
    )
    return build_features(
        pl.concat([changed, revisions]), CORE_V2, bar=sim_build.spec.params.bar
    ).table


@pytest.fixture(scope="module")
def shuffled_build(sim_panel: pl.DataFrame) -> pl.DataFrame:
    return build_features(sim_panel.sample(fraction=1.0, shuffle=True, seed=9), CORE_V2).table


@pytest.fixture(scope="module")
def clean_build(clean_panel: pl.DataFrame) -> FeatureBuild:
    return build_features(clean_panel, CORE_V2)


@pytest.mark.parametrize("name", NAMES)
class TestFeatureContract:
    def test_float64_and_one_row_per_decision(self, name: str, sim_build: FeatureBuild) -> None:
        table = sim_build.table
        assert table.schema[name] == pl.Float64
        assert table.select("ts", "symbol").is_duplicated().sum() == 0

    def test_no_lookahead_when_cut(
        self, name: str, sim_build: FeatureBuild, cut_build: pl.DataFrame, cut_time: object
    ) -> None:
        before = sim_build.table.filter(pl.col("ts") <= cut_time)
        assert before.height and cut_build.filter(pl.col("ts") <= cut_time).height == before.height
        assert_same(before, cut_build.filter(pl.col("ts") <= cut_time), name, rtol=0.0)

    def test_no_lookahead_when_later_rows_change(
        self, name: str, sim_build: FeatureBuild, perturbed_build: pl.DataFrame, cut_time: object
    ) -> None:
        before = sim_build.table.filter(pl.col("ts") <= cut_time)
        assert_same(before, perturbed_build.filter(pl.col("ts") <= cut_time), name, rtol=0.0)

    def test_warm_up(self, name: str, clean_panel: pl.DataFrame, clean_build: FeatureBuild) -> None:
        node = graph(clean_build.spec)[name]
        ready = clean_panel["ts"].min() + min_history(node, clean_build.spec.params)
        table = clean_build.table
        early = table.filter(pl.col("ts") < ready)[name]
        assert early.null_count() == early.len(), f"{name} has values before {ready}"
        assert table.filter(pl.col("ts") >= ready)[name].drop_nulls().len() > 0

    def test_deterministic_in_any_row_order(
        self, name: str, sim_build: FeatureBuild, shuffled_build: pl.DataFrame
    ) -> None:
        assert_same(sim_build.table, shuffled_build, name, rtol=0.0)

    def test_batch_equals_online_on_simulated_panel(
        self, name: str, sim_build: FeatureBuild, sim_online: pl.DataFrame
    ) -> None:
        assert sim_online.height == sim_build.table.height
        assert_same(sim_build.table, sim_online, name)

    def test_batch_equals_online_on_real_panel(
        self, name: str, real_build: FeatureBuild, real_online: pl.DataFrame
    ) -> None:
        assert real_online.height == real_build.table.height
        assert_same(real_build.table, real_online, name)

    def test_carries_information(self, name: str, sim_build: FeatureBuild) -> None:
        values = sim_build.table[name].drop_nulls()
        assert values.len() > 0.2 * sim_build.table.height, f"{name} is mostly null"
        assert values.n_unique() > 1, f"{name} is constant"
        assert FEATURES[name].description


def test_simulated_panel_exercises_late_and_out_of_order_bars(sim_build: FeatureBuild) -> None:
    assert sim_build.quarantined.get("out_of_order", 0) >= 8


def test_decision_grid_covers_every_bar(sim_build: FeatureBuild, sim_panel: pl.DataFrame) -> None:
    bar = sim_build.spec.params.bar
    assert bar is not None
    grid = decision_grid(sim_panel, bar)
    assert sim_build.table["ts"].unique().len() == grid.len()


def test_options_features_are_null_where_no_options_trade(
    sim_build: FeatureBuild, real_build: FeatureBuild
) -> None:
    options = [n for n in NAMES if FEATURES[n].family == "options"]
    assert len(options) == 20
    near = sim_build.table.filter(pl.col("symbol") == "NEAR").select(options)
    assert near.height > 0 and near.null_count().row(0) == (near.height,) * len(options)
    # the real sample has no options columns at all: every options feature is null
    real = real_build.table.select(options)
    assert real.null_count().row(0) == (real.height,) * len(options)
    btc = sim_build.table.filter(pl.col("symbol") == "BTC")
    assert btc["opt_iv_atm_pct"].drop_nulls().len() > 0.9 * btc.height
