"""``oihedge live``: the hedge loop over a stored panel (``--replay``) or the live venues,
its kill switch (``live kill`` / ``live resume``) and ``live status``
(:mod:`oihedge.pipelines.cli.status`).

The loop always trades through the paper broker unless ``--live`` is given; ``--live``
needs ``OIHEDGE_<VENUE>_API_KEY`` / ``_SECRET`` in the environment (the ccxt broker
refuses otherwise, in one line). The model is the registry's champion of the universe
(``models:/oihedge-cascade-<universe>@champion``), reloaded when the alias moves.

One loop per state (``live.state_db``: one account and strategy id): a second ``oihedge
live`` on a state another one holds exits with code 2 and one line naming the holder
(pid, host, since; :class:`oihedge.serving.execution.state_schema.StateLock`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from oihedge.pipelines.cli.common import (
    CliError,
    config_option,
    console,
    emit_json,
    json_option,
    load_cli_config,
    out,
    resolve_weights,
)
from oihedge.pipelines.cli.config import Config


def register(app: click.Group) -> None:
    """Add ``live`` (with ``kill``, ``resume`` and ``status``) to the ``oihedge`` group."""
    from oihedge.pipelines.cli.status import status

    live.add_command(status)
    app.add_command(live)


@click.group("live", invoke_without_command=True)
@click.option(
    "--replay",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Replay this stored panel folder bar by bar (paper broker) instead of live data.",
)
@click.option("--live", "live_orders", is_flag=True, help="Send real orders (needs API keys).")
@click.option("--max-bars", type=click.IntRange(min=1), default=None, help="Stop after N bars.")
@click.option(
    "--start",
    type=click.DateTime(),
    default=None,
    help="With --replay: first decision time, UTC (earlier rows warm the features up).",
)
@click.option(
    "--end", type=click.DateTime(), default=None, help="With --replay: last decision time, UTC."
)
@config_option
@json_option
@click.pass_context
def live(
    ctx: click.Context,
    replay: Path | None,
    live_orders: bool,
    max_bars: int | None,
    start: datetime | None,
    end: datetime | None,
    config_path: Path | None,
    json_out: Path | None,
) -> None:
    """Run the hedge loop: data -> features -> champion -> policy -> orders (paper unless
    --live). `oihedge live kill --reason ...` stops all new orders."""
    if ctx.invoked_subcommand is not None:
        return
    cfg = load_cli_config(config_path)
    if replay is not None and live_orders:
        raise CliError("--replay runs on the paper broker; --live cannot be combined with it")
    if replay is None and (start or end):
        raise CliError("--start/--end choose the bars of a replay: give --replay PANEL")
    window = tuple(t.replace(tzinfo=UTC) if t else None for t in (start, end))
    if window[0] and window[1] and not window[0] < window[1]:
        raise CliError(f"--start {start} must be before --end {end}")
    with _loop(cfg, replay=replay, live_orders=live_orders, window=window) as (
        loop,
        source,
        warmup,
    ):
        summary = loop.run(source, max_bars=max_bars, warmup_until=warmup)
    _print_summary(summary.as_dict(), cfg)
    emit_json(summary.as_dict(), json_out)


@live.command("kill")
@click.option("--reason", required=True, help="Why (recorded with the kill switch).")
@config_option
def kill(reason: str, config_path: Path | None) -> None:
    """Engage the kill switch: no new order is sent; the hedge on stays as it is."""
    from oihedge.serving.execution.guards import engage_kill_switch, kill_switch_engaged

    cfg = load_cli_config(config_path)
    path = cfg.live.kill_switch_file
    already = kill_switch_engaged(path)
    engage_kill_switch(path, reason)
    word = "already engaged" if already else "engaged"
    out.print(f"kill switch {word}: {path} (no new orders until `oihedge live resume`)")


@live.command("resume")
@click.option("--reason", required=True, help="Why it is safe to trade again.")
@config_option
def resume(reason: str, config_path: Path | None) -> None:
    """Release the kill switch (the loop sends orders again from its next bar); the
    reason is kept beside the switch file and recorded by the loop."""
    from oihedge.serving.execution.guards import release_kill_switch

    cfg = load_cli_config(config_path)
    released = release_kill_switch(cfg.live.kill_switch_file, reason)
    out.print("kill switch released" if released else "kill switch was not engaged")


@contextlib.contextmanager
def _loop(
    cfg: Config,
    *,
    replay: Path | None,
    live_orders: bool,
    window: tuple[datetime | None, datetime | None] = (None, None),
) -> Iterator[tuple[Any, Any, datetime | None]]:
    """The loop, its source and the warm-up end, with everything closed afterwards."""
    from oihedge.features.online.engine import OnlineFeatures
    from oihedge.features.registry import get_spec
    from oihedge.models.registry import model_name
    from oihedge.models.workflow import feature_spec_card
    from oihedge.pipelines.cli.models import setup_tracking
    from oihedge.serving.execution.state import StateInUseError, StateStore
    from oihedge.serving.live.decision_log import DecisionLog
    from oihedge.serving.live.loop import HedgeLoop
    from oihedge.serving.live.metrics import LoopMetrics
    from oihedge.serving.live.model_watch import ChampionWatch

    source, symbols, warmup = _source(cfg, replay, window)
    spec = get_spec(cfg.train.feature_spec).resolve(source_bar(source, cfg))
    lv = cfg.live
    with contextlib.ExitStack() as stack:
        # --live without keys fails first; the paper broker shares the state's file, so
        # it is opened after the state's lock (a second loop is refused before it
        # touches anything)
        brokers = _brokers(cfg, symbols, live_orders) if live_orders else {}
        try:  # a replay is a simulation: its state need not survive a power cut
            store = stack.enter_context(StateStore(lv.state_db, durable=replay is None))
        except StateInUseError as err:
            raise CliError(str(err)) from None
        brokers = brokers or _brokers(cfg, symbols, live_orders, durable=replay is None)
        setup_tracking(cfg)
        for broker in brokers.values():
            stack.callback(getattr(broker, "close", lambda: None))
        executor = _executor(cfg, store, brokers)
        metrics = LoopMetrics()
        if lv.metrics_port:
            port = metrics.serve(lv.metrics_port)
            console.print(f"metrics on http://127.0.0.1:{port}/metrics")
            stack.callback(metrics.close)
        log = stack.enter_context(DecisionLog(lv.decision_log, durable=replay is None))
        watch = ChampionWatch(
            model_name(cfg.universe.name),
            feature_spec_card(spec),
            check_every=lv.model_check_every,
            min_interval_s=lv.model_check_interval.total_seconds(),
        )
        loop = HedgeLoop(
            OnlineFeatures(spec, symbols=symbols),
            watch,
            executor,
            _settings(cfg, symbols, replay=replay is not None),
            decision_log=log,
            metrics=metrics,
        )
        yield loop, source, warmup


def source_bar(source: Any, cfg: Config) -> Any:
    """The bar of a replayed panel (inferred from it), else ``data.bar``."""
    return getattr(source, "bar", None) or cfg.data.bar


def _source(
    cfg: Config,
    replay: Path | None,
    window: tuple[datetime | None, datetime | None] = (None, None),
) -> tuple[Any, tuple[str, ...], Any]:
    from oihedge.pipelines.store import PanelStore
    from oihedge.serving.feeds.replay import ReplaySource

    bar = cfg.data.bar
    if replay is not None:
        store = PanelStore(replay)
        if not store.files():
            raise CliError(f"--replay {replay}: no panel files found")
        src = ReplaySource(store.read(), start=window[0], end=window[1])
        # the backtest's rule: a weighted symbol without data is an error, not dropped
        symbols = tuple(resolve_weights(cfg, src.symbols, command="live"))
        return src, symbols, None
    from oihedge.pipelines.ingest.collectors import Collector, RetryPolicy, make_exchange
    from oihedge.pipelines.ingest.venues import VENUES
    from oihedge.serving.feeds.websocket import live_source

    collectors = {}
    for venue in cfg.universe.venues:
        spec = VENUES[venue]
        exchange = make_exchange(spec)
        exchange.timeout = int(cfg.live.venue_timeout_s * 1000)
        collectors[venue] = Collector(
            spec, exchange, retry=RetryPolicy(max_attempts=cfg.live.venue_max_attempts)
        )
    now = datetime.now(UTC)
    live_store = PanelStore(cfg.live.panel_dir)
    history = live_store.read(start=now - cfg.live.warmup)
    symbols = tuple(cfg.universe.symbols)
    lv = cfg.live
    options = None
    if lv.options:
        from oihedge.pipelines.ingest.options import options_collector

        options = options_collector(retry=RetryPolicy(max_attempts=lv.venue_max_attempts))
        options.exchange.timeout = int(lv.venue_timeout_s * 1000)
    live_src = live_source(
        live_store,
        collectors,
        symbols,
        bar,
        feeds=lv.feeds,
        max_silence=lv.stream_max_silence,
        stream_wait=lv.stream_wait,
        poll_delay=lv.poll_delay,
        liquidations=True,
        depth_streams=True,
        options=options,
    )
    if history.is_empty():
        return live_src, symbols, None
    import itertools

    past = ReplaySource(history, bar=bar)
    return itertools.chain(past, live_src), symbols, now


def _brokers(
    cfg: Config, symbols: tuple[str, ...], live_orders: bool, *, durable: bool = True
) -> dict[str, Any]:
    from oihedge.serving.execution.brokers import PaperBroker
    from oihedge.serving.policy.costs import CostModel

    venue = cfg.live.hedge_venue
    if not live_orders:
        costs = CostModel(**cfg.costs.model_dump())
        return {
            venue: PaperBroker(
                venue,
                cfg.live.state_db,
                costs=costs,
                initial_cash_usd=cfg.live.paper_initial_cash_usd,
                durable=durable,
            )
        }
    from oihedge.serving.execution.brokers.ccxt_broker import CcxtBroker

    try:
        return {venue: CcxtBroker(venue, live=True, symbols=symbols)}
    except (ValueError, RuntimeError) as err:
        raise CliError(str(err)) from None


def _executor(cfg: Config, store: Any, brokers: dict[str, Any]) -> Any:
    from oihedge.serving.execution.executor import Executor
    from oihedge.serving.execution.guards import Caps, OrderGuard

    lv = cfg.live
    caps = Caps(lv.max_order_usd, lv.max_hedge_usd, lv.max_orders_per_minute)
    return Executor(
        store,
        brokers,
        OrderGuard(caps),
        kill_switch_file=lv.kill_switch_file,
        resend_window=lv.resend_window,
        position_tolerance_usd=lv.position_tolerance_usd,
    )


def _settings(cfg: Config, symbols: tuple[str, ...], *, replay: bool) -> Any:
    from oihedge.serving.live.loop import LoopSettings
    from oihedge.serving.policy.params import PolicyParams

    weights = dict(cfg.live.weights) or {s: 1.0 for s in symbols}
    traded = tuple(s for s in symbols if s in weights)
    total = sum(weights[s] for s in traded)
    return LoopSettings(
        strategy_id=cfg.live.strategy_id,
        hedge_venue=cfg.live.hedge_venue,
        params={s: PolicyParams(**cfg.policy_params(s)) for s in traded},
        portfolio_usd={s: cfg.live.portfolio_usd * weights[s] / total for s in traded},
        venues=tuple(cfg.universe.venues),
        top_k=cfg.live.top_contributions,
        explain_min_change=cfg.live.explain_min_change,
        explain_max_age=cfg.live.explain_max_age,
        explain_timeout=cfg.live.explain_timeout,
        replay=replay,
    )


def _print_summary(summary: dict[str, Any], cfg: Config) -> None:
    table = Table(title="live loop")
    table.add_column("symbol")
    table.add_column("position (base)", justify="right")
    table.add_column(f"hedge on {cfg.live.hedge_venue} (USD)", justify="right")
    for symbol, amount in summary["positions"].items():
        table.add_row(symbol, f"{amount:,.6g}", f"{summary['hedge_usd'][symbol]:,.0f}")
    out.print(table)
    orders = ", ".join(f"{k}: {v}" for k, v in sorted(summary["orders"].items())) or "none"
    out.print(
        f"{summary['bars']} bars ({summary['warmup_bars']} warm-up), "
        f"{summary['decisions']} decisions, orders: {orders}, "
        f"{summary['quarantined']} rows quarantined, "
        f"{summary['bars_per_second']:,.0f} bars/s"
    )
    if summary["errors"]:
        out.print("errors: " + ", ".join(f"{k}: {v}" for k, v in sorted(summary["errors"].items())))
    for event in summary["model_events"]:
        if event["event"] != "loaded":
            out.print(f"[yellow]model {event['event']}: v{event['version']} {event['detail']}")
