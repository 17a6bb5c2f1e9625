"""What every ``oihedge`` command shares: options, console, progress bar, JSON output, errors.

Command modules (``pipelines/cli_*.py``) import from here; :mod:`pipelines.cli` assembles
them into one group.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from pipelines.config import Config, load_config

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
json_option = click.option(
    "--json",
    "json_out",
    type=click.Path(path_type=Path, dir_okay=False, allow_dash=True),
    default=None,
    help="Also write the result as JSON to this file ('-' for stdout).",
)


class CliError(Exception):
    """A problem to report as one line and exit code 2."""


def load_cli_config(path: Path | None, **overrides: object) -> Config:
    """The configuration with ``overrides`` from flags (dotted keys; ``None`` = not given)."""
    return load_config(path, overrides=overrides)


class _Progress(Progress):
    """A progress display that leaves nothing behind when its block fails: the error
    line is then the only thing on stderr (a finished run keeps its bars)."""

    def __exit__(self, exc_type: Any, exc_val: Any, exc_tb: Any) -> None:
        if exc_type is not None:
            self.live.transient = True
        super().__exit__(exc_type, exc_val, exc_tb)


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
    if str(target) == "-":
        out.print_json(text)
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text + "\n", "utf-8")
        console.print(f"JSON written to {target}")
