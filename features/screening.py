"""Screening the panel: rows the contract accepts, and the rest quarantined with a reason.

Row-level problems never raise: :func:`validate` splits a frame into the valid rows and a
quarantine frame that carries every rejected row with a ``reason``; :func:`screen` is its
column-wise form for the hot paths. The columns and their types are in
:mod:`oihedge.features.schema`."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import polars as pl

from oihedge.features.schema import (
    FLOAT_COLUMNS,
    KEY,
    NON_NEGATIVE_COLUMNS,
    PANEL_COLUMNS,
    UTC_US,
    check_columns,
    format_duration,
    with_added_columns,
)

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_]*$")
_SYMBOL_RE = re.compile(r"^[A-Z0-9][A-Z0-9_]*$")


@dataclass(frozen=True)
class ValidationResult:
    """The outcome of :func:`validate`: valid rows, rejected rows with a reason."""

    valid: pl.DataFrame
    quarantine: pl.DataFrame

    @property
    def n_quarantined(self) -> int:
        return self.quarantine.height

    def reasons(self) -> dict[str, int]:
        """Quarantined row count per reason."""
        return _reason_counts(self.quarantine)


def _reason_counts(quarantine: pl.DataFrame) -> dict[str, int]:
    if quarantine.is_empty():
        return {}
    counts = quarantine.group_by("reason").len().sort("reason")
    return dict(zip(counts["reason"].to_list(), counts["len"].to_list(), strict=True))


def _row_checks(
    bar: timedelta | None, bad_venues: pl.Series, bad_symbols: pl.Series
) -> list[tuple[pl.Expr, str]]:
    """Every per-row check, in order, as (condition, reason); a null condition passes.

    ``bad_venues`` / ``bad_symbols``: the distinct names that fail the naming rule (the
    rule is checked once per distinct name, not once per row).
    """
    checks: list[tuple[pl.Expr, str]] = [
        (pl.any_horizontal([pl.col(c).is_null() for c in KEY + ("known_at",)]), "null_key"),
        (_member(pl.col("venue"), bad_venues), "bad_venue_name"),
        (_member(pl.col("symbol"), bad_symbols), "bad_symbol_name"),
    ]
    for name in FLOAT_COLUMNS:
        checks.append((~pl.col(name).is_finite(), f"non_finite_{name}"))
    for name in NON_NEGATIVE_COLUMNS:
        checks.append((pl.col(name) < 0, f"negative_{name}"))
    checks.append((pl.col("close") == 0, "zero_close"))
    checks.append((pl.col("high") < pl.col("low"), "high_below_low"))
    tol = 1e-9
    checks.append(
        (
            (pl.col("close") > pl.col("high") * (1 + tol))
            | (pl.col("close") < pl.col("low") * (1 - tol)),
            "close_outside_high_low",
        )
    )
    checks.append((pl.col("known_at") < pl.col("ts"), "known_before_bar_close"))
    if bar is not None:
        step_us = int(bar.total_seconds() * 1_000_000)
        checks.append(
            (pl.col("ts").dt.epoch("us") % step_us != 0, f"ts_off_{format_duration(bar)}_grid")
        )
    return checks


def _member(column: pl.Expr, values: pl.Series) -> pl.Expr:
    return column.is_in(values.implode()) if values.len() else pl.lit(False)


def _first_failing(checks: list[tuple[pl.Expr, str]]) -> pl.Expr:
    """The reason of the first failing check, as a string; null where every check passes."""
    reason: pl.Expr = pl.lit(None, dtype=pl.String)
    for condition, label in reversed(checks):
        # `fill_null(False)`: a null field fails no check; nulls are legal where nullable
        reason = pl.when(condition.fill_null(False)).then(pl.lit(label)).otherwise(reason)
    return reason


def _distinct_names(frame: pl.DataFrame) -> tuple[pl.Series, pl.Series]:
    """The distinct non-null venue and symbol names, sorted (one pass, in parallel)."""
    names = frame.select(
        pl.col(c).unique().drop_nulls().sort().implode() for c in ("venue", "symbol")
    )
    return names["venue"][0].alias("venue"), names["symbol"][0].alias("symbol")


def _breaking(names: pl.Series, pattern: re.Pattern[str]) -> pl.Series:
    return names.filter(~names.str.contains(pattern.pattern))


#: up to this many distinct names, a name column is coded by comparing it with each
#: name (cheaper than a cast to an enum, which hashes every row)
_FEW_NAMES = 16


def _code(column: str, names: pl.Series) -> pl.Expr:
    """Each row's rank of its ``column`` value among the sorted distinct ``names`` (0
    where null)."""
    if names.len() > _FEW_NAMES:
        return pl.col(column).cast(pl.Enum(names)).to_physical().fill_null(0).cast(pl.Int64)
    values = names.to_list()
    if len(values) < 2:
        return pl.lit(0, dtype=pl.Int64)
    chain = pl.when(pl.col(column) == values[1]).then(pl.lit(1, dtype=pl.Int64))
    for rank, value in enumerate(values[2:], start=2):
        chain = chain.when(pl.col(column) == value).then(pl.lit(rank, dtype=pl.Int64))
    return chain.otherwise(pl.lit(0, dtype=pl.Int64))


def _row_facts(
    frame: pl.DataFrame,
    checks: list[tuple[pl.Expr, str]],
    venues: pl.Series,
    symbols: pl.Series,
    order_by: Sequence[str],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per row, in one select (its expressions run in parallel): whether a row check
    fails, the rank of its (venue, symbol) in sorted order (arbitrary where null), its
    ts in microseconds (0 where null); and the order the rows are read in."""
    width = max(symbols.len(), 1)
    read = (
        pl.arg_sort_by(list(order_by), maintain_order=True) if order_by else pl.int_range(pl.len())
    )
    facts = frame.select(
        # one null fill after the checks: a null check passes, and true wins over null
        pl.any_horizontal([c for c, _ in checks]).fill_null(False).alias("failed"),
        (_code("venue", venues) * width + _code("symbol", symbols)).alias("series"),
        pl.col("ts").dt.epoch("us").fill_null(0).alias("ts"),
        read.cast(pl.Int64).alias("read"),
    )
    return (
        facts["failed"].to_numpy(),
        facts["series"].to_numpy(),
        facts["ts"].to_numpy(),
        facts["read"].to_numpy(),
    )


def _take(
    frame: pl.DataFrame, rows: np.ndarray, series: np.ndarray, venues: pl.Series, symbols: pl.Series
) -> pl.DataFrame:
    """``frame[rows]`` for rows with names; their venue and symbol are taken from the
    few distinct names by series id, cheaper than gathering strings row by row."""
    ids = series[rows]
    width = max(symbols.len(), 1)
    names = {
        "venue": venues.gather(ids // width).alias("venue"),
        "symbol": symbols.gather(ids % width).alias("symbol"),
    }
    return frame.drop(*names)[rows].with_columns(*names.values()).select(frame.columns)


def _by_series(series: np.ndarray) -> np.ndarray:
    """Stable argsort of the series ids: the rows of each series, in the order given.

    The ids are small, so as 16-bit integers numpy sorts them by radix, in linear time.
    """
    small = series.size == 0 or int(series.max()) < np.iinfo(np.int16).max
    return np.argsort(series.astype(np.int16) if small else series, kind="stable")


def _late(grouped: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """True where ``ts`` is not after every earlier ``ts`` of the same series, for rows
    grouped by series (``grouped``) and in stream order within each series."""
    edges = np.concatenate(([0], np.flatnonzero(np.diff(grouped)) + 1, [len(grouped)]))
    late = np.zeros(len(grouped), dtype=bool)
    for a, b in zip(edges[:-1].tolist(), edges[1:].tolist(), strict=True):
        before = np.maximum.accumulate(ts[a : b - 1])
        late[a + 1 : b] = ts[a + 1 : b] <= before
    return late


_ROW_CHECK, _OUT_OF_ORDER, _DUPLICATE = 1, 2, 3


@dataclass(frozen=True, eq=False)
class Screening:
    """The rows of ``frame`` sorted out by :func:`screen`, as row numbers: ``order``,
    the valid rows in (venue, symbol, ts) order; ``rejected``, the others in the order
    read. Per row of ``frame``: ``series``, the rank of its (venue, symbol) among the
    sorted ``venues`` x ``symbols`` (arbitrary where a name is null); ``ts``, its bar
    close in epoch microseconds (0 where null); ``kind``, why it was rejected (0: it
    was not).

    The frames are made on request: a caller that needs a few columns of the valid rows
    gathers them from :meth:`values` instead of gathering every column.
    """

    frame: pl.DataFrame
    order: np.ndarray
    rejected: np.ndarray
    series: np.ndarray
    ts: np.ndarray
    kind: np.ndarray
    venues: pl.Series
    symbols: pl.Series
    checks: list[tuple[pl.Expr, str]]

    def valid(self) -> pl.DataFrame:
        """The valid rows, sorted by (venue, symbol, ts)."""
        if not len(self.order):
            return self.frame.clear()
        return _take(self.frame, self.order, self.series, self.venues, self.symbols)

    def values(self, name: str) -> np.ndarray:
        """Column ``name`` of every row of ``frame`` as numpy, not to be written: floats
        with NaN for null, datetimes in epoch microseconds (0 for null)."""
        series = self.frame[name]
        if series.dtype == UTC_US:
            # (0 where null: an integer column with nulls would come out as floats)
            series = series.dt.epoch("us").fill_null(0)
        return series.to_numpy()

    def names(self, series: np.ndarray) -> tuple[list[str], list[str]]:
        """The venue and symbol of each of the series ids ``series``."""
        width = max(self.symbols.len(), 1)
        venues = self.venues.gather(series // width).to_list()
        return venues, self.symbols.gather(series % width).to_list()

    def quarantine(self) -> pl.DataFrame:
        """The rejected rows in the order read, with a ``reason`` each."""
        reason = (
            pl.when(pl.col("_kind") == _OUT_OF_ORDER)
            .then(pl.lit("out_of_order"))
            .when(pl.col("_kind") == _DUPLICATE)
            .then(pl.lit("duplicate_key"))
            .otherwise(_first_failing(self.checks))
            .alias("reason")
        )
        return (
            self.frame[self.rejected]
            .with_columns(pl.Series("_kind", self.kind[self.rejected]))
            .select(*PANEL_COLUMNS, reason)
        )

    def reasons(self) -> dict[str, int]:
        """Rejected row count per reason."""
        return _reason_counts(self.quarantine())


def screen(
    frame: pl.DataFrame,
    *,
    bar: timedelta | None = None,
    arrival_order: bool = False,
    order_by: Sequence[str] = (),
    source: str = "panel",
) -> Screening:
    """:func:`validate` as row numbers (the same arguments, the same rows; no frame
    made until asked for)."""
    check_columns(frame, source=source)
    frame = with_added_columns(frame)
    venues, symbols = _distinct_names(frame)
    checks = _row_checks(bar, _breaking(venues, _NAME_RE), _breaking(symbols, _SYMBOL_RE))
    failed, series, ts, read = _row_facts(frame, checks, venues, symbols, order_by)
    kind = np.where(failed, _ROW_CHECK, 0).astype(np.int8)
    rows = read[kind[read] == 0]
    if arrival_order:
        order = rows[_by_series(series[rows])]
        late = _late(series[order], ts[order])
        kind[order[late]] = _OUT_OF_ORDER
        # what is left of a series is in ts order (each row after every one before it),
        # so no key is left twice
        order = order[~late]
    else:
        order = rows[np.lexsort((ts[rows], series[rows]))]
        # (venue, symbol, ts) order; rows of one key stay in the order read, the last is kept
        repeated = (series[order[:-1]] == series[order[1:]]) & (ts[order[:-1]] == ts[order[1:]])
        kind[order[:-1][repeated]] = _DUPLICATE
        order = order[np.append(~repeated, True)] if len(order) else order
    return Screening(
        frame=frame,
        order=order,
        rejected=read[kind[read] != 0],
        series=series,
        ts=ts,
        kind=kind,
        venues=venues,
        symbols=symbols,
        checks=checks,
    )


def validate(
    frame: pl.DataFrame,
    *,
    bar: timedelta | None = None,
    arrival_order: bool = False,
    order_by: Sequence[str] = (),
    source: str = "panel",
) -> ValidationResult:
    """Split ``frame`` into valid rows and quarantined rows (with a ``reason``).

    Checks per row: non-null keys, venue/symbol naming, finite floats, no negative
    amounts, ``high >= low`` with ``close`` inside them, ``known_at >= ts`` and, when
    ``bar`` is given, ``ts`` on the bar grid. Across rows: a key seen twice in the frame
    keeps its last occurrence (the latest revision) and quarantines the earlier ones as
    ``duplicate_key``. With ``arrival_order=True`` the frame is read as a stream and a
    row whose ``ts`` is not after the last accepted ``ts`` of its (venue, symbol) is
    ``out_of_order``. ``order_by``: columns the frame is read in, sorted stably (as
    ``frame.sort(order_by, maintain_order=True)`` would be, without moving the rows);
    the frame order when empty.

    Returns the valid rows sorted by (venue, symbol, ts) and the quarantined rows in the
    order read. Raises :class:`PanelSchemaError` when a column is missing or mistyped.
    """
    screened = screen(frame, bar=bar, arrival_order=arrival_order, order_by=order_by, source=source)
    return ValidationResult(valid=screened.valid(), quarantine=screened.quarantine())
