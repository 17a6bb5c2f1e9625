"""Compile a feature graph into two plain Python functions for the online backend.

Interpreting the graph node by node costs more per bar than the maths itself, so the
online backend generates, once per spec, the straight-line source of

* ``row(series, ts, row)``: every row node of one new bar of one (venue, symbol), and
* ``step(now, states)``: every venue and scalar node of every symbol at decision time
  ``now`` (cross-asset nodes run between the per-symbol passes that need them),

and compiles it with :func:`exec`. The generated code only calls the formulas of
:mod:`features.formulas` and the bounded state of :mod:`features.online_state`, with
the null rules of :func:`features.online_state.apply_formula` written inline. The
source is kept on the plan (``RowPlan.source``, ``StepPlan.source``) for reading.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from itertools import combinations
from typing import Any

from features import formulas as f
from features.graph import (
    At,
    Corr,
    CorrOthers,
    CorrPair,
    CrossMean,
    Field,
    GridLag,
    GridWindow,
    Map,
    Node,
    Reduce,
    Ref,
    RowMap,
    RowWindow,
    VenueLag,
    VenueMap,
    level,
)
from features.online_state import (
    PRESENT_REDUCERS,
    REDUCERS,
    GridLagQueue,
    GridPrefix,
    apply_formula,
    fold_sum,
)
from features.spec import FeatureParams
from features.windows import bars_ceil, max_age, min_count, ref_offsets, window_needed

_US = timedelta(microseconds=1)
ERRORS = (ArithmeticError, ValueError, TypeError)
CROSS = (CrossMean, CorrOthers, CorrPair)


# -- rows -------------------------------------------------------------------------------


@dataclass
class RowPlan:
    """What one bar of one series computes, and the state each series needs."""

    channels: list[tuple[str, ...]]
    ref_offsets: list[tuple[int, int]]
    #: per window source: the bar counts of its windows
    window_bars: list[list[int]]
    #: per channel: the row node of each At reading it, by position in ``latest[channel]``
    at_rows: list[list[Node]]
    run: Callable[..., None]
    source: str
    bar_us: int


def row_plan(order: Sequence[Node], at_nodes: Sequence[At], params: FeatureParams) -> RowPlan:
    """Generate ``row(series, ts, row)`` for the row nodes ``order`` (dependency order)."""
    assert params.bar is not None
    bar = params.bar
    src = Source()
    channels = sorted({n.channel for n in order})  # type: ignore[union-attr]
    chan = {c: i for i, c in enumerate(channels)}
    columns = sorted({c for ch in channels for c in ch})
    col = {c: f"c{i}" for i, c in enumerate(columns)}
    var = {n: f"v{i}" for i, n in enumerate(order)}
    at_rows: list[list[Node]] = [[] for _ in channels]
    for a in at_nodes:
        if a.row not in at_rows[chan[a.row.channel]]:
            at_rows[chan[a.row.channel]].append(a.row)
    ref_offsets_: list[tuple[int, int]] = []
    ref_columns: list[tuple[int, str]] = []
    # windows over one source share one running sum: group them by source
    sources = list(dict.fromkeys(n.source for n in order if isinstance(n, RowWindow)))
    window_bars: list[list[int]] = [[] for _ in sources]
    windows: dict[Node, tuple[int, int]] = {}
    for node in order:
        if isinstance(node, RowWindow):
            group = sources.index(node.source)
            windows[node] = (group, len(window_bars[group]))
            window_bars[group].append(bars_ceil(node.window, bar))
    added: set[int] = set()

    src.emit(0, "def row(series, ts, row):")
    src.emit(1, "refs = series.refs; prefixes = series.prefixes; latest = series.latest")
    for c in columns:
        src.emit(1, f"{col[c]} = row.get({c!r})")
    for ch, i in chan.items():
        src.emit(1, f"a{i} = " + " and ".join(f"{col[c]} is not None" for c in ch))
    for node in order:
        v, a = var[node], f"a{chan[node.channel]}"  # type: ignore[union-attr]
        if isinstance(node, Field):
            src.emit(1, f"{v} = float({col[node.column]}) if {a} else None")
        elif isinstance(node, Ref):
            offsets = ref_offsets(node, bar)
            if offsets is None:
                src.emit(1, f"{v} = None")
                continue
            slot = len(ref_offsets_)
            ref_offsets_.append(offsets)
            ref_columns.append((slot, node.column))
            src.emit(1, f"{v} = refs[{slot}].lookup(ts) if {a} else None")
        elif isinstance(node, RowWindow):
            group, position = windows[node]
            if group not in added:
                added.add(group)
                src.emit(1, f"sums{group} = prefixes[{group}].add(ts, {var[node.source]})")
            fn = f.window_sum if node.how == "sum" else f.window_mean
            needed = float(window_needed(node, params))
            src.emit(1, f"w_total = sums{group}[{2 * position}]")
            src.emit(1, f"w_count = sums{group}[{2 * position + 1}]")
            src.emit(1, f"if {a}:")
            src.formula(2, v, fn, ["w_total", "w_count"], [needed], check=[])
            src.emit(1, "else:")
            src.emit(2, f"{v} = None")
        elif isinstance(node, RowMap):
            src.formula(1, v, node.fn, [var[x] for x in node.args], node.consts)
    for slot, column in ref_columns:
        src.emit(1, f"if {col[column]} is not None:")
        src.emit(2, f"refs[{slot}].add(ts, float({col[column]}))")
    for i, rows in enumerate(at_rows):
        if rows:
            values = ", ".join(var[r] for r in rows) + ","
            src.emit(1, f"if a{i}:")
            src.emit(2, f"latest[{i}] = (ts, ({values}))")
    return RowPlan(
        channels=channels,
        ref_offsets=ref_offsets_,
        window_bars=window_bars,
        at_rows=at_rows,
        run=src.compile("row"),
        source="\n".join(src.lines),
        bar_us=bar // _US,
    )


# -- decisions --------------------------------------------------------------------------


@dataclass
class StepPlan:
    """What one decision time computes; the per-symbol and cross-symbol state it needs."""

    slots: dict[Node, int]
    venue_lags: list[int]
    grid_factories: list[Callable[[], Any]]
    run: Callable[..., None]
    source: str
    pair_tables: dict[tuple[Node, int], Any] = field(default_factory=dict)
    #: names of the per-pass fresh-row views already emitted (one per channel and age)
    views: set[str] = field(default_factory=set)


def _cross_levels(nodes: Sequence[Node]) -> dict[Node, int]:
    """How many cross-asset nodes lie on the longest path to each node (themselves included)."""
    out: dict[Node, int] = {}
    for node in nodes:
        inner = max((out.get(c, 0) for c in node.inputs), default=0)
        out[node] = inner + (1 if isinstance(node, CROSS) else 0)
    return out


def step_plan(nodes: Sequence[Node], rows: RowPlan, params: FeatureParams) -> StepPlan:
    """Generate ``step(now, states)`` for the decision nodes ``nodes`` (dependency order)."""
    assert params.bar is not None
    src = Source()
    slots = {n: i for i, n in enumerate(nodes)}
    plan = StepPlan(slots=slots, venue_lags=[], grid_factories=[], run=lambda *_: None, source="")
    levels = _cross_levels(nodes)
    src.emit(0, "def step(now, states):")
    for lvl in sorted(set(levels.values())):
        cross = [n for n in nodes if levels[n] == lvl and isinstance(n, CROSS)]
        for node in cross:
            fn = cross_runner(node, slots, params, plan)
            src.emit(1, f"{src.bind(fn, 'cross')}(now, states)")
        local = [n for n in nodes if levels[n] == lvl and not isinstance(n, CROSS)]
        if not local:
            continue
        src.emit(1, "for st in states:")
        src.emit(2, "sv = st.sv; series = st.series; grid = st.grid")
        plan.views = set()
        for node in local:
            _emit_decision(src, node, slots, rows, params, plan)
    if len(src.lines) == 1:
        src.emit(1, "pass")
    plan.run = src.compile("step")
    plan.source = "\n".join(src.lines)
    return plan


def _emit_decision(
    src: Source,
    node: Node,
    slots: dict[Node, int],
    rows: RowPlan,
    params: FeatureParams,
    plan: StepPlan,
) -> None:
    assert params.bar is not None
    k = slots[node]
    target = f"sv[{k}]"
    if isinstance(node, At):
        ci = rows.channels.index(node.row.channel)
        pos = rows.at_rows[ci].index(node.row)
        age = max_age(node, params) // _US
        view = f"fresh_{ci}_{age}"
        if view not in plan.views:
            plan.views.add(view)
            src.emit(
                2,
                f"{view} = [c[1] if c is not None and now - c[0] <= {age} else None "
                f"for c in [s.latest[{ci}] for s in series]]",
            )
        src.emit(2, f"{target} = [c[{pos}] if c is not None else None for c in {view}]")
    elif isinstance(node, VenueLag):
        lag = len(plan.venue_lags)
        plan.venue_lags.append(bars_ceil(node.window, params.bar))
        src.emit(
            2,
            f"{target} = [s.lags[{lag}].add(x) for s, x in zip(series, sv[{slots[node.source]}])]",
        )
    elif isinstance(node, VenueMap):
        names = [f"m{i}" for i in range(len(node.args))]
        loops = [
            (n, slots[a]) for n, a in zip(names, node.args, strict=True) if level(a) == "venue"
        ]
        for n, a in zip(names, node.args, strict=True):
            if level(a) != "venue":
                src.emit(2, f"{n} = sv[{slots[a]}]")
        src.emit(2, "out = []")
        iters = ", ".join(f"sv[{s}]" for _, s in loops)
        src.emit(2, f"for {', '.join(n for n, _ in loops)}, in zip({iters}):")
        src.formula(3, "r", node.fn, names, node.consts)
        src.emit(3, "out.append(r)")
        src.emit(2, f"{target} = out")
    elif isinstance(node, Reduce) and node.how in PRESENT_REDUCERS:
        source = slots[node.args[0]]
        present = f"present{source}"
        if present not in plan.views:
            plan.views.add(present)
            src.emit(2, f"{present} = [v for v in sv[{source}] if v is not None]")
        fn = src.bind(PRESENT_REDUCERS[node.how], f"reduce_{node.how}")
        src.emit(2, f"{target} = {fn}({present})")
    elif isinstance(node, Reduce):
        fn = src.bind(REDUCERS[node.how], f"reduce_{node.how}")
        args = ", ".join(f"sv[{slots[a]}]" for a in node.args)
        src.emit(2, f"{target} = {fn}({args})")
    elif isinstance(node, Map):
        names = [f"m{i}" for i in range(len(node.args))]
        for n, a in zip(names, node.args, strict=True):
            src.emit(2, f"{n} = sv[{slots[a]}]")
        src.formula(2, target, node.fn, names, node.consts)
    elif isinstance(node, GridLag | GridWindow | Corr):
        g = len(plan.grid_factories)
        update, formula, needed, names = grid_update(node, params, plan)
        fn = src.bind(update, "grid")
        args = ", ".join(f"sv[{slots[a]}]" for a in node.inputs)
        if formula is None:
            src.emit(2, f"{target} = {fn}(grid[{g}], {args})")
        else:
            src.emit(2, f"{', '.join(names)}, = {fn}(grid[{g}], {args})")
            check = [n for n in names if n == "g_dev"]
            src.formula(2, target, formula, names, [needed], check=check)
    else:
        raise TypeError(f"not a decision node: {node!r}")


