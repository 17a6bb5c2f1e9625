"""``oihedge live status``: what a running or stopped loop is doing, in a table.

The body reads :func:`oihedge.serving.live.status.read_status` (state file read-only, no lock, the
decision log's tail) and asks the registry, if its store is there, for the served model's
name, aliases and gate verdict. Safe while the loop runs.
"""

from __future__ import annotations

from datetime import UTC, datetime
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
    setup_tracking,
)
from oihedge.pipelines.cli.config import Config


@click.command("status")
@click.option(
    "--bars",
    type=click.IntRange(min=1),
    default=12,
    show_default=True,
    help="How many of the last bars the errors cover.",
)
@config_option
@json_option
def status(bars: int, config_path: Path | None, json_out: Path | None) -> None:
    """Show the loop's last bar, each symbol's probability, tier, target and hedge, the
    venues, the kill switch, the model served and recent errors (read-only)."""
    from oihedge.serving.live.status import read_status

    cfg = load_cli_config(config_path)
    try:
        snapshot = read_status(
            cfg.live.state_db,
            cfg.live.decision_log,
            kill_switch_file=cfg.live.kill_switch_file,
            bars=bars,
            now=datetime.now(UTC),
        )
    except FileNotFoundError as err:
        raise CliError(f"live.state_db: {err}") from None
    record = snapshot.record()
    record["model"] |= _registry_view(cfg, record["model"].get("version"))
    _print(record)
    emit_json(record, json_out)


def _registry_view(cfg: Config, version: str | None) -> dict[str, Any]:
    """Name, aliases and gate verdict of the served version, or why they are unknown."""
    from oihedge.models import registry
    from oihedge.serving.dashboard.models_view import served_model

    name = registry.model_name(cfg.universe.name)
    try:
        setup_tracking(cfg, existing=True)
        return served_model(name, version)
    except Exception as err:  # noqa: BLE001 - the status still shows the loop's side
        return {"name": name, "registry": f"not read: {err}"}


def _money(value: float | None) -> str:
    return "-" if value is None else f"${value:,.0f}"


def _num(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _print(record: dict[str, Any]) -> None:
    age = record["age_seconds"]
    last = record["last_bar"] or "none"
    out.print(
        f"last bar {last}" + ("" if age is None else f" ({age / 60:,.1f} min ago)"),
        markup=False,
        highlight=False,
    )
    table = Table(title="symbols (last decision)")
    for column in (
        "symbol",
        "price",
        "p",
        "loss p x sev",
        "hold cost",
        "tier",
        "target",
        "hedge",
        "venues",
        "last order",
    ):
        table.add_column(column)
    for s in record["symbols"]:
        order = s["last_order"]
        left = ", ".join(f"{v}: {why}" for v, why in s["left_out"].items())
        table.add_row(
            s["symbol"],
            _num(s["price"], ",.2f"),
            _num(s["probability"], ".4f"),
            _num(s["forecast_loss"], ".3%"),
            _num(s["hold_cost"], ".3%"),
            s["tier"],
            f"{_money(s['target_usd'])} ({_num(s['target_fraction'], '.2f')})",
            _money(s["hedge_usd"]),
            f"{s['fresh_venues']} fresh" + (f"; stale {left}" if left else ""),
            "-"
            if order is None
            else f"{order['side']} {_money(order['notional_usd'])} {order['state']}"
            f" ({order['decision_ts']})",
        )
    out.print(table)
    kill = record["kill_switch"]
    state = kill["state"] or "never engaged"
    line = f"kill switch: {state}"
    if kill["state"]:
        line += f" at {kill['at']} ({kill['reason']})"
    if kill.get("file_present"):
        line += f"; {kill['file']} is present: no new orders"
    out.print(line, markup=False, highlight=False)
    model = record["model"]
    out.print(
        f"model: {model.get('name', '?')} version {model.get('version')}"
        + (f" aliases {', '.join(model['aliases'])}" if model.get("aliases") else "")
        + (f"; gate {model['gate']}" if "gate" in model else "")
        + (f"; registry {model['registry']}" if "registry" in model else "")
        + (f"; last event {model['event']} at {model['at']}" if "event" in model else ""),
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    errors = record["errors"]
    out.print(f"errors in the last bars: {len(errors)}", markup=False, highlight=False)
    for e in errors[-10:]:
        where = "/".join(str(x) for x in (e.get("venue"), e.get("symbol")) if x)
        out.print(f"  {e['ts']} {where} {e['error']}", markup=False, highlight=False)
