"""Correlation features: how each asset moves with the others and with the portfolio,
how stable that is, and whether OI builds up across assets together.

Returns are taken on the decision grid: a symbol's one-bar return at ``t`` is the mean,
over venues fresh at both ``t`` and ``t - bar``, of the change in the venue's latest log
close. The portfolio is the equal-weight mean of the symbols' returns. Correlations are
Pearson over the decision times in ``(t - window, t]`` where both series have a value.
"""

from __future__ import annotations

from oihedge.features import formulas as f
from oihedge.features.graph import (
    Corr,
    CorrOthers,
    CorrPair,
    CrossMean,
    Feature,
    Reduce,
    at,
    field,
    grid_lag,
    grid_window,
    reduce,
    row_map,
    smap,
    venue_lag,
    venue_map,
)
from oihedge.features.oi_divergence import oi_log_change_bar
from oihedge.features.schema import parse_duration
from oihedge.features.spec import ResolvedParams

RET_WINDOWS = ("24h", "7d")
STABILITY_WINDOW = "24h"
STABILITY_STD_WINDOW = "7d"
OI_WINDOW = "24h"


def bar_return(p: ResolvedParams) -> Reduce:
    """The symbol's one-bar log return at ``t`` (mean over venues fresh at both ends)."""
    log_close = at(row_map(f.log_of, field("close")))
    return reduce("mean", venue_map(f.diff, log_close, venue_lag(log_close, p.bar)))


def corr_port(p: ResolvedParams, window: str) -> Corr:
    ret = bar_return(p)
    return Corr(ret, CrossMean(ret), parse_duration(window))


def _features() -> list[Feature]:
    out: list[Feature] = []
    for w in RET_WINDOWS:
        out += [
            Feature(
                f"corr_ret_port_{w}",
                "correlation",
                w,
                "corr",
                f"Correlation over {w} of the asset's bar returns with the equal-weight "
                "portfolio of all assets.",
                lambda p, w=w: corr_port(p, w),
            ),
            Feature(
                f"corr_ret_others_{w}",
                "correlation",
                w,
                "corr",
                f"Mean correlation over {w} of the asset's bar returns with each other asset's.",
                lambda p, w=w: CorrOthers(bar_return(p), parse_duration(w)),
            ),
            Feature(
                f"corr_ret_btc_eth_{w}",
                "correlation",
                w,
                "corr",
                f"Correlation over {w} of BTC's and ETH's bar returns (the market's anchor "
                "pair); the same value on every asset's row, null without both.",
                lambda p, w=w: CorrPair(bar_return(p), "BTC", "ETH", parse_duration(w)),
            ),
        ]
    out += [
        Feature(
            "corr_ret_port_24h_chg_24h",
            "correlation",
            STABILITY_WINDOW,
            "corr",
            "Change of the 24h asset-portfolio correlation over the last 24h.",
            lambda p: smap(
                f.diff, corr_port(p, "24h"), grid_lag(corr_port(p, "24h"), STABILITY_WINDOW)
            ),
        ),
        Feature(
            "corr_ret_port_24h_std_7d",
            "correlation",
            STABILITY_STD_WINDOW,
            "corr",
            "Standard deviation over 7d of the 24h asset-portfolio correlation (instability).",
            lambda p: grid_window(corr_port(p, "24h"), STABILITY_STD_WINDOW, "std"),
        ),
        Feature(
            "corr_oi_port_24h",
            "correlation",
            OI_WINDOW,
            "corr",
            "Correlation over 24h of the asset's aggregate OI bar changes with the mean "
            "OI change of all assets (leverage building everywhere at once).",
            lambda p: Corr(
                oi_log_change_bar(p), CrossMean(oi_log_change_bar(p)), parse_duration(OI_WINDOW)
            ),
        ),
        Feature(
            "corr_oi_others_24h",
            "correlation",
            OI_WINDOW,
            "corr",
            "Mean correlation over 24h of the asset's OI bar changes with each other asset's.",
            lambda p: CorrOthers(oi_log_change_bar(p), parse_duration(OI_WINDOW)),
        ),
    ]
    return out


FEATURES: list[Feature] = _features()
