from __future__ import annotations

import multiprocessing
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from oihedge.features.schema import PANEL_SCHEMA, PanelSchemaError
from oihedge.pipelines import store as store_mod
from oihedge.pipelines.store import PanelStore
from tests_support import make_bad_rows, write_offset_panel


def test_append_is_idempotent(tmp_path, panel_factory):
    store = PanelStore(tmp_path)
    panel = panel_factory()
    first = store.append(panel)
    second = store.append(panel)
    assert first.rows_written == second.rows_written == panel.height
    stored = store.read()
    assert stored.height == panel.height
    assert stored.equals(panel.sort(["venue", "symbol", "ts"]))


def test_revision_replaces_earlier_bar(tmp_path, panel_factory):
    store = PanelStore(tmp_path)
    panel = panel_factory()
    store.append(panel)
    key = panel.row(5, named=True)
    revision = panel[5:6].with_columns(
        pl.lit(123.0).alias("oi_usd"), (pl.col("known_at") + timedelta(minutes=1)).alias("known_at")
    )
    store.append(revision)
    stored = store.read()
    assert stored.height == panel.height
    row = stored.filter(
        pl.col("ts") == key["ts"],
        pl.col("venue") == key["venue"],
        pl.col("symbol") == key["symbol"],
    )
    assert row["oi_usd"].to_list() == [123.0]


def test_append_extends_partitions_in_time_order(tmp_path, panel_factory):
    store = PanelStore(tmp_path)
    panel = panel_factory(n_bars=20)
    late, early = panel.filter(pl.col("ts") > panel["ts"].min() + timedelta(minutes=40)), None
    early = panel.join(late, on=["ts", "venue", "symbol"], how="anti")
    store.append(late)
    store.append(early)
    part = pl.read_parquet(store.partition_path("binanceusdm", "BTC"))
    assert part["ts"].is_sorted()
    assert part.height == 20


def test_quarantine_with_reasons_and_nothing_lost(tmp_path, panel_factory):
    store = PanelStore(tmp_path)
    panel = panel_factory()
    bad = make_bad_rows(panel)
    report = store.append(pl.concat([panel, bad]), source="unit test")
    assert report.quarantined == bad.height
    assert report.quarantine_reasons == {"negative_oi_usd": 1, "non_finite_close": 1, "null_key": 1}
    assert report.quarantine_file is not None and report.quarantine_file.exists()
    q = store.quarantine()
    assert q.height == bad.height
    assert set(q["reason"]) == set(report.quarantine_reasons)
    assert store.read().height + q.height == panel.height + bad.height


def test_crash_mid_write_keeps_old_data(tmp_path, panel_factory, monkeypatch):
    store = PanelStore(tmp_path)
    panel = panel_factory()
    store.append(panel)
    before = store.read()

    original = pl.DataFrame.write_parquet

    def crash(self, file, *args, **kwargs):
        original(self.head(1), file, *args, **kwargs)  # a partial file reaches the disk...
        raise OSError("disk full")  # ...and the process dies before the rename

    monkeypatch.setattr(pl.DataFrame, "write_parquet", crash)
    changed = panel.with_columns(pl.lit(1.0).alias("oi_usd"))
    with pytest.raises(OSError, match="disk full"):
        store.append(changed)
    monkeypatch.setattr(pl.DataFrame, "write_parquet", original)
    assert store.read().equals(before)
    leftovers = [p for p in tmp_path.rglob("*") if p.is_file() and ".tmp-" in p.name]
    assert leftovers == []


def test_schema_error_names_the_column(tmp_path, panel_factory):
    store = PanelStore(tmp_path)
    with pytest.raises(PanelSchemaError, match="missing column 'funding_rate'"):
        store.append(panel_factory().drop("funding_rate"))
    with pytest.raises(PanelSchemaError, match="column 'oi_usd' has type String"):
        store.append(panel_factory().with_columns(pl.col("oi_usd").cast(pl.String)))
    assert store.files() == []


def test_scan_is_lazy_and_filters(tmp_path, panel_factory):
    store = PanelStore(tmp_path)
    panel = panel_factory(n_bars=24)
    store.append(panel)
    lazy = store.scan(
        start=datetime(2025, 1, 1, 0, 30, tzinfo=UTC),
        end=datetime(2025, 1, 1, 1, 0, tzinfo=UTC),
        venues=["hyperliquid"],
        symbols=["ETH"],
    )
    assert isinstance(lazy, pl.LazyFrame)
    got = lazy.collect()
    assert got.height == 6
    assert set(got["venue"]) == {"hyperliquid"} and set(got["symbol"]) == {"ETH"}
    assert got["ts"].min() == datetime(2025, 1, 1, 0, 30, tzinfo=UTC)
    assert len(store.files(venues=["hyperliquid"], symbols=["ETH"])) == 1
    with pytest.raises(ValueError, match="timezone-aware"):
        store.scan(start=datetime(2025, 1, 1))


def test_empty_store_reads_empty_panel(tmp_path):
    store = PanelStore(tmp_path / "nothing")
    assert store.read().schema == pl.Schema(PANEL_SCHEMA)
    assert store.last_ts() == {}


def test_last_ts_per_partition(tmp_path, panel_factory):
    store = PanelStore(tmp_path)
    panel = panel_factory(n_bars=7)
    store.append(panel)
    last = store.last_ts()
    assert len(last) == 4
    assert set(last.values()) == {panel["ts"].max()}


def test_reads_flat_real_folder(real_1h_dir):
    store = PanelStore(real_1h_dir)
    assert len(store.files()) == 30
    btc = store.read(symbols=["BTC"], venues=["binanceusdm"])
    assert btc.height > 5000
    row = btc.filter(pl.col("ts") == datetime(2025, 10, 10, 22, tzinfo=UTC))
    assert row["close"].to_list() == [pytest.approx(113_253.6)]


def test_concurrent_writers_do_not_corrupt(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=write_offset_panel, args=(str(tmp_path), i)) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    stored = PanelStore(tmp_path).read()
    assert stored.height == 50


def test_atomic_write_never_leaves_tmp(tmp_path, panel_factory):
    path = tmp_path / "x.parquet"
    store_mod._atomic_write(panel_factory(n_bars=2), path)
    assert [p.name for p in tmp_path.iterdir()] == ["x.parquet"]


def test_update_mode_fills_fields_and_keeps_others(tmp_path, panel_factory):
    store = PanelStore(tmp_path)
    panel = panel_factory(n_bars=3, venues=("bybit",), symbols=("BTC",))
    prices = panel.with_columns(pl.lit(None, dtype=pl.Float64).alias("oi_usd"))
    others = [c for c in panel.columns if c not in ("ts", "venue", "symbol", "oi_usd", "known_at")]
    oi_frame = panel.with_columns(
        *[pl.lit(None, dtype=pl.Float64).alias(c) for c in others],
        (pl.col("known_at") + timedelta(minutes=2)).alias("known_at"),
    )
    store.append(prices)
    store.append(oi_frame, mode="update")
    stored = store.read()
    assert stored["close"].to_list() == panel["close"].to_list()
    assert stored["oi_usd"].to_list() == panel["oi_usd"].to_list()
    assert stored["known_at"].to_list() == oi_frame["known_at"].to_list()
    assert stored["funding_rate"].to_list() == panel["funding_rate"].to_list()
    assert store.last_ts("liq_short_usd") == {}
    assert store.last_ts("oi_usd") == {("bybit", "BTC"): panel["ts"].max()}
    with pytest.raises(ValueError, match="mode must be"):
        store.append(panel, mode="merge")  # type: ignore[arg-type]
