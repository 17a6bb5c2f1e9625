"""The loop's venue book: the reference price is the median close over the venues."""

from __future__ import annotations

import random
import statistics

from oihedge.serving.live.book import PriceBar, VenueBook


def test_the_price_is_statistics_median_of_the_closes_to_the_bit():
    rng = random.Random(3)
    for n in range(1, 8):
        for _ in range(500):
            closes = [rng.uniform(0.5, 2.0) * 10 ** rng.randint(-4, 5) for _ in range(n)]
            bar = PriceBar(0, {f"v{i}": c for i, c in enumerate(closes)})
            assert bar.price == float(statistics.median(closes)), closes


def test_a_new_close_at_the_same_bar_moves_the_price_and_a_newer_bar_replaces_it():
    book = VenueBook(("a", "b", "c"))
    book.accept({"venue": "a", "symbol": "BTC", "ts": 10, "close": 100.0})
    assert book.prices["BTC"].price == 100.0
    book.accept({"venue": "b", "symbol": "BTC", "ts": 10, "close": 110.0})
    assert book.prices["BTC"].price == 105.0
    book.accept({"venue": "c", "symbol": "BTC", "ts": 10, "close": 90.0})
    assert book.prices["BTC"].price == 100.0
    book.accept({"venue": "a", "symbol": "BTC", "ts": 20, "close": 120.0})
    assert book.prices["BTC"].price == 120.0 and book.prices["BTC"].ts_us == 20


def test_a_side_feed_row_alone_does_not_make_a_venue_fresh():
    book = VenueBook(("a", "b"))
    book.accept({"venue": "a", "symbol": "BTC", "ts": 10, "close": 100.0, "oi_usd": 5e8})
    # at 20: a's REST poll failed but its liquidation stream and spot book still write;
    # b sends funding only; deribit sends options only
    book.accept(
        {"venue": "a", "symbol": "BTC", "ts": 20, "liq_long_usd": 0.0, "liq_short_usd": 0.0}
    )
    book.accept({"venue": "a", "symbol": "BTC", "ts": 20, "spot_depth_usd": 3e6})
    book.accept({"venue": "b", "symbol": "BTC", "ts": 20, "funding_rate": 1e-4})
    book.accept({"venue": "deribit", "symbol": "BTC", "ts": 20, "opt_oi_usd": 1e10})
    assert book.ages("BTC", 20) == {"a": 10, "b": 0}  # deribit is no venue of the hedge
    assert book.venues("BTC") == ["a", "b"]
    assert book.prices["BTC"].ts_us == 10  # and no price came with them
