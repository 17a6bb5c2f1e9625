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
