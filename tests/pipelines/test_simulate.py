"""The market simulator: determinism, the panel contract, stylised facts, cascades, config.

One 60-day simulation (default seed) is shared by the module; the determinism and
validation tests use a few simulated days.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from oihedge.features.schema import PANEL_SCHEMA
from oihedge.features.screening import validate
from oihedge.pipelines.sim.simulate import (
    DEFAULT_ASSETS,
    DEFAULT_VENUES,
    EVENTS_SCHEMA,
    AssetSpec,
    SimulationConfig,
    SimulationResult,
    VenueSpec,
    help_text,
    simulate,
)

DAYS = 60
BAR = timedelta(minutes=5)
BARS_PER_DAY = 288
SYMBOLS = ("BTC", "ETH", "NEAR")
CEXS = ("binanceusdm", "bybit", "okx")


@pytest.fixture(scope="module")
def result() -> SimulationResult:
    return simulate(SimulationConfig(days=DAYS))


@pytest.fixture(scope="module")
def valid(result: SimulationResult) -> pl.DataFrame:
    return validate(result.panel, bar=BAR, arrival_order=True).valid


@pytest.fixture(scope="module")
def returns(valid: pl.DataFrame) -> pl.DataFrame:
    """5-minute log returns of the spot price, one column per symbol."""
    spot = (
        valid.group_by("ts", "symbol")
        .agg(pl.col("spot_close").first())
        .pivot("symbol", index="ts", values="spot_close")
        .sort("ts")
        .upsample("ts", every="5m")
    )
    return spot.select(pl.col(s).log().diff().alias(s) for s in SYMBOLS).drop_nulls()


@pytest.fixture(scope="module")
def aggregate(valid: pl.DataFrame) -> pl.DataFrame:
    """Per (symbol, ts) with every venue present: summed OI, mean funding, spot."""
    return (
        valid.group_by("symbol", "ts")
        .agg(
            pl.col("oi_usd").sum().alias("oi"),
            pl.col("funding_rate").mean().alias("funding"),
            pl.col("spot_close").first().alias("spot"),
            pl.len().alias("venues"),
        )
        .filter(pl.col("venues") == len(DEFAULT_VENUES))
        .sort("symbol", "ts")
    )


def small(**kwargs: object) -> SimulationConfig:
    return SimulationConfig(**{"days": 3.0, **kwargs})  # type: ignore[arg-type]


# --- determinism and the panel contract --------------------------------------------------


def test_same_seed_same_market_and_another_seed_another() -> None:
    a, b = simulate(small(seed=3)), simulate(small(seed=3))
    assert a.panel.equals(b.panel) and a.events.equals(b.events)
    assert a.injected_bad_rows == b.injected_bad_rows
    c = simulate(small(seed=4))
    assert not a.panel.equals(c.panel)


def test_panel_has_exactly_the_schema_and_the_expected_rows(result: SimulationResult) -> None:
    assert dict(result.panel.schema) == PANEL_SCHEMA
    full = DAYS * BARS_PER_DAY * len(DEFAULT_VENUES) * len(DEFAULT_ASSETS)
    assert 0.97 * full < result.panel.height < 1.001 * full
    assert set(result.panel["venue"].unique()) == {v.name for v in DEFAULT_VENUES}
    assert set(result.panel["symbol"].unique()) == set(SYMBOLS)


def test_validator_quarantines_exactly_the_injected_bad_rows(result: SimulationResult) -> None:
    report = validate(result.panel, bar=BAR, arrival_order=True)
    assert result.injected_bad_rows >= 10
    assert report.n_quarantined == result.injected_bad_rows
    reasons = report.reasons()
    # a re-delivered row and a late bar are both out of order in an arrival stream
    assert set(reasons) == {"negative_oi_usd", "non_finite_close", "out_of_order"}
    assert reasons["out_of_order"] >= reasons["negative_oi_usd"]


def test_without_bad_rows_every_row_is_valid() -> None:
    res = simulate(small(bad_row_rate=0.0, seed=5))
    assert res.injected_bad_rows == 0
    assert validate(res.panel, bar=BAR, arrival_order=True).n_quarantined == 0


def test_rows_arrive_in_known_at_order_with_honest_lags(result: SimulationResult) -> None:
    panel = result.panel
    lag = panel.select(
        (pl.col("known_at") - pl.col("ts")).dt.total_microseconds().alias("lag"), "venue"
    )
    bar_us = BAR / timedelta(microseconds=1)
    assert lag["lag"].min() >= 0
    # within a bar, except the bars delivered late (known when they finally arrived)
    assert (lag["lag"] >= bar_us).sum() <= result.injected_bad_rows
    # arrival order: even the bars delivered late carry the time they arrived
    assert (panel["known_at"].diff().drop_nulls() >= timedelta(0)).all()
    spread = lag.group_by("venue").agg(pl.col("lag").std()).sort("lag")
    assert spread["venue"][-1] == "hyperliquid"  # the DEX publishes with the most jitter


def test_prices_bracket_and_spot_is_shared(valid: pl.DataFrame) -> None:
    assert valid.filter(
        (pl.col("high") < pl.col("close")) | (pl.col("low") > pl.col("close"))
    ).is_empty()
    per_ts = valid.group_by("ts", "symbol").agg(pl.col("spot_close").n_unique())
    assert per_ts["spot_close"].max() == 1
    assert (valid["spot_depth_usd"] > 0).all()


def test_feeds_have_gaps_and_null_liquidation_stretches(valid: pl.DataFrame) -> None:
    steps = (
        valid.sort("ts")
        .group_by("venue", "symbol")
        .agg((pl.col("ts").diff() > BAR).sum().alias("gaps"), pl.len().alias("rows"))
    )
    assert steps["gaps"].sum() > 0
    rows = dict(zip(steps["venue"] + steps["symbol"], steps["rows"], strict=True))
    assert all(rows[f"hyperliquid{s}"] < min(rows[f"{c}{s}"] for c in CEXS) for s in SYMBOLS)
    nulls = valid["liq_long_usd"].null_count()
    assert 0 < nulls < 0.2 * valid.height


def test_the_dex_feed_is_noisier(valid: pl.DataFrame) -> None:
    """OI noise shows in second differences; price noise in the spread to spot."""
    noise = (
        valid.sort("ts")
        .group_by("venue", "symbol")
        .agg(
            pl.col("oi_usd").log().diff().diff().std().alias("oi"),
            (pl.col("close") / pl.col("spot_close")).log().diff().std().alias("price"),
        )
        .group_by("venue")
        .agg(pl.col("oi", "price").median())
    )
    by_venue = {row["venue"]: row for row in noise.iter_rows(named=True)}
    dex = by_venue["hyperliquid"]
    for cex in CEXS:
        assert dex["oi"] > 3 * by_venue[cex]["oi"]
        assert dex["price"] > 2 * by_venue[cex]["price"]


# --- stylised facts ------------------------------------------------------------------------


def test_returns_are_fat_tailed(returns: pl.DataFrame) -> None:
    for symbol in SYMBOLS:
        r = returns[symbol].to_numpy()
        excess_kurtosis = ((r - r.mean()) ** 4).mean() / r.var() ** 2 - 3.0
        assert excess_kurtosis > 3.0, symbol


def test_volatility_clusters(returns: pl.DataFrame) -> None:
    for symbol in SYMBOLS:
        size = np.abs(returns[symbol].to_numpy())
        acf = [np.corrcoef(size[:-lag], size[lag:])[0, 1] for lag in (1, 3, 6, 12)]
        assert min(acf) > 0.05, (symbol, acf)


def test_returns_are_correlated_and_near_is_wilder(returns: pl.DataFrame) -> None:
    corr = returns.select(pl.corr("BTC", "ETH").alias("eth"), pl.corr("BTC", "NEAR").alias("near"))
    assert corr["eth"][0] > 0.65
    assert 0.2 < corr["near"][0] < corr["eth"][0]
    assert returns["NEAR"].std() > 1.3 * returns["BTC"].std()


def test_funding_is_mostly_positive_when_oi_builds_on_longs(aggregate: pl.DataFrame) -> None:
    day = BARS_PER_DAY
    building = aggregate.with_columns(
        (pl.col("oi") / pl.col("oi").shift(day).over("symbol") - 1).alias("oi_24h"),
        (pl.col("spot") / pl.col("spot").shift(day).over("symbol") - 1).alias("px_24h"),
    ).filter((pl.col("oi_24h") > 0.05) & (pl.col("px_24h") > 0))
    assert building.height > 500
    assert (building["funding"] > 0).mean() > 0.8


# --- cascades -------------------------------------------------------------------------------


def test_events_have_their_schema_and_happen_several_times_a_month(
    result: SimulationResult,
) -> None:
    events = result.events
    assert dict(events.schema) == EVENTS_SCHEMA
    per_month = events.group_by("symbol").len()
    counts = dict(zip(per_month["symbol"], per_month["len"], strict=True))
    for symbol in SYMBOLS:
        assert 2 <= counts.get(symbol, 0) * 30 / DAYS <= 12, (symbol, counts)
    assert (events["price_drop_pct"] > 0).all() and (events["oi_drop_pct"] > 0).all()
    assert (events["start"] <= events["trough_ts"]).all()
    assert (events["trough_ts"] <= events["end"]).all()
    assert (events["liquidated_long_usd"] > 0).all()
    names = {v.name for v in DEFAULT_VENUES}
    assert all(set(v.split(",")) <= names for v in events["venues"])
    assert events["severity"].value_counts().sort("count")["severity"][-1] == "mild"


def test_oi_falls_several_percent_within_an_hour_of_a_cascade(
    result: SimulationResult, aggregate: pl.DataFrame
) -> None:
    drops = []
    for event in result.events.iter_rows(named=True):
        series = aggregate.filter(pl.col("symbol") == event["symbol"])
        before = series.filter(pl.col("ts") < event["start"]).tail(1)
        hour = series.filter(
            pl.col("ts").is_between(event["start"], event["start"] + timedelta(hours=1))
        )
        if before.height and hour.height:
            drops.append(100.0 * (1.0 - hour["oi"].min() / before["oi"][0]))
    assert len(drops) >= 0.8 * result.events.height
    assert np.median(drops) >= 4.0
    assert np.mean(np.array(drops) >= 3.0) >= 0.8


def test_precursors_are_informative_but_noisy(
    result: SimulationResult, aggregate: pl.DataFrame
) -> None:
    """Funding is high before most cascades, yet a high funding is no certainty."""
    horizon = timedelta(hours=4)
    rows = []
    for symbol in SYMBOLS:
        series = aggregate.filter(pl.col("symbol") == symbol)
        starts = result.events.filter(pl.col("symbol") == symbol)["start"]
        ts, funding = series["ts"], series["funding"].to_numpy()
        ahead = np.zeros(series.height, dtype=bool)
        for start in starts:
            ahead |= ((ts >= start - horizon) & (ts < start)).to_numpy()
        before = [
            np.searchsorted(ts.to_numpy(), np.datetime64(s.replace(tzinfo=None))) - 1
            for s in starts
        ]
        rank = [(funding < funding[i]).mean() for i in before if i >= 0]
        top = funding > np.quantile(funding, 0.9)
        rows.append(
            (np.median(rank), np.mean(np.array(rank) < 0.9), ahead[top].mean(), ahead.mean())
        )
    median_rank, weak_share, hit_rate, base_rate = np.array(rows).mean(axis=0)
    assert median_rank > 0.65  # cascades come after unusually high funding ...
    assert weak_share > 0.1  # ... but not always from its top decile
    assert hit_rate > 2 * base_rate  # a build-up raises the odds ...
    assert hit_rate < 0.5  # ... without making a cascade certain


def test_cascades_come_from_liquidations(result: SimulationResult) -> None:
    events = result.events
    assert (events["max_rounds"] >= 1).all()
    assert events["impact_share"].median() > 0.2
    assert (events["precursor_strength"] >= 0).all()


# --- configuration ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"days": -1.0}, r"SimulationConfig\.days must be a finite number > 0, got -1\.0"),
        ({"days": 5000}, r"SimulationConfig\.days must be <= 3660"),
        ({"seed": -2}, r"SimulationConfig\.seed"),
        ({"bad_row_rate": 0.5}, r"SimulationConfig\.bad_row_rate must be <= 0\.01"),
        ({"bar": timedelta(seconds=30)}, r"SimulationConfig\.bar"),
        ({"bar": "5 parsecs"}, r"SimulationConfig\.bar must be a duration"),
        ({"tail_df": 2.0}, r"SimulationConfig\.tail_df must be > 2"),
        ({"impact_coef": 0.0}, r"SimulationConfig\.impact_coef"),
        ({"wick_recovery": 1.5}, r"SimulationConfig\.wick_recovery must be in \[0, 1\]"),
        ({"garch_alpha": 0.999}, r"SimulationConfig\.garch_alpha"),
        ({"start": datetime(2025, 1, 1, 0, 1, tzinfo=UTC)}, r"SimulationConfig\.start"),
        ({"start": datetime(2025, 1, 1)}, r"SimulationConfig\.start"),
        ({"venues": ()}, r"SimulationConfig\.venues must be a non-empty tuple"),
        ({"venues": DEFAULT_VENUES[:1] * 2}, r"SimulationConfig\.venues must be unique"),
        ({"bar": timedelta(minutes=1)}, r"SimulationConfig\.venues .*hyperliquid"),
    ],
)
def test_bad_config_values_name_the_field(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SimulationConfig(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: replace(DEFAULT_VENUES[0], name="Binance"), r"VenueSpec\('Binance'\)\.name"),
        (lambda: replace(DEFAULT_VENUES[0], kind="otc"), r"\.kind must be 'cex' or 'dex'"),
        (lambda: replace(DEFAULT_VENUES[0], leverage_mean=1.0), r"\.leverage_mean must be"),
        (lambda: replace(DEFAULT_VENUES[0], oi_noise=-0.1), r"\.oi_noise must be in"),
        (lambda: replace(DEFAULT_VENUES[0], gap_median="soon"), r"\.gap_median must be"),
        (lambda: replace(DEFAULT_ASSETS[0], symbol="btc"), r"AssetSpec\('btc'\)\.symbol"),
        (lambda: replace(DEFAULT_ASSETS[0], vol_annual=0.0), r"AssetSpec\('BTC'\)\.vol_annual"),
        (
            lambda: AssetSpec("SOL", start_price=150.0, vol_annual=0.8, market_beta=1.5),
            r"\.market_beta must be in \[0, 1\]",
        ),
    ],
)
def test_bad_spec_values_name_the_field(build: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build()  # type: ignore[operator]


def test_durations_may_be_written_as_text() -> None:
    config = SimulationConfig(bar="1h", vol_halflife="12h")  # type: ignore[arg-type]
    assert config.bar == timedelta(hours=1) and config.vol_halflife == timedelta(hours=12)
    venue = VenueSpec("kraken", "cex", leverage_mean=5.0, oi_share=0.1, gap_median="30m")  # type: ignore[arg-type]
    assert venue.gap_median == timedelta(minutes=30)


def test_other_bars_and_custom_markets_run() -> None:
    venues = (DEFAULT_VENUES[0], DEFAULT_VENUES[3])
    assets = (DEFAULT_ASSETS[0], AssetSpec("SOL", start_price=150.0, vol_annual=0.9))
    res = simulate(
        SimulationConfig(days=10, bar=timedelta(hours=1), venues=venues, assets=assets, seed=1)
    )
    assert set(res.panel["symbol"].unique()) == {"BTC", "SOL"}
    report = validate(res.panel, bar=timedelta(hours=1), arrival_order=True)
    assert report.n_quarantined == res.injected_bad_rows >= 1
    assert report.valid.height > 0.95 * 10 * 24 * 4


def test_progress_is_reported_from_zero_to_one() -> None:
    seen: list[float] = []
    simulate(small(days=1.0), progress=seen.append)
    assert len(seen) > 10 and seen[-1] == 1.0
    assert all(0.0 <= f <= 1.0 for f in seen) and seen == sorted(seen)


def test_help_documents_the_mechanism_and_every_parameter() -> None:
    text = help_text()
    for word in (
        "cascade",
        "funding",
        "liquidat",
        "impact_coef",
        "leverage_mean",
        "depth_usd",
        "hyperliquid",
        "gap_rate_per_day",
        "bad_row_rate",
    ):
        assert word in text, word
