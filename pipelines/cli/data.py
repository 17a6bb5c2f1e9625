"""The commands that write panels from venues: ``oihedge ingest`` and ``oihedge
import-archive`` (``simulate``: :mod:`oihedge.pipelines.cli.simulate`; ``data report``:
:mod:`oihedge.pipelines.cli.report`).

Thin: parse options, build the stage's inputs, call it, print a table (and JSON with
``--json``). Domain errors become one line and exit code 2 (:class:`CliError`).

Every write leaves a completeness marker (:mod:`oihedge.pipelines.panel_manifest`): ``simulate``
builds the whole panel beside ``--out`` and swaps it in complete
(:mod:`oihedge.pipelines.sim.output`); ``ingest`` and ``import-archive`` mark the panel as being
written before their first row and complete after their last.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from oihedge.features.schema import parse_duration
from oihedge.pipelines.cli.common import (
    CliError,
    config_option,
    console,
    emit_json,
    fmt_time,
    json_option,
    load_cli_config,
    out,
    panel_option,
    progress_bar,
)
from oihedge.pipelines.cli.config import Config
from oihedge.pipelines.cli.report import data_group

bar_option = click.option(
    "--bar", default=None, help="Bar length, e.g. 5m or 1h (default: data.bar)."
)


def register(app: click.Group) -> None:
    """Add ``ingest``, ``import-archive`` and ``data`` (``oihedge.pipelines.cli.report``) to
    ``app`` (``simulate``: :mod:`oihedge.pipelines.cli.simulate`)."""
    for command in (ingest, import_archive, data_group):
        app.add_command(command)


def _split(text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    items = tuple(t.strip() for t in text.split(",") if t.strip())
    if not items:
        raise CliError(f"expected a comma-separated list, got {text!r}")
    return items


def parse_since(text: str, now: datetime) -> datetime:
    """A date, an ISO datetime (UTC unless it says otherwise) or a lookback (``30d``)."""
    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise CliError(
            f"--since must be a date (2024-01-01), a datetime or a lookback like 30d, got {text!r}"
        ) from None
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    if moment >= now:
        raise CliError(f"--since {text!r} is in the future")
    return moment.astimezone(UTC)


def _bar(cfg: Config, text: str | None) -> timedelta:
    try:
        return cfg.data.bar if text is None else parse_duration(text)
    except ValueError as err:
        raise CliError(f"--bar: {err}") from None


# -- ingest -----------------------------------------------------------------------------


@click.command()
@click.option(
    "--venues", default=None, help="ccxt ids, comma-separated (default: universe.venues)."
)
@click.option(
    "--symbols", default=None, help="Base assets, comma-separated (default: universe.symbols)."
)
@click.option(
    "--since",
    default=None,
    help="First bar: 2024-01-01, an ISO datetime, or a lookback like 30d "
    "(default: ingest.lookback). "
    "Each series resumes after its last stored bar when that is later.",
)
@click.option(
    "--series",
    default=None,
    help="Subset of close,spot_close,oi_usd,funding_rate,spot_depth_usd (default: all; "
    "spot_depth_usd is one spot book snapshot per run, liquidations come only from the "
    "live loop's streams).",
)
@click.option(
    "--resume/--no-resume",
    default=True,
    help="Resume every series after its last stored bar (default), or fetch again from "
    "--since (rewrites stored bars with the venue's values; use to fill older history).",
)
@click.option(
    "--concurrent/--sequential",
    default=None,
    help="Fetch venues concurrently with ccxt.async_support (default: ingest.concurrent).",
)
@click.option(
    "--options/--no-options",
    default=None,
    help="Also snapshot Deribit's option chains of the symbols it lists options for, into "
    "the opt_* columns (default: ingest.options). No history exists: one bar per run.",
)
@panel_option
@bar_option
@config_option
@json_option
def ingest(
    venues: str | None,
    symbols: str | None,
    since: str | None,
    series: str | None,
    resume: bool,
    concurrent: bool | None,
    options: bool | None,
    panel_dir: Path | None,
    bar: str | None,
    config_path: Path | None,
    json_out: Path | None,
) -> None:
    """Fetch perp and spot candles, OI and funding through ccxt into the panel, and
    (--options, the default) a snapshot of Deribit's option chains for BTC and ETH.

    Incremental: every (venue, symbol, series) resumes after its last stored bar, pages
    are written as they arrive, so an interrupted run loses nothing. Rate limits are
    respected (ccxt's limiter plus each venue's documented limits); network errors,
    rate-limit answers and timeouts are retried with exponential backoff.
    """
    from oihedge.pipelines.ingest.collectors import AsyncCollector, Collector, RetryPolicy
    from oihedge.pipelines.ingest.incremental import IngestPlan, ingest_async
    from oihedge.pipelines.ingest.incremental import ingest as run_ingest
    from oihedge.pipelines.ingest.venues import SERIES, venue
    from oihedge.pipelines.store import PanelStore

    cfg = load_cli_config(
        config_path,
        **{
            "data.panel_dir": panel_dir,
            "universe.venues": _split(venues),
            "universe.symbols": _split(symbols),
            "ingest.concurrent": concurrent,
            "ingest.options": options,
        },
    )
    now = datetime.now(UTC)
    try:
        specs = [venue(v) for v in cfg.universe.venues]
        plan = IngestPlan(
            symbols=cfg.universe.symbols,
            since=parse_since(since, now) if since else now - cfg.ingest.lookback,
            bar=_bar(cfg, bar),
            series=_split(series) or SERIES,
            flush_rows=cfg.ingest.flush_rows,
            resume=resume,
        )
        retry = RetryPolicy(
            cfg.ingest.max_attempts, cfg.ingest.backoff_base_s, cfg.ingest.backoff_cap_s
        )
    except ValueError as err:
        raise CliError(str(err)) from None
    store = PanelStore(cfg.data.panel_dir)
    with progress_bar() as bars:
        tasks: dict[str, Any] = {}

        def progress(venue_id: str, advance: int, add_total: int) -> None:
            if venue_id not in tasks:
                tasks[venue_id] = bars.add_task(venue_id, total=0)
            task = tasks[venue_id]
            if add_total:
                bars.update(task, total=(bars.tasks[task].total or 0) + add_total)
            if advance:
                bars.advance(task, advance)

        if cfg.ingest.concurrent:
            collectors = {s.id: AsyncCollector(s, retry=retry) for s in specs}

            async def run() -> Any:
                try:
                    return await ingest_async(store, collectors, plan, progress=progress)
                finally:
                    await asyncio.gather(*(c.close() for c in collectors.values()))

            report = asyncio.run(run())
        else:
            sync = {s.id: Collector(s, retry=retry) for s in specs}
            report = run_ingest(store, sync, plan, progress=progress)
    if cfg.ingest.options:
        _ingest_options(store, plan, retry, report, concurrent=cfg.ingest.concurrent)
    _print_ingest(report, cfg.data.panel_dir)
    emit_json({"panel": str(cfg.data.panel_dir), **report.to_dict()}, json_out)
    if report.errors:
        first = next(iter(report.errors.items()))
        raise CliError(
            f"ingest failed for {len(report.errors)} venue(s); {first[0]}: {first[1]} "
            f"(the bars fetched before the failure are stored; re-run to resume)"
        )


def _ingest_options(store: Any, plan: Any, retry: Any, report: Any, *, concurrent: bool) -> None:
    """The options snapshot of this bar (oihedge.pipelines.ingest.options_ingest) into
    ``report``."""
    from oihedge.pipelines.ingest.options import options_collector
    from oihedge.pipelines.ingest.options_ingest import ingest_options, ingest_options_async

    clock = lambda: datetime.now(UTC)  # noqa: E731
    if not concurrent:
        collector = options_collector(retry=retry)
        ingest_options(store, collector, plan.symbols, plan.bar, clock=clock, report=report)
        return

    async def run() -> None:
        collector = options_collector(asynchronous=True, retry=retry)
        try:
            await ingest_options_async(
                store, collector, plan.symbols, plan.bar, clock=clock, report=report
            )
        finally:
            await collector.close()

    asyncio.run(run())


def _print_ingest(report: Any, panel: Path) -> None:
    table = Table(title=f"ingest -> {panel}")
    for column in ("venue", "symbol", "series", "pages", "rows", "quarantined", "first", "last"):
        table.add_column(
            column, justify="right" if column in ("pages", "rows", "quarantined") else "left"
        )
    for s in report.series:
        table.add_row(
            s.venue,
            s.symbol,
            s.series,
            str(s.pages),
            f"{s.rows_written:,}",
            f"{s.quarantined:,}",
            fmt_time(s.first_ts),
            fmt_time(s.last_ts),
        )
    out.print(table)
    for s in report.series:
        if s.note:
            out.print(f"  {s.venue} {s.symbol} {s.series}: {s.note}")
        for reason, count in s.quarantine_reasons.items():
            out.print(f"  {s.venue} {s.symbol} {s.series}: quarantined {count} row(s): {reason}")
        if s.without_price:
            out.print(
                f"  {s.venue} {s.symbol} {s.series}: {s.without_price} OI value(s) had no perp "
                f"close to convert with and were not written"
            )
    for venue_id, pacing in report.pacing.items():
        out.print(
            f"  {venue_id}: {pacing.requests} request(s), rate limits imply "
            f"{pacing.wait_s:.1f} s, retries waited {pacing.retry_wait_s:.1f} s"
        )
    out.print(f"rows written: {report.rows_written:,}; quarantined: {report.quarantined:,}")


# -- import-archive -------------------------------------------------------------------


@click.command("import-archive")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--skip-bad", is_flag=True, help="Skip unreadable files (listed) instead of stopping."
)
@panel_option
@bar_option
@config_option
@json_option
def import_archive(
    paths: tuple[Path, ...],
    skip_bad: bool,
    panel_dir: Path | None,
    bar: str | None,
    config_path: Path | None,
    json_out: Path | None,
) -> None:
    """Load Binance USD-M archive files (metrics, klines, fundingRate) into the panel.

    PATHS are files or folders (searched recursively), zipped as published or not:
    BTCUSDT-metrics-2024-01-01.zip, BTCUSDT-5m-2024-01-01.zip,
    BTCUSDT-fundingRate-2024-01.zip. Every file's header is checked before anything is
    written.
    """
    from oihedge.pipelines.ingest.archive import ArchiveError
    from oihedge.pipelines.ingest.archive import import_archive as run_import
    from oihedge.pipelines.store import PanelStore

    cfg = load_cli_config(config_path, **{"data.panel_dir": panel_dir})
    store = PanelStore(cfg.data.panel_dir)
    bars = progress_bar()
    task = bars.add_task("importing", total=None)

    def progress(done: int, total: int) -> None:
        # drawn from the first parsed file on: a bad file is reported before any output
        if not bars.live.is_started:
            bars.start()
        bars.update(task, completed=done, total=total)

    try:
        report = run_import(store, paths, bar=_bar(cfg, bar), skip_bad=skip_bad, progress=progress)
    except ArchiveError as err:
        raise CliError(str(err)) from None
    finally:
        bars.stop()
    table = Table(title=f"import-archive -> {cfg.data.panel_dir}")
    for column in ("files", "rows read", "rows written", "dropped", "quarantined", "skipped"):
        table.add_column(column, justify="right")
    table.add_row(
        ", ".join(f"{k} {v}" for k, v in sorted(report.files.items())),
        f"{report.rows_read:,}",
        f"{report.rows_written:,}",
        f"{report.dropped_off_grid:,}",
        f"{report.quarantined:,}",
        str(len(report.skipped)),
    )
    out.print(table)
    for reason, count in report.quarantine_reasons.items():
        out.print(f"  quarantined {count} row(s): {reason}")
    for name, error in report.skipped.items():
        console.print(f"  skipped {name}: {error}", markup=False)
    emit_json(
        {
            "panel": str(cfg.data.panel_dir),
            "files": report.files,
            "rows_read": report.rows_read,
            "rows_written": report.rows_written,
            "dropped": report.dropped_off_grid,
            "duplicates": report.duplicates,
            "quarantined": report.quarantined,
            "quarantine_reasons": report.quarantine_reasons,
            "skipped": report.skipped,
            "symbols": sorted(report.symbols),
        },
        json_out,
    )


__all__: Sequence[str] = ("import_archive", "ingest", "register")
