"""One symbol's decision at one bar: freshness -> model -> policy -> orders -> record.

:meth:`Decider.decide`, per symbol and bar close ``t``:

1. **Freshness.** Every venue of the symbol whose newest bar is older than the staleness
   limit at ``t`` is left out (the features already leave it out of the cross-venue
   features, same rule); the record says why (``stale``, ``no data``, ``quarantined``,
   the source's error kind) and the policy gets the number of fresh venues.
2. **Model** (:meth:`Decider.score`, every symbol of the bar in one call). The feature
   vector's probability; a model error, or no model, gives no probability (the policy
   then holds or grows only).
3. **Policy and orders.** :func:`oihedge.serving.policy.signals.signals_from_row` (with the serving
   model's cascade severity, :attr:`oihedge.serving.live.model_watch.ModelProvider.severity_k`) ->
   :func:`oihedge.serving.policy.policy.decide` (from the position including working orders) ->
   :func:`oihedge.serving.execution.rebalancer.plan_orders` ->
   :meth:`oihedge.serving.execution.executor.Executor.submit`. The decision and its
   policy state are persisted *before* the orders are sent whenever the state changed or
   an order is planned (in the transaction of its first order's intent: a restart finds
   both or neither), with what else its log line says (so the line can be written from
   the state if a crash loses it), and only once every earlier bar's log lines are on
   file (``before_record``: :mod:`oihedge.serving.live.loop`, "The decision log follows
   the state"; their contributions may follow). The record carries the policy's pricing:
   ``severity`` (the drop a cascade brings), ``hold_cost`` (the cost of holding a unit
   of hedge over the horizon), the derived ``p_entry`` / ``p_exit``, the ordinary
   ``tail_loss`` (NaN: null) and the ``severity_k`` used (null: the policy's
   ``stress_k``).

The SHAP contributions of the decision log (:class:`oihedge.serving.live.explain.Explainer`) are
filled after every symbol's orders are out: they explain a decision, they do not make it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any, NamedTuple

import numpy as np

from oihedge.serving.execution.executor import Executor
from oihedge.serving.execution.orders import InstrumentRules, OrderIntent
from oihedge.serving.execution.rebalancer import plan_orders
from oihedge.serving.live.book import VenueBook, state_key
from oihedge.serving.live.metrics import LoopMetrics
from oihedge.serving.live.model_watch import ModelProvider
from oihedge.serving.live.settings import LoopSettings, LoopSummary
from oihedge.serving.policy.policy import Decision, PolicyState, decide, with_position
from oihedge.serving.policy.signals import (
    FUNDING_FALLBACK,
    SIGNAL_FEATURES,
    VOL,
    annualised_vol,
    bp_to_fraction,
    signals_from_row,
)

__all__ = ["Decider", "Scored", "pricing_fields"]

log = logging.getLogger(__name__)


class Scored(NamedTuple):
    """A symbol's model output at one bar: the vector scored (None: none), the
    probability (None: none) and what went wrong (the decision record's ``errors``)."""

    x: np.ndarray | None
    p: float | None
    errors: list[str]


def pricing_fields(decision: Decision, severity_k: float | None) -> dict[str, float | None]:
    """The policy's pricing of one decision for its record (NaN: None)."""
    terms = decision.pricing.record()
    return {
        "p_entry": terms["p_entry"],
        "p_exit": terms["p_exit"],
        "severity": terms["severity"],
        "severity_k": severity_k,
        "hold_cost": terms["cost"],
        "tail_loss": terms["tail_loss"],
    }


class Decider:
    """Decides one symbol at a time (see the module docstring).

    ``names``: the feature names in vector order. ``max_stale_us``: the staleness limit,
    microseconds. ``on_error``: counts an error kind (metrics and summary).
    """

    def __init__(
        self,
        settings: LoopSettings,
        model: ModelProvider,
        executor: Executor,
        book: VenueBook,
        metrics: LoopMetrics,
        summary: LoopSummary,
        *,
        names: tuple[str, ...] | list[str],
        max_stale_us: int,
        rules: Mapping[tuple[str, str], InstrumentRules],
        on_error: Callable[[str], None],
        before_record: Callable[[], None] = lambda: None,
    ) -> None:
        self.settings = settings
        self.model = model
        self.executor = executor
        self.store = executor.store
        self.book = book
        self.metrics = metrics
        self.summary = summary
        self.names = tuple(names)
        self.max_stale_us = max_stale_us
        self.rules = rules
        self._error = on_error
        self._before_record = before_record
        self._signal_idx = {n: self.names.index(n) for n in SIGNAL_FEATURES if n in self.names}
        self.states: dict[str, PolicyState] = {}
        self.units: dict[str, float] = {}
        #: (annualised vol, funding per 8 h) per symbol, for the paper broker's costs
        self.market: dict[str, tuple[float | None, float | None]] = {}
        #: the staleness last set per (venue, symbol), seconds (gauges set on change)
        self._staleness: dict[tuple[str, str], float] = {}
        #: calls to the executor's submit (orders and positions may have changed)
        self.submits = 0

    # -- one symbol -----------------------------------------------------------------------

    def score(
        self, vectors: Mapping[str, list[float | None] | None], symbols: Iterable[str]
    ) -> dict[str, Scored]:
        """The model's probability for each of ``symbols`` (its feature vector in
        ``vectors``; None or absent: no features). A predictor with ``predict_vectors``
        scores them in one call (:class:`oihedge.serving.live.model_watch.RowPredictor`: the
        calibrator once per bar); if that call fails, each symbol is scored alone so an
        error is recorded against the symbol that caused it."""
        predictor = self.model.predictor
        out: dict[str, Scored] = {}
        todo: list[str] = []
        for symbol in symbols:
            values = vectors.get(symbol)
            if predictor is None or values is None:
                out[symbol] = Scored(
                    None, None, ["no model" if predictor is None else "no features"]
                )
            else:
                todo.append(symbol)
        if not todo:
            return out
        X = np.array([vectors[s] for s in todo], dtype=np.float64)
        batch = getattr(predictor, "predict_vectors", None)
        if batch is not None and len(todo) > 1:
            try:
                p, _raw = batch(X)
                ps = p.tolist() if isinstance(p, np.ndarray) else [float(v) for v in p]
                if len(ps) != len(todo):
                    raise ValueError(f"{len(ps)} probabilities for {len(todo)} vectors")
            except Exception:  # scored one by one below: the error lands on its symbol
                pass
            else:
                for symbol, x, value in zip(todo, X, ps, strict=True):
                    errors: list[str] = []
                    out[symbol] = Scored(x, self._checked(value, errors), errors)
                return out
        for symbol, x in zip(todo, X, strict=True):
            errors = []
            out[symbol] = Scored(x, self._predict(predictor, x, errors), errors)
        return out

    def decide(
        self,
        symbol: str,
        t: datetime,
        now: datetime,
        t_us: int,
        values: list[float | None] | None,
        scored: Scored,
        positions: Mapping[tuple[str, str], float],
        venue_errors: Mapping[str, str],
        bad: Mapping[tuple[str, str], str],
    ) -> tuple[dict[str, Any], np.ndarray | None]:
        """The decision record of ``symbol`` at ``t`` (orders sent) and the feature vector
        the model scored (None: none), for the explainer. ``values``: the symbol's
        feature vector; ``scored``: its entry of :meth:`score`."""
        left, fresh = self._left_out(symbol, t_us, venue_errors, bad)
        errors = scored.errors
        x, p = scored.x, scored.p
        record: dict[str, Any] = {
            "kind": "decision",
            "ts": t,
            "symbol": symbol,
            "probability": p,
            "model_version": self.model.version,
            "contributions": [],
            "contributions_ts": None,
            "fresh_venues": fresh,
            "left_out": left,
            "errors": errors,
            "orders": [],
        }
        self.metrics.set(self.metrics.probability_of(symbol), math.nan if p is None else p)
        bar = self.book.prices.get(symbol)
        if bar is None:
            errors.append("no price yet: no decision")
            self._error("no_price")
            return record, None
        mark = bar.price
        record["price"] = mark
        row = {} if values is None else {n: values[i] for n, i in self._signal_idx.items()}
        self.market[symbol] = (
            annualised_vol(row.get(VOL)),
            bp_to_fraction(row.get(FUNDING_FALLBACK)),
        )
        key = (self.settings.hedge_venue, symbol)
        position = positions.get(key, 0.0)
        hedge_before = max(0.0, -position * mark)
        try:
            units = self._units(symbol, mark, now)
            severity_k = self.model.severity_k
            signals = signals_from_row(
                row,
                ts=t,
                portfolio_usd=units * mark,
                fresh_venues=fresh,
                severity_k=severity_k,
            )
            previous = self.states.get(symbol, PolicyState())
            decision = decide(
                p, signals, with_position(previous, hedge_before), self.settings.params[symbol]
            )
            orders = self._plan(symbol, decision, positions, mark, t)
        except ValueError as err:  # bad inputs: no decision this bar, the hedge stays
            errors.append(f"policy: {err}")
            self._error("policy")
            return record, None
        if orders or state_key(decision.state) != state_key(previous):
            self._record(symbol, t, now, p, decision, record, hedge_before, severity_k, orders)
        submitted = self._submit(orders, now) if orders else []
        if orders:  # the decision is on file with its first order; written now if none was
            self.store.flush()
        self.states[symbol] = decision.state
        self.summary.decisions += 1
        counts = self.summary.orders
        for order, sub in zip(orders, submitted, strict=True):
            counts[sub.outcome] = counts.get(sub.outcome, 0) + 1
            self.metrics.order(sub.outcome)
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
        self.metrics.set(self.metrics.hedge_fraction_of(symbol), decision.target_fraction)
        self.metrics.set(self.metrics.hedge_usd_of(symbol), decision.hedge_usd)
        self.metrics.decided(
            symbol, tier=decision.tier, target_usd=decision.target_usd, position_usd=hedge_before
        )
        record.update(
            confirmations=list(decision.confirmations),
            tier=decision.tier,
            target_fraction=decision.target_fraction,
            target_usd=decision.target_usd,
            max_usd=decision.max_usd,
            hedge_before_usd=hedge_before,
            hedge_after_usd=decision.hedge_usd,
            reasons=list(decision.reasons),
            **pricing_fields(decision, severity_k),
        )
        return record, x if p is not None else None

    # -- pieces ---------------------------------------------------------------------------

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
        limit = self.max_stale_us
        for venue, age in self.book.ages(symbol, t_us).items():
            if age is not None:
                seconds = age / 1e6
                if self._staleness.get((venue, symbol)) != seconds:  # set on change only
                    self._staleness[(venue, symbol)] = seconds
                    self.metrics.staleness_of(venue, symbol).set(seconds)
                if age <= limit:
                    fresh += 1
                    continue
            why = "no data" if age is None else f"stale {age // 1_000_000}s"
            if venue in errors:
                why = f"{errors[venue]}; {why}"
            elif (venue, symbol) in bad:
                why = f"quarantined: {bad[(venue, symbol)]}; {why}"
            left[venue] = why
        return left, fresh

    def _predict(self, predictor: Any, x: np.ndarray, errors: list[str]) -> float | None:
        try:
            p, _raw = predictor.predict_vector(x)
        except Exception as err:  # no probability: the policy holds or grows only
            errors.append(f"model: {type(err).__name__}: {err}")
            self._error("model")
            return None
        return self._checked(p, errors)

    def _checked(self, p: Any, errors: list[str]) -> float | None:
        """``p`` if it is a probability, else None with the error recorded."""
        if not (isinstance(p, float) and 0.0 <= p <= 1.0):
            errors.append(f"model: probability {p!r} outside [0, 1]")
            self._error("model")
            return None
        return p

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

    def _submit(self, orders: list[OrderIntent], now: datetime) -> list[Any]:
        self.submits += 1  # counted before: a submit that raises may have changed orders
        return self.executor.submit(orders, now=now)

    def _record(
        self,
        symbol: str,
        t: datetime,
        now: datetime,
        p: float | None,
        decision: Decision,
        record: Mapping[str, Any],
        hedge_before: float,
        severity_k: float | None,
        orders: list[OrderIntent],
    ) -> None:
        """Persist the decision (before its orders: it must survive a restart), with what
        else its log line says (:func:`oihedge.serving.live.book.recovered_records` writes the
        line from it if a crash lost it); ``before_record`` first (the loop puts the
        earlier bars' lines on file)."""
        self._before_record()
        context = {
            "model_version": record["model_version"],
            "fresh_venues": record["fresh_venues"],
            "left_out": record["left_out"],
            "errors": list(record["errors"]),
            "hedge_before_usd": hedge_before,
            "severity_k": severity_k,
        }
        self.store.record_decision(
            t,
            symbol,
            decision,
            probability=p,
            now=now,
            venue=self.settings.hedge_venue,
            context=context,
            with_orders=bool(orders),
        )

    def _units(self, symbol: str, mark: float, now: datetime) -> float:
        """Long exposure of ``symbol`` in base units, fixed at the first price seen."""
        units = self.units.get(symbol)
        if units is None:
            units = self.settings.portfolio_usd[symbol] / mark
            self.units[symbol] = units
            self.store.record_event("portfolio_units", {symbol: units}, now=now, symbol=symbol)
        return units
