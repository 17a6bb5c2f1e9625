"""The live loop: one class, every source (replay or live venues), every bar the same path.

Per bar close ``t`` (:meth:`HedgeLoop.process`):

1. **Rows.** Every row the source delivered is checked (:func:`serving.sources.check_row`:
   missing fields, wrong types, NaN, negative amounts, off-grid ``ts``); a bad row, a row
   the source already rejected and a row the online features refuse (out of order) is
   *quarantined*: recorded in the state store (``events``, kind ``quarantine``, with the
   reason), counted in the metrics, and never pushed. Good rows go to
   :class:`~features.online.OnlineFeatures` in arrival order.
2. **Prices and fills.** The price of a symbol is the median close over the venues at its
   newest bar (the backtest's reference price). When it moves to a new bar it is given to
   the paper brokers (:meth:`~serving.brokers.PaperBroker.on_price`): orders decided at
   an earlier bar fill there, at the next price, as in the backtest. Active orders are
   then reconciled with their broker.
3. **Staleness.** A venue whose newest bar is older than ``max_staleness`` (the feature
   spec's, two bars by default) at ``t`` is stale; the features already leave it out of
   the cross-venue features (same rule). The decision records every venue left out and
   why (``stale``, ``no data``, ``quarantined``, the source's error kind), and the policy
   gets the number of fresh venues: with fewer than ``min_fresh_venues`` it may grow the
   hedge but never reduce it.
4. **Model.** The feature vector goes to the serving model's ``predict_vector``; a model
   error, or no model, gives no probability: the policy then holds or grows only.
5. **Policy and orders.** :func:`serving.signals.signals_from_row` ->
   :func:`serving.policy.decide` (the position, including working orders, is the hedge the
   policy starts from) -> :func:`serving.rebalancer.plan_orders` (the whole hedge of a
   symbol on ``hedge_venue``) -> :meth:`serving.execution.Executor.submit` (kill switch,
   caps, state written before and after sending).
6. **Record.** One decision-log line per symbol; metrics; the decision and its policy
   state are persisted (before the orders are sent) whenever the state changed or an
   order is planned.

**Start** (:meth:`HedgeLoop.start`): redaction of credentials in every log record, the
model, the persisted policy states, then :meth:`Executor.reconcile` -- before any
decision. **Restart**: bars up to the last persisted decision only warm the features up
(no decision, no order); at that bar, a symbol whose decision is persisted is not decided
again. Re-deciding the same bar yields the same client order ids, and the executor skips
an id it has already recorded: no order is ever sent twice.

**Errors are caught here** (the boundary): a failing venue, model, broker or policy input
never stops the loop; it is logged, counted and recorded in the decision.
"""

from __future__ import annotations

import gc
import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from features.online import OnlineFeatures
from serving.brokers import PaperBroker
from serving.decision_log import DecisionLog, top_contributions
from serving.execution import Executor
from serving.loop_book import VenueBook, restore_policy_states, resume_point, state_key
from serving.metrics import LoopMetrics
from serving.model_watch import ModelEvent, ModelProvider
from serving.orders import OrderIntent
from serving.policy import Decision, PolicyState, decide, with_position
from serving.policy_params import PolicyParams
from serving.rebalancer import plan_orders
from serving.redact import install_redaction, redact
from serving.signals import FUNDING_FALLBACK, SIGNAL_FEATURES, VOL, signals_from_row
from serving.sources import Bar, Source, check_name, check_row, from_us
from serving.state import ACTIVE_STATES

__all__ = ["HedgeLoop", "LoopSettings", "LoopSummary"]

log = logging.getLogger(__name__)

_US = timedelta(microseconds=1)


@dataclass(frozen=True)
class LoopSettings:
    """What the loop trades and how.

    Attributes:
        strategy_id: part of every client order id (``live.strategy_id``).
        hedge_venue: ccxt id of the venue the hedges trade on (a broker must exist for it).
        params: hedge-policy parameters per traded symbol (the traded symbols).
        portfolio_usd: the long exposure per symbol, USD, at the first price the loop sees;
            held as constant base units afterwards (as the backtest holds its portfolio).
        venues: venues expected for every symbol (one never heard of is ``no data``).
        max_staleness: a venue's newest bar older than this is stale (None: the feature
            spec's ``max_staleness``).
        top_k: contributions written per decision (0: none; saves the model's SHAP pass).
        replay: the clock is the bar time (a replay); False: wall-clock time.
    """

    strategy_id: str
    hedge_venue: str
    params: Mapping[str, PolicyParams]
    portfolio_usd: Mapping[str, float]
    venues: tuple[str, ...] = ()
    max_staleness: timedelta | None = None
    top_k: int = 5
    replay: bool = True

    def __post_init__(self) -> None:
        missing = [s for s in self.params if s not in self.portfolio_usd]
        if missing:
            raise ValueError(f"portfolio_usd lacks traded symbols {missing}")
        bad = {s: v for s, v in self.portfolio_usd.items() if not (math.isfinite(v) and v >= 0)}
        if bad:
            raise ValueError(f"portfolio_usd must be finite and >= 0, got {bad}")


@dataclass
class LoopSummary:
    """What a run did: bars, decisions, orders by outcome, final hedge per symbol."""

    bars: int = 0
    warmup_bars: int = 0
    decisions: int = 0
    orders: dict[str, int] = field(default_factory=dict)
    quarantined: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    hedge_usd: dict[str, float] = field(default_factory=dict)
    positions: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    model_events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def bars_per_second(self) -> float:
        return self.bars / self.seconds if self.seconds > 0 else float("nan")

    def as_dict(self) -> dict[str, Any]:
        return {
            "bars": self.bars,
            "warmup_bars": self.warmup_bars,
            "decisions": self.decisions,
            "orders": dict(self.orders),
            "quarantined": self.quarantined,
            "errors": dict(self.errors),
            "hedge_usd": dict(self.hedge_usd),
            "positions": dict(self.positions),
            "seconds": self.seconds,
            "bars_per_second": self.bars_per_second,
            "model_events": list(self.model_events),
        }


class HedgeLoop:
    """The decision loop (see the module docstring).

    ``features``: the online calculator (its spec is the one the model was trained on).
    ``model``: the model provider (:class:`serving.model_watch.ChampionWatch`).
    ``executor``: guards, brokers and the state store. ``decision_log`` / ``metrics``:
    where decisions and numbers go. ``clock``: wall-clock time for live runs (ignored
    when ``settings.replay``).
    """

    def __init__(
        self,
        features: OnlineFeatures,
        model: ModelProvider,
        executor: Executor,
        settings: LoopSettings,
        *,
        decision_log: DecisionLog | None = None,
        metrics: LoopMetrics | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        if settings.hedge_venue not in executor.brokers:
            raise ValueError(f"no broker for the hedge venue {settings.hedge_venue!r}")
        self.features = features
        self.model = model
        self.executor = executor
        self.store = executor.store
        self.settings = settings
        self.log = decision_log or DecisionLog(None)
        self.metrics = metrics or LoopMetrics()
        self._clock = clock or (lambda: datetime.now(UTC))
        staleness = settings.max_staleness or features.params.max_staleness
        assert staleness is not None
        self.max_stale_us = staleness // _US
        self.book = VenueBook(settings.venues)
        self.symbols = tuple(settings.params)
        self.broker = executor.brokers[settings.hedge_venue]
        self.rules = {(settings.hedge_venue, s): self.broker.rules(s) for s in self.symbols}
        self.paper = [b for b in executor.brokers.values() if isinstance(b, PaperBroker)]
        names = features.feature_names
        self._names = names
        self._signal_idx = {n: names.index(n) for n in SIGNAL_FEATURES if n in names}
        self.states: dict[str, PolicyState] = {}
        self.units: dict[str, float] = {}
        self._decided_at: dict[str, datetime] = {}
        self._resume: datetime | None = None
        self._fed: dict[str, int] = {}
        self._market: dict[str, tuple[float | None, float | None]] = {}
        self.summary = LoopSummary()
        self.started = False

    # -- start ----------------------------------------------------------------------------

    def start(self) -> None:
        """Redaction, model, persisted state, then reconciliation -- before any decision."""
        install_redaction()
        now = self._clock()
        self._model_event(self.model.start(), now)
        self.states, self._decided_at = restore_policy_states(self.store, self.symbols)
        self._resume = resume_point(self._decided_at)
        for event in self.store.events("portfolio_units"):
            self.units.update({str(k): float(v) for k, v in event.detail.items()})
        self._reconcile(now, where="start")
        self.started = True
        self.log.write(
            {
                "kind": "start",
                "ts": now,
                "model_version": self.model.version,
                "resume_after": self._resume,
                "reconciled": self.executor.reconciled,
            }
        )
        self.log.flush()

    # -- the run --------------------------------------------------------------------------

    def run(
        self,
        source: Source | Iterable[Bar],
        *,
        max_bars: int | None = None,
        warmup_until: datetime | None = None,
        pause_gc: bool = True,
    ) -> LoopSummary:
        """Process every bar of ``source`` (at most ``max_bars`` decided bars). Bars up to
        ``warmup_until`` (and, after a restart, before the last persisted decision) only
        update the features. ``pause_gc``: the cyclic garbage collector is paused during
        a bar and run between bars (the features allocate small objects every bar)."""
        if not self.started:
            self.start()
        clock = time.perf_counter()
        warm = None if warmup_until is None else int((warmup_until - from_us(0)) // _US)
        if self._resume is not None:
            resume_us = int((self._resume - from_us(0)) // _US)
            warm = resume_us - 1 if warm is None else max(warm, resume_us - 1)
        gc_was = gc.isenabled()
        try:
            for bar in source:
                if pause_gc:
                    gc.disable()
                if warm is not None and bar.t_us <= warm:
                    self.warm(bar)
                else:
                    self.process(bar)
                    if max_bars is not None and self.summary.bars >= max_bars:
                        break
                if pause_gc:
                    gc.collect(0)
        finally:
            if gc_was:
                gc.enable()
            self.summary.seconds += time.perf_counter() - clock
            self._finish()
        return self.summary

    def warm(self, bar: Bar) -> None:
        """Features only (a restart's or a live start's history): no decision, no order."""
        self._ingest(bar, record=False)
        self.features.step(bar.t_us)
        self.summary.warmup_bars += 1

    def process(self, bar: Bar) -> list[dict[str, Any]]:
        """One bar close: rows -> fills -> features -> model -> policy -> orders -> log.
        Returns the decision records written for it."""
        started = time.perf_counter()
        t = bar.t
        now = t if self.settings.replay else self._clock()
        event = self.model.poll()
        if event is not None:
            self._model_event(event, now)
        bad = self._ingest(bar, record=True, now=now)
        self._feed_prices(now)
        vectors = self.features.step(bar.t_us)
        errors = {e.venue: e.kind for e in bar.errors}
        for err in bar.errors:
            self._error(f"venue_{err.kind}")
        positions = self.executor.positions()
        records = []
        for symbol in self.symbols:
            if self._decided_at.get(symbol) == t:
                continue  # persisted before a restart: not decided twice
            record = self._decide(symbol, t, now, vectors.get(symbol), positions, errors, bad)
            records.append(record)
        self.metrics.latency.observe(time.perf_counter() - started)
        self.metrics.bars.inc()
        self.summary.bars += 1
        for record in records:
            self.log.write(record)
        self.log.flush()
        return records

    # -- per bar pieces -------------------------------------------------------------------

    def _ingest(
        self, bar: Bar, *, record: bool, now: datetime | None = None
    ) -> dict[tuple[str, str], str]:
        """Check and push the bar's rows; quarantine the bad ones. Returns the quarantine
        reason per (venue, symbol) seen this bar."""
        bad: dict[tuple[str, str], str] = {}
        bar_us = self.features.bar_us
        push, accept = self.features.push, self.book.accept
        for row in bar.rows:
            reason = check_row(row, bar_us)
            if reason is None:
                if push(row):
                    accept(row)
                    continue
                reason = "out_of_order"
            self._quarantine(row, reason, bad, record, now)
        for row, reason in bar.quarantined:
            self._quarantine(row, reason, bad, record, now)
        return bad

    def _quarantine(
        self,
        row: Any,
        reason: str,
        bad: dict[tuple[str, str], str],
        record: bool,
        now: datetime | None,
    ) -> None:
        venue = _name(row, "venue")
        symbol = _name(row, "symbol")
        bad[(str(venue), str(symbol))] = reason
        self.summary.quarantined += 1
        self.metrics.error("quarantined_row")
        if not record:
            return
        # a garbage payload may echo anything, credentials included: masked before storing
        detail = {"reason": reason, "row": redact(json.dumps(_jsonable(row), default=str))}
        self.store.record_event(
            "quarantine",
            detail,
            now=now or datetime.now(UTC),
            venue=venue,
            symbol=symbol,
        )
        log.warning("row quarantined (%s): %s/%s", reason, venue, symbol)  # redacted by filter

    def _feed_prices(self, now: datetime) -> None:
        """New prices to the paper brokers (fills at the next price), then reconcile."""
        fed = False
        for symbol in self.symbols:
            bar = self.book.prices.get(symbol)
            if bar is None or self._fed.get(symbol, -1) >= bar.ts_us:
                continue
            self._fed[symbol] = bar.ts_us
            vol, funding = self._market.get(symbol, (None, None))
            for broker in self.paper:
                try:
                    broker.on_price(
                        from_us(bar.ts_us), symbol, bar.price, vol_ann=vol, funding_rate_8h=funding
                    )
                    fed = True
                except ValueError as err:  # priced already before a restart
                    log.debug("price not fed to %s: %s", broker.venue, err)
        if (fed and self.store.orders(ACTIVE_STATES)) or not self.executor.reconciled:
            self._reconcile(now, where="bar")

    def _reconcile(self, now: datetime, *, where: str) -> None:
        try:
            report = self.executor.reconcile(now=now)
        except Exception as err:  # a broker failing here must not stop the loop
            log.error("reconciliation failed: %s", err)
            self._error("reconcile")
            return
        if not report.complete:
            self._error("reconcile_incomplete")
        if where == "start" or report.resent or report.abandoned or report.position_differences:
            self.log.write(
                {
                    "kind": "reconcile",
                    "ts": now,
                    "where": where,
                    "complete": report.complete,
                    "resolved": report.resolved,
                    "resent": report.resent,
                    "abandoned": report.abandoned,
                    "unresolved": report.unresolved,
                    "position_differences": report.position_differences,
                }
            )

    def _left_out(
        self,
        symbol: str,
        t_us: int,
        errors: Mapping[str, str],
        bad: Mapping[tuple[str, str], str],
    ) -> tuple[dict[str, str], int]:
        """Venues left out of the cross-venue features and why; the number of fresh ones."""
        left: dict[str, str] = {}
        fresh = 0
        for venue, age in self.book.ages(symbol, t_us).items():
            if age is not None:
                self.metrics.staleness.labels(venue=venue, symbol=symbol).set(age / 1e6)
            if age is not None and age <= self.max_stale_us:
                fresh += 1
                continue
            why = "no data" if age is None else f"stale {age // 1_000_000}s"
            if venue in errors:
                why = f"{errors[venue]}; {why}"
            elif (venue, symbol) in bad:
                why = f"quarantined: {bad[(venue, symbol)]}; {why}"
            left[venue] = why
        return left, fresh

    def _predict(
        self, x: np.ndarray | None, errors: list[str]
    ) -> tuple[float | None, list[list[Any]]]:
        predictor = self.model.predictor
        if predictor is None or x is None:
            errors.append("no model" if predictor is None else "no features")
            return None, []
        try:
            p, _raw = predictor.predict_vector(x)
            contrib = (
                top_contributions(self._names, predictor.contributions(x), self.settings.top_k)
                if self.settings.top_k
                else []
            )
        except Exception as err:  # no probability: the policy holds or grows only
            errors.append(f"model: {type(err).__name__}: {err}")
            self._error("model")
            return None, []
        if not (isinstance(p, float) and 0.0 <= p <= 1.0):
            errors.append(f"model: probability {p!r} outside [0, 1]")
            self._error("model")
            return None, []
        return p, contrib

    def _decide(
        self,
        symbol: str,
        t: datetime,
        now: datetime,
        values: list[float | None] | None,
        positions: Mapping[tuple[str, str], float],
        venue_errors: Mapping[str, str],
        bad: Mapping[tuple[str, str], str],
    ) -> dict[str, Any]:
        t_us = self.features.last_step or 0
        left, fresh = self._left_out(symbol, t_us, venue_errors, bad)
        errors: list[str] = []
        x = None if values is None else np.array(values, dtype=np.float64)
        p, contrib = self._predict(x, errors)
        record: dict[str, Any] = {
            "kind": "decision",
            "ts": t,
            "symbol": symbol,
            "probability": p,
            "model_version": self.model.version,
            "contributions": contrib,
            "fresh_venues": fresh,
            "left_out": left,
            "errors": errors,
            "orders": [],
        }
        self.metrics.probability.labels(symbol=symbol).set(math.nan if p is None else p)
        bar = self.book.prices.get(symbol)
        if bar is None:
            errors.append("no price yet: no decision")
            self._error("no_price")
            return record
        mark = bar.price
        row = {} if values is None else {n: values[i] for n, i in self._signal_idx.items()}
        self._market[symbol] = _market_inputs(row)
        key = (self.settings.hedge_venue, symbol)
        position = positions.get(key, 0.0)
        hedge_before = max(0.0, -position * mark)
        try:
            units = self._units(symbol, mark, now)
            signals = signals_from_row(row, ts=t, portfolio_usd=units * mark, fresh_venues=fresh)
            previous = self.states.get(symbol, PolicyState())
            decision = decide(
                p, signals, with_position(previous, hedge_before), self.settings.params[symbol]
            )
            orders = self._plan(symbol, decision, positions, mark, t)
        except ValueError as err:  # bad inputs: no decision this bar, the hedge stays
            errors.append(f"policy: {err}")
            self._error("policy")
            return record
        self._record(symbol, t, now, p, previous, decision, bool(orders))
        submitted = self.executor.submit(orders, now=now) if orders else []
        self.states[symbol] = decision.state
        self.summary.decisions += 1
        for order, sub in zip(orders, submitted, strict=True):
            self.summary.orders[sub.outcome] = self.summary.orders.get(sub.outcome, 0) + 1
            self.metrics.orders.labels(status=sub.outcome).inc()
            record["orders"].append(
                {
                    "client_order_id": order.client_order_id,
                    "side": order.side,
                    "amount": order.amount,
                    "notional_usd": order.notional_usd,
                    "status": sub.outcome,
                    "reason": sub.reason,
                }
            )
        self.metrics.hedge_fraction.labels(symbol=symbol).set(decision.target_fraction)
        self.metrics.hedge_usd.labels(symbol=symbol).set(decision.hedge_usd)
        record.update(
            confirmations=list(decision.confirmations),
            tier=decision.tier,
            target_fraction=decision.target_fraction,
            target_usd=decision.target_usd,
            max_usd=decision.max_usd,
            hedge_before_usd=hedge_before,
            hedge_after_usd=decision.hedge_usd,
            reasons=list(decision.reasons),
        )
        return record

    def _plan(
        self,
        symbol: str,
        decision: Decision,
        positions: Mapping[tuple[str, str], float],
        mark: float,
        t: datetime,
    ) -> list[OrderIntent]:
        if not decision.trade:
            return []
        key = (self.settings.hedge_venue, symbol)
        return plan_orders(
            {key: decision.hedge_usd},
            positions,
            {key: mark},
            self.rules,
            strategy_id=self.settings.strategy_id,
            decision_ts=t,
        )

    def _record(
        self,
        symbol: str,
        t: datetime,
        now: datetime,
        p: float | None,
        previous: PolicyState,
        decision: Decision,
        ordered: bool,
    ) -> None:
        """Persist the decision (before its orders) when it must survive a restart."""
        if ordered or state_key(decision.state) != state_key(previous):
            self.store.record_decision(
                t, symbol, decision, probability=p, now=now, venue=self.settings.hedge_venue
            )

    def _units(self, symbol: str, mark: float, now: datetime) -> float:
        """Long exposure of ``symbol`` in base units, fixed at the first price seen."""
        units = self.units.get(symbol)
        if units is None:
            units = self.settings.portfolio_usd[symbol] / mark
            self.units[symbol] = units
            self.store.record_event("portfolio_units", {symbol: units}, now=now, symbol=symbol)
        return units

    def _model_event(self, event: ModelEvent, now: datetime) -> None:
        self.metrics.set_model_version(self.model.version)
        if event.kind != "loaded":
            self._error(f"model_{event.kind}")
        entry = {
            "kind": "model",
            "ts": now,
            "event": event.kind,
            "version": event.version,
            "serving": event.serving,
            "detail": event.detail,
        }
        self.summary.model_events.append(entry)
        self.log.write(entry)
        self.store.record_event(
            f"model_{event.kind}",
            {"version": event.version, "serving": event.serving, "detail": event.detail},
            now=now,
        )

    def _error(self, kind: str) -> None:
        self.metrics.error(kind)
        self.summary.errors[kind] = self.summary.errors.get(kind, 0) + 1

    def _finish(self) -> None:
        hv = self.settings.hedge_venue
        positions = self.executor.positions()
        for symbol in self.symbols:
            amount = positions.get((hv, symbol), 0.0)
            bar = self.book.prices.get(symbol)
            self.summary.positions[symbol] = amount
            self.summary.hedge_usd[symbol] = max(0.0, -amount * bar.price) if bar else 0.0
        self.log.flush()


def _market_inputs(row: Mapping[str, float | None]) -> tuple[float | None, float | None]:
    """(annualised vol, funding per 8 h) for the paper broker's costs, from features."""
    from serving.signals import annualised_vol, bp_to_fraction

    return annualised_vol(row.get(VOL)), bp_to_fraction(row.get(FUNDING_FALLBACK))


def _name(row: Any, key: str) -> str | None:
    """A quarantined row's venue or symbol when it is a proper name (a garbage value is
    kept only inside the masked payload)."""
    value = row.get(key) if isinstance(row, Mapping) else None
    if isinstance(value, str) and check_name(key, value):
        return value
    return None


def _jsonable(row: Any) -> Any:
    """A quarantined payload as JSON-safe values (NaN and odd types as text)."""
    if not isinstance(row, Mapping):
        return repr(row)
    out = {}
    for key, value in row.items():
        if isinstance(value, float) and not math.isfinite(value):
            out[str(key)] = repr(value)
        elif value is None or isinstance(value, str | int | float | bool):
            out[str(key)] = value
        else:
            out[str(key)] = repr(value)
    return out
