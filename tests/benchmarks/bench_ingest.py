"""Backfill 30 days x 4 venues x 3 symbols (5m bars) from replayed pages; target < 10 s CPU.

The venues' pages are rendered once (a warm-up run fills the replay cache), then the
measured run replays them through ccxt's real HTTP layer, parser and rate limiter
(virtual time: nothing sleeps), our pagination, normalisation and the store. The network
is not measured. The rate-limit accounting gives what a real backfill would ask for:
requests per venue and the time ccxt's limiter (and the venues' documented per-endpoint
limits) would make it take, venues one after the other or concurrently.

Exits 1 when the CPU target is missed.
"""

from __future__ import annotations

import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parents[1]), str(HERE.parent), str(HERE)]

from _measure import check, measure, peak_rss_mib  # noqa: E402
from ccxt_replay import Router, sync_collectors  # noqa: E402
from ccxt_venues import SyntheticVenues, venue_router  # noqa: E402

from oihedge.pipelines.ingest.incremental import IngestPlan, ingest  # noqa: E402
from oihedge.pipelines.ingest.venues import VENUES  # noqa: E402
from oihedge.pipelines.store import PanelStore  # noqa: E402

NOW = datetime(2024, 4, 10, 9, 2, tzinfo=UTC)
DAYS = 30
SYMBOLS = ("BTC", "ETH", "SOL")
BAR = timedelta(minutes=5)
CPU_TARGET_S = 10.0


def backfill(cache: dict) -> tuple[object, Router, PanelStore]:
    synthetic = SyntheticVenues(int(NOW.timestamp() * 1000))
    router = venue_router(list(VENUES), SYMBOLS, synthetic)
    router.cache = cache
    store = PanelStore(tempfile.mkdtemp(prefix="bench-ingest-"))
    collectors = sync_collectors(router, list(VENUES), virtual=True)
    plan = IngestPlan(symbols=SYMBOLS, since=NOW - timedelta(days=DAYS), bar=BAR)
    return ingest(store, collectors, plan, clock=lambda: NOW), router, store


def main() -> int:
    failures: list[str] = []
    cache: dict = {}
    backfill(cache)  # renders every page once
    with measure() as m:
        report, router, store = backfill(cache)
    rows = store.read()
    print(f"backfill {DAYS} d x {len(VENUES)} venues x {len(SYMBOLS)} symbols, bar 5m, replayed")
    print(
        f"  requests replayed: {len(router.log):,}; panel rows: {rows.height:,}; written: {report.rows_written:,}"
    )
    print(f"  wall {m.wall_s:.2f} s, peak RSS {peak_rss_mib():.0f} MiB")
    check(
        "CPU time",
        m.cpu_s < CPU_TARGET_S,
        f"{m.cpu_s:.2f} s (target < {CPU_TARGET_S:.0f} s)",
        failures,
    )
    check("no venue failed", not report.errors, str(report.errors or "none"), failures)
    print("  a real backfill (rate limits; network latency not included):")
    total = 0.0
    for venue_id, pacing in report.pacing.items():
        total += pacing.wait_s
        print(
            f"    {venue_id:12s} {pacing.requests:5d} requests, "
            f"{pacing.wait_s:7.1f} s = {pacing.wait_s / 60:5.1f} min under the limits"
        )
    longest = max(p.wait_s for p in report.pacing.values())
    print(
        f"    venues one after another: {total / 60:.1f} min; concurrently (default): {longest / 60:.1f} min"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
