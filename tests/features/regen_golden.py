"""Regenerate the golden feature fixture -- on purpose only, with a reason.

    .venv/bin/python tests/features/regen_golden.py --reason "why the values change"

Writes ``tests/fixtures/golden/panel.parquet`` (a small, fixed panel: 2 venues x 2
symbols x 400 hourly bars, with a feed gap, a late out-of-order bar, a stretch delivered
late after an outage, 8-hourly funding on one venue, liquidations and spot depth),
``features.parquet`` (its features under the ``core`` spec) and ``spec.json``, and
appends the reason to ``README.md``. The golden test fails whenever a feature's values
change; regenerate only when the change is intended, and say why in the commit.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "tests" / "fixtures" / "golden"
sys.path.insert(0, str(REPO))

from oihedge.features.registry import CORE_V1, build_features  # noqa: E402
from oihedge.features.schema import PANEL_SCHEMA  # noqa: E402

BAR = timedelta(hours=1)
START = datetime(2025, 5, 1, tzinfo=UTC)
N_BARS = 400


def golden_panel(seed: int = 20250501) -> pl.DataFrame:
    """The golden panel (deterministic for a given numpy version's default generator)."""
    rng = np.random.default_rng(seed)
    rows = []
    for s_i, symbol in enumerate(("BTC", "ETH")):
        log_px = np.log((60_000.0, 3_000.0)[s_i]) + np.cumsum(rng.normal(0, 0.006, N_BARS))
        for v_i, venue in enumerate(("binanceusdm", "hyperliquid")):
            oi = (2e9, 6e8)[v_i] * (0.3 + s_i) * np.exp(np.cumsum(rng.normal(0, 0.004, N_BARS)))
            for i in range(N_BARS):
                ts = START + BAR * (i + 1)
                close = float(np.exp(log_px[i] + rng.normal(0, 0.0004)))
                up, down = np.abs(rng.normal(0, 0.004, 2))
                eight_hourly = venue == "binanceusdm"
                funding = (
                    float(rng.normal(8e-5, 6e-5)) if (not eight_hourly or i % 8 == 0) else None
                )
                liq = rng.exponential(2e5, 2) * (rng.random(2) < 0.25)
                rows.append(
                    {
                        "ts": ts,
                        "venue": venue,
                        "symbol": symbol,
                        "close": close,
                        "high": close * (1 + up),
                        "low": close * (1 - down),
                        "volume_usd": float(rng.uniform(1e7, 3e7)),
                        "oi_usd": float(oi[i]),
                        "funding_rate": funding,
                        "spot_close": close * 0.9996,
                        "spot_depth_usd": float(rng.uniform(5e6, 9e6)),
                        "liq_long_usd": float(liq[0]),
                        "liq_short_usd": float(liq[1]),
                        "known_at": ts + timedelta(seconds=20),
                    }
                )
    panel = pl.DataFrame(rows, schema=PANEL_SCHEMA)
    series = (pl.col("venue") == "hyperliquid") & (pl.col("symbol") == "ETH")
    gap = series & pl.col("ts").is_between(START + 150 * BAR, START + 155 * BAR)
    outage = (
        (pl.col("venue") == "binanceusdm")
        & (pl.col("symbol") == "BTC")
        & pl.col("ts").is_between(START + 200 * BAR, START + 203 * BAR)
    )
    late = series & (pl.col("ts") == START + 260 * BAR)
    return panel.filter(~gap).with_columns(
        pl.when(outage)
        .then(pl.lit(START + 203 * BAR + timedelta(minutes=7)))
        .when(late)
        .then(pl.col("ts") + 2 * BAR + timedelta(minutes=3))
        .otherwise(pl.col("known_at"))
        .alias("known_at")
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reason", required=True, help="why the golden values change")
    args = parser.parse_args(argv)
    GOLDEN.mkdir(parents=True, exist_ok=True)
    panel = golden_panel()
    built = build_features(panel, CORE_V1)
    panel.write_parquet(GOLDEN / "panel.parquet")
    built.table.write_parquet(GOLDEN / "features.parquet")
    (GOLDEN / "spec.json").write_text(
        json.dumps({"spec": built.spec.to_dict(), "sha256": built.spec.hash()}, indent=2) + "\n"
    )
    readme = GOLDEN / "README.md"
    with readme.open("a", encoding="utf-8") as handle:
        stamp = datetime.now(UTC).strftime("%Y-%m-%d")
        handle.write(f"- {stamp}: {args.reason} (spec sha256 {built.spec.hash()[:12]})\n")
    print(f"wrote {GOLDEN}: {panel.height} panel rows, {built.table.shape} features")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
