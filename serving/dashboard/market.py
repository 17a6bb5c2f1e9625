"""The Timeline's market series, read from a panel store (the live loop's
``live.panel_dir``, or the panel a replay ran on): the price, open interest and funding
per venue, and the simulator's cascades when the panel has its ground truth."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl

from oihedge.pipelines.sim.output import TRUTH
from oihedge.pipelines.store import PanelStore

_TIME = "%Y-%m-%d %H:%M:%S"  # the date form Plotly reads (UTC, no offset)


def _times(column: pl.Series) -> list[str]:
    return column.dt.convert_time_zone("UTC").dt.strftime(_TIME).to_list()


def market_series(
    root: Path,
    symbols: list[str],
    start: datetime,
    end: datetime,
    max_points: int | None = None,
) -> dict[str, dict[str, Any]]:
    """Per symbol in ``symbols``, from ``start`` to ``end`` (inclusive): ``price``
    ``{ts, usd}``, the median close across venues (USD); ``oi`` and ``funding``:
    ``{venue: {ts, value}}``, open interest (USD) and the funding rate (per funding
    interval, as a fraction) where the venue reported them; ``cascades``: ``[{start,
    end, price_drop_pct}]`` from ``_truth/cascades.parquet`` beside a simulated panel.
    Symbols the panel lacks are left out; with ``max_points``, each series keeps every
    k-th point (and its last) to stay within it. Raises ``PanelSchemaError`` for a bad
    file."""
    frame = PanelStore(root).read(start=start, end=end + timedelta(microseconds=1), symbols=symbols)
    truth = root / TRUTH
    cascades = pl.read_parquet(truth) if truth.is_file() else None
    out: dict[str, dict[str, Any]] = {}
    for symbol in symbols:
        rows = frame.filter(pl.col("symbol") == symbol)
        if rows.is_empty():
            continue
        price = _every(
            rows.filter(pl.col("close").is_not_null())
            .group_by("ts")
            .agg(pl.col("close").median())
            .sort("ts"),
            max_points,
        )
        entry: dict[str, Any] = {
            "price": {"ts": _times(price["ts"]), "usd": price["close"].to_list()},
            "oi": _per_venue(rows, "oi_usd", max_points),
            "funding": _per_venue(rows, "funding_rate", max_points),
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


def _every(frame: pl.DataFrame, max_points: int | None) -> pl.DataFrame:
    """Every k-th row of ``frame`` and its last, at most about ``max_points`` rows."""
    if max_points is None or frame.height <= max_points:
        return frame
    step = -(-frame.height // max_points)
    index = pl.int_range(pl.len())
    return frame.filter((index % step == 0) | (index == pl.len() - 1))


def _per_venue(
    rows: pl.DataFrame, column: str, max_points: int | None
) -> dict[str, dict[str, list[Any]]]:
    out = {}
    for venue in sorted(rows["venue"].unique().to_list()):
        part = _every(
            rows.filter(pl.col("venue") == venue, pl.col(column).is_not_null()).sort("ts"),
            max_points,
        )
        if not part.is_empty():
            out[venue] = {"ts": _times(part["ts"]), "value": part[column].to_list()}
    return out
