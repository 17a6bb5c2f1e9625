"""Open-interest features: OI changes, deviation, cross-venue divergence, venue shares.

Per venue the OI series is the venue's accepted rows with ``oi_usd``; a venue without OI
(or whose latest OI row is staler than ``max_staleness``) contributes nothing. Every
cross-venue number is symmetric in the venues, so one model serves any venue set.

Changes over a window compare each venue's latest OI row with its row ``window``
earlier (see :func:`oihedge.features.windows.ref_tolerance`); the aggregate change is taken on the
venues that have both ends, ``sum(oi) / sum(oi_then) - 1``, so a venue joining or
dropping out does not look like a flow.
"""

from __future__ import annotations

from oihedge.features import formulas as f
from oihedge.features.graph import (
    At,
    Feature,
    Map,
    Reduce,
    VenueMap,
    at,
    field,
    reduce,
    ref,
    row_map,
    row_window,
    smap,
    venue_lag,
    venue_map,
)
from oihedge.features.schema import parse_duration
from oihedge.features.spec import ResolvedParams
from oihedge.features.windows import ref_tolerance

CHANGE_WINDOWS = ("1h", "4h", "24h")
DEV_WINDOW = "24h"
SHARE_WINDOWS = ("4h", "24h")
RATIO_WINDOW = "4h"


# -- building blocks (also used by the funding, correlation, volatility and depth families)


def oi_now(p: ResolvedParams) -> At:
    """Per venue: latest OI (USD)."""
    return at(field("oi_usd"))


def oi_then(p: ResolvedParams, window: str) -> At:
    """Per venue: OI ``window`` before the venue's latest OI row."""
    w = parse_duration(window)
    return at(ref("oi_usd", w, ref_tolerance(w, p)))


def oi_total(p: ResolvedParams) -> Reduce:
    """Aggregate OI across fresh venues (USD)."""
    return reduce("sum", oi_now(p))


def oi_change_agg(p: ResolvedParams, window: str) -> Map:
    """Aggregate OI change over ``window`` (%), on the venues with both ends."""
    return smap(f.pct_from_ratio, reduce("ratio", oi_now(p), oi_then(p, window)))


def oi_change_venues(p: ResolvedParams, window: str) -> VenueMap:
    """Per venue: OI change over ``window`` (%)."""
    return venue_map(f.pct_change, oi_now(p), oi_then(p, window))


def oi_mean(p: ResolvedParams, window: str = DEV_WINDOW) -> At:
    """Per venue: mean OI of the venue's rows over ``window`` (USD)."""
    return at(row_window(field("oi_usd"), window, "mean"))


def oi_dev_agg(p: ResolvedParams) -> Map:
    """Aggregate OI over its 24h mean, minus 1 (%)."""
    return smap(f.pct_from_ratio, reduce("ratio", oi_now(p), oi_mean(p)))


def oi_share(p: ResolvedParams) -> VenueMap:
    """Per venue: share of aggregate OI (fraction)."""
    return venue_map(f.share, oi_now(p), oi_total(p))


def oi_log_change_bar(p: ResolvedParams) -> Map:
    """Aggregate OI log change over one bar, on the venues present at both ends."""
    return smap(f.log_of, reduce("ratio", oi_now(p), venue_lag(oi_now(p), p.bar)))


def price_change(p: ResolvedParams, window: str) -> Reduce:
    """Mean over fresh venues of the venue's close change over ``window`` (%)."""
    w = parse_duration(window)
    venue_change = row_map(f.pct_change, field("close"), ref("close", w, ref_tolerance(w, p)))
    return reduce("mean", at(venue_change))


# -- the features ----------------------------------------------------------------------


def _features() -> list[Feature]:
    out = [
        Feature(
            "oi_agg_usd",
            "oi_divergence",
            None,
            "USD",
            "Aggregate open interest across fresh venues.",
            oi_total,
        ),
    ]
    for w in CHANGE_WINDOWS:
        out += [
            Feature(
                f"oi_chg_{w}_pct",
                "oi_divergence",
                w,
                "%",
                f"Aggregate OI change over {w}: sum(OI now) / sum(OI {w} ago) - 1 on the "
                "venues with both.",
                lambda p, w=w: oi_change_agg(p, w),
            ),
            Feature(
                f"oi_chg_max_{w}_pct",
                "oi_divergence",
                w,
                "%",
                f"Largest venue OI change over {w}.",
                lambda p, w=w: reduce("max", oi_change_venues(p, w)),
            ),
            Feature(
                f"oi_chg_min_{w}_pct",
                "oi_divergence",
                w,
                "%",
                f"Smallest venue OI change over {w}.",
                lambda p, w=w: reduce("min", oi_change_venues(p, w)),
            ),
            Feature(
                f"oi_div_xvenue_{w}",
                "oi_divergence",
                w,
                "pp",
                f"Cross-venue divergence: max - min of the venues' OI changes over {w} "
                "(percentage points; needs two venues). The fixed rule flags 8.",
                lambda p, w=w: reduce("spread", oi_change_venues(p, w)),
            ),
            Feature(
                f"oi_disp_xvenue_{w}",
                "oi_divergence",
                w,
                "pp",
                f"Dispersion (population std) of the venues' OI changes over {w} "
                "(needs two venues).",
                lambda p, w=w: reduce("std", oi_change_venues(p, w)),
            ),
        ]
    out += [
        Feature(
            "oi_dev_24h_pct",
            "oi_divergence",
            DEV_WINDOW,
            "%",
            "Aggregate OI over the sum of the venues' 24h mean OI, minus 1 (the 15% trigger).",
            oi_dev_agg,
        ),
        Feature(
            "oi_dev_max_24h_pct",
            "oi_divergence",
            DEV_WINDOW,
            "%",
            "Largest venue deviation of OI from its own 24h mean.",
            lambda p: reduce("max", venue_map(f.pct_change, oi_now(p), oi_mean(p))),
        ),
        Feature(
            "oi_share_max_pct",
            "oi_divergence",
            None,
            "%",
            "Share of aggregate OI held by the largest venue.",
            lambda p: smap(f.times_100, reduce("max", oi_share(p))),
        ),
        Feature(
            "oi_share_hhi",
            "oi_divergence",
            None,
            "fraction",
            "Herfindahl index of venue OI shares (1 = all OI on one venue).",
            lambda p: reduce("sum", venue_map(f.share_sq, oi_now(p), oi_total(p))),
        ),
    ]
    for w in SHARE_WINDOWS:
        out.append(
            Feature(
                f"oi_share_gain_max_{w}_pp",
                "oi_divergence",
                w,
                "pp",
                f"Largest gain of any venue's OI share over {w} (where leverage concentrates).",
                lambda p, w=w: reduce(
                    "max",
                    venue_map(f.diff_pp, oi_share(p), venue_lag(oi_share(p), parse_duration(w))),
                ),
            )
        )
    out.append(
        Feature(
            "oi_px_ratio_4h",
            "oi_divergence",
            RATIO_WINDOW,
            "ratio",
            "Aggregate OI change over 4h divided by the price change over 4h; the price "
            "change is floored at ratio_floor_pct in absolute value.",
            lambda p: smap(
                f.floored_ratio,
                oi_change_agg(p, RATIO_WINDOW),
                price_change(p, RATIO_WINDOW),
                consts=(p.ratio_floor_pct,),
            ),
        )
    )
    return out


FEATURES: list[Feature] = _features()

__all__ = [
    "FEATURES",
    "oi_change_agg",
    "oi_dev_agg",
    "oi_log_change_bar",
    "oi_now",
    "oi_total",
    "price_change",
]
