"""``oihedge data report``: coverage, gaps, quarantine and sanity flags of a stored panel.

Thin: read the panel through the store, call :func:`oihedge.pipelines.quality.data_report`,
print a table (and JSON with ``--json``).

The panel's completeness marker (:mod:`oihedge.pipelines.panel_manifest`) is read too and printed
first: ``complete``, ``modified`` (files added after the write), ``unmarked`` (no marker:
a panel this project did not write, e.g. ``shared/data/real-1h``; reported, exit 0) or
``partial`` (a write that did not finish, or a file missing or shorter than written). A
partial panel is reported in full, flagged, and the command then exits with code 2 and one
line naming the panel and what is missing, so a script never takes it for a good one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from oihedge.features.schema import format_duration, parse_duration
from oihedge.pipelines.cli.common import (
    CliError,
    config_option,
    emit_json,
    fmt_time,
    json_option,
    load_cli_config,
    out,
    panel_option,
)


@click.group("data")
def data_group() -> None:
    """Inspect the stored panel."""


@data_group.command("report")
@panel_option
@click.option("--bar", default=None, help="Bar length, e.g. 1h (default: read from the data).")
@click.option(
    "--oi-jump",
    "oi_jump_pct",
    type=click.FloatRange(min=0, min_open=True),
    default=50.0,
    show_default=True,
    help="Flag OI moves above this percent in one bar.",
)
@config_option
@json_option
def data_report(
    panel_dir: Path | None,
    bar: str | None,
    oi_jump_pct: float,
    config_path: Path | None,
    json_out: Path | None,
) -> None:
    """Coverage, longest gaps, quarantined rows and OI/price sanity per venue and symbol."""
    from oihedge.pipelines import panel_manifest
    from oihedge.pipelines.quality import SanityLimits
    from oihedge.pipelines.quality import data_report as build_report
    from oihedge.pipelines.store import PanelStore

    cfg = load_cli_config(config_path, **{"data.panel_dir": panel_dir})
    root = cfg.data.panel_dir
    if not root.exists():
        raise CliError(f"--panel {root} does not exist")
    try:
        completeness = panel_manifest.check(root)
    except ValueError as err:
        raise CliError(str(err)) from None
    store = PanelStore(root)
    panel = store.read()
    if panel.is_empty():
        raise CliError(f"--panel {root} holds no panel rows")
    try:
        bar_length = None if bar is None else parse_duration(bar)
    except ValueError as err:
        raise CliError(f"--bar: {err}") from None
    try:
        report = build_report(
            panel, store.quarantine(), bar=bar_length, limits=SanityLimits(oi_jump_pct=oi_jump_pct)
        )
    except ValueError as err:
        raise CliError(str(err)) from None
    out.print(_completeness_text(completeness))
    _print_report(report, root)
    emit_json(
        {"panel": str(root), "completeness": completeness.to_dict(), **report.to_dict()}, json_out
    )
    if completeness.status == "partial":
        raise CliError(f"panel {root} is partial: {'; '.join(completeness.problems)}")


def _completeness_text(completeness: Any) -> str:
    style = {"partial": "bold red", "modified": "yellow", "unmarked": "yellow"}
    text = f"completeness: {completeness.note}"
    if completeness.status == "partial":
        text = f"PARTIAL PANEL -- {text}"
    tag = style.get(completeness.status)
    return f"[{tag}]{escape(text)}[/{tag}]" if tag else escape(text)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}%"


def _print_report(report: Any, root: Path) -> None:
    from oihedge.pipelines.quality import OPTIONS_COLUMNS

    data = report.to_dict()
    title = (
        f"data report: {root} ({report.rows:,} rows, bar {format_duration(report.bar)} "
        f"{report.bar_source})"
    )
    table = Table(title=title)
    columns = (
        "venue",
        "symbol",
        "first",
        "last",
        "bars",
        "cover",
        "close",
        "oi",
        "opt.",
        "fund.",
        "depth",
        "liq",
        "longest gap",
        "quar.",
        "flags",
    )
    for column in columns:
        table.add_column(
            column,
            justify="left"
            if column in ("venue", "symbol", "first", "last", "longest gap", "flags")
            else "right",
        )
    for e in data["venues"]:
        if not e.get("rows"):
            table.add_row(
                e["venue"],
                e["symbol"],
                "-",
                "-",
                "0",
                "-",
                "-",
                "-",
                "-",
                "-",
                "-",
                "-",
                "-",
                str(sum(e["quarantined"].values())),
                "",
            )
            continue
        gaps = e["longest_gaps"]
        gap = f"{gaps[0]['duration']} after {fmt_time(gaps[0]['after'])}" if gaps else "-"
        flags = _flag_text(e["flags"], e["off_grid_rows"])
        table.add_row(
            e["venue"],
            e["symbol"],
            fmt_time(e["first"]),
            fmt_time(e["last"]),
            f"{e['bars']:,}",
            _pct(e["coverage_pct"]),
            _pct(e["series"]["close"]["of_panel_pct"] or None),
            _pct(e["series"]["oi_usd"]["of_panel_pct"] or None),
            _pct(e["series"].get("options", {}).get("of_panel_pct")),
            str(e["series"]["funding_rate"]["settlements"]),
            _pct(e["series"]["spot_depth_usd"]["of_panel_pct"] or None),
            _liq_cell(e),
            gap,
            str(sum(e["quarantined"].values())),
            flags,
        )
    out.print(table)
    out.print(
        "cover: distinct bars present between first and last; close/oi: bars carrying that "
        "series, of the same span; opt.: bars with options data (Deribit's BTC and ETH chains; "
        "null elsewhere); fund.: funding settlements (8h-normalised rate); depth: bars with "
        "spot depth (+-1 %); liq: bars with liquidation sums (>=: the venue publishes only part "
        "of them, the sums are lower bounds; n/a: no feed)."
    )
    _print_feeds(data["venues"])
    for e in data["venues"]:
        options = e.get("series", {}).get("options", {})
        if options.get("bars"):
            parts = [
                f"{c.removeprefix('opt_')} {_pct(e['series'][c]['of_panel_pct'])}"
                for c in OPTIONS_COLUMNS
            ]
            out.print(f"  {e['venue']} {e['symbol']} options coverage: {', '.join(parts)}")
    for e in data["venues"]:
        if e.get("rows") and (text := _flag_text(e["flags"], e["off_grid_rows"])) != "ok":
            # in full: a narrow terminal cuts the table's cell
            out.print(f"  {e['venue']} {e['symbol']} flags: {text}")
        for name in ("oi_jump", "price_jump"):
            for ex in e.get("flags", {}).get(name, {}).get("examples", []):
                out.print(
                    f"  {e['venue']} {e['symbol']} {name} at {fmt_time(ex['ts'])}: "
                    f"{ex['from']:,.6g} -> {ex['to']:,.6g} ({ex['pct']:+.1f}%)"
                )
        flags = e.get("flags", {})
        for ex in flags.get("duplicate_key", {}).get("examples", []):
            out.print(
                f"  {e['venue']} {e['symbol']} duplicate_key at {fmt_time(ex['ts'])}: "
                f"{ex['copies']} copies"
            )
        for ex in flags.get("high_below_low", {}).get("examples", []):
            out.print(
                f"  {e['venue']} {e['symbol']} high_below_low at {fmt_time(ex['ts'])}: "
                f"high {ex['high']:,.6g} < low {ex['low']:,.6g}"
            )
        for reason, count in e["quarantined"].items():
            out.print(f"  {e['venue']} {e['symbol']}: quarantined {count} row(s): {reason}")
    total = sum(data["quarantined_by_reason"].values())
    out.print(
        f"quarantined rows: {total:,}" + (f" {data['quarantined_by_reason']}" if total else "")
    )


def _liq_cell(entry: dict[str, Any]) -> str:
    feed = entry["feeds"]["liquidations"]
    if feed["stream"] is None:
        return "n/a"
    cover = _pct(entry["series"]["liquidations"]["of_panel_pct"] or None)
    return cover if feed["complete"] else f">= {cover}"


def _print_feeds(entries: list[dict[str, Any]]) -> None:
    """Per venue, once: what it publishes of liquidations and spot depth."""
    seen: set[str] = set()
    for e in entries:
        if "feeds" not in e or e["venue"] in seen:
            continue
        seen.add(e["venue"])
        liq = e["feeds"]["liquidations"]
        bound = "" if liq["complete"] or liq["stream"] is None else " [LOWER BOUND]"
        out.print(f"  {e['venue']} liquidations{bound}: {escape(liq['notes'])}")
        out.print(f"  {e['venue']} spot depth: {escape(e['feeds']['spot_depth'])}")


def _flag_text(flags: dict[str, Any], off_grid: int) -> str:
    parts = []
    for name in (
        "duplicate_key",
        "high_below_low",
        "oi_jump",
        "price_jump",
        "basis",
        "funding_extreme",
    ):
        if flags[name]["count"]:
            parts.append(f"{name} {flags[name]['count']}")
    if flags["known_before_ts"]:
        parts.append(f"known_before_ts {flags['known_before_ts']}")
    if off_grid:
        parts.append(f"off_grid {off_grid}")
    return ", ".join(parts) or "ok"
