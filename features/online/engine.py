"""Online backend: the same features, bar by bar, for the live loop.

:class:`OnlineFeatures` takes one new bar per (venue, symbol) with :meth:`push` and, at
each decision time, returns the feature vector of every symbol with :meth:`step`. It
evaluates the graph of :mod:`oihedge.features.graph` (the same nodes and formulas the batch
backend evaluates) on bounded state: per series a few queues spanning one window, per
symbol running sums with one window of history. No polars, no numpy per bar.

Contract, identical to the batch path (:mod:`oihedge.features.stream`):

- push rows in arrival order (``known_at``, then ``ts``); a row whose ``ts`` is not after
  the last accepted row of its (venue, symbol) is out of order and refused
  (:meth:`push` returns ``False``), as ``validate(..., arrival_order=True)`` quarantines
  it. Rows must otherwise be valid panel rows (the live loop validates them first).
- call :meth:`step` at every bar close ``t`` after pushing the rows known by ``t`` and
  before any row known later. A bar close that was never stepped (the loop was down)
  is recorded as missing: windows and lags on the decision grid see a gap there, as
  the values it would have had cannot be known afterwards.

Reading it: the passes are generated Python (:mod:`oihedge.features.online.codegen`), their
variables named after the graph's nodes; a traceback shows the generated line, and
:func:`dump_source` (``oihedge features --dump-online``) prints the whole of it.

Latency: the calculator allocates small objects every bar; a live loop with a tight
budget pauses the cyclic garbage collector during a bar (``gc.disable()``) and runs
``gc.collect(0)`` while it waits for the next one (``gc.freeze()`` after start-up).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from operator import itemgetter
from typing import Any

import polars as pl

from oihedge.features.graph import At, level, topo_order
from oihedge.features.online.codegen import StepPlan, step_plan
from oihedge.features.online.names import node_names
from oihedge.features.online.rows import RowPlan, row_plan
from oihedge.features.online.state import GridLagQueue, RowPrefixes, RowRef
from oihedge.features.online.trace import Source
from oihedge.features.schema import format_duration
from oihedge.features.spec import FeatureSpec

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def to_us(moment: datetime | int) -> int:
    """Microseconds since the epoch (ints pass through)."""
    if isinstance(moment, int):
        return moment
    if moment.tzinfo is None:
        raise ValueError(f"timestamps must be timezone-aware (UTC), got naive {moment!r}")
    return (moment - _EPOCH) // _US


def _picker(slots: Sequence[int]) -> Callable[[list[Any]], tuple[Any, ...]]:
    """The values at ``slots`` of a list, as a tuple, in one call."""
    if len(slots) >= 2:
        return itemgetter(*slots)
    return lambda values: tuple(values[i] for i in slots)


class _Series:
    """State of one (venue, symbol): look-back queues and the latest row per channel."""

    __slots__ = ("lags", "last_ts", "latest", "prefixes", "refs")

    def __init__(self, rows: RowPlan, steps: StepPlan) -> None:
        self.last_ts = -(2**62)
        self.refs = [RowRef(span) for span in rows.ref_spans]
        self.prefixes = [RowPrefixes(bars, rows.bar_us) for bars in rows.window_bars]
        #: per channel: (ts of the latest channel row, *values of the At rows on it)
        self.latest: list[tuple[Any, ...] | None] = [None] * len(rows.channels)
        #: decision-grid lags of this venue's values (one queue per VenueLag node)
        self.lags = [GridLagQueue(n) for n in steps.venue_lags]

    def state_size(self) -> int:
        parts = [*self.refs, *self.prefixes, *self.lags]
        return sum(len(p) for p in parts)


class _Symbol:
    """Decision-time state of one symbol: its venues (sorted) and per-node values."""

    __slots__ = ("grid", "series", "sv", "symbol", "venues")

    def __init__(self, symbol: str, steps: StepPlan) -> None:
        self.symbol = symbol
        self.venues: list[str] = []
        self.series: list[_Series] = []
        #: per node: a float (scalar node) or a list over venues (venue node)
        self.sv: list[Any] = [None] * len(steps.slots)
        #: per grid node: its window state
        self.grid = [make() for make in steps.grid_factories]

    def add_venue(self, venue: str, series: _Series) -> None:
        pairs = sorted(
            [*zip(self.venues, self.series, strict=True), (venue, series)], key=lambda p: p[0]
        )
        self.venues = [v for v, _ in pairs]
        self.series = [s for _, s in pairs]

    def state_size(self) -> int:
        return sum(len(g) for g in self.grid)


class _Blank:
    """A symbol's state seen with no venue: every input of a missed decision is null."""

    __slots__ = ("grid", "series", "sv", "symbol")

    def __init__(self, state: _Symbol) -> None:
        self.symbol, self.sv, self.grid = state.symbol, state.sv, state.grid
        self.series: list[_Series] = []


class OnlineFeatures:
    """Incremental feature calculator (see the module docstring for the contract).

    ``spec`` is resolved with ``bar`` (required unless the spec fixes it). ``symbols``,
    when known (the live loop's universe), are set up at once; others are added on
    their first bar.
    """

    def __init__(
        self,
        spec: FeatureSpec,
        *,
        bar: timedelta | str | None = None,
        symbols: Sequence[str] = (),
    ) -> None:
        from oihedge.features.registry import graph  # the catalogue; imported late (no cycle)

        self.spec = spec.resolve(bar)
        self.params = self.spec.params
        self.bar_us = self.params.bar // _US
        roots = graph(self.spec)
        self.feature_names: tuple[str, ...] = tuple(roots)
        order = topo_order(roots.values())
        at_nodes = [n for n in order if isinstance(n, At)]
        rows = [n for n in order if level(n) == "row"]
        decisions = [n for n in order if level(n) != "row"]
        names = node_names(order, roots)
        label = f"{self.spec.name} v{self.spec.version}"
        self.row_plan = row_plan(rows, at_nodes, self.params, names=names, label=label)
        self.step_plan = step_plan(
            decisions, list(roots.values()), self.row_plan, self.params, names=names, label=label
        )
        self._outputs = [self.step_plan.slots[roots[name]] for name in self.feature_names]
        self._pick = _picker(self._outputs)
        self._series: dict[tuple[str, str], _Series] = {}
        self._symbols: dict[str, _Symbol] = {}
        self._states: list[_Symbol] = []
        self.last_step: int | None = None
        self.rejected = 0
        self.step_plan.prepare(0)  # a symbol before its first venue, a missed step
        for symbol in symbols:
            self._symbol(symbol)

    def push(self, row: Mapping[str, Any]) -> bool:
        """Take one bar: a mapping with the panel's columns (``ts`` a UTC datetime or
        epoch microseconds; missing or ``None`` fields are null). Push it when it arrives:
        its ``known_at`` is not read, the order of pushes and steps is the arrival.
        Returns ``False`` (and counts it in :attr:`rejected`) when the bar is out of order
        for its series or its ``ts`` is off the bar grid."""
        key = (row["venue"], row["symbol"])
        series = self._series.get(key)
        if series is None:
            series = _Series(self.row_plan, self.step_plan)
            self._series[key] = series
            state = self._symbol(key[1])
            state.add_venue(key[0], series)
            self.step_plan.prepare(len(state.series))
        ts = row["ts"]
        if type(ts) is not int:  # a feed's epoch microseconds pass as they are
            ts = to_us(ts)
        if ts <= series.last_ts or ts % self.bar_us:
            self.rejected += 1
            return False
        series.last_ts = ts
        self.row_plan.run(series, ts, row)
        return True

    def step(self, t: datetime | int) -> dict[str, list[float | None]]:
        """Feature vectors (in :attr:`feature_names` order) of every symbol at bar close
        ``t``, using the rows pushed so far. ``t`` must be on the bar grid and increase;
        bar closes skipped since the last step are recorded as gaps."""
        now = to_us(t)
        if now % self.bar_us:
            raise ValueError(f"decision time must be a bar close, got {t!r}")
        if self.last_step is not None and now <= self.last_step:
            raise ValueError(f"decision times must increase, got {t!r} after {self.last_step}")
        run, states = self.step_plan.run, self._states
        if self.last_step is not None:
            for skipped in range(self.last_step + self.bar_us, now, self.bar_us):
                self._skip(skipped)
        run(now, states)
        self.last_step = now
        pick = self._pick
        return {st.symbol: list(pick(st.sv)) for st in states}

    def _skip(self, now: int) -> None:
        """A missed decision time: its values are unknown, so every decision-grid window
        and lag records a gap there (rather than today's values under yesterday's date)."""
        for series in self._series.values():
            for queue in series.lags:
                queue.add(None)
        self.step_plan.run(now, [_Blank(st) for st in self._states])

    def _symbol(self, symbol: str) -> _Symbol:
        state = self._symbols.get(symbol)
        if state is None:
            state = _Symbol(symbol, self.step_plan)
            self._symbols[symbol] = state
            self._states = [self._symbols[s] for s in sorted(self._symbols)]
        return state

    def state_size(self) -> int:
        """Number of values held in queues (bounded by the windows, not the stream)."""
        size = sum(s.state_size() for s in self._series.values())
        size += sum(s.state_size() for s in self._states)
        for table in self.step_plan.pair_tables.values():
            size += sum(len(p) for p in table.state.values())
        return size


def dump_source(spec: FeatureSpec, *, bar: timedelta | str | None = None, venues: int = 4) -> str:
    """The generated online pass of ``spec`` as Python source, for reading and debugging.

    ``spec`` is resolved with ``bar`` (required unless the spec fixes it); the
    per-symbol passes are shown for ``venues`` venues (they are written once per venue
    count). Each function comes under a comment with the file name a traceback shows for
    it: ``row`` (one bar of one series), ``step`` (one decision time) and the
    per-symbol passes it calls. ``oihedge features --dump-online`` prints it.
    """
    if venues < 0:
        raise ValueError(f"venues must be >= 0, got {venues!r}")
    calc = OnlineFeatures(spec, bar=bar)
    rows, steps = calc.row_plan, calc.step_plan
    label = f"{calc.spec.name} v{calc.spec.version}"
    parts = [
        f"# online pass of spec {label}, bar {format_duration(calc.params.bar)}, "
        f"{len(calc.feature_names)} features, {venues} venue(s) per symbol",
        _section(rows.source, "row", label),
        _section(steps.source, "step", label),
    ]
    steps.prepare(venues)
    for number, venue_pass in enumerate(steps.passes, start=1):
        parts.append(f"# per-symbol pass {number} of {len(steps.passes)}")
        parts.append(_section(venue_pass.sources[venues], "one_pass", f"{label} {venues} venues"))
    return "\n\n".join(parts) + "\n"


def _section(text: str, name: str, label: str) -> str:
    source = Source()
    source.lines = text.split("\n")
    return f"# {source.filename(name, label)}\n{text}"


def replay(
    panel: pl.DataFrame, spec: FeatureSpec, *, bar: timedelta | None = None
) -> tuple[pl.DataFrame, OnlineFeatures]:
    """Run :class:`OnlineFeatures` over a stored panel as the live loop would see it.

    Rows go in arrival order (rows failing the row checks of
    :func:`oihedge.features.screening.validate` are left out, as the live loop quarantines them;
    out-of-order rows are pushed and refused by the calculator), decisions at every bar
    close of :func:`oihedge.features.stream.decision_grid`. Returns the feature table (the batch
    table's layout) and the calculator.
    """
    from oihedge.features.stream import accept, decision_grid

    accepted = accept(panel, bar=bar)
    calc = OnlineFeatures(spec, bar=accepted.bar, symbols=sorted(set(accepted.rows["symbol"])))
    stream = live_stream(panel, accepted.bar)
    times = decision_grid(accepted.rows, accepted.bar)
    rows = stream_rows(stream)
    known = [row["known_at"] for row in rows]
    out_ts: list[datetime] = []
    out_sym: list[str] = []
    out_vals: list[list[float | None]] = []
    i = 0
    for t in times:
        now = to_us(t)
        while i < len(rows) and known[i] <= now:
            calc.push(rows[i])
            i += 1
        for symbol, values in calc.step(now).items():
            out_ts.append(t)
            out_sym.append(symbol)
            out_vals.append(values)
    columns = list(zip(*out_vals, strict=True)) if out_vals else [[] for _ in calc.feature_names]
    table = pl.DataFrame(
        {
            "ts": pl.Series(out_ts, dtype=pl.Datetime("us", "UTC")),
            "symbol": pl.Series(out_sym, dtype=pl.String),
            **{
                name: pl.Series(list(col), dtype=pl.Float64)
                for name, col in zip(calc.feature_names, columns, strict=True)
            },
        }
    )
    return table, calc


def stream_rows(stream: pl.DataFrame) -> list[dict[str, Any]]:
    """Rows as :meth:`OnlineFeatures.push` takes them, ``ts`` and ``known_at`` as epoch
    microseconds (what a feed handler would stamp; datetimes are accepted too)."""
    micros = [pl.col(c).dt.epoch("us") for c in ("ts", "known_at")]
    return stream.with_columns(micros).to_dicts()


def live_stream(panel: pl.DataFrame, bar: timedelta) -> pl.DataFrame:
    """The rows the live loop would push: arrival order, without rows that fail the row
    checks (out-of-order and duplicate rows stay in: the calculator refuses them)."""
    from oihedge.features.screening import validate
    from oihedge.features.stream import arrival_order

    result = validate(arrival_order(panel), bar=bar, arrival_order=True)
    late = result.quarantine.filter(pl.col("reason").is_in(["out_of_order", "duplicate_key"]))
    # the accepted row of a full tie goes first, as the stable arrival sort keeps it
    return arrival_order(pl.concat([result.valid, late.drop("reason")]))
