from __future__ import annotations

import math
from datetime import timedelta

import polars as pl
import pytest

from oihedge.features.schema import (
    PANEL_SCHEMA,
    PanelSchemaError,
    check_columns,
    conform,
    format_duration,
    infer_bar,
    parse_duration,
)
from oihedge.features.screening import validate
from tests_support import make_panel


def test_valid_panel_passes_untouched(panel_factory):
    panel = panel_factory()
    result = validate(panel, bar=timedelta(minutes=5))
    assert result.n_quarantined == 0
    assert result.valid.height == panel.height
    assert result.valid.schema == pl.Schema(PANEL_SCHEMA)


@pytest.mark.parametrize(
    ("column", "value", "reason"),
    [
        ("oi_usd", -1.0, "negative_oi_usd"),
        ("close", math.nan, "non_finite_close"),
        ("close", math.inf, "non_finite_close"),
        ("volume_usd", -5.0, "negative_volume_usd"),
        ("low", 1e9, "high_below_low"),
        ("funding_rate", math.inf, "non_finite_funding_rate"),
        ("venue", "Binance USDM", "bad_venue_name"),
        ("symbol", "btc/usdt", "bad_symbol_name"),
    ],
)
def test_bad_row_is_quarantined_with_reason(panel_factory, column, value, reason):
    panel = panel_factory()
    bad = (
        panel.with_row_index()
        .with_columns(
            pl.when(pl.col("index") == 3)
            .then(pl.lit(value))
            .otherwise(pl.col(column))
            .alias(column)
        )
        .drop("index")
    )
    result = validate(bad)
    assert result.n_quarantined == 1
    assert result.quarantine["reason"].to_list() == [reason]
    assert result.valid.height == panel.height - 1


def test_nulls_are_legal_where_nullable(panel_factory):
    panel = panel_factory().with_columns(pl.lit(None, dtype=pl.Float64).alias("close"))
    assert validate(panel).n_quarantined == 0


def test_known_at_before_bar_close_is_quarantined(panel_factory):
    panel = panel_factory(n_bars=2)
    bad = panel.with_columns((pl.col("ts") - timedelta(seconds=1)).alias("known_at"))
    result = validate(bad)
    assert set(result.reasons()) == {"known_before_bar_close"}


def test_duplicate_key_keeps_last_occurrence(panel_factory):
    panel = panel_factory(n_bars=3)
    revised = panel.head(1).with_columns(pl.lit(999.0).alias("oi_usd"))
    result = validate(pl.concat([panel, revised]))
    assert result.reasons() == {"duplicate_key": 1}
    kept = result.valid.filter(
        pl.col("ts") == panel["ts"][0],
        pl.col("venue") == panel["venue"][0],
        pl.col("symbol") == panel["symbol"][0],
    )
    assert kept["oi_usd"].to_list() == [999.0]


def test_out_of_order_only_in_arrival_mode(panel_factory):
    panel = panel_factory(n_bars=4, venues=("okx",), symbols=("BTC",))
    shuffled = pl.concat([panel[2:3], panel[0:1], panel[1:2], panel[3:4]])
    assert validate(shuffled).n_quarantined == 0
    result = validate(shuffled, arrival_order=True)
    assert result.reasons() == {"out_of_order": 2}


@pytest.mark.parametrize("arrival_order", [False, True])
def test_order_by_reads_the_frame_as_if_sorted(panel_factory, arrival_order):
    panel = panel_factory(n_bars=6, venues=("okx", "bybit"), symbols=("BTC", "ETH"))
    late = panel[5:9].with_columns(
        pl.col("known_at") + timedelta(hours=1), pl.lit(7.0).alias("oi_usd")
    )
    bad = panel[2:3].with_columns(pl.lit(-1.0).alias("oi_usd"))
    frame = pl.concat([late, panel, bad]).sample(fraction=1.0, shuffle=True, seed=3)
    order = ["known_at", "ts"]
    read = validate(frame, order_by=order, arrival_order=arrival_order)
    sorted_first = validate(frame.sort(order, maintain_order=True), arrival_order=arrival_order)
    assert read.valid.equals(sorted_first.valid)
    assert read.quarantine.equals(sorted_first.quarantine)
    assert read.n_quarantined > 1


@pytest.mark.parametrize("arrival_order", [False, True])
def test_order_by_a_frame_sorted_by_its_first_column_only(panel_factory, arrival_order):
    """Rows known at one instant, newest bar first: in order by ``known_at`` but not by
    ``ts`` within it, so they are still read oldest bar first."""
    panel = panel_factory(n_bars=6, venues=("okx", "bybit"), symbols=("BTC", "ETH"))
    frame = panel.with_columns(pl.col("known_at").max()).sort("ts", descending=True)
    order = ["known_at", "ts"]
    read = validate(frame, order_by=order, arrival_order=arrival_order)
    sorted_first = validate(frame.sort(order, maintain_order=True), arrival_order=arrival_order)
    assert read.valid.equals(sorted_first.valid)
    assert read.quarantine.equals(sorted_first.quarantine)
    assert read.n_quarantined == 0


def test_off_grid_timestamp(panel_factory):
    panel = panel_factory(n_bars=2).with_columns(
        pl.col("ts") + timedelta(seconds=7), pl.col("known_at") + timedelta(seconds=7)
    )
    assert set(validate(panel, bar=timedelta(minutes=5)).reasons()) == {"ts_off_5m_grid"}


def test_schema_errors_name_the_column(panel_factory):
    panel = panel_factory()
    with pytest.raises(PanelSchemaError, match="missing column 'oi_usd'"):
        check_columns(panel.drop("oi_usd"))
    with pytest.raises(PanelSchemaError, match="column 'close' has type String"):
        validate(panel.with_columns(pl.col("close").cast(pl.String)))
    with pytest.raises(PanelSchemaError, match="unexpected column 'oi'"):
        check_columns(panel.with_columns(pl.lit(1.0).alias("oi")))


def test_conform_casts_loose_types(panel_factory):
    panel = panel_factory(n_bars=2)
    loose = panel.with_columns(
        pl.col("ts").dt.replace_time_zone(None).dt.cast_time_unit("ns"),
        pl.col("volume_usd").cast(pl.Int64),
    ).drop("liq_short_usd")
    fixed = conform(loose)
    assert fixed.schema == pl.Schema(PANEL_SCHEMA)
    assert fixed["ts"].to_list() == panel["ts"].to_list()
    with pytest.raises(PanelSchemaError, match="missing column 'venue'"):
        conform(loose.drop("venue"))


@pytest.mark.parametrize(
    ("text", "delta"),
    [
        ("5m", timedelta(minutes=5)),
        ("4h", timedelta(hours=4)),
        ("7d", timedelta(days=7)),
        ("30s", timedelta(seconds=30)),
    ],
)
def test_parse_duration_roundtrip(text, delta):
    assert parse_duration(text) == delta
    assert format_duration(delta) == text


@pytest.mark.parametrize("text", ["5", "0h", "-4h", "4 hours", ""])
def test_parse_duration_rejects(text):
    with pytest.raises(ValueError, match="duration must"):
        parse_duration(text)


def test_real_panel_is_valid(real_1h_dir):
    frames = [pl.read_parquet(p) for p in sorted(real_1h_dir.glob("*.parquet"))]
    assert len(frames) == 30
    panel = pl.concat(frames)
    result = validate(panel, bar=timedelta(hours=1))
    assert result.n_quarantined == 0
    assert result.valid.height == 148_262


def test_the_bar_is_the_common_step_within_a_series():
    hourly = make_panel(n_bars=24, bar=timedelta(hours=1))
    assert infer_bar(hourly) == timedelta(hours=1)
    assert infer_bar(hourly["ts"]) == timedelta(hours=1)  # a Series: one series
    twice = pl.concat([hourly, hourly.head(5)])  # a repeated bar is no step of zero
    assert infer_bar(twice) == timedelta(hours=1)
    assert infer_bar(hourly.reverse()) == timedelta(hours=1)  # any row order
    with pytest.raises(ValueError, match=r"from 4 row\(s\): no series has two distinct bar"):
        infer_bar(make_panel(n_bars=1))


def test_staggered_venues_keep_their_bar_where_the_pooled_closes_halved_it():
    # the rule of pipelines/quality.py, now everyone's: features, labels and the backtest
    # took the step between the panel's pooled distinct closes, which is 30 minutes here
    hourly = make_panel(n_bars=24, venues=("binanceusdm",), bar=timedelta(hours=1))
    late = make_panel(n_bars=24, venues=("okx",), bar=timedelta(hours=1)).with_columns(
        pl.col("ts") + timedelta(minutes=30), pl.col("known_at") + timedelta(minutes=30)
    )
    panel = pl.concat([hourly, late])
    pooled = panel["ts"].unique().sort().diff().drop_nulls().mode()[0]
    assert pooled == timedelta(minutes=30)
    assert infer_bar(panel) == timedelta(hours=1)
    # on the 1h grid, the venue closing at half past is off it, not a 30-minute series
    assert validate(panel, bar=infer_bar(panel)).reasons() == {"ts_off_1h_grid": 48}
