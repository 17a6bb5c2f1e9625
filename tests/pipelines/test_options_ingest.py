"""Options in ``oihedge ingest``: one snapshot per bar, resumed, errors recorded, old panels
(written before the options columns) extended in place."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from ccxt_replay import (
    AsyncSession,
    Reply,
    Router,
    no_sockets,  # noqa: F401 - fixture
    no_wait,
    no_wait_async,
    sync_session,
)
from options_support import CHAIN_PATH, add_deribit

from oihedge.pipelines.ingest.options import options_collector
from oihedge.pipelines.ingest.options_ingest import ingest_options, ingest_options_async
from oihedge.pipelines.ingest.report import IngestReport
from oihedge.pipelines.store import PanelStore
from tests_support import make_panel

pytestmark = pytest.mark.usefixtures("no_sockets")

BAR = timedelta(minutes=5)
T0 = datetime(2024, 3, 22, 10, 0, 3, tzinfo=UTC)
GRID0 = datetime(2024, 3, 22, 10, 0, tzinfo=UTC)


def run_once(store: PanelStore, router: Router, when: datetime, symbols=("BTC", "ETH", "SOL")):
    report = IngestReport()
    collector = options_collector(session=sync_session(router), sleep=no_wait, seed=1)
    ingest_options(store, collector, symbols, BAR, clock=lambda: when, report=report)
    return report


def router_at(when: datetime) -> Router:
    router = Router()
    add_deribit(router, when)
    return router


def test_one_snapshot_per_bar_resumed_and_symbols_without_options_skipped(tmp_path) -> None:
    store = PanelStore(tmp_path / "panel")
    router = router_at(T0)
    first = run_once(store, router, T0)
    assert first.errors == {} and first.rows_written == 2
    notes = {s.symbol: s.note for s in first.series}
    assert "lists no options on SOL" in notes["SOL"] and "BTC: 56 options" in notes["BTC"]
    # the same bar again: nothing is fetched, nothing written
    again = run_once(store, router, T0 + timedelta(minutes=2))
    assert again.rows_written == 0 and len(router.requests_to(CHAIN_PATH)) == 2
    assert all("this bar already has one" in s.note for s in again.series if s.symbol != "SOL")
    # the next bar: a new snapshot
    later = T0 + BAR
    run_once(store, router_at(later), later)
    rows = store.read().sort("symbol", "ts")
    assert rows.select("symbol", "ts").rows() == [
        ("BTC", datetime(2024, 3, 22, 10, 0, tzinfo=UTC)),
        ("BTC", datetime(2024, 3, 22, 10, 5, tzinfo=UTC)),
        ("ETH", datetime(2024, 3, 22, 10, 0, tzinfo=UTC)),
        ("ETH", datetime(2024, 3, 22, 10, 5, tzinfo=UTC)),
    ]
    assert (rows["known_at"] >= rows["ts"]).all() and rows["opt_iv_atm_pct"].null_count() == 0
    assert set(rows["venue"]) == {"deribit"} and "SOL" not in set(rows["symbol"])


def test_a_failing_venue_is_recorded_and_nothing_is_written(tmp_path) -> None:
    store = PanelStore(tmp_path / "panel")
    router = router_at(T0)
    router.fail_next(CHAIN_PATH, Reply(body="<html>maintenance</html>"))
    report = run_once(store, router, T0, symbols=("BTC",))
    assert "deribit BTC option chain" in report.errors["deribit"]
    assert report.rows_written == 0


def test_an_old_panel_without_options_columns_is_extended(tmp_path) -> None:
    root = tmp_path / "panel"
    old = make_panel(n_bars=3, venues=("binanceusdm",), symbols=("BTC",), bar=BAR, start=GRID0)
    legacy = old.drop("opt_oi_usd", "opt_put_call_oi", "opt_iv_atm_pct", "opt_rr25_pct")
    path = PanelStore(root).partition_path("binanceusdm", "BTC")
    path.parent.mkdir(parents=True)
    legacy.write_parquet(path)
    store = PanelStore(root)
    assert store.read()["opt_oi_usd"].null_count() == 3  # read as null, not refused
    written = store.append(old, source="test", bar=BAR, mode="update")  # merged into it
    assert written.quarantined == 0 and written.rows_written == 3
    run_once(store, router_at(T0), T0, symbols=("BTC",))
    read = store.read()
    assert read.filter(pl.col("venue") == "binanceusdm")["opt_oi_usd"].null_count() == 3
    assert read.filter(pl.col("venue") == "deribit")["opt_oi_usd"].null_count() == 0


def test_async_ingest_writes_the_same_rows(tmp_path) -> None:
    sync_store = PanelStore(tmp_path / "a")
    run_once(sync_store, router_at(T0), T0)

    async def run() -> IngestReport:
        report = IngestReport()
        collector = options_collector(
            asynchronous=True, session=AsyncSession(router_at(T0)), sleep=no_wait_async, seed=1
        )
        try:
            await ingest_options_async(
                PanelStore(tmp_path / "b"),
                collector,
                ("BTC", "ETH"),
                BAR,
                clock=lambda: T0,
                report=report,
            )
        finally:
            await collector.close()
        return report

    assert asyncio.run(run()).rows_written == 2
    a, b = sync_store.read().sort("symbol"), PanelStore(tmp_path / "b").read().sort("symbol")
    assert a.equals(b)


def test_data_report_shows_options_coverage_per_venue_and_symbol(tmp_path) -> None:
    from click.testing import CliRunner

    from oihedge.pipelines.cli.main import app

    root = tmp_path / "panel"
    store = PanelStore(root)
    perp = make_panel(n_bars=3, venues=("binanceusdm",), symbols=("BTC",), bar=BAR, start=GRID0)
    assert store.append(perp, source="test", bar=BAR).quarantined == 0
    for k in (1, 3):  # two snapshots, one bar missed between them
        when = T0 + k * BAR
        run_once(store, router_at(when), when, symbols=("BTC",))
    target = tmp_path / "report.json"
    result = CliRunner().invoke(
        app, ["data", "report", "--panel", str(root), "--bar", "5m", "--json", str(target)]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(target.read_text())
    by_key = {(e["venue"], e["symbol"]): e for e in data["venues"]}
    deribit = by_key[("deribit", "BTC")]["series"]
    assert deribit["options"]["bars"] == 2 and deribit["options"]["coverage_pct"] == 66.67
    assert deribit["opt_rr25_pct"]["bars"] == 2
    assert "options" not in by_key[("binanceusdm", "BTC")]["series"]
    assert "deribit BTC options coverage: oi_usd 66.7%" in result.output
