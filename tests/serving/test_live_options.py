"""The live source fills the options columns: each bar snapshots Deribit's chains (replayed
through ccxt's HTTP layer) beside the perp venues, and the online features read them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from ccxt_replay import Reply, no_sockets, no_wait, sync_collectors, sync_session  # noqa: F401
from ccxt_venues import SyntheticVenues, venue_router
from options_support import CHAIN_PATH, add_deribit

from oihedge.features.online.engine import OnlineFeatures
from oihedge.features.registry import CORE_V2
from oihedge.pipelines.ingest.collectors import RetryPolicy
from oihedge.pipelines.ingest.normalise import to_ms
from oihedge.pipelines.ingest.options import options_collector
from oihedge.pipelines.store import PanelStore
from oihedge.serving.feeds._base import check_row
from oihedge.serving.feeds.rest import LiveSource

pytestmark = pytest.mark.usefixtures("no_sockets")

BAR = timedelta(minutes=5)
VENUES = ("binanceusdm", "okx")
T = datetime(2024, 4, 10, 9, 0, tzinfo=UTC)  # a bar close
POLLED = T + timedelta(seconds=20)  # when the poll runs (poll_delay after the close)
US = timedelta(microseconds=1)


def source(tmp_path, router, symbols=("BTC", "ETH")) -> LiveSource:
    retry = RetryPolicy(max_attempts=2)
    return LiveSource(
        PanelStore(tmp_path / "live"),
        sync_collectors(router, VENUES, retry=retry),
        symbols,
        BAR,
        poll_delay=timedelta(0),
        clock=lambda: POLLED,
        sleep=lambda _s: None,
        start=T,
        max_bars=1,
        options=options_collector(session=sync_session(router), sleep=no_wait, retry=retry),
    )


def router_with_options():
    router = venue_router(VENUES, ["BTC", "ETH"], SyntheticVenues(to_ms(POLLED)))
    add_deribit(router, POLLED)
    return router


def test_a_live_bar_carries_the_options_snapshot_and_the_features_read_it(tmp_path) -> None:
    (bar,) = list(source(tmp_path, router_with_options()))
    assert bar.errors == []
    options = [r for r in bar.rows if r["venue"] == "deribit"]
    assert sorted(r["symbol"] for r in options) == ["BTC", "ETH"]
    for row in options:
        assert check_row(row, BAR // US) is None
        assert row["ts"] == (T - datetime(1970, 1, 1, tzinfo=UTC)) // US
        assert row["opt_iv_atm_pct"] > 0 and row["opt_rr25_pct"] < 0 and row["close"] is None
    calc = OnlineFeatures(CORE_V2, bar=BAR, symbols=["BTC", "ETH"])
    for row in bar.rows:
        calc.push(row)
    values = calc.step(bar.t_us)
    names = list(CORE_V2.features)
    for symbol in ("BTC", "ETH"):
        level = values[symbol][names.index("opt_iv_atm_pct")]
        assert level == pytest.approx(
            next(r for r in options if r["symbol"] == symbol)["opt_iv_atm_pct"]
        )
    assert {r["venue"] for r in bar.rows} == {"binanceusdm", "okx", "deribit"}


def test_failing_options_leave_the_bar_without_them_and_say_why(tmp_path) -> None:
    router = router_with_options()
    router.fail_next(CHAIN_PATH, Reply(body='{"jsonrpc": "2.0", "result": [{"instr'), times=4)
    (bar,) = list(source(tmp_path, router))
    assert [(e.venue, e.kind) for e in bar.errors] == [("deribit", "garbage")]
    assert not [r for r in bar.rows if r["venue"] == "deribit"]
    assert {r["venue"] for r in bar.rows} == {"binanceusdm", "okx"}
