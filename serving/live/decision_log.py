"""The decision log: one JSON line per symbol per bar, plus one line per loop event.

A decision record (``"kind": "decision"``) holds, for one symbol at one bar:

=====================  ====================================================================
key                    meaning
=====================  ====================================================================
ts                     decision time (bar close), ISO 8601 UTC
symbol                 base asset
price                  the hedge instrument's mark the decision used, USD (absent when the
                       symbol had no price yet: no decision)
probability            calibrated cascade probability, or null (no model / model failed)
model_version          registry version of the serving model, or null
contributions          top features by absolute contribution: ``[name, value]`` pairs,
                       log-odds (LightGBM ``pred_contrib``), largest first
contributions_ts       the bar whose feature vector ``contributions`` explain: ``ts``
                       when computed for this decision, an earlier bar when carried over
                       (the probability, tier and target have not moved meaningfully
                       since: :mod:`oihedge.serving.live.explain`), null when there are none
confirmations, tier    from the policy
target_fraction        target hedge, fraction of the maximum hedge
target_usd, max_usd    target and maximum hedge, USD
hedge_before_usd       the hedge held before the decision (position incl. working orders)
hedge_after_usd        the hedge the decision moves to, USD
fresh_venues           venues with fresh data
left_out               ``{venue: reason}``: venues left out of cross-venue features
                       (``stale 900s``, ``no data``, ``quarantined: <reason>``,
                       ``timeout``, ``rate_limited``, ``garbage``, ...)
orders                 ``[{client_order_id, side, amount, notional_usd, status, reason}]``
reasons                the policy's reasons
errors                 what went wrong for this symbol this bar (model error, no price...)
contributions_follow   present (true) only on a line written before its contributions were
                       computed: a ``contributions`` line follows (below)
=====================  ====================================================================

**Contributions written after their decision.** A decision line must be on file before
the state moves past its bar (:mod:`oihedge.serving.live.loop`, "The decision log follows the
state"), and its SHAP contributions are computed on a worker thread
(:mod:`oihedge.serving.live.explain`) that may not be done by then. Such a line is written at
once, with ``contributions: []``, ``contributions_ts: null`` and ``contributions_follow:
true``, and a later line completes it::

    {"kind": "contributions", "ts": ..., "symbol": ..., "contributions": [...],
     "contributions_ts": ..., "errors": [...]}

keyed by the decision's (``ts``, ``symbol``): its ``contributions`` and
``contributions_ts`` replace the decision's, its ``errors`` (why they are missing, if
they are) extend the decision's. It comes after its decision line and before the end of
the run, not necessarily next to it; a decision written whole has no such line. A live
loop writes its lines whole (it has each bar's contributions in, or gives up on them
after ``explain_timeout``, before the next bar can persist a decision); a replay splits
most of its explained decisions. :func:`read_records` reads the
file back with each ``contributions`` line merged into its decision. After a crash, a
decision whose ``contributions`` line was not written yet keeps ``contributions_follow:
true`` in what :func:`read_records` returns: its contributions were lost with the process
(as a line written from the state has none).

Event records (``"kind": "model"``, ``"reconcile"``, ``"quarantine"``, ``"start"``,
``"stop"``, ``"kill_switch"``) carry ``ts`` and their own fields; a ``start`` line
carries the ``state_id`` of the state store the run used. Every line goes through
:func:`oihedge.serving.redact.redact` before it is written, so a credential can never reach the
file, whatever a venue's error message echoes.

**After a crash** (``kill -9`` at any instruction) the file is the prefix of the lines the
loop meant to write: lines are appended in order by one process (one loop per state) and
nothing is rewritten. Opening it cuts a partial last line (a write the kill interrupted);
:meth:`DecisionLog.resume` then reads back, from the end, the decision lines of this
state (a line belongs to the state of the ``start`` line before it) at or after the bar
the restart resumes from, and :meth:`DecisionLog.write` drops a decision, or a
``contributions`` line, whose (``ts``, ``symbol``) is among them: the bars a restart
decides again are not written twice (the one on file stands for both; if its
contributions were to follow, they stay missing). How the loop keeps
the log and the state in step, so that no line is lost either: :mod:`oihedge.serving.live.loop`
("Restart"). A ``durable`` log (live) is fsynced at every :meth:`DecisionLog.flush`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import numpy as np
import orjson

from oihedge.serving.redact import redact, secret_values

__all__ = [
    "DecisionLog",
    "complete",
    "cut_partial_line",
    "decisions_on_file",
    "lines_backwards",
    "read_records",
    "top_contributions",
    "top_contributions_rows",
]

#: datetimes go through ``DecisionLog._text`` (the log's format), keys may be any scalar
_JSON_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_NON_STR_KEYS
#: bytes read at a time from the end of the file
_BLOCK = 1 << 16
#: the kinds of line keyed by a decision's (``ts``, ``symbol``)
_KEYED = frozenset({"decision", "contributions"})


def top_contributions(
    names: tuple[str, ...] | list[str], values: Any, k: int = 5
) -> list[list[Any]]:
    """The ``k`` largest contributions by absolute value, ``[name, value]`` pairs.

    ``values``: one contribution per feature in ``names`` order, optionally followed by
    the bias term (LightGBM appends it; it is ignored here).
    """
    return top_contributions_rows(names, [values], k)[0]


def top_contributions_rows(
    names: tuple[str, ...] | list[str], rows: Any, k: int = 5
) -> list[list[list[Any]]]:
    """:func:`top_contributions` of several vectors at once (one sort for a bar's
    symbols instead of one per symbol): one list of ``[name, value]`` pairs per row."""
    v = np.asarray(rows, dtype=np.float64)
    if v.ndim != 2:
        raise ValueError(f"contributions must be one vector per row, got shape {v.shape}")
    v = v[:, : len(names)]
    mag = np.where(np.isfinite(v), np.abs(v), 0.0)
    top = np.argsort(-mag, axis=1, kind="stable")[:, :k]
    return [
        [[names[i], round(row[i], 6)] for i in idx if m[i] > 0.0]
        for row, m, idx in zip(v.tolist(), mag.tolist(), top.tolist(), strict=True)
    ]


def cut_partial_line(path: Path) -> int:
    """Truncate ``path`` after its last newline (a line a killed process left half
    written); returns the bytes cut (0: none, or no file)."""
    try:
        fh = path.open("r+b")
    except FileNotFoundError:
        return 0
    with fh:
        size = fh.seek(0, os.SEEK_END)
        end = size
        while end > 0:
            step = min(_BLOCK, end)
            fh.seek(end - step)
            chunk = fh.read(step)
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                end = end - step + newline + 1
                break
            end -= step
        if end < size:
            fh.truncate(end)
            fh.flush()
            os.fsync(fh.fileno())
        return size - end


def lines_backwards(path: Path) -> Iterator[bytes]:
    """The non-empty lines of ``path``, last first (read in blocks from the end)."""
    with path.open("rb") as fh:
        pos = fh.seek(0, os.SEEK_END)
        rest = b""
        while pos > 0:
            step = min(_BLOCK, pos)
            pos -= step
            fh.seek(pos)
            lines = (fh.read(step) + rest).split(b"\n")
            rest = lines[0]
            yield from (line for line in reversed(lines[1:]) if line)
        if rest:
            yield rest


def decisions_on_file(path: Path, since: datetime | None, state_id: str) -> set[tuple[str, str]]:
    """(``ts`` as written, ``symbol``) of the decision lines of state ``state_id`` at or
    after ``since`` (None: all of them), read from the end of ``path``. A line belongs to
    the state of the ``start`` line before it (lines with none belong to no state); the
    reading stops at the start of this state's run that reaches back before ``since``."""
    keys: set[tuple[str, str]] = set()
    if not path.exists():
        return keys
    run: set[tuple[str, str]] = set()  # the lines since the last start line read
    reached = False  # that run has a line before ``since``
    for line in lines_backwards(path):
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        kind = record.get("kind") if isinstance(record, dict) else None
        if kind == "start":
            if record.get("state_id") == state_id:
                keys |= run
                if reached:
                    break
            run, reached = set(), False
        elif kind == "decision" and not reached:
            if since is not None and datetime.fromisoformat(record["ts"]) < since:
                reached = True
            else:
                run.add((record["ts"], record["symbol"]))
    return keys


def complete(decision: dict[str, Any], contributions: dict[str, Any]) -> None:
    """Merge a ``contributions`` line into its decision record, in place (module
    docstring): its contributions replace the decision's, its errors extend them."""
    decision.pop("contributions_follow", None)
    decision["contributions"] = contributions["contributions"]
    decision["contributions_ts"] = contributions["contributions_ts"]
    decision["errors"] = [*decision.get("errors", []), *contributions.get("errors", [])]


def read_records(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records of the decision log at ``path`` in file order, each ``contributions``
    line merged into the decision line before it with the same (``ts``, ``symbol``) and
    not returned itself (module docstring). A decision still waiting for its line keeps
    ``contributions_follow: true``. A partial last line (a process killed mid-write,
    not cut yet by a restart) is skipped; a bad line elsewhere raises ``ValueError``."""
    # the text after the last newline is a write a kill interrupted, not a line yet
    lines = Path(path).read_bytes().split(b"\n")[:-1]
    records: list[dict[str, Any]] = []
    waiting: dict[tuple[str, str], dict[str, Any]] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError as err:
            raise ValueError(f"{path}: line {number} is not JSON: {err}") from None
        kind = record.get("kind") if isinstance(record, dict) else None
        if kind == "contributions":
            decision = waiting.pop((record["ts"], record["symbol"]), None)
            if decision is None:
                raise ValueError(
                    f"{path}: line {number}: contributions of {record['symbol']} at "
                    f"{record['ts']} follow no decision waiting for them"
                )
            complete(decision, record)
            continue
        if kind == "decision" and record.get("contributions_follow"):
            waiting[(record["ts"], record["symbol"])] = record
        records.append(record)
    return records


class DecisionLog:
    """Append-only JSON-lines file at ``path`` (None: records are kept in memory only,
    in :attr:`records`, up to ``keep`` of them; a file log keeps none). Lines are flushed
    at every :meth:`flush` (the loop flushes once per bar), and fsynced too when
    ``durable`` (a live run). Opening the file cuts a partial last line."""

    def __init__(
        self, path: str | os.PathLike[str] | None, *, keep: int = 0, durable: bool = False
    ) -> None:
        self.path = None if path is None else Path(path)
        self.keep = keep
        self.durable = durable
        self.records: list[dict[str, Any]] = []
        self._fh: IO[str] | None = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            cut_partial_line(self.path)
            self._fh = self.path.open("a", encoding="utf-8")
        #: decisions already on file (:meth:`resume`): not written again
        self._on_file: set[tuple[str, str]] = set()
        #: decision records dropped because their line is on file already
        self.skipped = 0
        self._pending: list[str] = []
        self._secrets: tuple[str, ...] | None = None
        #: the text of recent datetimes: a bar's records share their ``ts`` (and often
        #: ``contributions_ts``), and ``str`` of a datetime costs ~2 us
        self._times: dict[datetime, str] = {}

    def _encode(self, record: dict[str, Any]) -> str:
        """One line of JSON (orjson: ~4 us a decision record against ~11 us for the
        standard encoder; a non-finite float is written as null)."""
        return orjson.dumps(record, default=self._text, option=_JSON_OPTIONS).decode()

    def _text(self, value: Any) -> Any:
        """What the encoder writes for a value JSON has no type for: a numpy scalar's
        Python value, else ``str(value)`` (a datetime: ``2025-01-01 00:05:00+00:00``)."""
        if type(value) is not datetime:
            return value.item() if isinstance(value, np.generic) else str(value)
        text = self._times.get(value)
        if text is None:
            if len(self._times) >= 64:
                self._times.clear()
            text = self._times[value] = str(value)
        return text

    def resume(self, since: datetime | None, state_id: str) -> int:
        """Read back the decision lines of state ``state_id`` at or after ``since`` (the
        bar a restart resumes from; None: every line of this state): :meth:`write` drops
        a decision already on file. Returns how many there are."""
        if self.path is not None:
            self._on_file = decisions_on_file(self.path, since, state_id)
        return len(self._on_file)

    def on_file(self, ts: datetime, symbol: str) -> bool:
        """The decision of ``symbol`` at ``ts`` was on file when the run resumed."""
        return (self._text(ts), symbol) in self._on_file

    def write(self, record: dict[str, Any]) -> None:
        """Queue one record (written at the next :meth:`flush`); a decision, or its
        ``contributions`` line, whose decision is on file already (:meth:`resume`) is
        dropped."""
        if (
            self._on_file
            and record.get("kind") in _KEYED
            and (self._text(record["ts"]), record["symbol"]) in self._on_file
        ):
            self.skipped += 1
            return
        if self.keep and len(self.records) < self.keep:
            self.records.append(record)
        if self._fh is not None:
            self._pending.append(self._encode(record))

    @property
    def pending(self) -> int:
        """Lines queued and not yet written."""
        return len(self._pending)

    def flush(self) -> None:
        """Write the queued lines and flush the file (and fsync it when ``durable``)."""
        if self._fh is not None and self._pending:
            if self._secrets is None:  # read once: credentials do not change while running
                self._secrets = secret_values()
            self._fh.write(redact("\n".join(self._pending), self._secrets) + "\n")
            self._fh.flush()
            if self.durable:
                os.fsync(self._fh.fileno())
            self._pending.clear()

    def close(self) -> None:
        self.flush()
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> DecisionLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
