"""Liquidation books of the simulator: leveraged positions binned by liquidation price.

Part of the market mechanism (:mod:`oihedge.pipelines.sim.market`). For one asset, each side
(longs, shorts) holds, per venue, the USD notional of open speculative positions in bins
of liquidation log-price of width ``liq_bin_width``. Whole arrays, never one object per
position: opening adds a leverage kernel at the entry bin, closing scales every bin,
liquidation empties the bins a price extreme crosses.

A long opened at log-price ``p`` with leverage ``L`` is liquidated at
``p + log(1 - 1/L + maintenance_margin)``; a short at ``p + log(1 + 1/L - mm)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from oihedge.pipelines.sim.simulate import SimulationConfig

#: leverage levels (log multipliers of a venue's leverage) with precomputed kernels
LEV_STEP = 0.05
LEV_LEVELS = 41
_MIN_LEVERAGE = 2.0
_QUANTILES = np.array([NormalDist().inv_cdf((i + 0.5) / 64) for i in range(64)])
#: fragility looks this far below the price (log) ...
_FRAGILITY_WINDOW = 0.15
#: ... for the liquidations a dip of this size (log) would set off
_DIP = 0.01


class SideBook:
    """One side of one asset: ``raw[venue, bin] * scale[venue]`` is USD notional.

    ``scale`` and ``raw_total`` are views into arrays shared by every asset, so that the
    market closes a fraction of every position of every asset with one multiplication.
    ``lo``/``hi`` bound the occupied bins.
    """

    def __init__(self, n_bins: int, scale: np.ndarray, raw_total: np.ndarray) -> None:
        self.raw = np.zeros((scale.size, n_bins))
        self.scale = scale
        self.raw_total = raw_total
        self.lo = n_bins
        self.hi = -1

    def add(self, start: int, weights: np.ndarray, raw_amount: np.ndarray, buf: np.ndarray) -> None:
        """Add ``raw_amount[venue] * weights[venue, j]`` at bins ``start + j``.

        ``raw_amount`` is USD divided by ``scale``; the caller adds it to ``raw_total``
        (once for every asset). ``buf`` is scratch space shaped like ``weights``.
        """
        np.multiply(weights, raw_amount[:, None], out=buf)
        stop = start + weights.shape[1]
        self.raw[:, start:stop] += buf
        if start < self.lo:
            self.lo = start
        if stop - 1 > self.hi:
            self.hi = stop - 1

    def take(self, first: int, last: int) -> np.ndarray:
        """Empty bins ``first..last`` (inclusive); return the USD removed per venue.

        Callers take from an end of the occupied range (longs from the top, shorts from
        the bottom), so the range shrinks accordingly.
        """
        first, last = max(first, self.lo), min(last, self.hi)
        if first > last:
            return np.zeros(self.raw.shape[0])
        seg = self.raw[:, first : last + 1]
        removed = seg.sum(axis=1)
        seg[:] = 0.0
        self.raw_total -= removed
        np.maximum(self.raw_total, 0.0, out=self.raw_total)
        if last >= self.hi:
            self.hi = first - 1
        if first <= self.lo:
            self.lo = last + 1
        return removed * self.scale

    def fold_scale(self) -> None:
        """Multiply ``scale`` into ``raw`` (keeps numbers away from underflow)."""
        self.raw *= self.scale[:, None]
        self.raw_total *= self.scale
        self.scale[:] = 1.0

    def shift(self, by: int) -> None:
        """Move the bin origin up by ``by`` bins; positions falling off the grid are lost."""
        n = self.raw.shape[1]
        new = np.zeros_like(self.raw)
        if 0 <= by < n:
            new[:, : n - by] = self.raw[:, by:]
        elif -n < by < 0:
            new[:, -by:] = self.raw[:, : n + by]
        self.raw = new
        self.raw_total[:] = new.sum(axis=1)
        self.lo, self.hi = max(self.lo - by, 0), min(self.hi - by, n - 1)


@dataclass
class AssetBooks:
    """Both sides of one asset; bin ``i`` spans log-prices ``origin + [i, i+1) * width``."""

    longs: SideBook
    shorts: SideBook
    origin: float
    width: float

    def bin_of(self, log_price: float) -> int:
        return math.floor((log_price - self.origin) / self.width)

    def position(self, log_price: float) -> float:
        """``log_price`` in bin units relative to bin centres: bin ``i`` fires past ``i``."""
        return (log_price - self.origin) / self.width - 0.5

    def recentre(self, entry: int, margin: int) -> int:
        """Re-centre the grid when bin ``entry`` comes within ``margin`` of an edge."""
        n = self.longs.raw.shape[1]
        if margin <= entry < n - margin:
            return entry
        by = entry - n // 2
        self.longs.shift(by)
        self.shorts.shift(by)
        self.origin += by * self.width
        return entry - by


@dataclass
class Impact:
    """Log-price move of forced orders worth ``usd`` against ``depth`` (+-1% book, USD).

    ``coef * 1% * u / (1 + u) ** (1 - exponent)`` with ``u = usd / depth``: linear while
    the orders are small against the book, ``~ u ** exponent`` once they eat through it.
    """

    scale: float
    exponent: float
    depth: float = 1.0

    def __call__(self, usd: float | np.ndarray) -> float | np.ndarray:
        u = usd / self.depth
        return self.scale * u / (1.0 + u) ** (1.0 - self.exponent)


def cascade(
    books: AssetBooks, extreme: float, side: int, impact: Impact, max_rounds: int
) -> tuple[float, np.ndarray, int]:
    """Liquidate the bins the intrabar ``extreme`` crosses, then those its impact crosses.

    ``side=+1`` liquidates longs (the low falls), ``-1`` shorts (the high rises). Each
    round moves the extreme by the impact of everything liquidated so far in the bar.
    Returns (log-price impact, liquidated USD per venue, rounds that liquidated).
    """
    book = books.longs if side > 0 else books.shorts
    liquidated: np.ndarray | None = None
    moved, rounds, total = 0.0, 0, 0.0
    while rounds < max_rounds:
        # a bin fires once the extreme passes its centre
        edge = books.position(extreme - side * moved)
        if side > 0:
            first = math.ceil(edge)
            if first > book.hi:
                break
            got = book.take(first, book.hi)
        else:
            last = math.floor(edge)
            if last < book.lo:
                break
            got = book.take(book.lo, last)
        usd = float(got.sum())
        if usd <= 0.0:
            break
        liquidated = got if liquidated is None else liquidated + got
        rounds += 1
        total += usd
        moved = float(impact(total))
    if liquidated is None:
        liquidated = np.zeros(book.raw.shape[0])
    return -side * moved, liquidated, rounds


def fragility(books: AssetBooks, log_price: float, impact: Impact) -> float:
    """Extra fall (%) long liquidations would add to a 1% dip, from the book as it stands.

    The fixed point of "the dip liquidates bins, their impact reaches further bins", with
    the depth in ``impact``: about 0 in calm markets, several % when leverage is built up.
    """
    book, width = books.longs, books.width
    top = books.bin_of(log_price)
    first = max(top - int(_FRAGILITY_WINDOW / width), book.lo, 0)
    last = min(top, book.hi)
    if first > last:
        return 0.0
    per_bin = (book.scale @ book.raw[:, first : last + 1])[::-1]
    held = np.cumsum(per_bin) - per_bin  # notional in the bins above each bin
    distance = (log_price - books.origin) / width - 0.5 - np.arange(last, first - 1, -1)
    reach = _DIP + impact(held)
    stops = np.flatnonzero(distance * width > reach)
    fall = reach[stops[0]] if stops.size else reach[-1]
    return 100.0 * float(fall - _DIP)


def leverage_kernels(config: SimulationConfig, side: int) -> np.ndarray:
    """Shares of new notional per liquidation-price offset, ``[asset, venue, level, j]``.

    For longs (``side=+1``) offset ``j`` is ``j - K`` bins from the entry bin, for shorts
    (``side=-1``) ``j + 1`` bins. Leverage is lognormal with mean
    ``venue.leverage_mean * asset.leverage_appetite * exp((level - 20) * 0.05)`` and sigma
    ``venue.leverage_dispersion``, clipped to [2, min(venue, asset) cap]. Rows sum to 1.
    """
    width = config.liq_bin_width
    reach = -math.log(1.0 - 1.0 / _MIN_LEVERAGE) if side > 0 else math.log(1.5)
    n_off = int(math.ceil(reach / width)) + 2
    out = np.zeros((len(config.assets), len(config.venues), LEV_LEVELS, n_off))
    for a, asset in enumerate(config.assets):
        mm = asset.maintenance_margin
        for v, venue in enumerate(config.venues):
            cap = min(venue.max_leverage, asset.max_leverage)
            disp = venue.leverage_dispersion
            for level in range(LEV_LEVELS):
                mean = venue.leverage_mean * asset.leverage_appetite
                median = mean * math.exp((level - LEV_LEVELS // 2) * LEV_STEP - 0.5 * disp**2)
                lev = np.clip(median * np.exp(disp * _QUANTILES), _MIN_LEVERAGE, cap)
                if side > 0:
                    off = np.floor(np.log(1.0 - 1.0 / lev + mm) / width).astype(int) + n_off
                else:
                    off = np.ceil(np.log(1.0 + 1.0 / lev - mm) / width).astype(int) - 1
                np.add.at(out[a, v, level], np.clip(off, 0, n_off - 1), 1.0 / _QUANTILES.size)
    return out


def initial_books(
    config: SimulationConfig,
    long_usd: np.ndarray,
    short_usd: np.ndarray,
    kernels: tuple[np.ndarray, np.ndarray],
    shared: tuple[np.ndarray, ...],
) -> list[AssetBooks]:
    """Books holding ``long_usd``/``short_usd`` ``[asset, venue]``, entered near the start.

    Entries are spread around the start price (sd 2%) at the neutral leverage level;
    positions already under water are dropped. ``shared`` holds the (scale_long,
    total_long, scale_short, total_short) ``[asset, venue]`` arrays the books view.
    """
    width = config.liq_bin_width
    k_long, k_short = kernels[0].shape[-1], kernels[1].shape[-1]
    n_bins = 2 * (k_long + k_short) + int(2.0 / width)
    mid = LEV_LEVELS // 2
    offsets = np.arange(-10, 11) * max(1, int(0.004 / width))
    weights = np.exp(-0.5 * (offsets * width / 0.02) ** 2)
    weights /= weights.sum()
    scale_l, total_l, scale_s, total_s = shared
    out = []
    for a, asset in enumerate(config.assets):
        centre = math.log(asset.start_price)
        books = AssetBooks(
            SideBook(n_bins, scale_l[a], total_l[a]),
            SideBook(n_bins, scale_s[a], total_s[a]),
            centre - (n_bins // 2) * width,
            width,
        )
        entry = books.bin_of(centre)
        for off, w in zip(offsets, weights, strict=True):
            w_long, w_short = kernels[0][a, :, mid], kernels[1][a, :, mid]
            books.longs.add(entry + off - k_long, w_long, long_usd[a] * w, w_long.copy())
            books.shorts.add(entry + off + 1, w_short, short_usd[a] * w, w_short.copy())
        total_l[a] = long_usd[a]
        total_s[a] = short_usd[a]
        books.longs.take(entry, books.longs.hi)
        books.shorts.take(books.shorts.lo, entry)
        out.append(books)
    return out
