"""The decision log's explanations: each decision's top feature contributions (SHAP).

LightGBM's ``pred_contrib`` (TreeSHAP) of one vector costs more than the decision it
explains: ~25 us a symbol for a small model, ~2.3 ms for a 400-tree champion. They
explain a decision, they do not make it, so :class:`Explainer` runs after every symbol's
orders are out, and recomputes them only when they can have changed meaningfully. A
decision's contributions are computed from its own vector when any of these holds:

* the symbol has no explanation yet, the serving model changed, or the last attempt
  failed;
* the decision planned orders, or its tier or target fraction differs from the last
  explained decision's (a decision that acts is always explained by its own vector);
* its probability moved by at least ``settings.explain_min_change`` (absolute) from the
  last explained decision's;
* the last explanation is ``settings.explain_max_age`` old or older.

Otherwise the decision carries the last explanation of its symbol, and its record says
which bar that explanation belongs to: ``contributions_ts`` is the bar of the vector
explained (equal to ``ts`` when computed for this decision). ``explain_min_change = 0``
recomputes them for every decision; ``explain_max_age = None`` sets no age limit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from serving.decision_log import top_contributions, top_contributions_rows
from serving.loop_settings import LoopSettings
from serving.model_watch import ModelProvider

__all__ = ["Explainer"]


@dataclass(frozen=True)
class _Explained:
    """The last decision of a symbol whose contributions were computed."""

    ts: datetime
    probability: float
    model_version: str | None
    tier: Any
    target_fraction: Any
    top: list[list[Any]]


class Explainer:
    """Fills the ``contributions`` of decision records (see the module docstring).

    ``names``: the feature names in vector order. ``on_error``: counts an error kind.
    """

    def __init__(
        self,
        settings: LoopSettings,
        model: ModelProvider,
        names: tuple[str, ...] | list[str],
        on_error: Callable[[str], None],
    ) -> None:
        self.settings = settings
        self.model = model
        self.names = tuple(names)
        self._error = on_error
        self._last: dict[str, _Explained] = {}
        #: contributions computed / carried over from an earlier bar, since the start
        self.computed = 0
        self.carried = 0

    def explain(self, decided: list[tuple[dict[str, Any], np.ndarray | None]]) -> None:
        """Fill each record's top ``settings.top_k`` feature contributions (log-odds) of
        the vector the model scored (``decided``: a bar's ``(record, vector)`` pairs, as
        :meth:`serving.loop_decide.Decider.decide` returns them; vector None: nothing to
        explain), computed or carried over; a failure is recorded in the record's
        errors."""
        predictor = self.model.predictor
        if predictor is None or not self.settings.top_k:
            return
        records, rows = [], []
        for record, x in decided:
            if x is None:
                continue
            last = self._last.get(record["symbol"])
            if last is not None and self._still_valid(last, record):
                record["contributions"] = last.top
                record["contributions_ts"] = last.ts
                self.carried += 1
                continue
            try:
                rows.append(predictor.contributions(x))
                records.append(record)
            except Exception as err:  # the decision stands; only its explanation is missing
                self._failed(record, err)
        if not rows:
            return
        try:
            tops = top_contributions_rows(self.names, rows, self.settings.top_k)
        except Exception:  # one bad vector: each on its own, so the others keep theirs
            for record, values in zip(records, rows, strict=True):
                try:
                    self._store(record, top_contributions(self.names, values, self.settings.top_k))
                except Exception as err:
                    self._failed(record, err)
            return
        for record, top in zip(records, tops, strict=True):
            self._store(record, top)

    def _still_valid(self, last: _Explained, record: dict[str, Any]) -> bool:
        """The last explanation may stand for ``record`` (see the module docstring)."""
        settings = self.settings
        if (
            record["orders"]
            or last.model_version != record["model_version"]
            or last.tier != record.get("tier")
            or last.target_fraction != record.get("target_fraction")
            or abs(record["probability"] - last.probability) >= settings.explain_min_change
        ):
            return False
        age = settings.explain_max_age
        return age is None or record["ts"] - last.ts < age

    def _store(self, record: dict[str, Any], top: list[list[Any]]) -> None:
        record["contributions"] = top
        record["contributions_ts"] = record["ts"]
        self.computed += 1
        self._last[record["symbol"]] = _Explained(
            record["ts"],
            record["probability"],
            record["model_version"],
            record.get("tier"),
            record.get("target_fraction"),
            top,
        )

    def _failed(self, record: dict[str, Any], err: Exception) -> None:
        self._last.pop(record["symbol"], None)  # the next decision tries again
        record["errors"].append(f"contributions: {type(err).__name__}: {err}")
        self._error("model_contributions")
