"""What the venues publish about the simulated market: the panel rows, warts included.

The mechanism (:mod:`oihedge.pipelines.sim.market`) gives the true state; this module turns it
into :data:`oihedge.features.schema.PANEL_SCHEMA` rows as a collector would have received them:

* **Prices.** ``spot_close`` is the index (the same on every venue's row of a symbol).
  A venue's perp ``close`` is the index times ``exp(premium + price_noise * N)``;
  ``high``/``low`` are the bar's extremes (the cascade wick included) with the same basis
  and a one-sided wick noise, and always bracket ``close``.
* **Amounts.** ``oi_usd`` is the true one-side OI times ``1 + oi_noise * N``;
  ``funding_rate`` the venue's predicted rate normalised to 8h, on every bar, plus
  ``funding_noise * N``; ``volume_usd`` is opened + closed + liquidated notional plus
  liquidity providers' churn (about 2x OI a day, scaled by volatility over calm volatility);
  ``spot_depth_usd`` the spot share of the +-1% depth with 10% lognormal noise;
  ``liq_long_usd``/``liq_short_usd`` show ``liq_report_fraction`` of the liquidated
  notional (CEX public feeds throttle it) with lognormal noise of sd
  ``0.5 * (1 - fraction)``.
* **Publication.** ``known_at = ts + publish_lag + uniform(0, publish_jitter)``, always
  within one bar, so each series arrives in order. Rows are returned in arrival order
  (``known_at``, then venue, then symbol).
* **Gaps.** Outages arrive at ``gap_rate_per_day * gap_rate_scale`` per venue; lengths are
  lognormal around ``gap_median`` (sigma 1, at least one bar, at most 3 days); half hit
  every symbol of the venue, half one symbol. During an outage the series has *no rows*.
  The liquidation feed has outages of its own (half the rate, 4x longer), during which
  ``liq_long_usd``/``liq_short_usd`` are null.
* **Bad rows.** ``bad_row_rate`` of the rows (at least one when the rate is > 0 and the
  panel has a few bars) are corrupted, in equal shares: negative ``oi_usd``; non-finite
  ``close`` (NaN or +inf); a row delivered twice (an exact copy arriving right after it);
  a bar delivered late (moved to just after the next bar of its series, with that bar's
  ``known_at`` -- the late bar is then lost). With ``arrival_order=True``
  :func:`oihedge.features.screening.validate` quarantines exactly these rows (the last two as
  ``out_of_order``; without arrival order the copy is a ``duplicate_key`` and the late
  bar is accepted).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from oihedge.features.schema import PANEL_SCHEMA, UTC_US

if TYPE_CHECKING:
    from oihedge.pipelines.sim.market import MarketPath
    from oihedge.pipelines.sim.simulate import SimulationConfig

#: liquidity providers' daily turnover as a multiple of open interest
_LP_DAILY_TURNOVER = 2.0
_MAX_GAP_DAYS = 3.0
_LIQ_GAP_RATE_SHARE, _LIQ_GAP_LENGTH = 0.5, 4.0
#: the bad-row kinds, injected in equal shares
BAD_ROW_KINDS: tuple[str, ...] = ("negative_oi", "non_finite_close", "duplicate", "late")
#: only every n-th row of a series can be corrupted, so corruptions never touch each other
_BAD_ROW_SPACING = 8


def _venue_vector(config: SimulationConfig, name: str) -> np.ndarray:
    return np.array([float(getattr(v, name)) for v in config.venues])


def _outages(
    config: SimulationConfig,
    n_bars: int,
    rng: np.random.Generator,
    rate_share: float,
    length_scale: float,
) -> np.ndarray:
    """Boolean ``[bar, asset, venue]``: True where the feed is down."""
    n_a, n_v = len(config.assets), len(config.venues)
    down = np.zeros((n_bars, n_a, n_v), dtype=bool)
    bar_s = config.bar.total_seconds()
    days = n_bars * bar_s / 86400.0
    for v, venue in enumerate(config.venues):
        rate = venue.gap_rate_per_day * config.gap_rate_scale * rate_share
        median = venue.gap_median.total_seconds() * length_scale / bar_s
        for _ in range(rng.poisson(rate * days)):
            start = int(rng.integers(0, n_bars))
            length = median * math.exp(rng.standard_normal())
            length = int(min(max(round(length), 1), _MAX_GAP_DAYS * 86400.0 / bar_s))
            assets = slice(None) if rng.random() < 0.5 else int(rng.integers(0, n_a))
            down[start : start + length, assets, v] = True
    return down


def _columns(
    path: MarketPath, config: SimulationConfig, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Every panel value as ``[bar, asset, venue]`` arrays (NaN marks a missing liq feed)."""
    shape = path.oi_long.shape
    n, n_a, n_v = shape

    def noise() -> np.ndarray:
        return rng.standard_normal(shape)

    price_sd = _venue_vector(config, "price_noise")
    basis = path.premium + price_sd * noise()
    spot = np.exp(path.log_close)[:, :, None]
    close = spot * np.exp(basis)
    high = np.maximum(
        np.exp(path.log_high)[:, :, None] * np.exp(basis + np.abs(price_sd * noise())), close
    )
    low = np.minimum(
        np.exp(path.log_low)[:, :, None] * np.exp(basis - np.abs(price_sd * noise())), close
    )
    oi = path.oi_usd
    bar_days = config.bar.total_seconds() / 86400.0
    year_bars = 365.25 * 86400.0 / config.bar.total_seconds()
    calm = path.sigma * np.sqrt(year_bars) / np.array([a.vol_annual for a in config.assets])
    churn = oi * (_LP_DAILY_TURNOVER * bar_days) * calm[:, :, None] * np.exp(0.3 * noise() - 0.045)
    report = _venue_vector(config, "liq_report_fraction")
    liq_sd = 0.5 * (1.0 - report)
    liq_noise = np.exp(liq_sd * noise() - 0.5 * liq_sd**2)
    liq_down = _outages(config, n, rng, _LIQ_GAP_RATE_SHARE, _LIQ_GAP_LENGTH)
    spot_share = np.array([a.spot_depth_share for a in config.assets])
    depth = path.depth_usd * spot_share * np.exp(0.1 * rng.standard_normal((n, n_a)) - 0.005)
    return {
        "close": close,
        "high": high,
        "low": low,
        "volume_usd": path.turnover + churn,
        "oi_usd": oi * np.maximum(1.0 + _venue_vector(config, "oi_noise") * noise(), 0.5),
        "funding_rate": path.funding + _venue_vector(config, "funding_noise") * noise(),
        "spot_close": np.broadcast_to(spot, shape),
        "spot_depth_usd": np.broadcast_to(depth[:, :, None], shape),
        "liq_long_usd": np.where(liq_down, np.nan, path.liq_long * report * liq_noise),
        "liq_short_usd": np.where(liq_down, np.nan, path.liq_short * report * liq_noise),
    }


def _publication_lag_us(
    config: SimulationConfig, shape: tuple[int, ...], rng: np.random.Generator
) -> np.ndarray:
    lag = np.array([v.publish_lag.total_seconds() for v in config.venues]) * 1e6
    jitter = np.array([v.publish_jitter.total_seconds() for v in config.venues]) * 1e6
    return (lag + jitter * rng.random(shape)).astype(np.int64)


def observe(
    path: MarketPath, config: SimulationConfig, rng: np.random.Generator
) -> tuple[pl.DataFrame, int]:
    """The panel the venues would have published, in arrival order, with bad rows.

    Returns (panel with exactly the PANEL_SCHEMA columns, number of injected bad rows).
    """
    n, n_a, n_v = path.oi_long.shape
    values = _columns(path, config, rng)
    bar_us = round(config.bar.total_seconds() * 1e6)
    start_us = round(config.start.timestamp() * 1e6)
    ts = start_us + bar_us * (np.arange(n, dtype=np.int64) + 1)
    ts = np.broadcast_to(ts[:, None, None], (n, n_a, n_v))
    known = ts + _publication_lag_us(config, (n, n_a, n_v), rng)
    asset = np.broadcast_to(np.arange(n_a)[None, :, None], (n, n_a, n_v))
    venue = np.broadcast_to(np.arange(n_v)[None, None, :], (n, n_a, n_v))
    keep = ~_outages(config, n, rng, 1.0, 1.0)
    flat = {name: arr[keep] for name, arr in values.items()}
    flat.update(ts=ts[keep], known_at=known[keep], venue=venue[keep], symbol=asset[keep])
    order = np.lexsort((flat["symbol"], flat["venue"], flat["known_at"]))
    flat = {name: arr[order] for name, arr in flat.items()}
    flat, n_bad = inject_bad_rows(flat, config.bad_row_rate, rng)
    return _frame(flat, config), n_bad


def inject_bad_rows(
    flat: dict[str, np.ndarray], rate: float, rng: np.random.Generator
) -> tuple[dict[str, np.ndarray], int]:
    """Corrupt ``rate`` of the rows of arrival-ordered columns (see the module docstring).

    Returns the new columns (still in arrival order) and the number of bad rows, each of
    which validation with ``arrival_order=True`` quarantines exactly once.
    """
    n_rows = flat["ts"].size
    if rate <= 0.0 or n_rows == 0:
        return flat, 0
    series = flat["symbol"].astype(np.int64) * 1000 + flat["venue"]
    by_series = np.lexsort((np.arange(n_rows), series))
    same_next = np.append(series[by_series][1:] == series[by_series][:-1], False)
    rank = np.arange(n_rows) - np.searchsorted(series[by_series], series[by_series])
    following = np.full(n_rows, -1)
    following[by_series[same_next]] = by_series[np.flatnonzero(same_next) + 1]
    eligible_mask = np.zeros(n_rows, dtype=bool)
    eligible_mask[by_series] = (rank % _BAD_ROW_SPACING == _BAD_ROW_SPACING // 2) & same_next
    eligible = np.flatnonzero(eligible_mask)
    n_bad = min(max(1, round(rate * n_rows)), eligible.size)
    targets = np.sort(rng.choice(eligible, n_bad, replace=False))
    kinds = rng.permutation(np.arange(n_bad) % len(BAD_ROW_KINDS))
    key = np.arange(n_rows, dtype=np.float64)
    out = {name: arr.copy() for name, arr in flat.items()}
    copies = []
    for target, kind in zip(targets, kinds, strict=True):
        name = BAD_ROW_KINDS[kind]
        if name == "negative_oi":
            out["oi_usd"][target] = -abs(out["oi_usd"][target]) - 1.0
        elif name == "non_finite_close":
            out["close"][target] = np.nan if target % 2 else np.inf
        elif name == "duplicate":
            copies.append(target)
        else:
            # delivered after the next bar of its series, and known only then
            key[target] = key[following[target]] + 0.5
            out["known_at"][target] = out["known_at"][following[target]]
    copy_idx = np.array(copies, dtype=np.int64)
    out = {name: np.concatenate([arr, arr[copy_idx]]) for name, arr in out.items()}
    order = np.argsort(np.concatenate([key, copy_idx + 0.25]), kind="stable")
    return {name: arr[order] for name, arr in out.items()}, n_bad


def _frame(flat: dict[str, np.ndarray], config: SimulationConfig) -> pl.DataFrame:
    venues = [v.name for v in config.venues]
    symbols = [a.symbol for a in config.assets]
    columns: dict[str, pl.Series] = {
        "ts": pl.Series("ts", flat["ts"]).cast(UTC_US),
        "venue": pl.Series("venue", flat["venue"]).replace_strict(
            list(range(len(venues))), venues, return_dtype=pl.String
        ),
        "symbol": pl.Series("symbol", flat["symbol"]).replace_strict(
            list(range(len(symbols))), symbols, return_dtype=pl.String
        ),
        "known_at": pl.Series("known_at", flat["known_at"]).cast(UTC_US),
    }
    for name in PANEL_SCHEMA:
        if name not in columns and name not in flat:
            # the perp venues publish no options series (pipelines/sim/options.py does)
            columns[name] = pl.Series(name, [None] * flat["ts"].size, dtype=pl.Float64)
        elif name not in columns:
            # NaN marks "no feed" only in the liquidation columns; elsewhere it is a bad row
            columns[name] = pl.Series(
                name, flat[name], dtype=pl.Float64, nan_to_null=name.startswith("liq_")
            )
    return pl.DataFrame(columns).select(list(PANEL_SCHEMA))
