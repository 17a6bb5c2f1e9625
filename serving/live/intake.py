"""The loop's row intake: every delivered row is checked, then pushed or quarantined.

A row is *quarantined* when :func:`oihedge.serving.feeds._base.check_row` finds it bad (missing
fields, wrong types, NaN, negative amounts, off-grid ``ts``), when the source already
rejected it, or when the online features refuse it (out of order): it is recorded in the
state store (``events``, kind ``quarantine``, with the reason and the payload masked by
:func:`oihedge.serving.redact.redact`), counted in the metrics, and never pushed. Good rows go to
:class:`~oihedge.features.online.engine.OnlineFeatures` in arrival order and to the
:class:`~oihedge.serving.live.book.VenueBook` (staleness and prices).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from oihedge.features.online.engine import OnlineFeatures
from oihedge.serving.execution.state import StateStore
from oihedge.serving.feeds._base import Bar, check_name, check_row
from oihedge.serving.live.book import VenueBook
from oihedge.serving.live.metrics import LoopMetrics
from oihedge.serving.live.settings import LoopSummary
from oihedge.serving.redact import redact

__all__ = ["RowIntake"]

log = logging.getLogger(__name__)


class RowIntake:
    """Checks and pushes the rows of each bar (see the module docstring)."""

    def __init__(
        self,
        features: OnlineFeatures,
        book: VenueBook,
        store: StateStore,
        metrics: LoopMetrics,
        summary: LoopSummary,
    ) -> None:
        self.features = features
        self.book = book
        self.store = store
        self.metrics = metrics
        self.summary = summary

    def ingest(
        self, bar: Bar, *, record: bool, now: datetime | None = None
    ) -> dict[tuple[str, str], str]:
        """Check and push the bar's rows; quarantine the bad ones (``record``: also in the
        state store). Returns the quarantine reason per (venue, symbol) seen this bar."""
        bad: dict[tuple[str, str], str] = {}
        bar_us = self.features.bar_us
        check, push, accept = check_row, self.features.push, self.book.accept
        for row in bar.rows:
            reason = check(row, bar_us)
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
