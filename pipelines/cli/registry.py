"""CLI commands of the model registry: promote, rollback, models list.

`promote` gates the challenger against the champion the gate knows
(:func:`oihedge.models.promotion.contest`): a champion alias set outside `promote` (the MLflow UI)
is neither the bar to beat nor recorded as the previous champion. The gate's hedge side
is the backtest of the hedge policy each model drives
(:func:`oihedge.serving.backtest.gate.hedge_gate_metrics`, with `oihedge backtest`'s settings),
passed to :func:`oihedge.models.promotion.verdict` as numbers. `models list` shows, per version,
whether the live loop would serve it as champion (its gate verdict or forced promotion,
:func:`oihedge.models.version_checks.serving_refusal`).
"""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from oihedge.pipelines.cli.backtest import backtest_settings
from oihedge.pipelines.cli.common import (
    CliError,
    config_option,
    emit_json,
    json_option,
    load_cli_config,
    load_panel,
    out,
    panel_option,
    resolve_weights,
    setup_tracking,
)


@click.command()
@panel_option
@click.option(
    "--version", "version", default=None, help="Version to promote (default: challenger)."
)
@click.option("--force", is_flag=True, help="Promote even if the gate refuses (needs --message).")
@click.option("--message", "-m", default=None, help="Why (required with --force).")
@config_option
@json_option
def promote(
    panel_dir: Path | None,
    version: str | None,
    force: bool,
    message: str | None,
    config_path: Path | None,
    json_out: Path | None,
) -> None:
    """Gate the challenger against the champion on the same held-out window; promote if it
    is at least as good (margins: registry.margins)."""
    from oihedge.models import promotion, registry
    from oihedge.serving.backtest.gate import hedge_gate_metrics

    if force and not (message and message.strip()):
        raise CliError("--force needs --message saying why")
    cfg = load_cli_config(config_path)
    setup_tracking(cfg, existing=True)
    name = registry.model_name(cfg.universe.name)
    try:
        match = promotion.contest(name, version)
    except registry.RegistryError as err:
        raise CliError(str(err)) from None
    champion = match.champion
    if match.alias_outside_gate:
        out.print(
            f"[yellow]the champion alias points at v{match.aliased}, which was not promoted "
            f"through the gate: gating against {'v' + champion if champion else 'no champion'}"
            "[/yellow]"
        )
    try:
        loaded = promotion.contenders(match)
    except registry.RegistryError as err:
        raise CliError(str(err)) from None
    panel = load_panel(cfg, panel_dir)
    measured = promotion.measure(panel, loaded, alert_rate=cfg.train.alert_rate)
    symbols = sorted(measured.prepared.features["symbol"].unique().to_list())
    settings = backtest_settings(cfg, resolve_weights(cfg, symbols))
    hedge = hedge_gate_metrics(
        panel,
        measured.prepared,
        {k: m.pyfunc for k, m in loaded.items()},
        {k: m.card for k, m in loaded.items()},
        settings,
    )
    verdict = promotion.verdict(measured, hedge, cfg.registry.margins.model_dump())
    _print_gate(verdict, name, match.challenger, champion)
    try:
        entry = registry.promote(
            name, match.challenger, verdict, force=force, reason=message, user=getpass.getuser()
        )
    except registry.RegistryError as err:
        emit_json({"promoted": False, "gate": verdict.as_dict()}, json_out)
        raise CliError(str(err)) from None
    out.print(f"champion: {name} v{entry['version']} (was {entry['previous'] or 'none'})")
    emit_json({"promoted": True, "gate": verdict.as_dict(), "entry": entry}, json_out)


def _print_gate(verdict: Any, name: str, version: str, champion: str | None) -> None:
    view = Table(
        title=f"gate: {name} v{version} vs champion "
        f"{'v' + champion if champion else '(none)'} on {verdict.window}"
    )
    for col in ("metric", "challenger", "champion", "margin", "better is", "pass"):
        view.add_column(col)
    for r in verdict.rows:
        view.add_row(
            r.metric,
            f"{r.challenger:.4f}",
            "n/a" if r.champion is None else f"{r.champion:.4f}",
            f"{r.margin:g}",
            "higher" if r.higher_is_better else "lower",
            "yes" if r.passed else "NO",
        )
    out.print(view)
    for reason in verdict.refusals:
        out.print(f"[red]refused: {reason}[/red]")


@click.command()
@click.option("--message", "-m", default="", help="Why (kept in the history).")
@config_option
def rollback(message: str, config_path: Path | None) -> None:
    """Move `champion` back to the previous champion."""
    from oihedge.models import registry

    cfg = load_cli_config(config_path)
    setup_tracking(cfg, existing=True)
    name = registry.model_name(cfg.universe.name)
    try:
        entry = registry.rollback(name, user=getpass.getuser(), reason=message)
    except registry.RegistryError as err:
        raise CliError(str(err)) from None
    out.print(f"champion: {name} v{entry['version']} (rolled back from v{entry['previous']})")


@click.group("models")
def models_group() -> None:
    """The model registry."""


@models_group.command("list")
@config_option
@json_option
def models_list(config_path: Path | None, json_out: Path | None) -> None:
    """Every version with its aliases and held-out metrics, and the champion history."""
    from oihedge.models import registry

    cfg = load_cli_config(config_path)
    setup_tracking(cfg, existing=True)
    name = registry.model_name(cfg.universe.name)
    try:
        found = registry.versions(name)
        moves = registry.history(name)
    except Exception as err:  # noqa: BLE001 - MLflow's not-found is a generic exception
        raise CliError(f"{name}: {err}") from None
    view = Table(title=name)
    for col in ("version", "aliases", "created", "PR-AUC", "Brier", "gate", "serves", "dataset"):
        view.add_column(col)
    for v in found:
        tags = v["tags"]
        v["serving_refusal"] = registry.serving_refusal(name, v["version"], tags)
        view.add_row(
            v["version"],
            ",".join(v["aliases"]),
            f"{v['created']:%Y-%m-%d %H:%M}",
            tags.get("holdout_pr_auc", ""),
            tags.get("holdout_brier", ""),
            tags.get("gate_passed", ""),
            "yes" if v["serving_refusal"] is None else "no",
            tags.get("dataset_window", ""),
        )
    out.print(view)
    for v in found:
        if registry.CHAMPION in v["aliases"] and v["serving_refusal"] is not None:
            out.print(
                f"[red]champion v{v['version']} is not served by the live loop: "
                f"{v['serving_refusal']}[/red]"
            )
    history = Table(title="champion history")
    for col in ("at", "action", "version", "previous", "by", "reason"):
        history.add_column(col)
    for m in moves:
        history.add_row(
            m["at"],
            m["action"],
            str(m["version"]),
            str(m.get("previous") or ""),
            m["by"],
            m.get("reason", ""),
        )
    out.print(history)
    emit_json({"model": name, "versions": found, "history": moves}, json_out)


def register(app: click.Group) -> None:
    """Add ``promote``, ``rollback`` and ``models`` to ``app``."""
    for command in (promote, rollback, models_group):
        app.add_command(command)
