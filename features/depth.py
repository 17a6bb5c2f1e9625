"""Depth features: perpetual OI against spot order-book depth (within +-1%), where the
panel has depth (the simulator does; the real sample does not, so these are null there).
"""

from __future__ import annotations

from oihedge.features import formulas as f
from oihedge.features.graph import Feature, Reduce, at, field, grid_lag, reduce, smap
from oihedge.features.oi_divergence import oi_total
from oihedge.features.spec import ResolvedParams

CHANGE_WINDOW = "24h"


def spot_depth(p: ResolvedParams) -> Reduce:
    """Spot depth within +-1% (USD), mean over fresh venue rows that carry it."""
    return reduce("mean", at(field("spot_depth_usd")))


def _features() -> list[Feature]:
    return [
        Feature(
            "depth_oi_spot_x",
            "depth",
            None,
            "multiple",
            "Aggregate perp OI divided by spot depth within +-1%: how many times the "
            "spot book the leveraged positions are.",
            lambda p: smap(f.share, oi_total(p), spot_depth(p)),
        ),
        Feature(
            "depth_spot_chg_24h_pct",
            "depth",
            CHANGE_WINDOW,
            "%",
            "Change of spot depth over 24h (thinning books precede cascades).",
            lambda p: smap(f.pct_change, spot_depth(p), grid_lag(spot_depth(p), CHANGE_WINDOW)),
        ),
    ]


FEATURES: list[Feature] = _features()
