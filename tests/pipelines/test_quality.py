"""The data-quality report."""

from __future__ import annotations

from datetime import timedelta

import polars as pl
import pytest

from oihedge.features.schema import infer_bar
from oihedge.pipelines.quality import SanityLimits, data_report
from oihedge.pipelines.store import PanelStore
from tests_support import make_bad_rows, make_panel


def entry(report, venue="binanceusdm", symbol="BTC"):
    return next(e for e in report.entries if (e["venue"], e["symbol"]) == (venue, symbol))


def test_the_bar_is_read_from_the_data_not_assumed():
    assert infer_bar(make_panel(bar=timedelta(hours=1))) == timedelta(hours=1)
    assert infer_bar(make_panel(bar=timedelta(minutes=15))) == timedelta(minutes=15)
    with pytest.raises(ValueError, match="pass --bar"):
        infer_bar(make_panel(n_bars=1))


def test_coverage_and_longest_gaps():
    panel = make_panel(n_bars=48, bar=timedelta(hours=1))
    holes = panel.filter(
        ~(
            (pl.col("venue") == "binanceusdm")
            & (pl.col("symbol") == "BTC")
            & pl.int_range(pl.len()).is_between(10, 14).over("venue", "symbol")
        )
    )
    report = data_report(holes)
    e = entry(report)
    assert report.bar == timedelta(hours=1) and report.bar_source == "read from the data"
    assert e["bars"] == 43 and e["coverage_pct"] == pytest.approx(100 * 43 / 48, abs=0.01)
    assert e["longest_gaps"][0]["missing_bars"] == 5
    assert e["longest_gaps"][0]["duration"] == "5h"
    assert entry(report, "hyperliquid", "ETH")["coverage_pct"] == 100.0


def test_an_oi_jump_of_more_than_half_in_one_bar_is_flagged():
    panel = make_panel(n_bars=20)
    jump = (
        (pl.col("venue") == "hyperliquid")
        & (pl.col("symbol") == "BTC")
        & (pl.int_range(pl.len()).over("venue", "symbol") >= 12)
    )
    panel = panel.with_columns(
        pl.when(jump).then(pl.col("oi_usd") * 0.4).otherwise(pl.col("oi_usd")).alias("oi_usd")
    )
    report = data_report(panel)
    flag = entry(report, "hyperliquid", "BTC")["flags"]["oi_jump"]
    assert flag["count"] == 1 and flag["examples"][0]["pct"] == pytest.approx(-60, abs=0.5)
    assert entry(report)["flags"]["oi_jump"]["count"] == 0
    assert (
        data_report(panel, limits=SanityLimits(oi_jump_pct=70)).entries[2]["flags"]["oi_jump"][
            "count"
        ]
        == 0
    )


def test_price_basis_and_funding_flags():
    panel = make_panel(n_bars=10)
    odd = (
        (pl.col("venue") == "binanceusdm")
        & (pl.col("symbol") == "ETH")
        & (pl.int_range(pl.len()).over("venue", "symbol") == 5)
    )
    panel = panel.with_columns(
        pl.when(odd)
        .then(pl.col("spot_close") * 0.8)
        .otherwise(pl.col("spot_close"))
        .alias("spot_close"),
        pl.when(odd).then(pl.lit(0.03)).otherwise(pl.col("funding_rate")).alias("funding_rate"),
    )
    flags = entry(data_report(panel), symbol="ETH")["flags"]
    assert flags["basis"]["count"] == 1 and flags["funding_extreme"]["count"] == 1


def test_quarantined_rows_are_counted_by_reason(tmp_path):
    store = PanelStore(tmp_path)
    panel = make_panel()
    store.append(pl.concat([panel, make_bad_rows(panel)]))
    report = data_report(store.read(), store.quarantine())
    assert report.quarantine == {"negative_oi_usd": 1, "non_finite_close": 1, "null_key": 1}
    assert entry(report)["quarantined"] == {"negative_oi_usd": 1, "non_finite_close": 1}
    assert report.to_dict()["quarantined_by_reason"]["null_key"] == 1


def test_the_real_hourly_panel(real_1h_dir):
    store = PanelStore(real_1h_dir)
    report = data_report(store.read(), store.quarantine())
    assert report.bar == timedelta(hours=1)
    assert len(report.entries) == 30 and report.quarantine == {}
    hl_doge = entry(report, "hyperliquid", "DOGE")
    assert hl_doge["flags"]["oi_jump"]["count"] >= 1  # the 2025-10-10 cascade
    assert hl_doge["flags"]["oi_jump"]["examples"][0]["ts"].isoformat().startswith("2025-10-10")
    assert entry(report, "okx", "BTC")["first"].isoformat().startswith("2025-12-03")
    assert all(e["flags"]["known_before_ts"] == 0 for e in report.entries)


def test_the_real_panel_passes_validation_when_stored(real_1h_dir, tmp_path):
    real = PanelStore(real_1h_dir).read()
    store = PanelStore(tmp_path)
    report = store.append(real, source="real-1h", bar=timedelta(hours=1), arrival_order=True)
    assert report.quarantined == 0 and report.rows_written == real.height == 148_262
    assert data_report(store.read(), store.quarantine()).to_dict() == data_report(real).to_dict()
