"""Spot depth within +-1 %: the book arithmetic, and the ingestion of spot book snapshots
replayed through ccxt's own HTTP layer and parsers (book payloads built from the venues'
documented responses, ``tests/fixtures/ccxt/<venue>/built-*``), and ``oihedge data
report``'s coverage of depth and liquidations."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from ccxt_replay import no_sockets, sync_collectors  # noqa: F401 - a fixture
from ccxt_venues import SyntheticVenues, venue_router

from oihedge.pipelines.cli.main import main
from oihedge.pipelines.ingest.incremental import IngestPlan, ingest
from oihedge.pipelines.ingest.normalise import MalformedResponseError, to_ms
from oihedge.pipelines.ingest.spot_depth import CrossedBookError, book_depth
from oihedge.pipelines.store import PanelStore

VENUES = ("binanceusdm", "bybit", "okx", "hyperliquid")
BAR = timedelta(minutes=5)
NOW = datetime(2024, 4, 10, 9, 0, 20, tzinfo=UTC)  # 20 s after a bar close
BAR_CLOSE = datetime(2024, 4, 10, 9, 0, tzinfo=UTC)


def test_depth_sums_both_sides_within_one_percent_of_mid():
    book = {
        "bids": [[99.5, 2.0], [99.0, 1.0], [98.0, 5.0]],  # 98 is 1.5 % below mid 100
        "asks": [[100.5, 1.0], [101.0, 3.0], [102.0, 7.0]],
    }
    depth = book_depth(book)
    assert depth.mid == 100.0
    assert depth.usd == pytest.approx(99.5 * 2 + 99.0 * 1 + 100.5 * 1 + 101.0 * 3)
    assert depth.complete


def test_a_book_that_stops_inside_the_band_is_flagged_a_lower_bound():
    depth = book_depth({"bids": [[99.9, 1.0]], "asks": [[100.1, 1.0], [100.5, 1.0]]})
    assert not depth.complete and depth.bid_reach == pytest.approx(0.001)


@pytest.mark.parametrize(
    ("book", "error", "match"),
    [
        ({"bids": [[101.0, 1.0]], "asks": [[100.0, 1.0]]}, CrossedBookError, "crossed book"),
        ({"bids": [[100.0, 1.0]], "asks": [[100.0, 1.0]]}, CrossedBookError, "best bid 100.0"),
        ({"bids": [], "asks": [[100.0, 1.0]]}, MalformedResponseError, "one-sided"),
        ({"bids": [[100.0, None]], "asks": [[101, 1]]}, MalformedResponseError, "not numeric"),
        ({"bids": "zzz", "asks": []}, MalformedResponseError, "not a list of levels"),
    ],
)
def test_bad_books_are_rejected_with_a_reason(book, error, match):
    with pytest.raises(error, match=match):
        book_depth(book, what="okx BTC spot book")


def _expected_depth(synthetic: SyntheticVenues, venue: str) -> float:
    """By hand: the three levels of each side within 1 % (0.3 % steps from the price)."""
    mid = synthetic.price(venue, "BTC", to_ms(NOW))
    bids = sum(mid * (1 - 0.003 * k) * (2.0 + k) for k in range(1, 4))
    asks = sum(mid * (1 + 0.003 * k) * (1.0 + k) for k in range(1, 4))
    return bids + asks


def _ingest(store, synthetic, now=NOW, venues=VENUES):  # noqa: ANN001, ANN202
    router = venue_router(venues, ["BTC"], synthetic)
    collectors = sync_collectors(router, venues)
    plan = IngestPlan(symbols=("BTC",), since=now - 2 * BAR, bar=BAR, series=("spot_depth_usd",))
    return router, ingest(store, collectors, plan, clock=lambda: now)


@pytest.mark.usefixtures("no_sockets")
def test_ingest_records_one_book_snapshot_per_bar_and_resumes(tmp_path):
    synthetic = SyntheticVenues(to_ms(NOW))
    store = PanelStore(tmp_path / "panel")
    router, report = _ingest(store, synthetic)
    assert report.errors == {}
    frame = store.read()
    for venue in ("binanceusdm", "bybit", "okx"):
        (row,) = frame.filter(pl.col("venue") == venue).to_dicts()
        assert row["ts"] == BAR_CLOSE and row["known_at"] == NOW
        # levels at 1.2 % and 1.5 % lie outside the band and are not counted
        assert row["spot_depth_usd"] == pytest.approx(_expected_depth(synthetic, venue))
    assert frame.filter(pl.col("venue") == "hyperliquid").is_empty()
    notes = {s.venue: s.note for s in report.series}
    assert "no spot book" in notes["hyperliquid"]
    # the ccxt requests went to each venue's spot book endpoint, with the documented sizes
    assert router.requests_to("/api/v3/depth")[0].params["limit"] == "1000"
    assert router.requests_to("/v5/market/orderbook")[0].params["category"] == "spot"
    assert router.requests_to("/api/v5/market/books")[0].params["sz"] == "400"
    # the same bar again: nothing fetched; the next bar: one more snapshot
    router2, again = _ingest(store, synthetic)
    assert not router2.requests_to("depth") and not router2.requests_to("orderbook")
    assert all("already has one" in s.note for s in again.series if s.venue != "hyperliquid")
    later = NOW + BAR
    _ingest(store, SyntheticVenues(to_ms(later)), now=later)
    assert store.read().filter(pl.col("venue") == "okx").height == 2


@pytest.mark.usefixtures("no_sockets")
def test_a_crossed_book_is_rejected_and_the_bar_stays_null(tmp_path):
    synthetic = SyntheticVenues(to_ms(NOW))
    synthetic.crossed.add(("bybit", "BTC"))
    store = PanelStore(tmp_path / "panel")
    _, report = _ingest(store, synthetic)
    assert report.errors == {}  # the other venues and series go on
    (bybit,) = [s for s in report.series if s.venue == "bybit"]
    assert "crossed book rejected: best bid" in bybit.note and bybit.empty_values == 1
    frame = store.read()
    assert frame.filter(pl.col("venue") == "bybit").is_empty()
    assert frame.filter(pl.col("venue") == "okx")["spot_depth_usd"].is_not_null().all()


def test_data_report_shows_depth_and_liquidation_coverage_per_venue(tmp_path, capsys):
    ts = [BAR_CLOSE - k * BAR for k in range(4)]
    rows = []
    for venue in VENUES:
        for i, t in enumerate(ts):
            has_liq = venue in ("binanceusdm", "bybit") and i < 2
            rows.append(
                {
                    "ts": t,
                    "venue": venue,
                    "symbol": "BTC",
                    "close": 60_000.0,
                    "spot_depth_usd": 5e6 if venue != "hyperliquid" and i < 3 else None,
                    "liq_long_usd": 1e5 if has_liq else None,
                    "liq_short_usd": 0.0 if has_liq else None,
                    "known_at": t,
                }
            )
    from oihedge.pipelines.ingest.normalise import to_panel

    frame = to_panel(
        pl.DataFrame(rows).with_columns(pl.col("ts", "known_at").cast(pl.Datetime("us", "UTC")))
    )
    panel = tmp_path / "panel"
    PanelStore(panel).append(frame, source="test", bar=BAR)
    report_json = tmp_path / "report.json"
    code = main(["data", "report", "--panel", str(panel), "--json", str(report_json)])
    out = capsys.readouterr().out
    assert code == 0
    entries = {e["venue"]: e for e in json.loads(report_json.read_text())["venues"]}
    assert entries["okx"]["series"]["spot_depth_usd"]["of_panel_pct"] == 75.0
    assert entries["bybit"]["series"]["liquidations"]["of_panel_pct"] == 50.0
    assert entries["binanceusdm"]["feeds"]["liquidations"]["complete"] is False
    assert entries["bybit"]["feeds"]["liquidations"]["complete"] is True
    assert entries["hyperliquid"]["feeds"]["liquidations"]["stream"] is None
    assert "binanceusdm liquidations [LOWER BOUND]" in out
    assert "one liquidation order per symbol per 1000 ms" in " ".join(out.split())
    assert "bybit liquidations:" in out


@pytest.mark.usefixtures("no_sockets")
def test_oihedge_ingest_records_depth_and_resumes(tmp_path, monkeypatch, capsys):
    from ccxt_replay import sync_session

    import oihedge.pipelines.ingest.collectors as collectors_module
    from oihedge.pipelines.ingest.collectors import Pacing

    now = datetime.now(UTC)
    router = venue_router(VENUES, ["BTC"], SyntheticVenues(to_ms(now)))
    real = collectors_module.make_exchange

    def replaying(spec, *, asynchronous=False, session=None, pacing=None, config=None, spot=False):  # noqa: ANN001, ANN202
        return real(
            spec, session=sync_session(router), pacing=pacing or Pacing(virtual=True), spot=spot
        )

    monkeypatch.setattr(collectors_module, "make_exchange", replaying)
    panel = tmp_path / "panel"
    args = ["ingest", "--symbols", "BTC", "--since", "1h", "--bar", "5m", "--panel", str(panel)]
    # the perp venues' depth only (the options snapshot, on by default, has its own tests)
    args += ["--sequential", "--no-options", "--json", str(tmp_path / "ingest.json")]
    assert main(args) == 0, capsys.readouterr().err
    frame = PanelStore(panel).read().filter(pl.col("spot_depth_usd").is_not_null())
    assert sorted(set(frame["venue"])) == ["binanceusdm", "bybit", "okx"]
    books = len(router.requests_to("depth")) + len(router.requests_to("books"))
    assert main(args) == 0  # the same bar (unless the clock crossed a bar close): resumes
    report = json.loads((tmp_path / "ingest.json").read_text())
    depth = [s for s in report["series"] if s["series"] == "spot_depth_usd"]
    fetched_again = len(router.requests_to("depth")) + len(router.requests_to("books")) - books
    stored = PanelStore(panel).read().filter(pl.col("spot_depth_usd").is_not_null())
    if datetime.now(UTC).timestamp() // 300 != now.timestamp() // 300:  # a bar closed between
        assert fetched_again == 3 and stored.height == 6
    else:
        assert fetched_again == 0 and stored.height == 3
        assert all("already has one" in s["note"] for s in depth if s["venue"] != "hyperliquid")
