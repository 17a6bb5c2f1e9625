"""What the features mean, on panels small enough to check by hand: values, nulls,
point in time, late bars, staleness, funding carried forward, reference tolerance."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl
import pytest

from oihedge.features.online.engine import replay
from oihedge.features.registry import CORE_V1, FeatureSpec, build_features
from oihedge.features.schema import PANEL_SCHEMA, infer_bar
from oihedge.features.stream import accept

T0 = datetime(2025, 1, 1, tzinfo=UTC)
H = timedelta(hours=1)


def panel(rows: list[dict[str, Any]], bar: timedelta = H) -> pl.DataFrame:
    """Rows given as ``{"i": bar index, "venue", "symbol", field: value, "lag": bars}``."""
    out = []
    for r in rows:
        ts = T0 + bar * r["i"]
        row = {c: None for c in PANEL_SCHEMA}
        row.update({k: v for k, v in r.items() if k in PANEL_SCHEMA})
        row.update(ts=ts, known_at=ts + bar * r.get("lag", 0) + r.get("delay", timedelta(0)))
        row["symbol"] = row["symbol"] or "BTC"
        out.append(row)
    return pl.DataFrame(out, schema=PANEL_SCHEMA)


def at(table: pl.DataFrame, i: int, name: str, symbol: str = "BTC", bar: timedelta = H) -> Any:
    row = table.filter(pl.col("ts") == T0 + bar * i, pl.col("symbol") == symbol)
    assert row.height == 1, f"no row at bar {i} for {symbol}"
    return row[name][0]


def both(frame: pl.DataFrame, spec: FeatureSpec = CORE_V1) -> pl.DataFrame:
    """The batch table, after checking the online backend gives the same."""
    batch = build_features(frame, spec).table
    online = replay(frame, spec)[0]
    assert batch.columns == online.columns
    for name in batch.columns[2:]:
        a, b = batch[name].to_list(), online[name].to_list()
        assert all(
            (x is None and y is None)
            or (x is not None and y is not None and math.isclose(x, y, rel_tol=1e-12))
            for x, y in zip(a, b, strict=True)
        ), name
    return batch


def two_venues(oi_a: list[float | None], oi_b: list[float | None], **extra: Any) -> pl.DataFrame:
    rows = []
    for venue, series in (("binanceusdm", oi_a), ("bybit", oi_b)):
        for i, oi in enumerate(series):
            rows.append({"i": i, "venue": venue, "oi_usd": oi, "close": 100.0 + i, **extra})
    return panel(rows)


def test_cross_venue_oi_values_by_hand() -> None:
    table = both(two_venues([100.0, 110.0], [200.0, 190.0]))
    assert at(table, 1, "oi_agg_usd") == 300.0
    assert at(table, 1, "oi_chg_1h_pct") == pytest.approx(0.0, abs=1e-12)
    assert at(table, 1, "oi_chg_max_1h_pct") == pytest.approx(10.0)
    assert at(table, 1, "oi_chg_min_1h_pct") == pytest.approx(-5.0)
    assert at(table, 1, "oi_div_xvenue_1h") == pytest.approx(15.0)
    assert at(table, 1, "oi_disp_xvenue_1h") == pytest.approx(7.5)
    assert at(table, 1, "oi_share_max_pct") == pytest.approx(100 * 190 / 300)
    assert at(table, 1, "oi_share_hhi") == pytest.approx((110 / 300) ** 2 + (190 / 300) ** 2)
    assert at(table, 1, "vol_ret_1h_pct") == pytest.approx(100 * (101 / 100 - 1))
    assert at(table, 0, "oi_chg_1h_pct") is None  # no reference yet: null, not zero


def test_venue_without_oi_contributes_nothing() -> None:
    table = both(two_venues([100.0, 110.0, 121.0], [None, None, None], funding_rate=1e-4))
    assert at(table, 2, "oi_agg_usd") == 121.0
    assert at(table, 2, "oi_share_max_pct") == pytest.approx(100.0)
    assert at(table, 2, "oi_div_xvenue_1h") is None  # one venue: no divergence
    assert at(table, 2, "funding_mean_bp8h") == pytest.approx(1.0)
    assert at(table, 2, "funding_oiw_bp8h") == pytest.approx(1.0)


def test_stale_venue_is_left_out_of_cross_venue_features() -> None:
    # bybit stops after bar 2; staleness is two bars, so from bar 5 only binance counts
    table = both(two_venues([100.0] * 7, [50.0, 50.0, 50.0]))
    assert at(table, 4, "oi_agg_usd") == 150.0
    assert at(table, 5, "oi_agg_usd") == 100.0


def test_funding_is_carried_from_settlement_up_to_its_max_age_never_zero_filled() -> None:
    rows = [
        {"i": i, "venue": "okx", "close": 100.0, "funding_rate": 2e-4 if i == 0 else None}
        for i in range(12)
    ]
    table = both(panel(rows))
    assert at(table, 0, "funding_mean_bp8h") == pytest.approx(2.0)
    assert at(table, 9, "funding_mean_bp8h") == pytest.approx(2.0)  # 9h old: still valid
    assert at(table, 10, "funding_mean_bp8h") is None  # older than funding_max_age


def test_a_row_counts_only_once_known() -> None:
    rows = [
        {"i": i, "venue": "okx", "oi_usd": 100.0 + i, "lag": 2 if i == 3 else 0} for i in range(6)
    ]
    table = both(panel(rows))
    assert at(table, 3, "oi_agg_usd") == 102.0  # bar 3 is known at bar 5 only
    assert at(table, 5, "oi_agg_usd") == 105.0


def test_out_of_order_bar_is_ignored_by_both_backends() -> None:
    rows = [{"i": i, "venue": "okx", "oi_usd": 100.0, "close": 10.0} for i in range(8) if i != 4]
    rows.append({"i": 4, "venue": "okx", "oi_usd": 1e6, "close": 10.0, "lag": 2})  # after bar 5
    frame = panel(rows)
    assert accept(frame).quarantined == {"out_of_order": 1}
    table = both(frame)
    assert table["oi_agg_usd"].max() == 100.0
    assert replay(frame, CORE_V1)[1].rejected == 1


def test_reference_within_tolerance_else_null() -> None:
    five = timedelta(minutes=5)
    keep = [i for i in range(40) if i not in (12, 13, 25, 26, 27)]
    rows = [{"i": i, "venue": "okx", "oi_usd": 100.0 + i} for i in keep]
    table = both(panel(rows, bar=five))
    # 1h back from bar 24 is bar 12 (missing): bar 11 is 5 minutes older, within 10m
    assert at(table, 24, "oi_chg_1h_pct", bar=five) == pytest.approx(100 * (124 / 111 - 1))
    assert at(table, 38, "oi_chg_1h_pct", bar=five) == pytest.approx(100 * (138 / 124 - 1))
    # from bar 39: bars 27, 26 and 25 are all missing, bar 24 is 15 minutes older: none
    assert at(table, 39, "oi_chg_1h_pct", bar=five) is None


def test_windows_under_two_bars_are_null_at_coarse_bars(make_random_panel: Any) -> None:
    day = timedelta(days=1)
    frame = make_random_panel(n_bars=30, bar=day, seed=4)
    table = both(frame)
    for name in ("oi_chg_1h_pct", "vol_ret_4h_pct", "vol_rv_4h_pct", "vol_park_24h_pct"):
        assert table[name].null_count() == table.height, name
    assert table["vol_rv_7d_pct"].drop_nulls().len() > 0


def test_negative_funding_while_oi_high_is_continuous() -> None:
    rows = []
    for i in range(30):
        oi = 100.0 if i < 26 else 100.0 * (1 + 0.05 * (i - 25))
        rows.append(
            {"i": i, "venue": "okx", "oi_usd": oi, "funding_rate": -3e-4 if i >= 28 else 1e-4}
        )
    table = both(panel(rows))
    assert at(table, 27, "funding_neg_x_oi_dev_24h") == 0.0  # funding positive
    high = at(table, 29, "funding_neg_x_oi_dev_24h")
    assert high == pytest.approx(3.0 * at(table, 29, "oi_dev_24h_pct"))
    assert high > at(table, 28, "funding_neg_x_oi_dev_24h") > 0.0


def test_features_do_not_depend_on_venue_names(make_random_panel: Any) -> None:
    frame = make_random_panel(n_bars=24 * 9, venues=("binanceusdm", "hyperliquid", "okx"), seed=8)
    renamed = frame.with_columns(
        pl.col("venue").replace({"binanceusdm": "zeta", "hyperliquid": "alpha", "okx": "mid"})
    )
    a, b = build_features(frame, CORE_V1).table, build_features(renamed, CORE_V1).table
    for name in CORE_V1.features:
        x, y = a[name].to_list(), b[name].to_list()
        assert all(
            (u is None and v is None) or math.isclose(u, v, rel_tol=1e-9, abs_tol=1e-12)
            for u, v in zip(x, y, strict=True)
        ), name


def test_bar_is_inferred_from_the_data(make_random_panel: Any) -> None:
    five = timedelta(minutes=5)
    assert infer_bar(make_random_panel(n_bars=10, bar=five)) == five
    assert infer_bar(make_random_panel(n_bars=10, bar=H)) == H
    with pytest.raises(ValueError, match="cannot infer the bar"):
        infer_bar(make_random_panel(n_bars=1))


def test_rows_off_the_bar_grid_are_left_out(make_random_panel: Any) -> None:
    frame = make_random_panel(n_bars=20, seed=2)
    odd = frame.head(1).with_columns(pl.col("ts") + timedelta(minutes=7), pl.col("known_at") + H)
    assert accept(pl.concat([frame, odd]), bar=H).quarantined == {"ts_off_1h_grid": 1}
