"""``oihedge features``: build the feature table of a panel and write it to Parquet.

Thin: load the panel through :class:`oihedge.pipelines.store.PanelStore` (with enough history
before ``--start`` for every window to be warm), call
:func:`oihedge.features.registry.build_features`, write the table, print what was built.
The feature spec (JSON) and its hash are stored in the Parquet file's metadata (keys
``oihedge.feature_spec`` and ``oihedge.feature_spec_sha256``) so the table says how it
was made.

``--dump-online`` prints the spec's generated online pass instead
(:func:`oihedge.features.online.engine.dump_source`): the code the live loop runs, as a traceback
through it names it.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import click
import polars as pl
from rich.table import Table

from oihedge.features.schema import format_duration, parse_duration
from oihedge.pipelines.cli.common import (
    CliError,
    config_option,
    emit_json,
    json_option,
    load_cli_config,
    out,
    panel_option,
    progress_bar,
)

SPEC_KEY = "oihedge.feature_spec"
HASH_KEY = "oihedge.feature_spec_sha256"
#: venues per symbol the per-symbol passes are printed for by --dump-online
DUMP_VENUES = 4


def register(app: click.Group) -> None:
    """Add ``features`` to the ``oihedge`` group."""
    app.add_command(features)


def parse_moment(text: str | None, option: str) -> datetime | None:
    """A date (``2025-10-01``) or ISO datetime; UTC unless it names another zone."""
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise CliError(f"{option} must be a date or ISO datetime, got {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


@click.command("features")
@panel_option
@click.option("--start", default=None, help="First decision time, UTC (date or ISO datetime).")
@click.option("--end", default=None, help="End of the decision times (exclusive), UTC.")
@click.option(
    "--spec",
    "spec_name",
    default="core",
    show_default=True,
    help="Feature spec: core (version 1) or core@v2 (core plus the options family).",
)
@click.option("--bar", default=None, help="Bar length, e.g. 5m or 1h (default: from the data).")
@click.option(
    "--out",
    "out_file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Parquet file to write (required unless --dump-online).",
)
@click.option(
    "--dump-online",
    is_flag=True,
    help="Print the spec's generated online pass (row, step and the per-symbol passes "
    f"for {DUMP_VENUES} venues) for --bar, or the panel's bar, and exit; writes nothing.",
)
@config_option
@json_option
def features(
    panel_dir: Path | None,
    start: str | None,
    end: str | None,
    spec_name: str,
    bar: str | None,
    out_file: Path | None,
    dump_online: bool,
    config_path: Path | None,
    json_out: Path | None,
) -> None:
    """Build the feature table (one row per decision time and symbol) and write it.

    Reads the panel with enough history before --start for every window to be warm,
    treats it as the live loop would (rows in known_at order; out-of-order rows
    ignored; stale venues left out), and writes ts, symbol and the spec's features.
    """
    from oihedge.features.registry import build_features, get_spec, lookback
    from oihedge.pipelines.store import PanelStore

    if out_file is None and not dump_online:
        raise click.MissingParameter(param_hint="'--out'", param_type="option")

    cfg = load_cli_config(config_path, **{"data.panel_dir": panel_dir})
    first, stop = parse_moment(start, "--start"), parse_moment(end, "--end")
    if first is not None and stop is not None and stop <= first:
        raise CliError(f"--end must be after --start, got {end!r} <= {start!r}")
    try:
        spec = get_spec(spec_name)
    except ValueError as err:
        raise CliError(f"--spec: {err}") from None
    try:
        step = parse_duration(bar) if bar is not None else None
    except ValueError as err:
        raise CliError(f"--bar: {err}") from None
    if dump_online and (step or spec.params.bar):
        _dump_online(spec, step or spec.params.bar)
        return
    store = PanelStore(cfg.data.panel_dir)
    if not cfg.data.panel_dir.is_dir():
        raise CliError(f"--panel {cfg.data.panel_dir} does not exist (or is not a folder)")
    if not store.files():
        raise CliError(f"--panel {cfg.data.panel_dir}: no panel files under it")
    if dump_online:  # the bar the panel holds
        _dump_online(spec, _panel_bar(store, stop))
        return
    with progress_bar() as progress:
        task = progress.add_task("reading panel", total=1.0)
        if step is None:
            step = _panel_bar(store, stop)
        assert out_file is not None  # (checked above)
        try:
            resolved = spec.resolve(step)
        except ValueError as err:
            raise CliError(str(err)) from None
        since = None if first is None else first - lookback(resolved)
        panel = store.read(start=since, end=stop)
        if panel.is_empty():
            raise CliError(_no_rows(store, cfg.data.panel_dir, start, end))
        progress.update(task, completed=1.0, description=f"read {panel.height:,} rows")
        build_task = progress.add_task(f"building {len(spec.features)} features", total=1.0)
        try:
            built = build_features(
                panel,
                resolved,
                start=first,
                end=stop,
                progress=lambda f: progress.update(build_task, completed=f),
            )
        except ValueError as err:
            raise CliError(str(err)) from None
        if built.rows_used == 0:
            reasons = ", ".join(f"{r}: {n}" for r, n in built.quarantined.items())
            raise CliError(f"no panel row passed validation ({reasons})")
        write_task = progress.add_task(f"writing {out_file}", total=1.0)
        try:
            out_file.parent.mkdir(parents=True, exist_ok=True)
            built.table.write_parquet(
                out_file,
                metadata={SPEC_KEY: built.spec.to_json(), HASH_KEY: built.spec.hash()},
            )
        except FileExistsError as err:  # a file where a folder of the path should be
            raise CliError(
                f"--out {out_file}: cannot write it: {err.filename} is a file, not a folder"
            ) from None
        except OSError as err:
            where = f" ({err.filename})" if err.filename else ""
            raise CliError(f"--out {out_file}: cannot write it{where}: {err.strerror}") from None
        progress.update(write_task, completed=1.0)
    _report(built, out_file, json_out)


def _panel_bar(store: Any, stop: datetime | None) -> timedelta:
    """The bar of the panel's rows before ``stop`` (:func:`oihedge.features.schema.infer_bar`)."""
    from oihedge.features.schema import infer_bar

    return infer_bar(store.scan(end=stop).select("venue", "symbol", "ts").collect())


def _dump_online(spec: Any, bar: timedelta) -> None:
    """Print the generated online pass (plain text: no console markup or wrapping)."""
    from oihedge.features.online.engine import dump_source

    try:
        text = dump_source(spec, bar=bar, venues=DUMP_VENUES)
    except ValueError as err:
        raise CliError(str(err)) from None
    click.echo(text, nl=False)


def _no_rows(store: Any, folder: Path, start: str | None, end: str | None) -> str:
    """Why the range read nothing: the range asked for and the span the panel holds."""
    from oihedge.pipelines.store import collect

    span = collect(store.scan().select(pl.col("ts").min().alias("a"), pl.col("ts").max()), "")
    first, last = span.row(0)
    held = "no rows" if first is None else f"rows from {_fmt(first)} to {_fmt(last)} UTC"
    return (
        f"--panel {folder} has no rows between --start {start or '(its first bar)'} and "
        f"--end {end or '(its last bar)'} (with the warm-up before --start); it holds {held}"
    )


def _report(built: object, out_file: Path, json_out: Path | None) -> None:
    from oihedge.features.registry import FeatureBuild

    assert isinstance(built, FeatureBuild)
    table = built.table
    names = list(built.spec.features)
    cells = table.height * len(names)
    nulls = sum(table[n].null_count() for n in names)
    null_share = nulls / cells if cells else 0.0
    span = (table["ts"].min(), table["ts"].max()) if table.height else (None, None)
    summary = Table(title=f"features -> {out_file}")
    for column in ("rows", "features", "symbols", "from", "to", "null share"):
        summary.add_column(column, justify="right")
    summary.add_row(
        f"{table.height:,}",
        str(len(names)),
        str(table["symbol"].n_unique()) if table.height else "0",
        _fmt(span[0]),
        _fmt(span[1]),
        f"{null_share:.1%}",
    )
    out.print(summary)
    bar = built.spec.params.bar
    out.print(
        f"spec {built.spec.name} v{built.spec.version} (sha256 {built.spec.hash()[:12]}), "
        f"bar {format_duration(bar) if bar else '?'}; panel rows used "
        f"{built.rows_used:,} of {built.rows_in:,}"
    )
    for reason, count in built.quarantined.items():
        out.print(f"  left out {count} row(s): {reason}")
    out.print(f"written: {out_file}")
    per_feature = {n: table[n].null_count() / table.height if table.height else 0.0 for n in names}
    emit_json(
        {
            "out": str(out_file),
            "rows": table.height,
            "features": names,
            "spec": built.spec.to_dict(),
            "spec_sha256": built.spec.hash(),
            "null_share": null_share,
            "null_share_by_feature": per_feature,
            "rows_in": built.rows_in,
            "rows_used": built.rows_used,
            "quarantined": built.quarantined,
        },
        json_out,
    )


def _fmt(moment: datetime | date | None) -> str:
    if moment is None:
        return "-"
    return moment.strftime("%Y-%m-%d %H:%M") if isinstance(moment, datetime) else str(moment)
