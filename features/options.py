"""Options features: the option market's open interest, put/call mix, implied volatility
and skew on the base, where options trade (Deribit lists BTC and ETH; every other symbol
has null options columns, so these features are null there, never zero).

Four panel columns feed the family (see :mod:`oihedge.pipelines.ingest.options` for how a venue
snapshot becomes them): ``opt_oi_usd`` (options open interest, USD), ``opt_put_call_oi``
(put OI / call OI), ``opt_iv_atm_pct`` (at-the-money implied volatility, annualised %)
and ``opt_rr25_pct`` (25-delta risk reversal, call IV - put IV in vol points; negative
when puts are dearer). Each gives:

- its level: the mean over the venues whose latest row carrying it is fresh
  (``max_staleness``);
- its change over 1h, 4h and 24h on the decision grid: a percent change for the open
  interest, a difference (in its own unit) for the ratio, the IV and the skew, which
  can sit near or cross zero;
- its z-score against its own values over the last 7 days (decision times).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from oihedge.features import formulas as f
from oihedge.features.graph import (
    Feature,
    Map,
    Reduce,
    at,
    field,
    grid_lag,
    grid_window,
    reduce,
    smap,
)
from oihedge.features.spec import ResolvedParams

CHANGE_WINDOWS: tuple[str, ...] = ("1h", "4h", "24h")
Z_WINDOW = "7d"


@dataclass(frozen=True)
class _Series:
    """One options column and how its features are named and changed."""

    column: str
    stem: str  # feature name stem: ``opt_{stem}``
    level_name: str
    unit: str
    meaning: str
    pct_change: bool  # percent change (a positive amount) or a difference


_SERIES: tuple[_Series, ...] = (
    _Series("opt_oi_usd", "oi", "opt_oi_usd", "USD", "options open interest", True),
    _Series("opt_put_call_oi", "pcr", "opt_pcr", "ratio", "put/call open-interest ratio", False),
    _Series("opt_iv_atm_pct", "iv", "opt_iv_atm_pct", "vol %", "ATM implied volatility", False),
    _Series("opt_rr25_pct", "rr25", "opt_rr25_pct", "vol pts", "25-delta risk reversal", False),
)


def options_level(column: str) -> Reduce:
    """Mean of ``column`` over the venues whose latest row carrying it is fresh."""
    return reduce("mean", at(field(column)))


def _change(series: _Series, window: str) -> Callable[[ResolvedParams], Map]:
    def build(p: ResolvedParams) -> Map:
        now = options_level(series.column)
        return smap(f.pct_change if series.pct_change else f.diff, now, grid_lag(now, window))

    return build


def _features() -> list[Feature]:
    out: list[Feature] = []
    for s in _SERIES:
        out.append(
            Feature(
                s.level_name,
                "options",
                None,
                s.unit,
                f"Level of the {s.meaning} (mean over fresh venue rows that carry it).",
                lambda p, c=s.column: options_level(c),
            )
        )
        for window in CHANGE_WINDOWS:
            unit = "%" if s.pct_change else s.unit
            how = "percent change" if s.pct_change else "difference"
            suffix = "_pct" if s.pct_change else ""
            out.append(
                Feature(
                    f"opt_{s.stem}_chg_{window}{suffix}",
                    "options",
                    window,
                    unit,
                    f"Change of the {s.meaning} over {window} ({how}, decision grid).",
                    _change(s, window),
                )
            )
        out.append(
            Feature(
                f"opt_{s.stem}_z_{Z_WINDOW}",
                "options",
                Z_WINDOW,
                "z",
                f"z-score of the {s.meaning} against its values over the last 7 days "
                "(decision times); null when the window is flat.",
                lambda p, c=s.column: grid_window(options_level(c), Z_WINDOW, "z"),
            )
        )
    return out


FEATURES: list[Feature] = _features()
