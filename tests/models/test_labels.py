"""Cascade labels, their events and report: hand-built panels with known answers, the
real 1h sample, and the simulator's ground truth."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from oihedge.features.schema import conform, infer_bar
from oihedge.models.label_params import LabelConfig, LabelParams
from oihedge.models.label_report import EVENT_SCHEMA, label_events, label_report, match_events
from oihedge.models.labels import cascade_labels

START = datetime(2025, 1, 1, tzinfo=UTC)
BAR = timedelta(minutes=15)
H = timedelta(hours=4)
K = int(H / BAR)  # bars in the horizon
Y = "y_cascade_4h"
PARAMS = LabelParams(liq_window=timedelta(hours=12))


# --- hand-built panels ---------------------------------------------------------------


def calm_close(n: int, seed: int = 0, sigma: float = 0.002) -> np.ndarray:
    """A quiet price around 100 whose per-bar log returns alternate +-``sigma``.

    The volatility is ``sigma`` per bar, yet the price never wanders (a random walk would
    fall 2 sigma within a horizon now and then, which with an OI drop *is* a cascade).
    """
    level = 100.0 * (1 + 0.01 * seed)
    return level * np.exp(sigma * (np.arange(n) % 2))


def build(
    n: int,
    venues: dict[str, dict[str, np.ndarray | None]],
    *,
    symbol: str = "BTC",
    bar: timedelta = BAR,
) -> pl.DataFrame:
    """A panel from per-venue arrays ``close``, ``low``, ``oi``, ``liq`` (NaN = null).

    A row exists where the venue has a close or an OI value (as in the real data).
    """
    frames = []
    ts = pl.datetime_range(START + bar, START + bar * n, bar, time_zone="UTC", eager=True)
    for venue, cols in venues.items():
        data = {
            name: cols.get(key) if cols.get(key) is not None else np.full(n, np.nan)
            for key, name in (
                ("close", "close"),
                ("low", "low"),
                ("oi", "oi_usd"),
                ("liq", "liq_long_usd"),
            )
        }
        frame = pl.DataFrame({"ts": ts, **data}).with_columns(
            pl.lit(venue).alias("venue"),
            pl.lit(symbol).alias("symbol"),
            pl.col("ts").alias("known_at"),
            pl.max_horizontal("close", "low").alias("high"),
        )
        frame = frame.with_columns(pl.col(pl.Float64).fill_nan(None))
        frames.append(frame.filter(pl.col("close").is_not_null() | pl.col("oi_usd").is_not_null()))
    return conform(pl.concat(frames, how="diagonal"))


def crash_panel(
    n: int = 300,
    c: int = 200,
    *,
    price_drop: float = 0.08,
    oi_drop: float = 0.10,
    wick_only: bool = False,
    symbol: str = "BTC",
    seed: int = 0,
) -> pl.DataFrame:
    """Two price venues, two OI venues; at bar ``c`` price and OI fall (or not)."""
    close = calm_close(n, seed)
    low = close * 0.999
    if wick_only:
        low[c] = close[c] * (1 - price_drop)
    else:
        close[c:] *= 1 - price_drop
        low[c:] = close[c:] * 0.999
    oi = np.linspace(1e9, 1.02e9, n)
    oi[c:] *= 1 - oi_drop
    return build(
        n,
        {
            "binanceusdm": {"close": close, "low": low},
            "bybit": {"close": close * 1.0005, "low": low * 1.0005},
            "hyperliquid": {"oi": 2 * oi},
            "lighter": {"oi": oi},
        },
        symbol=symbol,
    )


def labels_of(panel: pl.DataFrame, params: LabelParams | LabelConfig = PARAMS) -> pl.DataFrame:
    return cascade_labels(panel, params).with_row_index("bar", offset=0)


def positive_bars(labels: pl.DataFrame, symbol: str = "BTC") -> list[int]:
    return labels.filter(pl.col("symbol") == symbol, pl.col(Y) == 1)["bar"].to_list()


# --- the label on hand-built cases ---------------------------------------------------


@pytest.mark.parametrize("vol_estimator", ["mad", "std"])
def test_clear_cascade_is_positive_exactly_within_h_before_it(vol_estimator):
    c = 200
    params = LabelParams(liq_window=timedelta(hours=12), vol_estimator=vol_estimator)
    labels = labels_of(crash_panel(c=c), params)
    # the window (t, t + H] holds bar c exactly for t in [c - K, c - 1]
    assert positive_bars(labels) == list(range(c - K, c))
    row = labels.row(c - 5, named=True)
    assert row["y_fwd_oi_drop_pct"] == pytest.approx(10.0, abs=0.2)
    assert row["y_fwd_price_drop_pct"] > 8.0
    assert 0.5 < row["y_price_threshold_pct"] < 3.0
    assert row["y_fwd_coverage"] == 1.0 and row["y_fwd_liq_confirmed"] is None
    # decided (0) just before and after, not null
    assert labels[Y][c - K - 1] == 0 and labels[Y][c] == 0


def test_the_wick_alone_counts_because_cascades_are_intrabar():
    labels = labels_of(crash_panel(wick_only=True))
    assert positive_bars(labels) == list(range(200 - K, 200))


@pytest.mark.parametrize(
    ("price_drop", "oi_drop"),
    [(0.08, 0.0), (0.08, 0.03), (0.0, 0.10), (0.004, 0.10)],
    ids=["price-without-oi", "price-with-small-oi", "oi-without-price", "oi-with-noise-price"],
)
def test_one_leg_alone_is_not_a_cascade(price_drop, oi_drop):
    labels = labels_of(crash_panel(price_drop=price_drop, oi_drop=oi_drop))
    assert positive_bars(labels) == []
    assert labels[Y].drop_nulls().len() > 150


@pytest.mark.parametrize("how", ["oi-null", "rows-absent"])
def test_a_venue_dropping_out_of_the_feed_is_not_an_oi_crash(how):
    """hyperliquid (2/3 of OI) stops reporting OI at bar c while price falls 8%.

    'oi-null': its rows go on (it also reports a price) with a null OI; 'rows-absent':
    it reports only OI, so its rows stop. Either way the like-for-like OI is flat.
    """
    n, c = 300, 200
    close = calm_close(n)
    close[c:] *= 0.92
    oi = np.linspace(1e9, 1.02e9, n)
    hl_oi = 2 * oi
    hl_oi[c:] = np.nan
    hyperliquid = {"oi": hl_oi, "close": close if how == "oi-null" else None}
    panel = build(
        n, {"binanceusdm": {"close": close}, "hyperliquid": hyperliquid, "lighter": {"oi": oi}}
    )
    hl_rows = panel.filter(pl.col("venue") == "hyperliquid").height
    assert hl_rows == (n if how == "oi-null" else c)
    naive = panel.group_by("ts").agg(pl.col("oi_usd").sum()).sort("ts")["oi_usd"]
    assert naive[c + 5] < 0.4 * naive[c - 5]  # a naive sum would see a -66% "crash"
    labels = labels_of(panel)
    assert positive_bars(labels) == []
    assert labels.filter(pl.col("bar").is_between(c - K, c - 1))[Y].to_list() == [0] * K
    assert labels["y_fwd_oi_drop_pct"].max() < 1.0


def test_robust_volatility_keeps_the_aftershock():
    """A second, 6% crash 10h after an 8% one: the first crash's return inflates the
    24h standard deviation (threshold ~7%) and hides the aftershock; the robust (MAD)
    volatility does not."""
    n, first, second = 300, 150, 190
    close = calm_close(n)
    close[first:] *= 0.92
    close[second:] *= 0.94
    oi = np.linspace(1e9, 1.02e9, n)
    oi[first:] *= 0.9
    oi[second:] *= 0.9
    panel = build(n, {"binanceusdm": {"close": close}, "hyperliquid": {"oi": oi}})
    robust = labels_of(panel)
    plain = labels_of(panel, LabelParams(liq_window=timedelta(hours=12), vol_estimator="std"))
    assert positive_bars(robust) == list(range(first - K, first)) + list(range(second - K, second))
    assert positive_bars(plain) == list(range(first - K, first))
    assert (
        plain["y_price_threshold_pct"][second - 1]
        > 6.0
        > robust["y_price_threshold_pct"][second - 1]
    )


def test_the_last_h_and_the_first_vol_window_are_null():
    labels = labels_of(crash_panel(n=300, c=150))
    assert labels[Y][-K:].is_null().all()
    assert labels[Y][-K - 1] is not None
    # the trailing volatility needs half of vol_window (24h = 96 bars) of returns
    assert labels[Y][:47].is_null().all() and labels[Y][49] is not None


def test_no_price_or_no_oi_at_all_gives_null_labels():
    n = 200
    close = calm_close(n)
    no_oi = build(n, {"binanceusdm": {"close": close}})
    no_price = build(n, {"hyperliquid": {"oi": np.full(n, 1e9)}})
    assert cascade_labels(no_oi, PARAMS)[Y].is_null().all()
    assert cascade_labels(no_price, PARAMS)[Y].is_null().all()


def test_a_gap_in_the_feed_leaves_null_rows_on_the_grid():
    panel = crash_panel(n=300, c=200)
    hole = pl.col("ts").is_between(START + BAR * 100, START + BAR * 140)
    labels = labels_of(panel.filter(~hole))
    assert labels.height == 300  # one row per bar of the grid, data or not
    assert labels[Y][100:140].is_null().all()
    # bars whose window is mostly the hole are undecided; the cascade is still found
    assert positive_bars(labels) == list(range(200 - K, 200))


def _liq_panel(spike: float | None) -> pl.DataFrame:
    n, c = 300, 200
    panel = crash_panel(n=n, c=c)
    if spike is None:
        return panel
    liq = 1e5 * (np.arange(n) % 4)  # bounded background: its max never beats its quantile
    liq[c] = spike
    liq_frame = pl.DataFrame(
        {
            "ts": pl.datetime_range(START + BAR, START + BAR * n, BAR, time_zone="UTC", eager=True),
            "liq": liq,
        }
    )
    return (
        panel.join(liq_frame, on="ts", how="left")
        .with_columns(
            pl.when(pl.col("venue") == "binanceusdm")
            .then(pl.col("liq"))
            .otherwise(None)
            .alias("liq_long_usd")
        )
        .drop("liq")
    )


def test_liquidations_confirm_where_the_feed_exists():
    c = 200
    with_spike = labels_of(_liq_panel(5e7))
    assert positive_bars(with_spike) == list(range(c - K, c))
    assert with_spike["y_fwd_liq_confirmed"][c - 1] is True
    # the same crash without a liquidation spike is not confirmed ...
    no_spike = labels_of(_liq_panel(2e5))
    assert positive_bars(no_spike) == []
    assert no_spike["y_fwd_liq_confirmed"][c - 1] is False
    # ... unless confirmation is switched off; and without a feed it is OI + price only
    unconfirmed = LabelParams(liq_window=timedelta(hours=12), use_liquidations=False)
    assert positive_bars(labels_of(_liq_panel(2e5), unconfirmed)) == list(range(c - K, c))
    assert positive_bars(labels_of(_liq_panel(None))) == list(range(c - K, c))


def test_altcoins_get_their_own_wider_thresholds():
    panel = pl.concat([crash_panel(symbol="BTC"), crash_panel(symbol="DOGE", seed=3)])
    config = LabelConfig(
        majors=LabelParams(oi_drop_pct=5.0),
        altcoin=LabelParams(oi_drop_pct=12.0, price_drop_k=2.5),
        altcoins=frozenset({"DOGE"}),
    )
    labels = cascade_labels(panel, config).with_columns(
        pl.int_range(pl.len()).over("symbol").alias("bar")
    )
    assert positive_bars(labels, "BTC") == list(range(200 - K, 200))
    assert positive_bars(labels, "DOGE") == []  # a 10% OI fall is below the altcoin 12%
    assert config.for_symbol("DOGE").oi_drop_pct == 12.0
    assert config.for_symbol("ETH") is config.majors


def test_output_schema_and_order():
    labels = cascade_labels(pl.concat([crash_panel(symbol="ETH"), crash_panel()]), PARAMS)
    assert labels.columns[:3] == ["ts", "symbol", Y]
    assert all(c.startswith("y_") for c in labels.columns[2:])
    assert labels.schema[Y] == pl.Int8 and labels.schema["y_fwd_liq_confirmed"] == pl.Boolean
    assert labels["symbol"].unique().sort().to_list() == ["BTC", "ETH"]
    assert labels.select("symbol", "ts").is_duplicated().sum() == 0
    assert labels.equals(labels.sort("symbol", "ts"))
    empty = cascade_labels(crash_panel().head(0), PARAMS)
    assert empty.is_empty() and empty.columns == labels.columns


def test_bar_is_inferred_and_windows_are_durations():
    hourly = crash_panel(n=300).with_columns(
        (START + (pl.col("ts") - START) * 4).alias("ts"), pl.lit(None).alias("known_at")
    )
    hourly = hourly.with_columns(pl.col("ts").alias("known_at"))
    assert infer_bar(hourly["ts"]) == timedelta(hours=1)
    labels = cascade_labels(hourly, PARAMS).with_row_index("bar")
    # 4h is 4 hourly bars: the same crash is positive for the 4 bars before it
    assert positive_bars(labels) == list(range(196, 200))
    explicit = cascade_labels(hourly, PARAMS, bar=timedelta(hours=1)).with_row_index("bar")
    assert_frame_equal(labels, explicit)


def test_labels_do_not_look_past_t_plus_h():
    """Cutting the panel at T leaves every label at or before T - H unchanged."""
    panel = _liq_panel(5e7)
    full = cascade_labels(panel, PARAMS)
    for cut_bar in (150, 205, 260):
        cut = START + BAR * cut_bar
        part = cascade_labels(panel.filter(pl.col("ts") <= cut), PARAMS)
        keep = pl.col("ts") <= cut - H
        assert_frame_equal(full.filter(keep), part.filter(keep))


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda p: p.drop("oi_usd"), r"missing column 'oi_usd'"),
        (lambda p: pl.concat([p, p.head(1)]), r"1 duplicate \(ts, venue, symbol\) rows"),
        (
            lambda p: p.with_columns(
                pl.when(pl.int_range(pl.len()) == 7)
                .then(pl.col("ts") + timedelta(minutes=1))
                .otherwise(pl.col("ts"))
                .alias("ts")
            ),
            r"1 panel rows are off the 15m bar grid",
        ),
    ],
)
def test_bad_panels_raise(change, match):
    with pytest.raises(ValueError, match=match):
        cascade_labels(change(crash_panel()), PARAMS)


def test_horizon_must_be_whole_bars():
    with pytest.raises(ValueError, match=r"horizon must be a whole number of bars of 0:15:00"):
        cascade_labels(crash_panel(), LabelParams(horizon=timedelta(minutes=50)))
    with pytest.raises(ValueError, match=r"bar must be > 0"):
        cascade_labels(crash_panel(), PARAMS, bar=timedelta(0))


# --- parameters ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"horizon": timedelta(0)},
            r"horizon must be a positive timedelta, got datetime.timedelta\(0\)",
        ),
        ({"horizon": "4h"}, r"horizon must be a positive timedelta, got '4h'"),
        ({"vol_window": timedelta(hours=-1)}, r"vol_window must be a positive timedelta"),
        ({"oi_drop_pct": 0.0}, r"oi_drop_pct must be a finite number in \(0, 100\), got 0.0"),
        ({"oi_drop_pct": 100}, r"oi_drop_pct must be a finite number in \(0, 100\), got 100"),
        ({"price_drop_k": -1.0}, r"price_drop_k must be a finite number in \(0, inf\), got -1.0"),
        ({"price_drop_k": math.nan}, r"price_drop_k must be a finite number"),
        ({"liq_quantile": 1.0}, r"liq_quantile must be a finite number in \(0, 1\), got 1.0"),
        ({"min_price_drop_pct": -0.5}, r"min_price_drop_pct must be a finite number in \[0, 100\)"),
        ({"min_window_coverage": 0.0}, r"min_window_coverage must be a finite number in \(0, 1\]"),
        ({"min_history_coverage": 2}, r"min_history_coverage must be a finite number in \(0, 1\]"),
        ({"use_liquidations": "yes"}, r"use_liquidations must be a bool, got 'yes'"),
        ({"vol_estimator": "ewm"}, r"vol_estimator must be one of \('mad', 'std'\), got 'ewm'"),
        ({"oi_drop_pct": True}, r"oi_drop_pct must be a finite number"),
    ],
)
def test_bad_label_params_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LabelParams(**kwargs)


def test_label_config_from_the_shipped_configuration():
    from oihedge.pipelines.cli.config import load_config

    config = load_config(env={})
    labels = LabelConfig.from_mapping(config.labels.model_dump(), config.universe.altcoins)
    assert labels.majors.horizon == timedelta(hours=4) and labels.label_column == Y
    assert (labels.majors.oi_drop_pct, labels.majors.price_drop_k) == (5.0, 2.0)
    assert (labels.altcoin.oi_drop_pct, labels.altcoin.price_drop_k) == (8.0, 2.5)
    assert labels.altcoin.vol_window == labels.majors.vol_window == timedelta(hours=24)
    assert labels.for_symbol("NEAR") is labels.altcoin and labels.for_symbol("BTC") is labels.majors
    text = LabelConfig.from_mapping(
        {"horizon": "2h", "vol_window": "12h", "altcoin": {"liq_quantile": 0.95}}, ["HYPE"]
    )
    assert text.horizon == timedelta(hours=2) and text.label_column == "y_cascade_2h"
    assert text.altcoin.liq_quantile == 0.95 and text.majors.liq_quantile == 0.99


@pytest.mark.parametrize(
    ("mapping", "match"),
    [
        ({"horizn": "4h"}, r"labels.horizn is not a label parameter"),
        ({"altcoin": {"oi_drop": 3}}, r"labels.altcoin.oi_drop is not a label parameter"),
        ({"altcoin": {"horizon": "2h"}}, r"altcoin.horizon cannot be set"),
        ({"horizon": "4 hours"}, r"labels.horizon: duration must look like"),
        (
            {"altcoin": {"oi_drop_pct": 150.0}},
            r"oi_drop_pct must be a finite number in \(0, 100\), got 150.0",
        ),
        ({"altcoin": 3}, r"altcoin must be a mapping, got 3"),
    ],
)
def test_bad_label_config_raises(mapping, match):
    with pytest.raises(ValueError, match=match):
        LabelConfig.from_mapping(mapping, ["DOGE"])


def test_label_config_rejects_mismatched_horizons_and_a_string_of_altcoins():
    with pytest.raises(ValueError, match=r"altcoin.horizon must equal majors.horizon"):
        LabelConfig(altcoin=LabelParams(horizon=timedelta(hours=2)))
    with pytest.raises(ValueError, match=r"altcoins must be a collection of symbols, got 'DOGE'"):
        LabelConfig(altcoins="DOGE")  # type: ignore[arg-type]


# --- events, report, matching --------------------------------------------------------


def test_events_of_a_clear_cascade():
    c = 200
    labels = cascade_labels(crash_panel(c=c), PARAMS)
    events = label_events(labels, PARAMS)
    assert events.schema == pl.Schema(EVENT_SCHEMA)
    assert events.height == 1
    event = events.row(0, named=True)
    crash_ts = START + BAR * (c + 1)
    assert event["trough_ts"] == event["end"] == crash_ts
    assert crash_ts - H <= event["start"] < crash_ts
    assert event["label_start"] == crash_ts - H and event["label_end"] == crash_ts - BAR
    assert event["n_bars"] == K
    assert event["price_drop_pct"] > 8.0
    assert event["oi_drop_pct"] == pytest.approx(10.0, abs=0.2)


def test_events_merge_runs_and_split_symbols():
    panel = pl.concat([crash_panel(symbol="BTC"), crash_panel(symbol="ETH", c=120, seed=5)])
    labels = cascade_labels(panel, PARAMS)
    events = label_events(labels, PARAMS)
    assert events["symbol"].to_list() == ["ETH", "BTC"]  # sorted by start
    # a positive row removed in the middle splits the run, unless merge_gap bridges it
    holed = labels.with_columns(
        pl.when((pl.col("symbol") == "BTC") & (pl.col("ts") == START + BAR * 195))
        .then(0)
        .otherwise(pl.col(Y))
        .cast(pl.Int8)
        .alias(Y)
    )
    assert label_events(holed, PARAMS, merge_gap=BAR).height == 3
    assert label_events(holed, PARAMS).height == 2  # merged: within H / 4 of each other
    none = label_events(labels.with_columns(pl.lit(0, dtype=pl.Int8).alias(Y)), PARAMS)
    assert none.is_empty() and none.schema == pl.Schema(EVENT_SCHEMA)
    with pytest.raises(ValueError, match=r"labels have no column 'y_cascade_2h'"):
        label_events(labels, LabelParams(horizon=timedelta(hours=2)))


def test_label_report_counts():
    labels = cascade_labels(
        pl.concat([crash_panel(symbol="BTC"), crash_panel(symbol="ETH", c=120, seed=5)]), PARAMS
    )
    report = label_report(labels, label_events(labels, PARAMS))
    btc = report.by_symbol.row(0, named=True)
    assert btc["symbol"] == "BTC" and btc["n_positive"] == K and btc["n_events"] == 1
    assert btc["n_labelled"] == labels.filter(pl.col("symbol") == "BTC")[Y].drop_nulls().len()
    assert btc["base_rate"] == pytest.approx(K / btc["n_labelled"])
    assert btc["events_per_month"] == pytest.approx(1 / btc["months"])
    assert report.by_month["n_events"].sum() == 2
    as_dict = report.to_dict()
    assert as_dict["by_symbol"][0]["first_ts"].endswith("Z")


def _events(*rows: tuple[str, int, int]) -> pl.DataFrame:
    """Events from (symbol, start hour, end hour)."""
    return pl.DataFrame(
        {
            "symbol": [r[0] for r in rows],
            "start": [START + timedelta(hours=r[1]) for r in rows],
            "end": [START + timedelta(hours=r[2]) for r in rows],
        },
        schema={
            "symbol": pl.String,
            "start": pl.Datetime("us", "UTC"),
            "end": pl.Datetime("us", "UTC"),
        },
    )


def test_match_events_by_symbol_overlap_and_tolerance():
    truth = _events(("BTC", 10, 11), ("BTC", 50, 52), ("ETH", 10, 11), ("SOL", 90, 91))
    pred = _events(("BTC", 8, 10), ("BTC", 53, 54), ("ETH", 30, 31), ("SOL", 88, 92))
    exact = match_events(pred, truth, timedelta(0))
    assert (exact.n_pred_matched, exact.n_truth_matched) == (2, 2)  # BTC 10h, SOL
    assert exact.precision == 0.5 and exact.recall == 0.5
    loose = match_events(pred, truth, timedelta(hours=1))
    assert (loose.precision, loose.recall) == (0.75, 0.75)  # + BTC 53h vs 52h
    assert loose.f1 == pytest.approx(0.75)
    empty = match_events(pred.head(0), truth, timedelta(hours=1))
    assert math.isnan(empty.precision) and empty.recall == 0.0
    with pytest.raises(ValueError, match=r"tolerance must be >= 0"):
        match_events(pred, truth, timedelta(hours=-1))
    with pytest.raises(ValueError, match=r"truth_events is missing column 'end'"):
        match_events(pred, truth.drop("end"), timedelta(0))


# --- scale ---------------------------------------------------------------------------


def test_labels_of_half_a_year_of_5m_bars_are_fast():
    """180 days x 3 symbols x 4 venues of 5-minute bars (622k rows) in a few seconds."""
    bar = timedelta(minutes=5)
    n = int(timedelta(days=180) / bar)
    ts = pl.datetime_range(START + bar, START + bar * n, bar, time_zone="UTC", eager=True)
    rng = np.random.default_rng(0)
    frames = []
    for symbol in ("BTC", "ETH", "DOGE"):
        close = 100 * np.exp(np.cumsum(rng.normal(0, 0.001, n)))
        for v, venue in enumerate(("binanceusdm", "bybit", "okx", "hyperliquid")):
            frames.append(
                pl.DataFrame(
                    {
                        "ts": ts,
                        "venue": venue,
                        "symbol": symbol,
                        "close": close * (1 + 1e-4 * v),
                        "low": close * 0.998,
                        "oi_usd": 1e9 * np.exp(np.cumsum(rng.normal(0, 0.002, n))),
                        "liq_long_usd": rng.exponential(1e5, n),
                    }
                )
            )
    panel = pl.concat(frames)
    config = LabelConfig(altcoins=frozenset({"DOGE"}))
    began = time.perf_counter()
    labels = cascade_labels(panel, config)
    elapsed = time.perf_counter() - began
    assert labels.height == 3 * n
    assert elapsed < 15.0, f"labels took {elapsed:.1f} s"


# --- the real 1h sample --------------------------------------------------------------


@pytest.fixture(scope="module")
def real_panel() -> pl.DataFrame:
    from conftest import REAL_1H

    if not REAL_1H.exists():
        pytest.fail(f"the real data folder {REAL_1H} is missing")
    return pl.read_parquet(REAL_1H / "*.parquet")


@pytest.fixture(scope="module")
def real_config() -> LabelConfig:
    return LabelConfig(altcoins=frozenset({"DOGE", "HYPE", "NEAR"}))


def test_real_btc_2025_10_10_is_a_cascade(real_panel, real_config):
    """Hyperliquid BTC OI fell 4.4B -> 2.2B between 20:00 and 22:00 UTC; a wick to ~101.5k.

    The real sample has OI only from hyperliquid and lighter and no liquidation feed, so
    this label is OI (DEX venues) + price only.
    """
    labels = cascade_labels(real_panel, real_config)
    btc = labels.filter(pl.col("symbol") == "BTC")

    def at(hour: int) -> dict:
        ts = datetime(2025, 10, 10, hour, tzinfo=UTC)
        return btc.filter(pl.col("ts") == ts).row(0, named=True)

    for hour in (18, 19, 20, 21):
        assert at(hour)[Y] == 1, hour
    assert at(20)["y_fwd_oi_drop_pct"] > 45.0 and at(20)["y_fwd_price_drop_pct"] > 10.0
    assert at(22)[Y] == 0  # after the crash
    events = label_events(labels, real_config)
    oct10 = events.filter(
        pl.col("symbol") == "BTC", pl.col("trough_ts") == datetime(2025, 10, 10, 22, tzinfo=UTC)
    )
    assert oct10.height == 1 and oct10["oi_drop_pct"][0] > 45.0


def test_real_base_rates_are_rare_and_nulls_only_at_the_edges(real_panel, real_config):
    labels = cascade_labels(real_panel, real_config)
    report = label_report(labels, label_events(labels, real_config))
    rates = dict(zip(report.by_symbol["symbol"], report.by_symbol["base_rate"], strict=True))
    assert set(rates) == {"BTC", "ETH", "SOL", "DOGE", "HYPE"}
    assert all(0.001 < rate < 0.05 for rate in rates.values()), rates
    for row in report.by_symbol.iter_rows(named=True):
        assert row["n_labelled"] > 0.99 * row["n_rows"] - 60, row  # the first 12h and last 4h
    no_cut = labels.filter(pl.col("ts") <= datetime(2025, 10, 10, 18, tzinfo=UTC))
    cut = cascade_labels(
        real_panel.filter(pl.col("ts") <= datetime(2025, 10, 10, 22, tzinfo=UTC)), real_config
    ).filter(pl.col("ts") <= datetime(2025, 10, 10, 18, tzinfo=UTC))
    assert_frame_equal(no_cut, cut)


# --- the simulator's ground truth ----------------------------------------------------


@pytest.fixture(scope="module")
def simulated():
    """60 days, seed 7: the cleaned panel and the recorded cascades."""
    from oihedge.features.screening import validate
    from oihedge.pipelines.sim.simulate import SimulationConfig, simulate

    result = simulate(SimulationConfig(days=60, seed=7))
    panel = validate(result.panel, bar=timedelta(minutes=5), arrival_order=True).valid
    return panel, result.events


def _row_scores(labels: pl.DataFrame, truth: pl.DataFrame) -> tuple[float, float]:
    """(share of positive rows whose window (t, t+H] overlaps a true cascade of the
    symbol, share of true cascades with a positive row within H before they start)."""
    positive = labels.filter(pl.col(Y) == 1).select("symbol", "ts")
    pairs = positive.join(truth.select("symbol", "start", "end").with_row_index("_t"), on="symbol")
    hits = pairs.filter((pl.col("start") <= pl.col("ts") + H) & (pl.col("end") > pl.col("ts")))
    warned = pairs.filter((pl.col("ts") >= pl.col("start") - H) & (pl.col("ts") < pl.col("start")))
    return (
        hits.select("symbol", "ts").unique().height / positive.height,
        warned["_t"].n_unique() / truth.height,
    )


def test_labels_recover_the_simulators_cascades(simulated):
    """Label events vs the simulator's ground truth, with the shipped configuration.

    Measured when written (60 days, seed 7, tolerance 1h): precision 0.95, recall 0.87
    (20 label events, 30 true cascades; a label event can cover several cascades less
    than H apart); positive rows on a true cascade 1.00, cascades warned within H before
    they start 0.80. Seeds 1-3: precision 0.67-0.76, recall 0.76-0.87. Misses are mostly
    NEAR cascades under the wider altcoin thresholds (8% OI, 2.5 sigma) and cascades
    whose measured OI fell < 5%; false alarms are 5-7% OI falls with a 2-sigma dip but
    liquidations under the simulator's event rule (3% of OI within 1h). The floors leave
    margin; labels shifted by H (a timing bug) fail the row scores.
    """
    from oihedge.pipelines.cli.config import load_config

    panel, truth = simulated
    config = load_config(env={})
    params = LabelConfig.from_mapping(config.labels.model_dump(), config.universe.altcoins)
    labels = cascade_labels(panel, params)
    events = label_events(labels, params)
    match = match_events(events, truth, timedelta(hours=1))
    assert match.n_truth >= 15
    assert match.recall >= 0.6, match
    assert match.precision >= 0.5, match
    row_precision, warned = _row_scores(labels, truth)
    assert row_precision >= 0.7 and warned >= 0.6, (row_precision, warned)
    for shift in (1, -1):  # labels one horizon late / early
        bars = shift * int(H / timedelta(minutes=5))
        shifted = labels.with_columns(pl.col(Y).shift(bars).over("symbol"))
        bad_precision, bad_warned = _row_scores(shifted, truth)
        assert not (bad_precision >= 0.7 and bad_warned >= 0.6), (shift, bad_precision, bad_warned)
    report = label_report(labels, events).by_symbol
    assert report["base_rate"].max() < 0.06
