"""The market panel: the one data contract between every stage of oihedge.

One long table, one row per (ts, venue, symbol) bar. This module is the only place the
schema is written down; the store, the collectors, the simulator and the feature code
all validate against it.

Structural problems (a missing column, a column of the wrong type) raise
:class:`PanelSchemaError`, naming the column, because no row of such a frame can be
trusted. Row-level problems never raise: :func:`oihedge.features.screening.validate`
quarantines the rows with a reason. The bar is read from the data by :func:`infer_bar`.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import TypeVar

import polars as pl

UTC_US = pl.Datetime("us", "UTC")

#: column -> (dtype, nullable)
PANEL_COLUMNS: dict[str, tuple[pl.DataType, bool]] = {
    "ts": (UTC_US, False),
    "venue": (pl.String(), False),
    "symbol": (pl.String(), False),
    "close": (pl.Float64(), True),
    "high": (pl.Float64(), True),
    "low": (pl.Float64(), True),
    "volume_usd": (pl.Float64(), True),
    "oi_usd": (pl.Float64(), True),
    "funding_rate": (pl.Float64(), True),
    "spot_close": (pl.Float64(), True),
    "spot_depth_usd": (pl.Float64(), True),
    "liq_long_usd": (pl.Float64(), True),
    "liq_short_usd": (pl.Float64(), True),
    # options on the base (Deribit, BTC and ETH; null for every other symbol and venue),
    # from one snapshot of the venue's option book summary per bar (pipelines/ingest/options.py)
    "opt_oi_usd": (pl.Float64(), True),
    "opt_put_call_oi": (pl.Float64(), True),
    "opt_iv_atm_pct": (pl.Float64(), True),
    "opt_rr25_pct": (pl.Float64(), True),
    "known_at": (UTC_US, False),
}
#: columns added to the contract after panels were first stored: a stored file written
#: before them lacks them and reads them as null (every other column is required)
ADDED_COLUMNS: tuple[str, ...] = ("opt_oi_usd", "opt_put_call_oi", "opt_iv_atm_pct", "opt_rr25_pct")
PANEL_SCHEMA: dict[str, pl.DataType] = {name: dt for name, (dt, _) in PANEL_COLUMNS.items()}
KEY: tuple[str, str, str] = ("ts", "venue", "symbol")
FLOAT_COLUMNS: tuple[str, ...] = tuple(
    name for name, (dt, _) in PANEL_COLUMNS.items() if dt == pl.Float64()
)
PRICE_COLUMNS: tuple[str, ...] = ("close", "high", "low", "spot_close")
#: columns that are amounts and can never be negative
NON_NEGATIVE_COLUMNS: tuple[str, ...] = (
    "close",
    "high",
    "low",
    "volume_usd",
    "oi_usd",
    "spot_close",
    "spot_depth_usd",
    "liq_long_usd",
    "liq_short_usd",
    "opt_oi_usd",
    "opt_put_call_oi",
    "opt_iv_atm_pct",
)
QUARANTINE_SCHEMA: dict[str, pl.DataType] = {**PANEL_SCHEMA, "reason": pl.String()}

_DURATION_RE = re.compile(r"^\s*(\d+)\s*(s|m|min|h|d|w)\s*$")
_DURATION_UNITS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}


_Frame = TypeVar("_Frame", pl.DataFrame, pl.LazyFrame)


class PanelSchemaError(ValueError):
    """A frame does not have the panel's columns or types."""


def parse_duration(text: str | timedelta) -> timedelta:
    """Parse a duration such as ``"5m"``, ``"4h"``, ``"7d"`` (units s, m/min, h, d, w).

    Every window in oihedge is a duration, never a count of bars.
    """
    if isinstance(text, timedelta):
        if text <= timedelta(0):
            raise ValueError(f"duration must be > 0, got {text!r}")
        return text
    match = _DURATION_RE.match(str(text))
    if match is None:
        raise ValueError(
            f"duration must look like '5m', '4h' or '7d' (units s, m, h, d, w), got {text!r}"
        )
    seconds = int(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if seconds <= 0:
        raise ValueError(f"duration must be > 0, got {text!r}")
    return timedelta(seconds=seconds)


def format_duration(delta: timedelta) -> str:
    """Inverse of :func:`parse_duration` for whole units (``timedelta(hours=4)`` -> ``"4h"``)."""
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0 and seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def infer_bar(data: pl.DataFrame | pl.Series) -> timedelta:
    """The bar length read from the data: the most common step between consecutive
    distinct bar closes of a series, counted over every (venue, symbol) series; ties go
    to the shorter step.

    ``data``: a panel (any frame with ``ts``; a frame without ``venue`` and ``symbol``
    is one series), or a Series of bar closes, read as one series. Steps are taken
    within a series, not between the panel's pooled closes: two venues whose hourly bars
    close half an hour apart have a 1h bar (their rows are then off one another's grid),
    not a 30-minute one.

    Raises ``ValueError`` when no series has two distinct bar closes.
    """
    frame = data.to_frame("ts") if isinstance(data, pl.Series) else data
    keys = [c for c in ("venue", "symbol") if c in frame.columns]
    # (a repeated close is a step of zero, left out)
    step = pl.col("ts").sort().diff().alias("step")
    if keys:
        steps = frame.select(step.over(keys, mapping_strategy="explode"))
    else:
        steps = frame.select(step)
    steps = steps.filter(pl.col("step") > timedelta(0))
    if steps.is_empty():
        raise ValueError(
            f"cannot infer the bar from {frame.height} row(s): no series has two distinct "
            "bar closes; pass --bar (bar=...) to give it"
        )
    counts = steps.group_by("step").len().sort(["len", "step"], descending=[True, False])
    return counts["step"][0]


def empty_panel() -> pl.DataFrame:
    """A panel with no rows and the exact schema."""
    return pl.DataFrame(schema=PANEL_SCHEMA)


def empty_quarantine() -> pl.DataFrame:
    """A quarantine frame with no rows: the panel columns plus ``reason``."""
    return pl.DataFrame(schema=QUARANTINE_SCHEMA)


def check_columns(frame: pl.DataFrame | pl.LazyFrame, *, source: str = "panel") -> None:
    """Raise :class:`PanelSchemaError` naming the first missing or mistyped column.

    Extra columns are an error too: the panel has one schema, and an unknown column is
    most often a misspelt known one. The :data:`ADDED_COLUMNS` may be absent (a frame
    made before they existed); :func:`with_added_columns` adds them as null.
    """
    schema = frame.collect_schema() if isinstance(frame, pl.LazyFrame) else frame.schema
    for name, (dtype, _) in PANEL_COLUMNS.items():
        if name not in schema and name in ADDED_COLUMNS:
            continue
        if name not in schema:
            raise PanelSchemaError(f"{source}: missing column {name!r} (expected {dtype})")
        if schema[name] != dtype:
            raise PanelSchemaError(
                f"{source}: column {name!r} has type {schema[name]}, expected {dtype}"
            )
    extra = [name for name in schema if name not in PANEL_COLUMNS]
    if extra:
        raise PanelSchemaError(
            f"{source}: unexpected column {extra[0]!r}; the panel columns are "
            f"{', '.join(PANEL_COLUMNS)}"
        )


def with_added_columns(frame: _Frame) -> _Frame:
    """``frame`` with any missing :data:`ADDED_COLUMNS` added as null, in contract order."""
    schema = frame.collect_schema() if isinstance(frame, pl.LazyFrame) else frame.schema
    missing = [name for name in ADDED_COLUMNS if name not in schema]
    if not missing:
        return frame
    added = [pl.lit(None, dtype=PANEL_SCHEMA[name]).alias(name) for name in missing]
    order = [name for name in PANEL_COLUMNS if name in schema or name in missing]
    return frame.with_columns(added).select(order + [n for n in schema if n not in order])


def conform(frame: _Frame, *, source: str = "panel") -> _Frame:
    """Cast a frame whose columns are the panel's but whose types are looser.

    Integers become Float64, naive datetimes are taken as UTC, other time units become
    microseconds. Missing nullable columns are added as null; a missing key column raises.
    Anything that cannot be cast safely raises :class:`PanelSchemaError` naming the column
    and its type. A lazy frame stays lazy (only its schema is read).
    """
    schema = frame.collect_schema() if isinstance(frame, pl.LazyFrame) else frame.schema
    exprs: list[pl.Expr] = []
    for name, (dtype, nullable) in PANEL_COLUMNS.items():
        if name not in schema:
            if not nullable:
                raise PanelSchemaError(f"{source}: missing column {name!r} (expected {dtype})")
            exprs.append(pl.lit(None, dtype=dtype).alias(name))
            continue
        have = schema[name]
        if have == dtype:
            exprs.append(pl.col(name))
        elif dtype == UTC_US and isinstance(have, pl.Datetime):
            col = pl.col(name)
            col = col.dt.replace_time_zone("UTC") if have.time_zone is None else col
            exprs.append(col.dt.convert_time_zone("UTC").dt.cast_time_unit("us").alias(name))
        elif dtype == pl.Float64() and (have.is_numeric() or have == pl.Null()):
            exprs.append(pl.col(name).cast(pl.Float64).alias(name))
        elif dtype == pl.String() and have in (pl.Categorical(), pl.Null()):
            exprs.append(pl.col(name).cast(pl.String).alias(name))
        else:
            raise PanelSchemaError(f"{source}: column {name!r} has type {have}, expected {dtype}")
    extra = [name for name in schema if name not in PANEL_COLUMNS]
    if extra:
        raise PanelSchemaError(
            f"{source}: unexpected column {extra[0]!r}; the panel columns are "
            f"{', '.join(PANEL_COLUMNS)}"
        )
    return frame.select(exprs)
