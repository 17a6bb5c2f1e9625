"""Volatility and liquidation features: price changes, realised and Parkinson volatility,
recent liquidation intensity.

Volatility is estimated per venue on the venue's own bars (a return is taken only
between two consecutive bars, never across a gap) and averaged over fresh venues.
Volatilities are in % per square root of a day, whatever the bar length. Liquidation
features are null where no venue publishes liquidations (the real sample has none).
"""

from __future__ import annotations

from datetime import timedelta

from oihedge.features import formulas as f
from oihedge.features.graph import At, Feature, at, field, reduce, ref, row_map, row_window, smap
from oihedge.features.oi_divergence import oi_now, price_change
from oihedge.features.spec import ResolvedParams

RET_WINDOWS = ("1h", "4h", "24h")
RV_WINDOWS = ("4h", "24h", "7d")
PARK_WINDOWS = ("4h", "24h")
LIQ_WINDOWS = ("1h", "4h")
_HL = ("high", "low")


def _bars_per_day(p: ResolvedParams) -> float:
    return timedelta(days=1) / p.bar


def realised_vol(p: ResolvedParams, window: str) -> At:
    """Per venue: sqrt(mean squared one-bar log return over ``window``), % per sqrt(day)."""
    ret = row_map(f.log_ratio, field("close"), ref("close", p.bar, None))
    mean_sq = row_window(row_map(f.square, ret), window, "mean")
    return at(row_map(f.daily_vol_pct, mean_sq, consts=(_bars_per_day(p),)))


def parkinson_vol(p: ResolvedParams, window: str) -> At:
    """Per venue: Parkinson high-low volatility over ``window``, % per sqrt(day)."""
    term = row_map(f.parkinson_term, field("high", _HL), field("low", _HL))
    mean_term = row_window(term, window, "mean")
    return at(row_map(f.daily_vol_pct, mean_term, consts=(_bars_per_day(p),)))


def liquidations(p: ResolvedParams, side: str, window: str) -> At:
    """Per venue: liquidated notional of ``side`` ("long"/"short") over ``window`` (USD)."""
    return at(row_window(field(f"liq_{side}_usd"), window, "sum"))


def _features() -> list[Feature]:
    out: list[Feature] = []
    for w in RET_WINDOWS:
        out.append(
            Feature(
                f"vol_ret_{w}_pct",
                "volatility",
                w,
                "%",
                f"Price change over {w}: mean over fresh venues of each venue's close change.",
                lambda p, w=w: price_change(p, w),
            )
        )
    for w in RV_WINDOWS:
        out.append(
            Feature(
                f"vol_rv_{w}_pct",
                "volatility",
                w,
                "%/sqrt(day)",
                f"Realised volatility over {w} from one-bar log returns, mean over venues.",
                lambda p, w=w: reduce("mean", realised_vol(p, w)),
            )
        )
    for w in PARK_WINDOWS:
        out.append(
            Feature(
                f"vol_park_{w}_pct",
                "volatility",
                w,
                "%/sqrt(day)",
                f"Parkinson (high-low range) volatility over {w}, mean over venues.",
                lambda p, w=w: reduce("mean", parkinson_vol(p, w)),
            )
        )
    for side in ("long", "short"):
        for w in LIQ_WINDOWS:
            out.append(
                Feature(
                    f"liq_{side}_{w}_bp_oi",
                    "volatility",
                    w,
                    "bp of OI",
                    f"{side.capitalize()} liquidations over {w} as basis points of OI, "
                    "summed over venues publishing both.",
                    lambda p, side=side, w=w: smap(
                        f.to_bp, reduce("ratio", liquidations(p, side, w), oi_now(p))
                    ),
                )
            )
    out += [
        Feature(
            "liq_long_usd_1h",
            "volatility",
            "1h",
            "USD",
            "Long liquidations over 1h summed over venues.",
            lambda p: reduce("sum", liquidations(p, "long", "1h")),
        ),
        Feature(
            "liq_imb_4h",
            "volatility",
            "4h",
            "fraction",
            "Liquidation imbalance over 4h: (long - short) / (long + short), in [-1, 1].",
            lambda p: smap(
                f.imbalance,
                reduce("sum", liquidations(p, "long", "4h")),
                reduce("sum", liquidations(p, "short", "4h")),
            ),
        ),
    ]
    return out


FEATURES: list[Feature] = _features()
