"""What the live loop trades (:class:`LoopSettings`) and what a run did (:class:`LoopSummary`)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from oihedge.serving.policy.params import PolicyParams

__all__ = ["LoopSettings", "LoopSummary"]


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
        explain_min_change: a decision's contributions are recomputed when its
            probability moved at least this much (absolute) since its symbol's last
            explained decision, else carried over (0: recomputed for every decision;
            :mod:`oihedge.serving.live.explain` lists every other case that recomputes them).
        explain_max_age: contributions older than this are recomputed (None: no limit).
        explain_timeout: how long a live loop waits at the end of a bar for its
            contributions (computed on a worker thread); the lines are written without
            the ones not in by then (a replay waits for all of them).
        replay: the clock is the bar time (a replay); False: wall-clock time.
    """

    strategy_id: str
    hedge_venue: str
    params: Mapping[str, PolicyParams]
    portfolio_usd: Mapping[str, float]
    venues: tuple[str, ...] = ()
    max_staleness: timedelta | None = None
    top_k: int = 5
    explain_min_change: float = 0.02
    explain_max_age: timedelta | None = timedelta(hours=2)
    explain_timeout: timedelta = timedelta(seconds=2)
    replay: bool = True

    def __post_init__(self) -> None:
        if not (math.isfinite(self.explain_min_change) and self.explain_min_change >= 0):
            raise ValueError(
                f"explain_min_change must be finite and >= 0, got {self.explain_min_change!r}"
            )
        if self.explain_max_age is not None and self.explain_max_age <= timedelta(0):
            raise ValueError(f"explain_max_age must be > 0, got {self.explain_max_age!r}")
        if self.explain_timeout <= timedelta(0):
            raise ValueError(f"explain_timeout must be > 0, got {self.explain_timeout!r}")
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
