"""The market panel store: Parquet partitioned by venue and symbol, read lazily with polars.

Layout under the store's root::

    venue=<venue>/symbol=<symbol>/panel.parquet    one file per partition
    _quarantine/<UTC time>-<source>.parquet        rejected rows, with a ``reason`` column

Guarantees:

- append is idempotent: a key (ts, venue, symbol) is stored once; writing the same bars
  twice leaves one copy, and a later write of a key replaces the earlier row (a revision);
  with ``mode="update"`` a later write replaces only the fields it carries (non-null), so
  series fetched separately (prices, OI, funding) fill one row, and ``known_at`` becomes
  the later of the two (the row is complete only when its last field is known);
- every row is validated on the way in; invalid rows go to ``_quarantine/`` with their
  reason and are counted in the returned :class:`AppendReport`, never dropped silently;
- a partition is rewritten into a temporary file in its own folder and renamed over the
  old one (atomic on POSIX), so a crash mid-write leaves the old file readable and no
  half-written file visible to readers (they read ``*.parquet`` only);
- writers of one partition are serialised with an advisory file lock.

A folder of flat panel files (``<venue>-<symbol>.parquet``, as in ``shared/data/real-1h``)
is read the same way: the reader globs ``**/*.parquet`` outside ``_quarantine/``.

Every file is checked against the panel contract when it is read (its Parquet footer,
before any row is read): a file that is not Parquet, a missing or an unexpected column,
or a column whose type cannot be cast safely raises :class:`PanelSchemaError` naming the
file and the column (a file written before the options columns,
:data:`oihedge.features.schema.ADDED_COLUMNS`, reads them as null). Safe casts are made
(:func:`oihedge.features.schema.conform`): integer prices become Float64, nanosecond or naive
timestamps become UTC microseconds.
"""

from __future__ import annotations

import fcntl
import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal, TypeVar

import polars as pl

from oihedge.features.schema import (
    ADDED_COLUMNS,
    KEY,
    PANEL_COLUMNS,
    PANEL_SCHEMA,
    QUARANTINE_SCHEMA,
    PanelSchemaError,
    check_columns,
    conform,
    empty_panel,
)
from oihedge.features.screening import validate

T = TypeVar("T")

PARTITION_FILE = "panel.parquet"
QUARANTINE_DIR = "_quarantine"


@dataclass
class AppendReport:
    """What one :meth:`PanelStore.append` did."""

    rows_in: int = 0
    rows_written: int = 0
    partitions: list[tuple[str, str]] = field(default_factory=list)
    quarantined: int = 0
    quarantine_reasons: dict[str, int] = field(default_factory=dict)
    quarantine_file: Path | None = None

    def merge(self, other: AppendReport) -> None:
        """Add another report's counts to this one (for chunked writes)."""
        self.rows_in += other.rows_in
        self.rows_written += other.rows_written
        self.partitions.extend(p for p in other.partitions if p not in self.partitions)
        self.quarantined += other.quarantined
        for reason, count in other.quarantine_reasons.items():
            self.quarantine_reasons[reason] = self.quarantine_reasons.get(reason, 0) + count
        self.quarantine_file = other.quarantine_file or self.quarantine_file


class PanelStore:
    """Read and write the market panel under ``root``."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    # -- writing -----------------------------------------------------------------------

    def append(
        self,
        frame: pl.DataFrame,
        *,
        source: str = "append",
        bar: timedelta | None = None,
        arrival_order: bool = False,
        mode: Literal["replace", "update"] = "replace",
    ) -> AppendReport:
        """Validate ``frame`` and merge its valid rows into their partitions.

        ``bar`` (a ``timedelta``) additionally checks that ``ts`` lies on the bar grid.
        ``mode="replace"``: a stored key is replaced by the new row; ``"update"``: only by
        the new row's non-null fields.
        Returns an :class:`AppendReport`; quarantined rows are written under
        ``_quarantine/`` before any partition is touched.
        """
        if mode not in ("replace", "update"):
            raise ValueError(f"mode must be 'replace' or 'update', got {mode!r}")
        result = validate(frame, bar=bar, arrival_order=arrival_order, source=source)
        report = AppendReport(rows_in=frame.height)
        if result.n_quarantined:
            report.quarantined = result.n_quarantined
            report.quarantine_reasons = result.reasons()
            report.quarantine_file = self._write_quarantine(result.quarantine, source)
        for (venue, symbol), part in result.valid.group_by(
            ["venue", "symbol"], maintain_order=True
        ):
            self._merge_partition(str(venue), str(symbol), part, mode)
            report.partitions.append((str(venue), str(symbol)))
            report.rows_written += part.height
        return report

    def _merge_partition(self, venue: str, symbol: str, new: pl.DataFrame, mode: str) -> None:
        path = self.partition_path(venue, symbol)
        path.parent.mkdir(parents=True, exist_ok=True)
        with _locked(path.parent / ".lock"):
            if path.exists():
                old = _read_file(path)
                if any(name not in old.columns for name in ADDED_COLUMNS):
                    # written before the added columns: they read as null
                    old = conform(old, source=str(path))
                check_columns(old, source=str(path))
                merged = _update(old, new) if mode == "update" else _replace(old, new)
            else:
                merged = new
            _atomic_write(merged.sort("ts"), path)

    def _write_quarantine(self, rows: pl.DataFrame, source: str) -> Path:
        qdir = self.root / QUARANTINE_DIR
        qdir.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in source)[:60]
        path = qdir / f"{stamp}-{safe}-{uuid.uuid4().hex[:6]}.parquet"
        _atomic_write(rows.select(list(QUARANTINE_SCHEMA)), path)
        return path

    def partition_path(self, venue: str, symbol: str) -> Path:
        """Where the partition of (venue, symbol) lives."""
        return self.root / f"venue={venue}" / f"symbol={symbol}" / PARTITION_FILE

    # -- reading -----------------------------------------------------------------------

    def files(
        self, venues: Sequence[str] | None = None, symbols: Sequence[str] | None = None
    ) -> list[Path]:
        """Panel files under the root, pruned by partition folder names where possible."""
        if not self.root.exists():
            return []
        out = []
        for path in sorted(self.root.rglob("*.parquet")):
            rel = path.relative_to(self.root)
            if any(part.startswith(("_", ".")) for part in rel.parts):
                continue
            parts = dict(p.split("=", 1) for p in rel.parts[:-1] if "=" in p)
            if venues is not None and "venue" in parts and parts["venue"] not in venues:
                continue
            if symbols is not None and "symbol" in parts and parts["symbol"] not in symbols:
                continue
            out.append(path)
        return out

    def scan(
        self,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        venues: Sequence[str] | None = None,
        symbols: Sequence[str] | None = None,
    ) -> pl.LazyFrame:
        """A lazy panel, filtered to ``start <= ts < end`` and the given venues/symbols."""
        files = self.files(venues, symbols)
        if not files:
            return empty_panel().lazy()
        lazy = _scan_checked(files)
        filters = []
        if start is not None:
            filters.append(pl.col("ts") >= _utc(start))
        if end is not None:
            filters.append(pl.col("ts") < _utc(end))
        if venues is not None:
            filters.append(pl.col("venue").is_in(list(venues)))
        if symbols is not None:
            filters.append(pl.col("symbol").is_in(list(symbols)))
        return lazy.filter(*filters) if filters else lazy

    def read(
        self,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        venues: Sequence[str] | None = None,
        symbols: Sequence[str] | None = None,
    ) -> pl.DataFrame:
        """:meth:`scan` collected and sorted by (venue, symbol, ts).

        Raises :class:`PanelSchemaError` naming the file when a file breaks the panel
        contract or cannot be read.
        """
        lazy = self.scan(start=start, end=end, venues=venues, symbols=symbols)
        return collect(lazy, source=str(self.root)).sort(["venue", "symbol", "ts"])

    def quarantine(self) -> pl.DataFrame:
        """Every quarantined row ever written, with its ``reason`` and ``file``."""
        qdir = self.root / QUARANTINE_DIR
        files = sorted(qdir.glob("*.parquet")) if qdir.exists() else []
        if not files:
            return pl.DataFrame(schema={**QUARANTINE_SCHEMA, "file": pl.String()})
        return pl.concat([_read_file(f).with_columns(pl.lit(f.name).alias("file")) for f in files])

    def last_ts(self, column: str | None = None) -> dict[tuple[str, str], datetime]:
        """The newest stored bar per (venue, symbol): where an incremental write resumes.

        With ``column``, the newest bar where that column is not null (one series, e.g.
        ``"oi_usd"``), so each series resumes on its own.
        """
        lazy = self.scan()
        if column is not None:
            if column not in PANEL_SCHEMA:
                raise ValueError(f"column must be a panel column, got {column!r}")
            lazy = lazy.filter(pl.col(column).is_not_null())
        last = collect(lazy.group_by(["venue", "symbol"]).agg(pl.col("ts").max()), str(self.root))
        return {(v, s): t for v, s, t in last.iter_rows()}


def collect(lazy: pl.LazyFrame, source: str) -> pl.DataFrame:
    """Collect a lazy panel read; a file that fails while its rows are read (a corrupt
    page behind a good footer) raises :class:`PanelSchemaError` naming ``source``."""
    try:
        return lazy.collect()
    except (pl.exceptions.PolarsError, OSError) as err:
        raise PanelSchemaError(f"{source}: cannot read the panel: {_first_line(err)}") from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def file_schema(path: Path) -> pl.Schema:
    """The schema in the footer of a Parquet file, or :class:`PanelSchemaError`."""
    return _parquet(pl.read_parquet_schema, path)


def _parquet(read: Callable[[Path], T], path: Path) -> T:
    """``read(path)``, a file that is not readable Parquet being a
    :class:`PanelSchemaError` naming it."""
    try:
        return read(path)
    except (pl.exceptions.PolarsError, OSError) as err:
        raise PanelSchemaError(
            f"{path}: not a readable Parquet file ({_first_line(err)})"
        ) from None


def _scan_file(path: Path, schema: pl.Schema) -> pl.LazyFrame:
    """One file (whose footer holds ``schema``) as a lazy panel: its columns checked (none
    missing, none unexpected) and its types conformed to the contract;
    :class:`PanelSchemaError` otherwise."""
    missing = [n for n in PANEL_COLUMNS if n not in schema and n not in ADDED_COLUMNS]
    if missing:
        dtype = PANEL_COLUMNS[missing[0]][0]
        raise PanelSchemaError(f"{path}: missing column {missing[0]!r} (expected {dtype})")
    lazy = pl.scan_parquet(path, hive_partitioning=False)
    return conform(lazy, source=str(path))


def _scan_checked(files: Sequence[Path]) -> pl.LazyFrame:
    """The files as one lazy panel. Files with the contract's exact schema are scanned
    together (the common case: one scan); the others are conformed one by one."""
    exact: list[Path] = []
    loose: list[pl.LazyFrame] = []
    for path in files:
        schema = file_schema(path)
        if list(schema.items()) == list(PANEL_SCHEMA.items()):
            exact.append(path)
        else:
            loose.append(_scan_file(path, schema))
    parts = loose
    if exact:
        parts = [pl.scan_parquet(exact, hive_partitioning=False, schema=PANEL_SCHEMA), *loose]
    return parts[0] if len(parts) == 1 else pl.concat(parts, how="vertical")


def _read_file(path: Path) -> pl.DataFrame:
    """One Parquet file read whole, or :class:`PanelSchemaError` naming it."""
    return _parquet(pl.read_parquet, path)


def _replace(old: pl.DataFrame, new: pl.DataFrame) -> pl.DataFrame:
    """Rows of ``new`` replace rows of ``old`` with the same key."""
    merged = pl.concat([old, new], how="vertical")
    return merged.unique(subset=list(KEY), keep="last", maintain_order=True)


def _update(old: pl.DataFrame, new: pl.DataFrame) -> pl.DataFrame:
    """Non-null fields of ``new`` replace those of ``old``; ``known_at`` is the later one."""
    joined = old.join(new, on=list(KEY), how="full", coalesce=True, suffix="_new")
    values = [c for c in PANEL_SCHEMA if c not in KEY and c != "known_at"]
    return joined.select(
        *KEY,
        *[pl.coalesce(f"{c}_new", c).alias(c) for c in values],
        pl.max_horizontal("known_at", "known_at_new").alias("known_at"),
    ).select(list(PANEL_SCHEMA))


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError(f"datetime must be timezone-aware (UTC), got naive {moment!r}")
    return moment.astimezone(UTC)


def _atomic_write(frame: pl.DataFrame, path: Path) -> None:
    """Write to a hidden temp file beside ``path``, fsync, then rename over ``path``."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        frame.write_parquet(tmp, compression="zstd", statistics=True)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


@contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    with open(lock_path, "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
