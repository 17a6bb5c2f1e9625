"""``oihedge simulate``: the embedded market simulator writes a panel (and its ground-truth
cascades) beside ``--out`` and swaps it in complete (:mod:`oihedge.pipelines.sim.output`).

Thin: parse options, call the simulator, print a table (and JSON with ``--json``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.table import Table

from oihedge.pipelines.cli.common import (
    CliError,
    config_option,
    emit_json,
    json_option,
    load_cli_config,
    out,
    out_dir_option,
    progress_bar,
)


def register(app: click.Group) -> None:
    """Add ``simulate`` to ``app``."""
    app.add_command(simulate)


def _simulate_epilog() -> str:
    """The simulator's mechanism and parameters, kept as written (``\\b``: no rewrap)."""
    from oihedge.pipelines.sim.simulate import help_text

    paragraphs = help_text().split("\n\n")
    return "\n\n".join("\b\n" + p for p in paragraphs)


@click.command(epilog=_simulate_epilog())
@click.option(
    "--days",
    type=click.FloatRange(min=0.01),
    default=None,
    help="Simulated days (default: simulate.days).",
)
@click.option(
    "--seed", type=click.IntRange(min=0), default=None, help="Random seed (default: simulate.seed)."
)
@out_dir_option(None, "Panel folder to write (default: simulate.out_dir).")
@click.option(
    "--options/--no-options",
    default=None,
    help="Add a Deribit-like options venue for BTC and ETH, the opt_* columns "
    "(default: simulate.options).",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Replace a panel simulate wrote in --out (swapped in once the new one is complete; "
    "a folder holding anything else is refused).",
)
@config_option
@json_option
def simulate(
    days: float | None,
    seed: int | None,
    out_dir: Path | None,
    options: bool | None,
    overwrite: bool,
    config_path: Path | None,
    json_out: Path | None,
) -> None:
    """Write a simulated market panel and its ground-truth cascades.

    The simulator is a mechanism, not drawn labels: leveraged traders open positions
    venue by venue (each venue with its own leverage and reaction lag) as a slow
    leverage-appetite regime builds; funding follows the perp premium; every position has
    a liquidation price; when price crosses clustered liquidation prices the forced
    orders move price by an impact that grows with notional over depth, tripping further
    liquidations (a cascade) while OI falls. Prices follow correlated fat-tailed returns
    with volatility clustering. It records per-bar liquidations, spot price and depth,
    feed gaps and a few bad rows (which the validator quarantines), and (--options) BTC
    and ETH options series on a venue of their own. Ground truth goes to
    OUT/_truth/cascades.parquet.

    The panel is built in a hidden folder beside OUT and swapped in when complete (with
    its completeness marker OUT/_manifest.json): a killed run leaves OUT as it was.
    --overwrite replaces only a panel simulate wrote. The mechanism and every parameter
    follow.
    """
    from oihedge.pipelines.sim.output import OutputError, replacing, write_simulation
    from oihedge.pipelines.sim.simulate import SimulationConfig
    from oihedge.pipelines.sim.simulate import simulate as run_simulation

    cfg = load_cli_config(
        config_path,
        **{
            "simulate.days": days,
            "simulate.seed": seed,
            "simulate.out_dir": out_dir,
            "simulate.options": options,
        },
    )
    target = cfg.simulate.out_dir
    sim_config = SimulationConfig(
        days=cfg.simulate.days,
        seed=cfg.simulate.seed,
        bar=cfg.data.bar,
        options=cfg.simulate.options,
    )
    try:
        with replacing(target, overwrite=overwrite) as staging:
            with progress_bar() as bar:
                task = bar.add_task(f"simulating {cfg.simulate.days:g} days", total=1.0)
                result = run_simulation(
                    sim_config, progress=lambda f: bar.update(task, completed=f)
                )
                bar.update(task, completed=1.0)
            written = write_simulation(result, staging, bar=cfg.data.bar)
    except OutputError as err:
        raise CliError(str(err)) from None
    report = written.append
    truth = target / written.truth.relative_to(staging)
    quarantine = report.quarantine_file
    quarantine = None if quarantine is None else target / quarantine.relative_to(staging)
    _print_simulate(report, result.events.height, target)
    out.print(f"panel: {target}\nquarantine: {quarantine}\nground truth: {truth}")
    emit_json(
        {
            "panel": str(target),
            "rows_written": report.rows_written,
            "partitions": [f"{v}/{s}" for v, s in report.partitions],
            "quarantined": report.quarantined,
            "quarantine_reasons": report.quarantine_reasons,
            "quarantine_file": quarantine,
            "events": result.events.height,
            "ground_truth": str(truth),
            "complete": True,
        },
        json_out,
    )


def _print_simulate(report: Any, events: int, target: Path) -> None:
    table = Table(title=f"simulated panel -> {target}")
    for column in ("rows written", "partitions", "quarantined", "cascade events"):
        table.add_column(column, justify="right")
    table.add_row(
        f"{report.rows_written:,}",
        str(len(report.partitions)),
        f"{report.quarantined:,}",
        str(events),
    )
    out.print(table)
    for reason, count in report.quarantine_reasons.items():
        out.print(f"  quarantined {count} row(s): {reason}")
