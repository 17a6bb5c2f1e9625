"""What every ``oihedge`` command shares: options, console, progress bar, JSON output,
errors, reading the panel (with its history) and pointing MLflow at the configured store.

Command modules (``pipelines/cli/*.py``) import from here; :mod:`oihedge.pipelines.cli.main`
assembles them into one group.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import click
import polars as pl
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from oihedge.features.screening import validate
from oihedge.pipelines.cli.config import (
    Config,
    label_window_off_bar,
    load_config,
    readable_duration,
)
from oihedge.pipelines.store import PanelStore

console = Console(stderr=True)
# piped output (CI logs, `| tee`) gets 120 columns instead of rich's 80, so tables fit
out = Console(width=None if sys.stdout.isatty() else 120)

config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="TOML file overriding the defaults (see `oihedge config show --defaults`).",
)
panel_option = click.option(
    "--panel",
    "panel_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Panel folder (default: data.panel_dir).",
)


def out_dir_option(default: Path | None, help_text: str) -> Any:
    """``--out FOLDER`` (``out_dir``) with the command's default and help."""
    return click.option(
        "--out",
        "out_dir",
        type=click.Path(path_type=Path, file_okay=False),
        default=default,
        show_default=default is not None,
        help=help_text,
    )


def _json_target(ctx: click.Context, _param: click.Parameter, value: Path | None) -> Path | None:
    """``--json -`` makes stdout the JSON's alone: the command's tables go to stderr, and
    the console goes back to stdout (created with ``file=None``) when the command ends."""
    if value is not None and str(value) == "-":
        out.file = sys.stderr
        ctx.call_on_close(lambda: setattr(out, "file", None))
    return value


json_option = click.option(
    "--json",
    "json_out",
    type=click.Path(path_type=Path, dir_okay=False, allow_dash=True),
    default=None,
    callback=_json_target,
    help="Also write the result as JSON to this file ('-' for stdout).",
)


class CliError(Exception):
    """A problem to report as one line and exit code 2."""


def load_cli_config(path: Path | None, **overrides: object) -> Config:
    """The configuration with ``overrides`` from flags (dotted keys; ``None`` = not given)."""
    return load_config(path, overrides=overrides)


def check_bar_windows(cfg: Config, bar: timedelta, *, source: str) -> None:
    """Raise :class:`CliError` when a label window is not a whole number of the bars of
    the panel read (``source``, e.g. ``"--panel data/real-1h"``), naming the key and both
    durations readably (``labels.horizon = 4h30m``). The configuration already checks
    them against ``data.bar``; a panel's own bar is known only once it is read."""
    off = label_window_off_bar(cfg, bar)
    if off:
        key, window = off
        raise CliError(
            f"{key} = {readable_duration(window)} is not a whole number of the "
            f"{readable_duration(bar)} bars of {source}; make it a multiple of "
            f"{readable_duration(bar)}"
        )


def universe_symbols(
    cfg: Config,
    panel_symbols: Iterable[str],
    *,
    command: str,
    weights: Mapping[str, float] | None = None,
    weights_key: str = "backtest.weights",
) -> tuple[str, ...]:
    """The symbols ``command`` uses on a panel: ``weights``' symbols when given (an
    explicit choice), else ``universe.symbols`` that the panel holds, in the universe's
    order. ``weights_key``: the key (or option) the weights came from, for the messages.

    Nothing is left out in silence: a warning on stderr names the symbols used, those the
    panel holds but the universe (or the weights) leave out, and the universe's symbols
    the panel lacks. Raises :class:`CliError` when none of them is in the panel (never
    falls back to the panel's own symbols).
    """
    have = sorted(set(panel_symbols))
    if weights:
        chosen, key = list(weights), weights_key
    else:
        chosen, key = list(cfg.universe.symbols), "universe.symbols"
    used = tuple(s for s in chosen if s in have)
    if not used:
        raise CliError(
            f"{command}: none of {key} ({', '.join(chosen)}) is in the panel, which holds "
            f"{', '.join(have) or 'no symbol'}; set universe.symbols "
            f"(e.g. OIHEDGE_UNIVERSE__SYMBOLS={','.join(have[:3]) or 'BTC,ETH'})"
        )
    left_out = [s for s in have if s not in used]
    absent = [s for s in chosen if s not in have]
    if left_out or absent:
        parts = [f"warning: {command} uses {', '.join(used)} ({key} = {', '.join(chosen)})"]
        if left_out:
            parts.append(f"the panel also holds {', '.join(left_out)}, left out by {key}")
        if absent:
            parts.append(f"not in the panel: {', '.join(absent)}")
        console.print("; ".join(parts), markup=False, highlight=False, soft_wrap=True)
    return used


class _Progress(Progress):
    """A progress display that leaves nothing behind when its block fails: the error
    line is then the only thing on stderr (a finished run keeps its bars)."""

    def __exit__(self, exc_type: Any, exc_val: Any, exc_tb: Any) -> None:
        if exc_type is None:
            super().__exit__(exc_type, exc_val, exc_tb)
            return
        # rich's stop() would print the last frame, and a blank line where stderr is not
        # a terminal: stop the live display alone, erasing it
        self.live.transient = True
        if not self.disable:
            self.live.stop()


def resolve_weights(
    cfg: Config, panel_symbols: Sequence[str], *, command: str = "backtest"
) -> dict[str, float]:
    """The portfolio's weights for ``command`` (``backtest`` or ``live``: its
    ``<command>.weights``), one rule for both: the configured weights, whose symbols must
    all have data (a weighted symbol without data is an error, never dropped: its long
    would go unhedged while the others took its share), or equal weights over the
    universe's symbols in the panel (:func:`universe_symbols`: a warning names what is
    left out; none in it is an error). Not normalised: callers divide by the sum."""
    key = f"{command}.weights"
    configured = dict(cfg.live.weights if command == "live" else cfg.backtest.weights)
    absent = [s for s in configured if s not in panel_symbols]
    if absent:
        raise CliError(f"{key}: weighted symbols {absent} are not in the panel")
    used = universe_symbols(
        cfg, panel_symbols, command=command, weights=configured or None, weights_key=key
    )
    return configured or {s: 1.0 for s in used}


def progress_bar() -> Progress:
    """The progress bar every long-running command draws (on stderr)."""
    return _Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>5.1f}%"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def emit_json(payload: dict[str, Any], target: Path | None) -> None:
    """Write ``payload`` as JSON to ``target`` ('-' is stdout)."""
    if target is None:
        return
    text = json.dumps(payload, indent=2, default=str)
    if (
        str(target) == "-"
    ):  # stdout holds the JSON alone (oihedge.pipelines.cli.main sends tables to stderr)
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
    else:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text + "\n", "utf-8")
        except FileExistsError as err:  # a file where a folder of the path should be
            raise CliError(f"--json {target}: {err.filename} is a file, not a folder") from None
        except OSError as err:
            raise CliError(f"--json {target}: cannot write it: {err.strerror or err}") from None
        console.print(f"JSON written to {target}")


def load_panel(cfg: Config, panel_dir: Path | None) -> pl.DataFrame:
    """Read the panel folder and validate it (quarantined rows are reported, not used);
    the label windows must be whole numbers of the panel's own bars."""
    from oihedge.features.schema import infer_bar

    folder = panel_dir or cfg.data.panel_dir
    store = PanelStore(folder)
    if not store.files():
        raise CliError(f"--panel {folder}: no panel files found (run `oihedge simulate` first?)")
    panel = store.read()
    if panel["ts"].n_unique() > 1:
        check_bar_windows(cfg, infer_bar(panel), source=f"--panel {folder}")
    result = validate(panel, source=str(folder))
    if result.n_quarantined:
        reasons = ", ".join(f"{k}: {v}" for k, v in result.reasons().items())
        out.print(
            f"[yellow]{result.n_quarantined} panel rows fail validation and are left "
            f"out ({reasons})[/yellow]"
        )
    return result.valid


history_option = click.option(
    "--history",
    "history_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Panel folder whose rows before --panel's first bar give the features' warm-up and "
    "the baselines' training rows (default: data.panel_dir, when --panel is another folder).",
)


def load_panel_with_history(
    cfg: Config, panel_dir: Path | None, history_dir: Path | None
) -> tuple[pl.DataFrame, datetime | None]:
    """The panel to score and, when ``--panel`` holds only a new period, the history before
    it: ``history_dir`` or else ``data.panel_dir`` (when it is another folder holding a
    panel). Returns the joined panel and the new period's first bar (None without history).
    The rows taken are said on stderr."""
    panel = load_panel(cfg, panel_dir)
    source = history_dir
    if source is None and panel_dir is not None:
        default = cfg.data.panel_dir
        if Path(default).resolve() != Path(panel_dir).resolve() and PanelStore(default).files():
            source = default
    if source is None:
        return panel, None
    first = panel["ts"].min()
    before = load_panel(cfg, source).filter(pl.col("ts") < first)
    if before.is_empty():
        raise CliError(f"--history {source}: no rows before --panel's first bar {first}")
    console.print(
        f"history: {before.height} rows of {source} ({before['ts'].min():%Y-%m-%d %H:%M} .. "
        f"{before['ts'].max():%Y-%m-%d %H:%M} UTC) before --panel {panel_dir} "
        f"({first:%Y-%m-%d %H:%M} .. {panel['ts'].max():%Y-%m-%d %H:%M} UTC), for the "
        "features' warm-up and the baselines' training rows; scored from "
        f"{first:%Y-%m-%d %H:%M} UTC",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    return pl.concat([before, panel], how="vertical_relaxed"), first


def setup_tracking(cfg: Config, *, existing: bool = False) -> str:
    """Point MLflow at the configured store; with ``existing`` (commands that only read the
    registry) a SQLite store that does not exist is an error rather than a new empty one
    (a command run from another folder would otherwise find "no model" there)."""
    from oihedge.models.tracking import configure_tracking, sqlite_file

    uri = cfg.mlflow.tracking_uri
    where = sqlite_file(uri)
    if existing and where is not None and not where.is_file():
        relative = (
            ""
            if Path(uri[len("sqlite:///") :]).is_absolute()
            else " (a relative path is read from here)"
        )
        raise CliError(
            f"mlflow.tracking_uri = {uri}: no MLflow store at {where}{relative}: run "
            "from the project's folder or set mlflow.tracking_uri"
        )
    return configure_tracking(
        cfg.mlflow.tracking_uri,
        registry_uri=cfg.mlflow.registry_uri,
        experiment=cfg.mlflow.experiment,
        artifact_root=cfg.mlflow.artifact_root,
    )


def fmt_time(moment: object) -> str:
    """A time for a table cell: ``2024-01-01 00:00``, or ``-``."""
    if isinstance(moment, datetime):
        return moment.strftime("%Y-%m-%d %H:%M")
    if isinstance(moment, str) and "T" in moment:
        return moment[:16].replace("T", " ")
    return "-" if moment is None else str(moment)
