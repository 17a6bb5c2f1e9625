"""Funding features: level per venue and OI-weighted, 7-day z-score, dispersion, and
negative funding while OI is high.

``funding_rate`` in the panel is per 8 hours. A venue's funding level is its last settled
(or predicted) rate, carried forward from its row for at most ``funding_max_age`` (most
CEXs publish only on settlement bars, so rows between settlements have null funding);
it is never zero-filled. Levels are reported in basis points per 8 hours.
"""

from __future__ import annotations

from oihedge.features import formulas as f
from oihedge.features.graph import At, Feature, Map, at, field, grid_window, reduce, smap
from oihedge.features.oi_divergence import oi_dev_agg, oi_now
from oihedge.features.spec import ResolvedParams

Z_WINDOW = "7d"


def funding_now(p: ResolvedParams) -> At:
    """Per venue: the latest funding rate (per 8h), carried up to ``funding_max_age``."""
    return at(field("funding_rate"), age="funding")


def funding_mean_bp(p: ResolvedParams) -> Map:
    """Mean funding across venues (bp per 8h)."""
    return smap(f.to_bp, reduce("mean", funding_now(p)))


def _features() -> list[Feature]:
    return [
        Feature(
            "funding_mean_bp8h",
            "funding",
            None,
            "bp/8h",
            "Mean funding rate across venues with a rate no older than funding_max_age.",
            funding_mean_bp,
        ),
        Feature(
            "funding_oiw_bp8h",
            "funding",
            None,
            "bp/8h",
            "OI-weighted funding rate across venues with both funding and OI.",
            lambda p: smap(f.to_bp, reduce("wmean", funding_now(p), oi_now(p))),
        ),
        Feature(
            "funding_max_bp8h",
            "funding",
            None,
            "bp/8h",
            "Highest venue funding rate.",
            lambda p: smap(f.to_bp, reduce("max", funding_now(p))),
        ),
        Feature(
            "funding_min_bp8h",
            "funding",
            None,
            "bp/8h",
            "Lowest venue funding rate.",
            lambda p: smap(f.to_bp, reduce("min", funding_now(p))),
        ),
        Feature(
            "funding_spread_xvenue_bp8h",
            "funding",
            None,
            "bp/8h",
            "Max - min of venue funding rates (needs two venues).",
            lambda p: smap(f.to_bp, reduce("spread", funding_now(p))),
        ),
        Feature(
            "funding_disp_xvenue_bp8h",
            "funding",
            None,
            "bp/8h",
            "Dispersion (population std) of venue funding rates (needs two venues).",
            lambda p: smap(f.to_bp, reduce("std", funding_now(p))),
        ),
        Feature(
            "funding_z_7d",
            "funding",
            Z_WINDOW,
            "z",
            "z-score of the mean funding rate against its own values over the last 7 days "
            "(decision times); null when the window is flat.",
            lambda p: grid_window(funding_mean_bp(p), Z_WINDOW, "z"),
        ),
        Feature(
            "funding_neg_x_oi_dev_24h",
            "funding",
            "24h",
            "bp x %",
            "Negative funding while OI is high, continuous: max(-funding_mean_bp8h, 0) x "
            "max(oi_dev_24h_pct, 0). Zero unless funding is negative and OI above its mean.",
            lambda p: smap(f.negative_times_positive, funding_mean_bp(p), oi_dev_agg(p)),
        ),
    ]


FEATURES: list[Feature] = _features()
