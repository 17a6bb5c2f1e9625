"""Prometheus metrics of the live loop, on loopback only.

Everything lives in the loop's own :class:`prometheus_client.CollectorRegistry` (never the
process-global one, so two loops in one process -- tests -- do not collide).
:meth:`LoopMetrics.serve` exposes it with ``start_http_server(port, addr="127.0.0.1")``;
the loop calls it only when ``live.metrics_port`` is set. Labels carry venue, symbol,
order status and error kind -- never a credential or a free-form message.

=======================================  =========  ========================================
metric                                   type       meaning
=======================================  =========  ========================================
oihedge_decision_latency_seconds         histogram  bar arrival to orders decided (features,
                                                    model, policy, rebalancer), seconds
oihedge_venue_staleness_seconds          gauge      age of a venue's last bar at the decision
                                                    time, per venue and symbol, seconds
oihedge_probability                      gauge      cascade probability per symbol (NaN: none)
oihedge_hedge_fraction                   gauge      target hedge, fraction of the max, per symbol
oihedge_hedge_usd                        gauge      hedge after the decision, USD, per symbol
oihedge_hedge_target_usd                 gauge      the policy's target hedge, USD, per symbol
oihedge_hedge_position_usd               gauge      hedge at the decision: the broker's
                                                    position plus working orders, before its
                                                    own orders, USD, per symbol
oihedge_tier                             enum       tier of the held target, per symbol
oihedge_last_decision_timestamp_seconds  gauge      wall-clock time of the symbol's last
                                                    decision, Unix seconds
oihedge_kill_switch_engaged              gauge      1 engaged, 0 released, NaN not seen yet
oihedge_orders_total                     counter    orders by outcome (filled, sent, refused,
                                                    blocked, duplicate, rejected, unknown, ...)
oihedge_errors_total                     counter    errors by kind (venue timeout, rate limit,
                                                    garbage, model, quarantined rows, ...)
oihedge_bars_total                       counter    bars processed
oihedge_model_version_info               gauge      1 for the serving model version
=======================================  =========  ========================================

The order statuses of :data:`ORDER_STATUSES` and the error kinds of
:data:`ALERTED_ERROR_KINDS` are exported at 0 from the start: Prometheus's ``increase()``
sees no increase in a series whose first sample is already 1, so an alert on the first
refused model would otherwise never fire. The alert rules and the Grafana dashboard over
these metrics are in ``serving/monitoring/``.
"""

from __future__ import annotations

import math
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Enum, Gauge, Histogram, generate_latest
from prometheus_client.exposition import start_http_server

from oihedge.serving.policy.policy import TIERS, VOL_TIER

__all__ = ["ALERTED_ERROR_KINDS", "LATENCY_BUCKETS", "ORDER_STATUSES", "LoopMetrics"]

#: decision latency buckets, seconds (the target is 1 ms at p99)
LATENCY_BUCKETS: tuple[float, ...] = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.05,
    0.25,
    1.0,
)

#: every outcome of :class:`oihedge.serving.execution.executor.Submission` (exported at 0 from the
#: start)
ORDER_STATUSES: tuple[str, ...] = (
    "sent",
    "filled",
    "partially_filled",
    "cancelled",
    "rejected",
    "unknown",
    "blocked",
    "refused",
    "duplicate",
)

#: the error kinds an alert rule reads (exported at 0 from the start): the model events
#: other than ``loaded`` (``model_<kind>``, :class:`oihedge.serving.live.model_watch.ModelEvent`), a
#: failed prediction, reconciliation and the kill switch's own check
ALERTED_ERROR_KINDS: tuple[str, ...] = (
    "model_refused",
    "model_load_failed",
    "model_unavailable",
    "model",
    "reconcile",
    "reconcile_incomplete",
    "kill_switch_check",
)


class LoopMetrics:
    """The loop's metrics in their own registry (see the module docstring)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.latency = Histogram(
            "oihedge_decision_latency_seconds",
            "Bar arrival to orders decided, seconds",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.staleness = Gauge(
            "oihedge_venue_staleness_seconds",
            "Age of the venue's last bar at the decision time, seconds",
            ["venue", "symbol"],
            registry=r,
        )
        self.probability = Gauge(
            "oihedge_probability", "Cascade probability (NaN: none)", ["symbol"], registry=r
        )
        self.hedge_fraction = Gauge(
            "oihedge_hedge_fraction",
            "Target hedge, fraction of the maximum",
            ["symbol"],
            registry=r,
        )
        self.hedge_usd = Gauge(
            "oihedge_hedge_usd", "Short hedge after the decision, USD", ["symbol"], registry=r
        )
        self.orders = Counter("oihedge_orders", "Orders by outcome", ["status"], registry=r)
        self.errors = Counter("oihedge_errors", "Errors by kind", ["kind"], registry=r)
        self.bars = Counter("oihedge_bars", "Bars processed", registry=r)
        self.model_version = Gauge(
            "oihedge_model_version_info", "1 for the serving model version", ["version"], registry=r
        )
        self.hedge_target_usd = Gauge(
            "oihedge_hedge_target_usd",
            "The policy's target short hedge, USD",
            ["symbol"],
            registry=r,
        )
        self.hedge_position_usd = Gauge(
            "oihedge_hedge_position_usd",
            "Short hedge at the decision (position plus working orders, before its own), USD",
            ["symbol"],
            registry=r,
        )
        self.tier = Enum(
            "oihedge_tier",
            "Tier of the held target",
            ["symbol"],
            states=[*TIERS, VOL_TIER],
            registry=r,
        )
        self.last_decision = Gauge(
            "oihedge_last_decision_timestamp_seconds",
            "Wall-clock time of the last decision, Unix seconds",
            ["symbol"],
            registry=r,
        )
        self.kill_switch = Gauge(
            "oihedge_kill_switch_engaged",
            "1: kill switch engaged (no new order), 0: released, NaN: not seen yet",
            registry=r,
        )
        self.kill_switch.set(math.nan)
        for status in ORDER_STATUSES:
            self.orders.labels(status)
        for kind in ALERTED_ERROR_KINDS:
            self.errors.labels(kind)
        self._server: object | None = None
        # labelled children, looked up once: ``labels()`` costs microseconds per call
        self._children: dict[tuple[str, ...], Any] = {}
        #: the value each child gauge was last given through :meth:`set` (by id: the
        #: children are kept in ``_children`` for the metrics' lifetime)
        self._values: dict[int, float] = {}

    def _child(self, metric: Any, *values: str) -> Any:
        key = (metric._name, *values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    def set(self, gauge: Any, value: float) -> None:
        """Set ``gauge`` (a child from the ``*_of`` methods) to ``value``, unless it holds
        that value already (a hedge stays the same for hours; a set takes a lock)."""
        key = id(gauge)
        if self._values.get(key) != value:  # NaN never equals: always set
            gauge.set(value)
            self._values[key] = value

    def staleness_of(self, venue: str, symbol: str) -> Any:
        """The staleness gauge of (venue, symbol)."""
        return self._child(self.staleness, venue, symbol)

    def probability_of(self, symbol: str) -> Any:
        """The probability gauge of ``symbol``."""
        return self._child(self.probability, symbol)

    def hedge_fraction_of(self, symbol: str) -> Any:
        """The hedge-fraction gauge of ``symbol``."""
        return self._child(self.hedge_fraction, symbol)

    def hedge_usd_of(self, symbol: str) -> Any:
        """The hedge (USD) gauge of ``symbol``."""
        return self._child(self.hedge_usd, symbol)

    def order(self, status: str) -> None:
        """Count one order with outcome ``status``."""
        self._child(self.orders, status).inc()

    def set_model_version(self, version: str | None) -> None:
        """Mark ``version`` as the serving model (None: no model)."""
        self.model_version.clear()
        self.model_version.labels(version=version or "none").set(1)

    def decided(
        self,
        symbol: str,
        *,
        tier: str,
        target_usd: float,
        position_usd: float,
        at: float | None = None,
    ) -> None:
        """Record a decision of ``symbol``: the tier and target (USD) of the policy, the
        short hedge when it was made (USD: the broker's position plus the rest of working
        orders, :meth:`oihedge.serving.execution.executor.Executor.positions`, before the
        decision's own orders) and its wall-clock time ``at`` (Unix seconds; None: now).
        ``tier`` is one of :data:`oihedge.serving.policy.policy.TIERS` or
        :data:`oihedge.serving.policy.policy.VOL_TIER`."""
        self._child(self.tier, symbol).state(tier)
        self.set(self._child(self.hedge_target_usd, symbol), target_usd)
        self.set(self._child(self.hedge_position_usd, symbol), position_usd)
        self._child(self.last_decision, symbol).set(time.time() if at is None else at)

    def set_kill_switch(self, engaged: bool) -> None:
        """The kill switch's state as the loop last saw it (1 engaged, 0 released)."""
        self.set(self.kill_switch, 1.0 if engaged else 0.0)

    def error(self, kind: str, count: int = 1) -> None:
        """Count ``count`` errors of ``kind``."""
        self._child(self.errors, kind).inc(count)

    def text(self) -> str:
        """The exposition text (what ``/metrics`` serves)."""
        return generate_latest(self.registry).decode("utf-8")

    def serve(self, port: int, addr: str = "127.0.0.1") -> int:
        """Serve ``/metrics`` on ``addr:port`` (loopback by default; port 0 picks a free
        one). Returns the bound port."""
        if addr not in ("127.0.0.1", "::1", "localhost"):
            raise ValueError(f"metrics are served on loopback only, got addr={addr!r}")
        server, _thread = start_http_server(port, addr=addr, registry=self.registry)
        self._server = server
        return int(server.server_address[1])

    def close(self) -> None:
        """Stop the HTTP server, if one was started."""
        server = self._server
        if server is not None:
            server.shutdown()  # type: ignore[attr-defined]
            server.server_close()  # type: ignore[attr-defined]
            self._server = None
