"""What the pages show, computed from the decision log's records (pure functions).

Amounts are USD; fractions are of the symbol's maximum hedge (``max_usd``); times are the
log's ISO 8601 UTC strings.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

#: what :func:`filter_decisions` keeps: every decision, those whose tier differs from the
#: symbol's previous decision, or those that placed orders
KEEP = ("all", "tier_changes", "orders")


def when(text: str | None) -> datetime | None:
    """A log time (ISO 8601) as an aware UTC datetime; None for an empty value."""
    if not text:
        return None
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def plot_time(text: str | None) -> str | None:
    """A log time as ``YYYY-MM-DD HH:MM:SS`` in UTC: the date form Plotly reads (it
    takes no offset)."""
    moment = when(text)
    return None if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def decisions(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The decision records, in file order, each with ``tier_changed`` (its tier differs
    from the symbol's previous decision; the first decision of a symbol counts)."""
    previous: dict[str, str] = {}
    out = []
    for record in records:
        if record.get("kind") != "decision":
            continue
        symbol = str(record.get("symbol"))
        tier = str(record.get("tier"))
        out.append({**record, "tier_changed": previous.get(symbol) != tier})
        previous[symbol] = tier
    return out


@dataclass(frozen=True)
class DecisionFilter:
    """The Decisions page's filter: ``symbol`` (None: all), ``start``/``end`` (inclusive,
    UTC; None: open), ``keep`` one of :data:`KEEP`, at most ``limit`` rows, newest first
    after skipping the ``offset`` newest (the page's "older" link)."""

    symbol: str | None = None
    start: datetime | None = None
    end: datetime | None = None
    keep: str = "all"
    limit: int = 500
    offset: int = 0

    def __post_init__(self) -> None:
        if self.keep not in KEEP:
            raise ValueError(f"keep must be one of {KEEP}, got {self.keep!r}")
        if self.limit < 1:
            raise ValueError(f"limit must be >= 1, got {self.limit}")
        if self.offset < 0:
            raise ValueError(f"offset must be >= 0, got {self.offset}")


def filter_decisions(rows: list[dict[str, Any]], f: DecisionFilter) -> list[dict[str, Any]]:
    """The rows of :func:`decisions` that pass ``f``, newest first."""
    kept = []
    skip = f.offset
    for row in reversed(rows):
        if f.symbol and row.get("symbol") != f.symbol:
            continue
        ts = when(row.get("ts"))
        if f.start and (ts is None or ts < f.start):
            continue
        if f.end and (ts is None or ts > f.end):
            continue
        if f.keep == "tier_changes" and not row["tier_changed"]:
            continue
        if f.keep == "orders" and not row.get("orders"):
            continue
        if skip:
            skip -= 1
            continue
        kept.append(row)
        if len(kept) == f.limit:
            break
    return kept


def _fraction(usd: float | None, max_usd: float | None) -> float | None:
    if usd is None or not max_usd:
        return None
    return usd / max_usd


def thin(rows: list[dict[str, Any]], max_points: int) -> list[dict[str, Any]]:
    """At most about ``max_points`` of one symbol's decisions (rows of :func:`decisions`),
    in order, for a chart: from each run of consecutive rows, the one with the highest
    probability (a scare is never thinned away), plus every tier change, every decision
    with orders and the last decision, so that tier bands and order markers stay exact."""
    if max_points < 1:
        raise ValueError(f"max_points must be >= 1, got {max_points}")
    if len(rows) <= max_points:
        return rows
    step = -(-len(rows) // max_points)
    keep = {len(rows) - 1}
    for first in range(0, len(rows), step):
        bucket = range(first, min(first + step, len(rows)))
        keep.add(max(bucket, key=lambda i: rows[i].get("probability") or 0.0))
    keep.update(i for i, r in enumerate(rows) if r.get("tier_changed") or r.get("orders"))
    return [rows[i] for i in sorted(keep)]


def timeline(
    rows: list[dict[str, Any]], max_points: int | None = None
) -> dict[str, dict[str, Any]]:
    """Per symbol, the Timeline page's series (each symbol's rows :func:`thin`-ned to
    ``max_points`` when given): ``ts`` (:func:`plot_time`); ``price``
    (USD, only when the log has prices); ``probability``, ``p_entry``, ``p_exit`` (0-1);
    ``target_fraction`` and ``hedge_fraction`` (the hedge after the decision over
    ``max_usd``); ``tier``; ``orders``: ``{ts, side, notional_usd, status,
    hedge_fraction}`` one per order; ``bands``: :func:`tier_bands`."""
    by_symbol: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_symbol.setdefault(str(row.get("symbol")), []).append(row)
    out: dict[str, dict[str, Any]] = {}
    for row in (
        r
        for part in by_symbol.values()
        for r in (part if max_points is None else thin(part, max_points))
    ):
        series = out.setdefault(
            str(row.get("symbol")),
            {
                key: []
                for key in (
                    "ts",
                    "price",
                    "probability",
                    "p_entry",
                    "p_exit",
                    "target_fraction",
                    "hedge_fraction",
                    "tier",
                    "orders",
                )
            },
        )
        hedge = _fraction(row.get("hedge_after_usd"), row.get("max_usd"))
        ts = plot_time(row.get("ts"))
        series["ts"].append(ts)
        series["price"].append(row.get("price"))
        series["probability"].append(row.get("probability"))
        series["p_entry"].append(row.get("p_entry"))
        series["p_exit"].append(row.get("p_exit"))
        series["target_fraction"].append(row.get("target_fraction"))
        series["hedge_fraction"].append(hedge)
        series["tier"].append(row.get("tier"))
        for order in row.get("orders") or []:
            series["orders"].append(
                {
                    "ts": ts,
                    "side": order.get("side"),
                    "notional_usd": order.get("notional_usd"),
                    "status": order.get("status"),
                    "hedge_fraction": hedge,
                }
            )
    for series in out.values():
        series["bands"] = tier_bands(series["ts"], series["tier"])
        if all(p is None for p in series["price"]):
            series["price"] = None  # the log has no prices: the chart leaves the panel out
    return out


def tier_bands(ts: list[str], tiers: list[str | None]) -> list[dict[str, str]]:
    """The runs of one tier above baseline: ``{tier, start, end}``, ``end`` the bar where
    the next run starts (the last bar for the last run)."""
    bands: list[dict[str, str]] = []
    start = 0
    for i in range(1, len(tiers) + 1):
        if i < len(tiers) and tiers[i] == tiers[start]:
            continue
        tier = tiers[start]
        if tier is not None and tier != "baseline":
            bands.append({"tier": tier, "start": ts[start], "end": ts[min(i, len(ts) - 1)]})
        start = i
    return bands


def group_errors(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The Live page's errors (``oihedge.serving.live.status`` records: ``ts``, ``error``,
    ``symbol``, ``venue``), one row per kind: ``error``, ``count``, ``symbols`` and
    ``venues``
    (sorted), ``first`` and ``last`` time; most frequent first."""
    groups: dict[str, dict[str, Any]] = {}
    for e in errors:
        kind = str(e.get("error"))
        g = groups.setdefault(
            kind,
            {"error": kind, "count": 0, "symbols": set(), "venues": set(), "times": []},
        )
        g["count"] += 1
        for key, field in (("symbols", "symbol"), ("venues", "venue")):
            if e.get(field):
                g[key].add(str(e[field]))
        if e.get("ts"):
            g["times"].append(str(e["ts"]))
    out = []
    for g in groups.values():
        times = sorted(g.pop("times"))
        out.append(
            {
                **g,
                "symbols": sorted(g["symbols"]),
                "venues": sorted(g["venues"]),
                "first": times[0] if times else None,
                "last": times[-1] if times else None,
            }
        )
    return sorted(out, key=lambda g: (-g["count"], g["error"]))
