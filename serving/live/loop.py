"""The live loop: one class, every source (replay or live venues), every bar the same path.

How a bar flows through it, what a start and a restart do, why the decision log follows
the state, the kill switch and where errors stop: the package's docstring
(:mod:`oihedge.serving.live`), which this module implements.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from oihedge.features.online.engine import OnlineFeatures
from oihedge.serving.execution.brokers import PaperBroker
from oihedge.serving.execution.brokers.paper_fills import Quote
from oihedge.serving.execution.executor import Executor
from oihedge.serving.feeds._base import Bar, Source, from_us
from oihedge.serving.live.book import (
    VenueBook,
    recovered_records,
    restore_policy_states,
    resume_point,
)
from oihedge.serving.live.decide import Decider
from oihedge.serving.live.decision_log import DecisionLog
from oihedge.serving.live.explain import Explainer
from oihedge.serving.live.intake import RowIntake
from oihedge.serving.live.metrics import LoopMetrics
from oihedge.serving.live.model_watch import ModelEvent, ModelProvider
from oihedge.serving.live.settings import LoopSettings, LoopSummary
from oihedge.serving.policy.policy import PolicyState
from oihedge.serving.redact import install_redaction

__all__ = ["HedgeLoop", "LoopSettings", "LoopSummary"]

log = logging.getLogger(__name__)

_US = timedelta(microseconds=1)
#: decision-log lines a replay queues before writing them
_REPLAY_LOG_LINES = 512


class HedgeLoop:
    """The decision loop (see the module docstring).

    ``features``: the online calculator (its spec is the one the model was trained on).
    ``model``: the model provider (:class:`oihedge.serving.live.model_watch.ChampionWatch`).
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
        self.book = VenueBook(settings.venues)
        self.symbols = tuple(settings.params)
        self.broker = executor.brokers[settings.hedge_venue]
        self.paper = [b for b in executor.brokers.values() if isinstance(b, PaperBroker)]
        self.summary = LoopSummary()
        self.intake = RowIntake(features, self.book, self.store, self.metrics, self.summary)
        self.decider = Decider(
            settings,
            model,
            executor,
            self.book,
            self.metrics,
            self.summary,
            names=features.feature_names,
            max_stale_us=staleness // _US,
            rules={(settings.hedge_venue, s): self.broker.rules(s) for s in self.symbols},
            on_error=self._error,
            before_record=self._settle_log,
        )
        self.explainer = Explainer(settings, model, features.feature_names, self._error)
        self._decided_at: dict[str, datetime] = {}
        self._resume: datetime | None = None
        self._fed: dict[str, int] = {}
        self._reconciles = 0
        self._positions_at: tuple[int, int] | None = None
        self._positions_cache: dict[tuple[str, str], float] = {}
        self._quiet_at: tuple[int, int] | None = None
        self.started = False

    @property
    def states(self) -> dict[str, PolicyState]:
        """The policy state per symbol after its last decision."""
        return self.decider.states

    # -- start ----------------------------------------------------------------------------

    def start(self) -> None:
        """Redaction, model, persisted state, then reconciliation -- before any decision."""
        install_redaction()
        now = self._clock()
        self._model_event(self.model.start(), now)
        states, self._decided_at = restore_policy_states(self.store, self.symbols)
        self.decider.states.update(states)
        self._resume = resume_point(self._decided_at)
        for event in self.store.events("portfolio_units"):
            self.decider.units.update({str(k): float(v) for k, v in event.detail.items()})
        on_file = self.log.resume(self._resume, self.store.state_id)
        # a replay's clock is its bars: it reconciles at the bar it had reached, so an
        # order a kill left unsent is as young as it was then (re-sent with its client id
        # within the resend window), not as old as the wall clock makes it
        at = self._resume if self.settings.replay and self._resume is not None else None
        self._reconcile(now, where="start", clock=at)
        self._check_kill_switch(now)
        self.started = True
        self.log.write(
            {
                "kind": "start",
                "ts": now,
                "model_version": self.model.version,
                "resume_after": self._resume,
                "reconciled": self.executor.reconciled,
                "state_id": self.store.state_id,
                "decisions_on_file": on_file,
            }
        )
        if self._resume is not None:
            for record in recovered_records(
                self.store, self.symbols, self._resume, self.log.on_file
            ):
                log.warning(
                    "decision of %s at %s written from the state", record["symbol"], self._resume
                )
                self.log.write(record)
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
            try:
                self._finish()  # the decision log complete: every explanation in
            finally:
                self.summary.seconds += time.perf_counter() - clock
        return self.summary

    def warm(self, bar: Bar) -> None:
        """Features only (a restart's or a live start's history): no decision, no order."""
        self.intake.ingest(bar, record=False)
        self.features.step(bar.t_us)
        self.summary.warmup_bars += 1

    def process(self, bar: Bar) -> list[dict[str, Any]]:
        """One bar close: rows -> fills -> features -> model -> policy -> orders -> log.
        Returns the bar's decision records (a replay's reach the log, contributions
        filled, once :class:`~oihedge.serving.live.explain.Explainer` has explained them)."""
        started = time.perf_counter()
        t = bar.t
        now = t if self.settings.replay else self._clock()
        event = self.model.poll()
        if event is not None:
            self._model_event(event, now)
        self._check_kill_switch(now)
        bad = self.intake.ingest(bar, record=True, now=now)
        self._feed_prices(now)
        vectors = self.features.step(bar.t_us)
        t_us = self.features.last_step or 0
        errors = {e.venue: e.kind for e in bar.errors}
        for err in bar.errors:
            self._error(f"venue_{err.kind}")
        positions = self._positions()
        # persisted before a restart: not decided twice
        symbols = [s for s in self.symbols if self._decided_at.get(s) != t]
        scores = self.decider.score(vectors, symbols)
        decided = [
            self.decider.decide(s, t, now, t_us, vectors.get(s), scores[s], positions, errors, bad)
            for s in symbols
        ]
        self.metrics.latency.observe(time.perf_counter() - started)
        self.metrics.bars.inc()
        self.summary.bars += 1
        self.explainer.explain(decided)
        # live: every bar's lines (explained) reach the file at once; a replay (a
        # simulation, nothing to lose) writes the bars explained so far, in blocks, and
        # the rest at the end of the run
        live = not self.settings.replay
        for record in self.explainer.ready(wait=live, timeout=self._explain_timeout):
            self.log.write(record)
        if live or self.log.pending >= _REPLAY_LOG_LINES:
            self.log.flush()
        return [record for record, _x in decided]

    def _settle_log(self) -> None:
        """Every decision line of the bars before this one on file (written and flushed,
        the contributions not in yet to follow): called before the state records a
        decision (module docstring). It never waits for the explainer."""
        for record in self.explainer.take():
            self.log.write(record)
        self.log.flush()

    # -- prices, fills, reconciliation ----------------------------------------------------

    def _feed_prices(self, now: datetime) -> None:
        """New prices to the paper brokers (fills at the next price), then reconcile."""
        quotes = []
        market = self.decider.market
        times: dict[int, datetime] = {}  # the symbols' bars mostly share one time
        for symbol in self.symbols:
            bar = self.book.prices.get(symbol)
            if bar is None or self._fed.get(symbol, -1) >= bar.ts_us:
                continue
            self._fed[symbol] = bar.ts_us
            vol, funding = market.get(symbol, (None, None))
            ts = times.get(bar.ts_us) or times.setdefault(bar.ts_us, from_us(bar.ts_us))
            quotes.append(Quote(ts, symbol, bar.price, vol_ann=vol, funding_rate_8h=funding))
        fed = False
        for broker in self.paper if quotes else ():
            try:
                broker.on_prices(quotes)  # one transaction for the bar
                fed = True
                continue
            except ValueError:  # one symbol priced already (before a restart): one by one
                pass
            for quote in quotes:
                try:
                    broker.on_prices([quote])
                    fed = True
                except ValueError as err:
                    log.debug("price not fed to %s: %s", broker.venue, err)
        if (fed and self._orders_active()) or not self.executor.reconciled:
            self._reconcile(now, where="bar")

    # Orders and positions change only through the executor, which only this loop drives
    # (one loop per state file): through a submit (the decider counts them) or a
    # reconciliation (counted here). Between two, what the store said still holds, so
    # a bar without either asks the store nothing.

    def _changes(self) -> tuple[int, int]:
        return self.decider.submits, self._reconciles

    def _positions(self) -> dict[tuple[str, str], float]:
        """:meth:`Executor.positions`, re-read after a submit or a reconciliation."""
        if self._positions_at != self._changes():
            self._positions_cache = self.executor.positions()
            self._positions_at = self._changes()
        return self._positions_cache

    def _orders_active(self) -> bool:
        """Some order is active in the store (known none since the last submit or
        reconciliation: not asked again)."""
        if self._quiet_at == self._changes():
            return False
        active = self.store.has_active_orders()
        self._quiet_at = None if active else self._changes()
        return active

    def _reconcile(self, now: datetime, *, where: str, clock: datetime | None = None) -> None:
        """Reconcile with the brokers at ``clock`` (the orders' time: default ``now``);
        the log line is stamped ``now``."""
        self._reconciles += 1
        try:
            report = self.executor.reconcile(now=clock or now)
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

    # -- events and the end ---------------------------------------------------------------

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

    def _check_kill_switch(self, now: datetime) -> None:
        """Each engagement or release of the kill switch recorded (state and log) when
        seen: at every bar, at the bar's ``now`` (module docstring)."""
        try:
            changes = self.executor.check_kill_switch(now)
        except Exception as err:  # an unreadable file must not stop the loop
            log.error("kill switch check failed: %s", err)
            self._error("kill_switch_check")
            return
        self.metrics.set_kill_switch(self.executor.kill_switch_engaged)
        for change in changes:
            self.log.write(
                {
                    "kind": "kill_switch",
                    "ts": now,
                    "action": change.action,
                    "reason": change.reason,
                    **change.detail,
                }
            )

    def _error(self, kind: str) -> None:
        self.metrics.error(kind)
        self.summary.errors[kind] = self.summary.errors.get(kind, 0) + 1

    @property
    def _explain_timeout(self) -> float | None:
        """Seconds a live loop waits for a bar's contributions (a replay: no limit)."""
        return None if self.settings.replay else self.settings.explain_timeout.total_seconds()

    def _finish(self) -> None:
        for record in self.explainer.ready(wait=True, timeout=self._explain_timeout):
            self.log.write(record)
        self.explainer.close(self._explain_timeout)
        hv = self.settings.hedge_venue
        positions = self.executor.positions()
        for symbol in self.symbols:
            amount = positions.get((hv, symbol), 0.0)
            bar = self.book.prices.get(symbol)
            self.summary.positions[symbol] = amount
            self.summary.hedge_usd[symbol] = max(0.0, -amount * bar.price) if bar else 0.0
        self.log.flush()
