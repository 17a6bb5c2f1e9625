"""The data-quality report: coverage, gaps, quarantined rows and sanity flags per venue/symbol.

Bar length: given by the caller (``--bar``) or read from the data (the most common step
between consecutive bars of every (venue, symbol)); it is never assumed.

Per (venue, symbol): first and last bar, the share of bars present between them (distinct
bars: a key stored twice counts once, so coverage never exceeds 100%), the same per series
(close, spot_close, oi_usd, spot_depth_usd, liquidations; where the rows carry options,
each options column and ``options``, bars with any of them: within the series' own span
and within the (venue, symbol)'s; funding as a count of settlements), what the venue
publishes of liquidations and spot depth (``feeds``: a lower bound where the venue sends
only part of its liquidations), the longest gaps (bars missing between two present
ones), rows off the bar grid, quarantined rows by reason, and sanity flags:

- ``oi_jump``: OI moves by more than ``oi_jump_pct`` between two consecutive bars;
- ``price_jump``: close moves by more than ``price_jump_pct`` between consecutive bars;
- ``basis``: perp close and spot close more than ``basis_pct`` apart;
- ``funding_extreme``: 8h funding beyond +-``funding_abs_8h``;
- ``known_before_ts``: a row whose ``known_at`` precedes its bar close (look-ahead);
- ``duplicate_key``: a key (ts, venue, symbol) stored more than once (e.g. in two files):
  the extra rows, the keys concerned and examples with their number of copies;
- ``high_below_low``: a row whose ``high`` is below its ``low``, with examples.

Whether the panel is complete (its writer finished) is not in the rows: the CLI reads the
panel's completeness marker (:mod:`oihedge.pipelines.panel_manifest`) beside this report.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import polars as pl

from oihedge.features.schema import format_duration, infer_bar
from oihedge.pipelines.ingest.liquidations import feed as liquidation_feed
from oihedge.pipelines.ingest.spot_depth import DEPTH_BOOKS

#: the options columns (pipelines/ingest/options.py fills them on the options venue's rows)
OPTIONS_COLUMNS: tuple[str, ...] = (
    "opt_oi_usd",
    "opt_put_call_oi",
    "opt_iv_atm_pct",
    "opt_rr25_pct",
)


@dataclass(frozen=True)
class SanityLimits:
    """Thresholds of the sanity flags (percentages are of the earlier value)."""

    oi_jump_pct: float = 50.0
    price_jump_pct: float = 20.0
    basis_pct: float = 5.0
    funding_abs_8h: float = 0.01
    top_gaps: int = 3
    examples: int = 3

    def __post_init__(self) -> None:
        for name in ("oi_jump_pct", "price_jump_pct", "basis_pct", "funding_abs_8h"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")


@dataclass
class QualityReport:
    """The report; ``to_dict`` is its JSON form."""

    bar: timedelta
    bar_source: str
    rows: int
    entries: list[dict[str, Any]] = field(default_factory=list)
    quarantine: dict[str, int] = field(default_factory=dict)
    limits: SanityLimits = field(default_factory=SanityLimits)

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(
            {
                "bar": format_duration(self.bar),
                "bar_source": self.bar_source,
                "rows": self.rows,
                "quarantined_by_reason": self.quarantine,
                "limits": self.limits.__dict__,
                "venues": self.entries,
            }
        )


def data_report(
    panel: pl.DataFrame,
    quarantine: pl.DataFrame | None = None,
    *,
    bar: timedelta | None = None,
    limits: SanityLimits | None = None,
) -> QualityReport:
    """Build the report for ``panel`` (and the store's ``quarantine`` rows, if any)."""
    limits = limits or SanityLimits()
    source = "given"
    if bar is None:
        bar, source = infer_bar(panel), "read from the data"
    report = QualityReport(bar=bar, bar_source=source, rows=panel.height, limits=limits)
    q_counts = _quarantine_counts(quarantine)
    report.quarantine = {
        reason: count for (_, _, reason), count in sorted(_sum_by_reason(q_counts).items())
    }
    keys = panel.select("venue", "symbol").unique().sort("venue", "symbol").iter_rows()
    by_key = panel.sort("ts").partition_by(["venue", "symbol"], as_dict=True)
    for venue, symbol in keys:
        part = by_key[(venue, symbol)]
        entry = _entry(part, bar, limits)
        entry.update(venue=venue, symbol=symbol, feeds=venue_feeds(venue))
        entry["quarantined"] = {
            r: c for (v, s, r), c in q_counts.items() if (v, s) == (venue, symbol)
        }
        report.entries.append(entry)
    seen = {(e["venue"], e["symbol"]) for e in report.entries}
    for (venue, symbol), reasons in _group_missing(q_counts, seen).items():
        report.entries.append({"venue": venue, "symbol": symbol, "rows": 0, "quarantined": reasons})
    return report


def venue_feeds(venue: str) -> dict[str, Any]:
    """What ``venue`` publishes of the stream-only series: its liquidation feed (and
    whether its sums are complete or a lower bound) and how its spot depth is taken."""
    liq = liquidation_feed(venue)
    book = DEPTH_BOOKS.get(venue)
    return {
        "liquidations": {
            "stream": liq.stream,
            "complete": liq.complete if liq.stream else None,
            "notes": liq.notes,
        },
        "spot_depth": book.notes if book else "no spot book: spot_depth_usd stays null",
    }


def _quarantine_counts(quarantine: pl.DataFrame | None) -> dict[tuple[str, str, str], int]:
    if quarantine is None or quarantine.is_empty():
        return {}
    counts = quarantine.group_by("venue", "symbol", "reason").len()
    return {(str(v), str(s), str(r)): int(n) for v, s, r, n in counts.iter_rows()}


def _sum_by_reason(counts: Mapping[tuple[str, str, str], int]) -> dict[tuple[str, str, str], int]:
    total: dict[tuple[str, str, str], int] = {}
    for (_, _, reason), n in counts.items():
        key = ("", "", reason)
        total[key] = total.get(key, 0) + n
    return total


def _group_missing(
    counts: Mapping[tuple[str, str, str], int], seen: set[tuple[str, str]]
) -> dict[tuple[str, str], dict[str, int]]:
    out: dict[tuple[str, str], dict[str, int]] = {}
    for (venue, symbol, reason), n in counts.items():
        if (venue, symbol) not in seen:
            out.setdefault((venue, symbol), {})[reason] = n
    return out


def _span(ts: pl.Series, bar: timedelta) -> dict[str, Any]:
    """First, last, distinct bars and their share of the bars between first and last."""
    if ts.is_empty():
        return {"bars": 0, "first": None, "last": None, "coverage_pct": None}
    ts = ts.unique()
    first, last = ts.min(), ts.max()
    expected = int((last - first) / bar) + 1
    return {
        "bars": ts.len(),
        "first": first,
        "last": last,
        "coverage_pct": round(100.0 * ts.len() / max(expected, 1), 2),
    }


def _expected(ts: pl.Series, bar: timedelta) -> int:
    return 0 if ts.is_empty() else int((ts.max() - ts.min()) / bar) + 1


def _gaps(ts: pl.Series, bar: timedelta, top: int) -> list[dict[str, Any]]:
    frame = pl.DataFrame({"end": ts}).with_columns(pl.col("end").shift(1).alias("start"))
    gaps = (
        frame.with_columns((pl.col("end") - pl.col("start")).alias("step"))
        .filter(pl.col("step") > bar)
        .sort("step", descending=True)
        .head(top)
    )
    return [
        {
            "after": start,
            "before": end,
            "missing_bars": int(step / bar) - 1,
            "duration": format_duration(step - bar),
        }
        for end, start, step in gaps.select("end", "start", "step").iter_rows()
    ]


def _jumps(part: pl.DataFrame, column: str, bar: timedelta, pct: float, n: int) -> dict[str, Any]:
    values = part.filter(pl.col(column).is_not_null()).select("ts", column)
    moves = values.with_columns(
        pl.col(column).shift(1).alias("before"),
        (pl.col("ts") - pl.col("ts").shift(1)).alias("step"),
    ).filter((pl.col("step") == bar) & (pl.col("before") > 0))
    moves = moves.with_columns((100.0 * (pl.col(column) / pl.col("before") - 1)).alias("pct"))
    flagged = moves.filter(pl.col("pct").abs() > pct).sort(pl.col("pct").abs(), descending=True)
    return {
        "count": flagged.height,
        "examples": [
            {"ts": ts, "from": before, "to": after, "pct": round(p, 2)}
            for ts, after, before, p in flagged.head(n)
            .select("ts", column, "before", "pct")
            .iter_rows()
        ],
    }


def _duplicates(part: pl.DataFrame, n: int) -> dict[str, Any]:
    """Keys of one (venue, symbol) stored more than once: extra rows, keys, examples."""
    copies = part.group_by("ts").len("copies").filter(pl.col("copies") > 1).sort("ts")
    return {
        "count": int((copies["copies"] - 1).sum()) if copies.height else 0,
        "keys": copies.height,
        "examples": [{"ts": ts, "copies": int(c)} for ts, c in copies.head(n).iter_rows()],
    }


def _high_below_low(part: pl.DataFrame, n: int) -> dict[str, Any]:
    bad = part.filter(pl.col("high") < pl.col("low")).sort("ts")
    return {
        "count": bad.height,
        "examples": [
            {"ts": ts, "high": high, "low": low}
            for ts, high, low in bad.head(n).select("ts", "high", "low").iter_rows()
        ],
    }


def _entry(part: pl.DataFrame, bar: timedelta, limits: SanityLimits) -> dict[str, Any]:
    bar_us = int(bar.total_seconds() * 1_000_000)
    entry: dict[str, Any] = {"rows": part.height}
    entry.update(_span(part["ts"], bar))
    entry["series"] = {}
    has_options = part.select(
        pl.any_horizontal(pl.col(c).is_not_null() for c in OPTIONS_COLUMNS).any()
    ).item()
    # (the options entries only where the rows carry options: the options venue's)
    options = ("options", *OPTIONS_COLUMNS) if has_options else ()
    for column in ("close", "spot_close", "oi_usd", "spot_depth_usd", "liq_long_usd", *options):
        present = (
            pl.any_horizontal(pl.col(c).is_not_null() for c in OPTIONS_COLUMNS)
            if column == "options"
            else pl.col(column).is_not_null()
        )
        series = _span(part.filter(present)["ts"], bar)
        # the same count against the whole (venue, symbol) span: a feed that stops early
        # has full coverage of its own span but not of the panel's
        series["of_panel_pct"] = round(
            100.0 * series["bars"] / max(_expected(part["ts"], bar), 1), 2
        )
        entry["series"][column] = series
    entry["series"]["funding_rate"] = {
        "settlements": part.filter(pl.col("funding_rate").is_not_null())["ts"].n_unique()
    }
    entry["series"]["liquidations"] = entry["series"].pop("liq_long_usd")
    entry["longest_gaps"] = _gaps(part["ts"], bar, limits.top_gaps)
    entry["off_grid_rows"] = int((part["ts"].dt.epoch("us") % bar_us != 0).sum())
    basis = part.filter(pl.col("close").is_not_null() & (pl.col("spot_close") > 0)).select(
        "ts", (100.0 * (pl.col("close") / pl.col("spot_close") - 1)).alias("pct")
    )
    flagged_basis = basis.filter(pl.col("pct").abs() > limits.basis_pct)
    funding = part.filter(pl.col("funding_rate").abs() > limits.funding_abs_8h)
    entry["flags"] = {
        "oi_jump": _jumps(part, "oi_usd", bar, limits.oi_jump_pct, limits.examples),
        "price_jump": _jumps(part, "close", bar, limits.price_jump_pct, limits.examples),
        "basis": {
            "count": flagged_basis.height,
            "max_abs_pct": round(float(flagged_basis["pct"].abs().max()), 2)
            if flagged_basis.height
            else None,
        },
        "funding_extreme": {
            "count": funding.height,
            "max_abs": float(funding["funding_rate"].abs().max()) if funding.height else None,
        },
        "known_before_ts": int((part["known_at"] < part["ts"]).sum()),
        "duplicate_key": _duplicates(part, limits.examples),
        "high_below_low": _high_below_low(part, limits.examples),
    }
    return entry


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return format_duration(value)
    return value
