"""Binance USD-M futures archive files (data.binance.vision) -> the panel.

The public daily/monthly files reach years further back than the REST API (whose OI
history keeps 30 days). Three kinds are read, zipped as published or unzipped, from files
or folders (searched recursively):

=================  ===========================================  ================================
file name          columns                                      panel
=================  ===========================================  ================================
SYM-metrics-D      create_time, symbol, sum_open_interest,      ``oi_usd`` = sum_open_interest_
                   sum_open_interest_value, count_toptrader_    value (USDT notional, one side)
                   long_short_ratio, sum_toptrader_long_short_  on the bar closing at
                   ratio, count_long_short_ratio,               create_time (a snapshot)
                   sum_taker_long_short_vol_ratio
SYM-5m-D (klines)  open_time, open, high, low, close, volume,   close/high/low on the bar closing
                   close_time, quote_volume, count,             at open_time + interval;
                   taker_buy_volume, taker_buy_quote_volume,    ``volume_usd`` = quote_volume;
                   ignore (old files have no header)            finer intervals are aggregated
SYM-fundingRate-M  calc_time, funding_interval_hours,           ``funding_rate`` x 8 / interval
                   last_funding_rate                            on the bar closing at floor(T)
=================  ===========================================  ================================

``SYM`` must be USDT-margined (``BTCUSDT`` -> venue ``binanceusdm``, symbol ``BTC``).
``known_at`` follows the API path: bar close + the venue's publication lag
(:data:`oihedge.pipelines.ingest.venues.VENUES`).

Every file's header is checked before anything is written; a file that cannot be read
(truncated zip, wrong header, non-numeric field) raises :class:`ArchiveError` naming it,
or with ``skip_bad=True`` is listed in the report and skipped.

The panel's completeness marker (:mod:`oihedge.pipelines.panel_manifest`) says ``complete: false``
from the first row written until the import ends; an import stopped by a bad file (after
the header checks) or killed leaves the panel marked partial until a later run finishes.
"""

from __future__ import annotations

import io
import re
import zipfile
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import polars as pl

from oihedge.features.schema import KEY, UTC_US
from oihedge.pipelines.ingest.normalise import to_panel
from oihedge.pipelines.ingest.venues import VENUES, timeframe_delta
from oihedge.pipelines.panel_manifest import WriteRun
from oihedge.pipelines.store import PanelStore

VENUE = "binanceusdm"
WRITER = "import-archive"
HEADERS: dict[str, tuple[str, ...]] = {
    "metrics": (
        "create_time",
        "symbol",
        "sum_open_interest",
        "sum_open_interest_value",
        "count_toptrader_long_short_ratio",
        "sum_toptrader_long_short_ratio",
        "count_long_short_ratio",
        "sum_taker_long_short_vol_ratio",
    ),
    "klines": (
        "open_time",
        "open",
        "high",
        "low",
        "close",
        "volume",
        "close_time",
        "quote_volume",
        "count",
        "taker_buy_volume",
        "taker_buy_quote_volume",
        "ignore",
    ),
    "fundingRate": ("calc_time", "funding_interval_hours", "last_funding_rate"),
}
_NAME = re.compile(
    r"^(?P<pair>[A-Z0-9]+)-(?P<kind>metrics|fundingRate|\d+[mhdw])-"
    r"(?P<date>\d{4}-\d{2}(?:-\d{2})?)\.(?P<ext>csv|zip)$"
)


class ArchiveError(ValueError):
    """An archive file that cannot be imported; the message names the file."""


@dataclass(frozen=True)
class ArchiveFile:
    """One CSV to import: where it is (``member`` inside a zip) and what it holds."""

    path: Path
    kind: str
    pair: str
    symbol: str
    interval: timedelta | None
    member: str | None = None

    def __str__(self) -> str:
        return f"{self.path}:{self.member}" if self.member else str(self.path)


@dataclass
class ArchiveReport:
    """What an import did."""

    files: dict[str, int] = field(default_factory=dict)
    rows_read: int = 0
    rows_written: int = 0
    dropped_off_grid: int = 0
    duplicates: int = 0
    quarantined: int = 0
    quarantine_reasons: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    symbols: set[str] = field(default_factory=set)


def discover(paths: Iterable[str | Path]) -> list[ArchiveFile]:
    """The archive files under ``paths`` (files, or folders searched recursively).

    Raises :class:`ArchiveError` for a path that does not exist or a file whose name is
    not a Binance archive name (``BTCUSDT-metrics-2024-01-01.zip``, ...).
    """
    found: list[ArchiveFile] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            candidates = sorted(p for p in path.rglob("*") if p.suffix in (".zip", ".csv"))
        elif path.exists():
            candidates = [path]
        else:
            raise ArchiveError(f"{path}: no such file or folder")
        for candidate in candidates:
            found.append(_describe(candidate))
    return found


def _describe(path: Path) -> ArchiveFile:
    match = _NAME.match(path.name)
    if match is None:
        raise ArchiveError(
            f"{path}: not a Binance archive file name (expected e.g. BTCUSDT-metrics-2024-01-01"
            ".zip, BTCUSDT-5m-2024-01-01.zip or BTCUSDT-fundingRate-2024-01.zip)"
        )
    pair, kind = match["pair"], match["kind"]
    if not pair.endswith("USDT") or pair == "USDT":
        raise ArchiveError(
            f"{path}: pair {pair!r} is not USDT-margined; only USDT perpetuals map to {VENUE} rows"
        )
    interval = None
    if kind not in ("metrics", "fundingRate"):
        interval, kind = timeframe_delta(kind), "klines"
    member = path.name.removesuffix(".zip") + ".csv" if path.suffix == ".zip" else None
    return ArchiveFile(path, kind, pair, pair.removesuffix("USDT"), interval, member)


def _open_text(item: ArchiveFile) -> bytes:
    if item.member is None:
        return item.path.read_bytes()
    try:
        with zipfile.ZipFile(item.path) as archive:
            names = [n for n in archive.namelist() if n.endswith(".csv")]
            if len(names) != 1:
                raise ArchiveError(f"{item.path}: expected one CSV inside, found {names}")
            return archive.read(names[0])
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as err:
        raise ArchiveError(
            f"{item.path}: not a readable zip archive (truncated or corrupt: {err})"
        ) from None


def _header_check(item: ArchiveFile, data: bytes) -> bool:
    """True if the CSV has a header line; raises when the header is not the expected one."""
    first = data.split(b"\n", 1)[0].decode("utf-8-sig", errors="replace").strip()
    fields = tuple(f.strip() for f in first.split(","))
    expected = HEADERS[item.kind]
    if fields == expected:
        return True
    if item.kind == "klines" and fields and fields[0].isdigit() and len(fields) == len(expected):
        return False  # old klines files have no header
    raise ArchiveError(
        f"{item}: unexpected CSV header {first[:120]!r}; a Binance {item.kind} file starts "
        f"with {','.join(expected)!r}"
    )


def _read(item: ArchiveFile) -> pl.DataFrame:
    data = _open_text(item)
    has_header = _header_check(item, data)
    try:
        return pl.read_csv(
            io.BytesIO(data),
            has_header=has_header,
            new_columns=None if has_header else list(HEADERS[item.kind]),
            infer_schema_length=0,  # all strings; typed explicitly below
        )
    except pl.exceptions.PolarsError as err:
        raise ArchiveError(f"{item}: unreadable CSV: {err}") from None


def _num(name: str) -> pl.Expr:
    return pl.col(name).str.strip_chars().cast(pl.Float64, strict=True)


def _epoch(name: str) -> pl.Expr:
    """Epoch ms or us (Binance moved some files to microseconds in 2025) -> UTC datetime."""
    raw = pl.col(name).str.strip_chars().cast(pl.Int64, strict=True)
    ms = pl.when(raw > 10**14).then(raw // 1000).otherwise(raw)
    return pl.from_epoch(ms, time_unit="ms").dt.replace_time_zone("UTC").cast(UTC_US)


def _panel_rows(item: ArchiveFile, raw: pl.DataFrame, bar: timedelta) -> tuple[pl.DataFrame, int]:
    """The panel rows of one file and how many rows fell off the bar grid."""
    spec = VENUES[VENUE]
    key = [pl.lit(VENUE).alias("venue"), pl.lit(item.symbol).alias("symbol")]
    if item.kind == "metrics":
        rows = raw.select(
            pl.col("create_time")
            .str.strip_chars()
            .str.to_datetime("%Y-%m-%d %H:%M:%S", time_zone="UTC", time_unit="us")
            .alias("ts"),
            *key,
            _num("sum_open_interest_value").alias("oi_usd"),
        ).with_columns((pl.col("ts") + spec.lag_oi).alias("known_at"))
        on_grid = rows.filter(pl.col("ts").dt.epoch("ms") % int(bar.total_seconds() * 1000) == 0)
        return on_grid, rows.height - on_grid.height
    if item.kind == "fundingRate":
        settled = _epoch("calc_time")
        interval_h = _num("funding_interval_hours")
        rows = raw.select(
            settled.dt.truncate(bar).alias("ts"),
            *key,
            (_num("last_funding_rate") * 8 / interval_h).alias("funding_rate"),
            (settled + spec.lag_funding).alias("known_at"),
        )
        return rows.group_by(["ts", "venue", "symbol"], maintain_order=True).agg(
            pl.col("funding_rate").mean(), pl.col("known_at").max()
        ), 0
    return _kline_rows(item, raw, bar, key)


def _kline_rows(
    item: ArchiveFile, raw: pl.DataFrame, bar: timedelta, key: list[pl.Expr]
) -> tuple[pl.DataFrame, int]:
    assert item.interval is not None
    if bar < item.interval or bar % item.interval:
        raise ArchiveError(
            f"{item}: {item.interval} candles cannot make {bar} bars (the bar must be a "
            f"multiple of the candle interval)"
        )
    lag = VENUES[VENUE].lag_ohlcv
    candles = raw.select(
        (_epoch("open_time") + item.interval).alias("close_ts"),
        _num("high").alias("high"),
        _num("low").alias("low"),
        _num("close").alias("close"),
        _num("quote_volume").alias("volume_usd"),
    ).sort("close_ts")
    per_bar = bar // item.interval
    rows = (
        candles.with_columns(
            (pl.col("close_ts") - pl.duration(microseconds=1)).dt.truncate(bar).alias("open_bar")
        )
        .group_by("open_bar", maintain_order=True)
        .agg(
            pl.col("high").max(),
            pl.col("low").min(),
            pl.col("close").last(),
            pl.col("volume_usd").sum(),
            pl.len().alias("n"),
        )
    )
    complete = rows.filter(pl.col("n") == per_bar)
    out = complete.select(
        (pl.col("open_bar") + bar).alias("ts"),
        *key,
        "close",
        "high",
        "low",
        "volume_usd",
        (pl.col("open_bar") + bar + lag).alias("known_at"),
    )
    return out, int((rows.height - complete.height) * per_bar)


def import_archive(
    store: PanelStore,
    paths: Sequence[str | Path],
    *,
    bar: timedelta,
    skip_bad: bool = False,
    flush_rows: int = 200_000,
    progress: Callable[[int, int], None] | None = None,
) -> ArchiveReport:
    """Load Binance archive files under ``paths`` into ``store`` (update mode, bar ``bar``).

    Headers and zip integrity of every file are checked first: with ``skip_bad=False``
    any bad file raises :class:`ArchiveError` before a row is written.
    """
    report = ArchiveReport()
    items = discover(paths)
    if not items:
        raise ArchiveError(f"no Binance archive files under {', '.join(map(str, paths))}")
    good: list[ArchiveFile] = []
    for item in items:
        try:
            _header_check(item, _open_text(item)[:4096])
            good.append(item)
        except ArchiveError as err:
            if not skip_bad:
                raise
            report.skipped[str(item)] = str(err)
    with WriteRun(store.root, WRITER) as run:
        _import(store, good, bar, skip_bad, flush_rows, progress, report, run)
    return report


def _import(
    store: PanelStore,
    good: list[ArchiveFile],
    bar: timedelta,
    skip_bad: bool,
    flush_rows: int,
    progress: Callable[[int, int], None] | None,
    report: ArchiveReport,
    run: WriteRun,
) -> None:
    """Read, convert and append every checked file (flushed every ``flush_rows`` rows)."""
    pending: dict[str, list[pl.DataFrame]] = {}
    for done, item in enumerate(good, start=1):
        try:
            raw = _read(item)
            rows, off_grid = _panel_rows(item, raw, bar)
        except (ArchiveError, pl.exceptions.PolarsError) as err:
            message = str(err) if isinstance(err, ArchiveError) else f"{item}: bad value: {err}"
            if not skip_bad:
                raise ArchiveError(" ".join(message.split())[:400]) from None
            report.skipped[str(item)] = message
            continue
        report.files[item.kind] = report.files.get(item.kind, 0) + 1
        report.rows_read += raw.height
        report.dropped_off_grid += off_grid
        report.symbols.add(item.symbol)
        pending.setdefault(item.kind, []).append(to_panel(rows))
        if sum(f.height for f in pending[item.kind]) >= flush_rows:
            _flush(store, pending[item.kind], bar, report, run)
        if progress:
            progress(done, len(good))
    for frames in pending.values():
        _flush(store, frames, bar, report, run)


def _flush(
    store: PanelStore,
    pending: list[pl.DataFrame],
    bar: timedelta,
    report: ArchiveReport,
    run: WriteRun,
) -> None:
    """Append one kind's rows; a bar given twice (overlapping files) keeps the last copy."""
    if not pending:
        return
    run.started()
    frame = pl.concat(pending, how="vertical")
    pending.clear()
    unique = frame.unique(subset=list(KEY), keep="last", maintain_order=True)
    report.duplicates += frame.height - unique.height
    written = store.append(unique, source="import-archive", bar=bar, mode="update")
    report.rows_written += written.rows_written
    report.quarantined += written.quarantined
    for reason, count in written.quarantine_reasons.items():
        report.quarantine_reasons[reason] = report.quarantine_reasons.get(reason, 0) + count
