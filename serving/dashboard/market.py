"""The Timeline's market series, read from a panel store (the live loop's
``live.panel_dir``, or the panel a replay ran on): the price, open interest and funding
per venue, and the simulator's cascades when the panel has its ground truth."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl

from pipelines.sim_output import TRUTH
from pipelines.store import PanelStore

_TIME = "%Y-%m-%d %H:%M:%S"  # the date form Plotly reads (UTC, no offset)


def _times(column: pl.Series) -> list[str]:
    return column.dt.convert_time_zone("UTC").dt.strftime(_TIME).to_list()


def market_series(
    root: Path, symbols: list[str], start: datetime, end: datetime
) -> dict[str, dict[str, Any]]:
    """Per symbol in ``symbols``, from ``start`` to ``end`` (inclusive): ``price``
    ``{ts, usd}``, the median close across venues (USD); ``oi`` and ``funding``:
    ``{venue: {ts, value}}``, open interest (USD) and the funding rate (per funding
    interval, as a fraction) where the venue reported them; ``cascades``: ``[{start,
    end, price_drop_pct}]`` from ``_truth/cascades.parquet`` beside a simulated panel.
    Symbols the panel lacks are left out. Raises ``PanelSchemaError`` for a bad file."""
    frame = PanelStore(root).read(start=start, end=end + timedelta(microseconds=1), symbols=symbols)
    truth = root / TRUTH
    cascades = pl.read_parquet(truth) if truth.is_file() else None
    out: dict[str, dict[str, Any]] = {}
    for symbol in symbols:
        rows = frame.filter(pl.col("symbol") == symbol)
        if rows.is_empty():
            continue
        price = (
            rows.filter(pl.col("close").is_not_null())
            .group_by("ts")
            .agg(pl.col("close").median())
            .sort("ts")
        )
        entry: dict[str, Any] = {
            "price": {"ts": _times(price["ts"]), "usd": price["close"].to_list()},
            "oi": _per_venue(rows, "oi_usd"),
            "funding": _per_venue(rows, "funding_rate"),
            "cascades": [],
        }
        if cascades is not None:
            hits = cascades.filter(
                pl.col("symbol") == symbol, pl.col("end") >= start, pl.col("start") <= end
            )
            entry["cascades"] = [
                {"start": s, "end": e, "price_drop_pct": d}
                for s, e, d in zip(
                    _times(hits["start"]),
                    _times(hits["end"]),
                    hits["price_drop_pct"].to_list(),
                    strict=True,
                )
            ]
        out[symbol] = entry
    return out


def _per_venue(rows: pl.DataFrame, column: str) -> dict[str, dict[str, list[Any]]]:
    out = {}
    for venue in sorted(rows["venue"].unique().to_list()):
        part = rows.filter(pl.col("venue") == venue, pl.col(column).is_not_null()).sort("ts")
        if not part.is_empty():
            out[venue] = {"ts": _times(part["ts"]), "value": part[column].to_list()}
    return out
