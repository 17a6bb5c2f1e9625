"""``oihedge dashboard``: serve the read-only web dashboard over the loop's files.

The paths come from the configuration's ``[live]`` section (``state_db``,
``decision_log``, ``kill_switch_file``), the registry from ``[mlflow]`` and the backtest
reports from ``--backtest-dir`` (default ``backtest.out_dir``), the market series from
``--panel`` (default ``live.panel_dir``). It binds 127.0.0.1 by default; any other
address needs a token (``--token`` or ``OIHEDGE_DASHBOARD_TOKEN``), checked on every
request and never logged (:mod:`oihedge.serving.dashboard.auth`). ``--screenshots DIR`` writes a
PNG of every page instead of serving (:mod:`oihedge.serving.dashboard.screenshots`).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import click

from oihedge.pipelines.cli.common import (
    CliError,
    config_option,
    load_cli_config,
    out,
    setup_tracking,
)

if TYPE_CHECKING:
    from oihedge.serving.dashboard import DashboardSettings


def register(app: click.Group) -> None:
    """Add ``dashboard`` to the ``oihedge`` group."""
    app.add_command(dashboard)


@click.command("dashboard")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option(
    "--port", type=click.IntRange(1, 65535), default=8050, show_default=True, help="TCP port."
)
@click.option(
    "--token",
    envvar="OIHEDGE_DASHBOARD_TOKEN",
    show_envvar=True,
    default=None,
    help="Token every request must carry (required off loopback; prefer the variable:"
    " a command line is visible to other users).",
)
@click.option(
    "--refresh",
    type=click.FloatRange(min=0.5),
    default=5.0,
    show_default=True,
    help="Seconds between the Live page's refreshes.",
)
@click.option(
    "--panel",
    "panel_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Panel store the Timeline reads price, open interest and funding from (default:"
    " live.panel_dir; give the replayed panel for a replay).",
)
@click.option(
    "--backtest-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Folder of backtest reports; the Backtest page shows the latest (default:"
    " backtest.out_dir).",
)
@click.option(
    "--mlflow-ui",
    default=None,
    help="Address of a running MLflow UI to link to (e.g. http://127.0.0.1:5000).",
)
@click.option(
    "--screenshots",
    "screenshots_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Instead of serving: write a PNG of every page to this folder and exit (needs"
    " Debian's chromium and the dev dependency playwright).",
)
@config_option
def dashboard(
    host: str,
    port: int,
    token: str | None,
    refresh: float,
    panel_dir: Path | None,
    backtest_dir: Path | None,
    mlflow_ui: str | None,
    screenshots_dir: Path | None,
    config_path: Path | None,
) -> None:
    """Serve the dashboard (Live, Timeline, Decisions, Models, Backtest) over the live
    loop's state file and decision log, the model registry and the backtest reports,
    read-only."""
    from oihedge.models.registry import model_name
    from oihedge.serving.dashboard import DashboardSettings, create_app, is_loopback

    token = token.strip() if token and token.strip() else None
    if token is None and not is_loopback(host):
        raise CliError(
            f"--host {host} is not a loopback address: give a token with --token or"
            " OIHEDGE_DASHBOARD_TOKEN"
        )
    cfg = load_cli_config(config_path)
    registry_name, registry_problem = None, None
    try:
        setup_tracking(cfg, existing=True)
        registry_name = model_name(cfg.universe.name)
    except CliError as err:  # no store yet: the other pages still serve
        registry_problem = str(err)
    settings = DashboardSettings(
        state_db=cfg.live.state_db,
        decision_log=cfg.live.decision_log,
        kill_switch_file=cfg.live.kill_switch_file,
        token=token,
        refresh_seconds=refresh,
        mlflow_ui=mlflow_ui,
        registry_name=registry_name,
        registry_problem=registry_problem,
        backtest_dir=backtest_dir or cfg.backtest.out_dir,
        market_panel=panel_dir or cfg.live.panel_dir,
    )
    if screenshots_dir is not None:  # served on loopback for the browser alone
        _screenshots(replace(settings, token=None), screenshots_dir)
        return
    serve(create_app(settings), host, port)


def _screenshots(settings: DashboardSettings, folder: Path) -> None:
    """Write the pages' PNGs; a page that logged a console error fails the command."""
    from oihedge.serving.dashboard.screenshots import take_screenshots

    try:
        shots = take_screenshots(settings, folder)
    except ModuleNotFoundError as err:
        raise CliError(f"--screenshots needs {err.name}: pip install -e '.[dev]'") from None
    for path in shots.files:
        out.print(str(path), markup=False, highlight=False)
    broken = {page: errors for page, errors in shots.errors.items() if errors}
    if broken:
        raise click.ClickException(f"console errors on the dashboard's pages: {broken}")


def serve(app: object, host: str, port: int) -> None:
    """Run ``app`` under uvicorn until interrupted, with the token filter on its loggers
    (installed again after uvicorn configured logging)."""
    import uvicorn

    from oihedge.serving.dashboard.app import LOGGERS
    from oihedge.serving.dashboard.auth import install_log_filter

    config = uvicorn.Config(app, host=host, port=port, log_level="info")  # type: ignore[arg-type]
    install_log_filter(*LOGGERS)
    uvicorn.Server(config).run()
