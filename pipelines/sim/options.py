"""Simulated options series for a simulated panel: what a Deribit snapshot per bar would
give for BTC and ETH (``opt_oi_usd``, ``opt_put_call_oi``, ``opt_iv_atm_pct``,
``opt_rr25_pct``), on a venue of its own (``deribit``) whose rows carry nothing else.

The option market is driven by the perp market the simulator made, looking only back:

- ATM implied volatility = a base level plus a premium over the realised volatility of
  the last ``rv_window`` (mean of the venues' closes), raised by the drawdown from the
  trailing high of the last ``dd_window``: it rises into and through cascades;
- the 25-delta risk reversal starts slightly negative and turns put-heavy (more negative)
  with the drawdown and the IV premium;
- the put/call OI ratio rises with the drawdown (puts bought for protection);
- the options OI is a slow lognormal walk around a base notional per asset.

Each has small Gaussian noise; rows are known ``publish_lag`` after the bar close. The
values are plausible in shape and size, not calibrated to a period.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import polars as pl

from oihedge.features.schema import PANEL_SCHEMA, infer_bar

#: options OI (USD) around which each asset's walk moves; assets not listed have no options
BASE_OI_USD: dict[str, float] = {"BTC": 2.5e10, "ETH": 7.0e9}


@dataclass(frozen=True)
class OptionsSimConfig:
    """How the simulated option market follows the perp market."""

    venue: str = "deribit"
    rv_window: timedelta = timedelta(hours=12)
    dd_window: timedelta = timedelta(hours=24)
    base_iv_pct: float = 38.0
    iv_premium: float = 0.6  # IV per unit of realised volatility (both annualised %)
    iv_per_drawdown: float = 250.0  # IV points per unit drawdown (0.10 fall -> +25)
    rr_base_pct: float = -1.0
    rr_per_drawdown: float = -120.0  # vol points per unit drawdown (0.10 fall -> -12)
    pcr_base: float = 0.55
    pcr_per_drawdown: float = 3.0
    oi_step_vol: float = 0.002  # per-bar log step of the options OI walk
    publish_lag: timedelta = timedelta(seconds=20)


def _trailing(values: np.ndarray, bars: int, how: str) -> np.ndarray:
    """Trailing std (NaN until half the window is filled) or max over the last ``bars``
    values (inclusive)."""
    out = np.full(values.size, np.nan)
    for i in range(values.size):
        window = values[max(0, i - bars + 1) : i + 1]
        window = window[np.isfinite(window)]
        if window.size >= (max(2, bars // 2) if how == "std" else 1):
            out[i] = window.std(ddof=1) if how == "std" else window.max()
    return out


def options_rows(
    panel: pl.DataFrame, seed: int, config: OptionsSimConfig | None = None
) -> pl.DataFrame:
    """Options rows (panel schema) for the assets of ``panel`` listed in
    :data:`BASE_OI_USD`, one per bar close of the panel; empty when there is none."""
    cfg = config or OptionsSimConfig()
    rng = np.random.default_rng(seed)
    bar = infer_bar(panel)
    bars_per_year = timedelta(days=365) / bar
    frames = []
    for symbol in sorted(set(panel["symbol"].unique().to_list()) & set(BASE_OI_USD)):
        px = (
            # (finite, positive closes only: the feeds inject corrupted rows on purpose)
            panel.filter(
                pl.col("symbol") == symbol, pl.col("close").is_finite(), pl.col("close") > 0
            )
            .group_by("ts")
            .agg(pl.col("close").mean())
            .sort("ts")
        )
        close = px["close"].to_numpy()
        ret = np.concatenate(([np.nan], np.diff(np.log(close))))
        rv = _trailing(ret, int(cfg.rv_window / bar), "std") * np.sqrt(bars_per_year) * 100.0
        high = _trailing(close, int(cfg.dd_window / bar), "max")
        drawdown = np.clip(1.0 - close / high, 0.0, None)
        n = close.size
        iv = cfg.base_iv_pct + cfg.iv_premium * rv + cfg.iv_per_drawdown * drawdown
        iv = np.maximum(iv + rng.normal(0.0, 0.8, n), 5.0)
        rr = cfg.rr_base_pct + cfg.rr_per_drawdown * drawdown + rng.normal(0.0, 0.4, n)
        pcr = np.maximum(
            cfg.pcr_base + cfg.pcr_per_drawdown * drawdown + rng.normal(0.0, 0.02, n), 0.05
        )
        oi = BASE_OI_USD[symbol] * np.exp(np.cumsum(rng.normal(0.0, cfg.oi_step_vol, n)))
        frames.append(
            pl.DataFrame(
                {
                    "ts": px["ts"],
                    "venue": cfg.venue,
                    "symbol": symbol,
                    "opt_oi_usd": oi,
                    "opt_put_call_oi": pcr,
                    "opt_iv_atm_pct": iv,
                    "opt_rr25_pct": rr,
                    "known_at": px["ts"] + cfg.publish_lag,
                },
                nan_to_null=True,
            )
        )
    if not frames:
        return pl.DataFrame(schema=PANEL_SCHEMA)
    rows = pl.concat(frames)
    missing = [pl.lit(None, dtype=dt).alias(n) for n, dt in PANEL_SCHEMA.items() if n not in rows]
    return rows.with_columns(missing).select(list(PANEL_SCHEMA))
