"""The decision log's explanations: each decision's top feature contributions (SHAP).

LightGBM's ``pred_contrib`` (TreeSHAP) of one vector costs more than the decision it
explains: ~25 us a symbol for a small model, ~2 ms for a 400-tree champion. They
explain a decision, they do not make it, so :class:`Explainer` computes them after every
symbol's orders are out, on a worker thread of its own, and recomputes them only when
they can have changed meaningfully. The worker collects the waiting bars' vectors (64 of
them, or fewer when the loop waits for a bar) and explains them in one LightGBM call
(``contributions_rows``), which releases the GIL for its whole length: one row per call
would take the GIL back after every row, and a thread waiting for it while the loop runs
Python waits up to the switch interval (5 ms) each time -- measured, ~185 rows/s one by
one against ~550-690 rows/s in batches of 60 for the demo champion, the loop's thread as
fast either way. A decision's contributions are computed from its own vector when any of
these holds:

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

The records of a bar are handed back by :meth:`Explainer.ready` once their contributions
are in, bars in the order they were decided (the decision log's order): a live loop waits
for them at the end of its bar, a replay takes what is done and goes on (at most
``backlog`` bars wait; beyond that it waits for the oldest to be explained).

**Before the state moves on**, every earlier decision must be on file, explained or not
(:mod:`oihedge.serving.live.loop`, "The decision log follows the state"). :meth:`Explainer.take`
hands back every record taken so far at once, without waiting for the worker: a record
whose contributions are not in yet (its own, or the pending ones it carries) comes back
with ``contributions_follow: true`` and the rest of its fields final, and once they are
in, :meth:`Explainer.ready` hands back a ``contributions`` record for it (its
``contributions``, ``contributions_ts`` and any error about them), keyed by its ``ts``
and ``symbol`` (:mod:`oihedge.serving.live.decision_log`). Bars complete in the order
they were taken, so a bar that carries an explanation of an earlier bar handed out this
way is handed back only after that bar's ``contributions`` records (its own record then
has them).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime
from itertools import chain, islice
from typing import Any

import numpy as np

from oihedge.serving.live.decision_log import top_contributions, top_contributions_rows
from oihedge.serving.live.model_watch import ModelProvider
from oihedge.serving.live.settings import LoopSettings

__all__ = ["Explainer"]

log = logging.getLogger(__name__)

#: a vector's outcome: its top contributions, or why there are none
_Outcome = list[list[Any]] | Exception


class _Explained:
    """A decision of a symbol whose contributions are computed (``top``: None until its
    bar is explained; ``failed``: it could not be)."""

    __slots__ = ("failed", "model_version", "probability", "target_fraction", "tier", "top", "ts")

    def __init__(self, record: dict[str, Any]) -> None:
        self.ts: datetime = record["ts"]
        self.probability: float = record["probability"]
        self.model_version: str | None = record["model_version"]
        self.tier: Any = record.get("tier")
        self.target_fraction: Any = record.get("target_fraction")
        self.top: list[list[Any]] | None = None
        self.failed = False


class _Bar:
    """One bar's records: the ones its vectors explain (with their entries), the ones
    carrying an earlier explanation, and the worker's outcomes once ``done``.
    ``follow``: the records handed out before their contributions were in, each with
    the number of errors it had then (:meth:`Explainer.take`)."""

    __slots__ = ("carried", "done", "follow", "jobs", "outcomes", "predictor", "records", "xs")

    def __init__(self, records: list[dict[str, Any]]) -> None:
        self.records = records
        self.jobs: list[tuple[dict[str, Any], _Explained]] = []
        self.carried: list[tuple[dict[str, Any], _Explained]] = []
        self.xs: list[np.ndarray] = []
        self.predictor: Any = None
        self.outcomes: list[_Outcome] = []
        self.done = True  # until vectors are queued for the worker
        self.follow: list[tuple[dict[str, Any], int]] = []


def _contributions(predictor: Any, xs: list[np.ndarray]) -> list[np.ndarray | Exception]:
    """The contributions of each vector (or the error it raised): in one call when the
    predictor can (``contributions_rows``), else, or when that call fails, one by one."""
    batch = getattr(predictor, "contributions_rows", None)
    if batch is not None:
        try:
            rows = np.asarray(batch(np.asarray(xs, dtype=np.float64)), dtype=np.float64)
            if rows.ndim == 2 and rows.shape[0] == len(xs):
                return list(rows)
        except Exception:  # one by one: the error lands on the vector that caused it
            pass
    out: list[np.ndarray | Exception] = []
    for x in xs:
        try:
            out.append(predictor.contributions(x))
        except Exception as err:  # the decision stands; only its explanation is missing
            out.append(err)
    return out


def _tops(names: tuple[str, ...], values: list[np.ndarray | Exception], k: int) -> list[_Outcome]:
    """The top ``k`` contributions of each good row (one sort for all of them)."""
    good = [v for v in values if not isinstance(v, Exception)]
    try:
        tops = iter(top_contributions_rows(names, good, k) if good else [])
    except Exception:  # one bad vector: each on its own, so the others keep theirs
        tops = iter([_top(names, v, k) for v in good])
    return [v if isinstance(v, Exception) else next(tops) for v in values]


def _top(names: tuple[str, ...], values: np.ndarray, k: int) -> _Outcome:
    try:
        return top_contributions(names, values, k)
    except Exception as err:
        return err


class _Worker:
    """A thread explaining queued bars in batches: it starts once ``batch_rows`` vectors
    wait, or at once when the loop waits for a bar (a live loop, at every bar) or closes."""

    def __init__(self, names: tuple[str, ...], k: int, batch_rows: int) -> None:
        self.names, self.k, self.batch_rows = names, k, batch_rows
        self.cond = threading.Condition()
        self.todo: list[_Bar] = []
        self.rows = 0  # vectors in todo
        self.urgent = False
        self.closing = False
        self.thread = threading.Thread(target=self._run, name="oihedge-explain", daemon=True)
        self.thread.start()

    def submit(self, bar: _Bar) -> None:
        with self.cond:
            self.todo.append(bar)
            self.rows += len(bar.xs)
            if self.rows >= self.batch_rows:
                self.cond.notify_all()

    def wait(self, bar: _Bar, deadline: float | None = None) -> bool:
        """Wait until ``bar`` is explained or ``deadline`` (``time.monotonic()``)
        passes; whether it is explained."""
        with self.cond:
            self.urgent = True
            self.cond.notify_all()
            while not bar.done:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self.cond.wait(left)
            return True

    def close(self, timeout: float | None = None) -> bool:
        """Stop the thread once its queue is done (waiting at most ``timeout`` seconds);
        whether it stopped (a daemon thread left running never blocks the exit)."""
        with self.cond:
            self.closing = True
            self.cond.notify_all()
        self.thread.join(timeout)
        return not self.thread.is_alive()

    def _run(self) -> None:
        while True:
            with self.cond:
                while not self.closing and not (
                    self.todo and (self.urgent or self.rows >= self.batch_rows)
                ):
                    self.cond.wait()
                if not self.todo:
                    return
                bars, self.todo, self.rows, self.urgent = self.todo, [], 0, False
            done = 0
            try:
                while done < len(bars):  # runs of bars explained by the same model
                    predictor = bars[done].predictor
                    end = done
                    while end < len(bars) and bars[end].predictor is predictor:
                        end += 1
                    run = bars[done:end]
                    values = _contributions(predictor, [x for b in run for x in b.xs])
                    outcomes = iter(_tops(self.names, values, self.k))
                    for b in run:
                        b.outcomes = [next(outcomes) for _ in b.xs]
                    done = end
            except Exception as err:  # the worker itself failed: these bars are not explained
                for b in bars[done:]:
                    b.outcomes = [err] * len(b.xs)
            with self.cond:
                for b in bars:
                    b.done = True
                self.cond.notify_all()


def _hand_out(bar: _Bar) -> None:
    """Make ``bar``'s records final but for the contributions not in yet: a carried
    explanation already in is filled now; the others are marked to follow."""
    waiting = {id(record) for record, _entry in bar.jobs}
    for record, entry in bar.carried:
        if entry.top is not None:
            record["contributions"] = entry.top
            record["contributions_ts"] = entry.ts
        elif not entry.failed:  # its bar is still with the worker
            waiting.add(id(record))
    for record in bar.records:
        if id(record) in waiting:
            record["contributions_follow"] = True
            bar.follow.append((record, len(record["errors"])))


def _follow_lines(bar: _Bar) -> list[dict[str, Any]]:
    """The ``contributions`` records of ``bar``'s records handed out without them
    (``bar`` complete): what the decision log appends after their decision lines."""
    out = []
    for record, errors in bar.follow:
        del record["contributions_follow"]  # the record in memory is whole again
        out.append(
            {
                "kind": "contributions",
                "ts": record["ts"],
                "symbol": record["symbol"],
                "contributions": record["contributions"],
                "contributions_ts": record["contributions_ts"],
                "errors": record["errors"][errors:],
            }
        )
    return out


def _carry(bar: _Bar) -> None:
    """The carried records of ``bar`` get their earlier bar's explanation: done (bars
    complete in order) unless it failed or timed out (then none)."""
    for record, entry in bar.carried:
        if entry.top is not None:
            record["contributions"] = entry.top
            record["contributions_ts"] = entry.ts


class Explainer:
    """Fills the ``contributions`` of decision records (see the module docstring).

    ``names``: the feature names in vector order. ``on_error``: counts an error kind
    (called on the loop's thread). ``backlog``: bars whose records may wait for their
    explanations before :meth:`explain` waits for the oldest. ``batch_rows``: vectors
    the worker collects before it starts (unless the loop waits for them).
    """

    def __init__(
        self,
        settings: LoopSettings,
        model: ModelProvider,
        names: tuple[str, ...] | list[str],
        on_error: Callable[[str], None],
        *,
        backlog: int = 4096,
        batch_rows: int = 64,
    ) -> None:
        self.settings = settings
        self.model = model
        self.names = tuple(names)
        self.backlog = backlog
        self.batch_rows = batch_rows
        self._error = on_error
        self._last: dict[str, _Explained] = {}
        self._bars: deque[_Bar] = deque()
        #: bars handed out by :meth:`take` before they were explained, oldest first
        self._late: deque[_Bar] = deque()
        self._worker: _Worker | None = None
        #: contributions computed / carried over from an earlier bar, since the start
        self.computed = 0
        self.carried = 0

    def explain(self, decided: list[tuple[dict[str, Any], np.ndarray | None]]) -> None:
        """Take a bar's ``(record, vector)`` pairs, as
        :meth:`oihedge.serving.live.decide.Decider.decide` returns them (vector None: nothing to
        explain): each record's top ``settings.top_k`` feature contributions (log-odds)
        of the vector the model scored are computed on the worker or carried over. The
        records come back from :meth:`ready`; a failure is recorded in their errors."""
        bar = _Bar([record for record, _x in decided])
        self._bars.append(bar)
        predictor = self.model.predictor
        if predictor is not None and self.settings.top_k:
            for record, x in decided:
                if x is None:
                    continue
                last = self._last.get(record["symbol"])
                if last is not None and self._still_valid(last, record):
                    bar.carried.append((record, last))
                    self.carried += 1
                    continue
                entry = self._last[record["symbol"]] = _Explained(record)
                bar.jobs.append((record, entry))
                bar.xs.append(x)
            if bar.xs:
                if self._worker is None:
                    self._worker = _Worker(self.names, self.settings.top_k, self.batch_rows)
                bar.predictor, bar.done = predictor, False
                self._worker.submit(bar)
        excess = len(self._late) + len(self._bars) - self.backlog
        if excess > 0 and self._worker is not None:  # the worker is behind: wait for it
            self._worker.wait(next(islice(chain(self._late, self._bars), excess - 1, None)))

    def ready(self, *, wait: bool = False, timeout: float | None = None) -> list[dict[str, Any]]:
        """The records whose contributions are in, oldest bar first, in the order
        :meth:`explain` took them (``wait``: every record taken so far). ``timeout``
        (seconds, with ``wait``): a bar not explained by then is handed back without
        its new contributions, each such record saying so in its errors (counted as
        ``model_contributions_timeout``); its symbols are explained again at their next
        decision. A live loop never waits longer than that for its log.

        First come the ``contributions`` records of the bars :meth:`take` handed out
        before they were explained; the bars after them wait until they are done (one
        may carry their explanations)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        out = self._drain(self._late, wait, deadline, timeout, late=True)
        if not self._late:
            out += self._drain(self._bars, wait, deadline, timeout, late=False)
        return out

    def take(self) -> list[dict[str, Any]]:
        """Every record taken so far, at once (what must be on file before the state
        records a decision): :meth:`ready`'s, then the bars not explained yet, whose
        records without their contributions say ``contributions_follow: true``;
        :meth:`ready` hands back a ``contributions`` record for each of them once they
        are in (module docstring)."""
        out = self.ready()
        while self._bars:
            bar = self._bars.popleft()
            _hand_out(bar)
            out.extend(bar.records)
            self._late.append(bar)
        return out

    def close(self, timeout: float | None = None) -> None:
        """Stop the worker thread, waiting at most ``timeout`` seconds for the batch it is
        on (records not yet taken stay for :meth:`ready`; a later :meth:`explain` starts
        a new worker)."""
        if self._worker is not None:
            if not self._worker.close(timeout):
                log.warning("the explainer thread is still busy after %s s: left behind", timeout)
            self._worker = None

    def _drain(
        self,
        bars: deque[_Bar],
        wait: bool,
        deadline: float | None,
        timeout: float | None,
        *,
        late: bool,
    ) -> list[dict[str, Any]]:
        """Complete the done bars at the head of ``bars`` (``wait``: all of them, until
        ``deadline``); their records, or their ``contributions`` records if ``late``."""
        out: list[dict[str, Any]] = []
        while bars and (bars[0].done or wait):
            bar = bars.popleft()
            if bar.done or (self._worker is not None and self._worker.wait(bar, deadline)):
                self._complete(bar)
            else:
                self._abandon(bar, timeout)
            out.extend(_follow_lines(bar) if late else bar.records)
        return out

    def _complete(self, bar: _Bar) -> None:
        """Fill ``bar``'s records from its outcomes (its bar is done)."""
        for (record, entry), outcome in zip(bar.jobs, bar.outcomes, strict=True):
            if isinstance(outcome, Exception):
                entry.failed = True
                if self._last.get(record["symbol"]) is entry:
                    self._last.pop(record["symbol"])  # the next decision tries again
                record["errors"].append(f"contributions: {type(outcome).__name__}: {outcome}")
                self._error("model_contributions")
                continue
            entry.top = outcome
            record["contributions"] = outcome
            record["contributions_ts"] = record["ts"]
            self.computed += 1
        _carry(bar)

    def _abandon(self, bar: _Bar, timeout: float | None) -> None:
        """``bar``'s records without the contributions its job did not deliver in time
        (the job's late outcome is dropped)."""
        for record, entry in bar.jobs:
            entry.failed = True
            if self._last.get(record["symbol"]) is entry:
                self._last.pop(record["symbol"])  # the next decision tries again
            record["errors"].append(f"contributions: not computed within {timeout:g} s")
            self._error("model_contributions_timeout")
        _carry(bar)

    def _still_valid(self, last: _Explained, record: dict[str, Any]) -> bool:
        """The last explanation may stand for ``record`` (see the module docstring)."""
        settings = self.settings
        if (
            last.failed
            or record["orders"]
            or last.model_version != record["model_version"]
            or last.tier != record.get("tier")
            or last.target_fraction != record.get("target_fraction")
            or abs(record["probability"] - last.probability) >= settings.explain_min_change
        ):
            return False
        age = settings.explain_max_age
        return age is None or record["ts"] - last.ts < age
