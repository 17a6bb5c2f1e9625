"""Compile a feature graph into two plain Python functions for the online backend.

Interpreting the graph node by node costs more per bar than the maths itself, so the
online backend generates, once per spec, the straight-line source of

* ``row(series, ts, row)``: every row node of one new bar of one (venue, symbol), and
* ``step(now, states)``: every venue and scalar node of every symbol at decision time
  ``now`` (cross-asset nodes run between the per-symbol passes that need them),

and compiles it with :func:`exec` (the row pass is :mod:`oihedge.features.online.rows`, the
decision-time pass this module). The generated code only calls the formulas of
:mod:`oihedge.features.formulas` and the bounded state of :mod:`oihedge.features.online.state`, with
the null rules of :func:`oihedge.features.online.state.apply_formula` written inline. Its
variables are named after the graph's nodes (:mod:`oihedge.features.online.names`) and its lines
are registered with :mod:`linecache`, so a traceback shows the generated line. The
source is kept on the plan (``RowPlan.source``, ``StepPlan.source``,
``VenuePass.sources``) for reading; :func:`oihedge.features.online.engine.dump_source` prints it
all.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from oihedge.features import formulas as f
from oihedge.features.graph import (
    At,
    Corr,
    CorrOthers,
    CorrPair,
    CrossMean,
    GridLag,
    GridWindow,
    Map,
    Node,
    Reduce,
    VenueLag,
    VenueMap,
    level,
    topo_order,
)
from oihedge.features.online.grid import Emit, cross_runner, grid_update
from oihedge.features.online.names import node_names, venue_local, view_name
from oihedge.features.online.rows import RowPlan
from oihedge.features.online.state import PRESENT_REDUCERS
from oihedge.features.online.trace import Source
from oihedge.features.spec import ResolvedParams
from oihedge.features.windows import bars_ceil, max_age

_US = timedelta(microseconds=1)
CROSS = (CrossMean, CorrOthers, CorrPair)


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
    #: the per-symbol passes written per venue count, in run order
    passes: list[VenuePass] = field(default_factory=list)
    #: each node's variable in the generated code
    names: dict[Node, str] = field(default_factory=dict)

    def prepare(self, venues: int) -> None:
        """Compile every pass for ``venues`` venues now (not in the first step with them)."""
        for venue_pass in self.passes:
            if venues not in venue_pass.compiled:
                venue_pass.make(venues)


def _cross_levels(nodes: Sequence[Node]) -> dict[Node, int]:
    """How many cross-asset nodes lie on the longest path to each node (themselves included)."""
    out: dict[Node, int] = {}
    for node in nodes:
        inner = max((out.get(c, 0) for c in node.inputs), default=0)
        out[node] = inner + (1 if isinstance(node, CROSS) else 0)
    return out


def step_plan(
    nodes: Sequence[Node],
    outputs: Sequence[Node],
    rows: RowPlan,
    params: ResolvedParams,
    *,
    names: Mapping[Node, str] | None = None,
    label: str = "",
) -> StepPlan:
    """Generate ``step(now, states)`` for the decision nodes ``nodes`` (dependency order);
    ``outputs`` (and whatever crosses a pass) are kept in each symbol's ``sv`` slots, the
    rest live in local variables of one pass.

    Each per-symbol pass is written once per venue count, every venue vector as one
    local per venue (no lists, zips or appends; :class:`VenuePass`). ``names``: every
    node's variable, the row nodes' included (:func:`oihedge.features.online.names.node_names`
    of the graph by default); ``label`` names the code in tracebacks (the spec).
    """
    src = Source()
    slots = {n: i for i, n in enumerate(nodes)}
    plan = StepPlan(slots=slots, venue_lags=[], grid_factories=[], run=lambda *_: None, source="")
    plan.names = dict(names) if names is not None else node_names(topo_order(outputs))
    levels = _cross_levels(nodes)
    group = {n: (levels[n], isinstance(n, CROSS)) for n in nodes}
    kept = set(outputs) | {
        c for n in nodes for c in n.inputs if c in group and group[c] != group[n]
    }
    src.emit(0, "def step(now, states):")
    for lvl in sorted(set(levels.values())):
        cross = [n for n in nodes if levels[n] == lvl and isinstance(n, CROSS)]
        for node in cross:
            fn = cross_runner(node, slots, params, plan)
            src.emit(1, f"{src.bind(fn, 'cross')}(now, states)")
        local = [n for n in nodes if levels[n] == lvl and not isinstance(n, CROSS)]
        if not local:
            continue
        venue_pass = VenuePass(local, kept, slots, rows, params, plan, label)
        plan.passes.append(venue_pass)
        fns, make = src.bind(venue_pass.compiled, "fns"), src.bind(venue_pass.make, "make")
        src.emit(1, "for st in states:")
        src.emit(2, f"fn = {fns}.get(len(st.series))")
        src.emit(2, "if fn is None:")
        src.emit(3, f"fn = {make}(len(st.series))")
        src.emit(2, "fn(now, st)")
    if len(src.lines) == 1:
        src.emit(1, "pass")
    plan.run = src.compile("step", label)
    plan.source = "\n".join(src.lines)
    return plan


# -- per-symbol passes unrolled over the venues -------------------------------------------


class VenuePass:
    """One per-symbol pass of ``step``, written for a given number of venues.

    A venue vector is one local per venue (``<node>_v<j>``), so a pass builds no lists
    (reductions fold the present values left to right; ``max`` / ``min`` keep the first
    extreme, as the builtins do; the values equal the batch table's). The
    code for ``n`` venues is generated and compiled the first time a symbol has ``n``
    venues (:meth:`StepPlan.prepare` does it when a venue is added) and cached in
    :attr:`compiled`; :attr:`sources` keeps it for reading.
    """

    def __init__(
        self,
        nodes: Sequence[Node],
        kept: set[Node],
        slots: dict[Node, int],
        rows: RowPlan,
        params: ResolvedParams,
        plan: StepPlan,
        label: str = "",
    ) -> None:
        self.nodes, self.kept, self.slots, self.rows, self.params = nodes, kept, slots, rows, params
        self.names, self.label = plan.names, label
        self.local = set(nodes)
        #: per node: its grid state index and emitter, or its venue lag index and size
        self.grid: dict[Node, tuple[int, Emit, f.Formula | None, float, list[str]]] = {}
        self.lags: dict[Node, tuple[int, int]] = {}
        for node in nodes:
            if isinstance(node, GridLag | GridWindow | Corr):
                g = len(plan.grid_factories)
                self.grid[node] = (g, *grid_update(node, params, plan))
            elif isinstance(node, VenueLag):
                bars = bars_ceil(node.window, params.bar)
                self.lags[node] = (len(plan.venue_lags), bars + 1)
                plan.venue_lags.append(bars)
        self.compiled: dict[int, Callable[[int, Any], None]] = {}
        self.sources: dict[int, str] = {}

    def make(self, venues: int) -> Callable[[int, Any], None]:
        src = Source()
        _PassWriter(self, src, venues).write()
        fn = src.compile("one_pass", f"{self.label} {venues} venues".strip())
        self.compiled[venues] = fn
        self.sources[venues] = "\n".join(src.lines)
        return fn


class _PassWriter:
    """Writes ``one_pass(now, st)`` of a :class:`VenuePass` for ``n`` venues."""

    def __init__(self, vp: VenuePass, src: Source, n: int) -> None:
        self.vp, self.src, self.n = vp, src, n
        self.venue_names: dict[Node, list[str]] = {}
        self.views: set[str] = set()

    def scalar(self, node: Node) -> str:
        slot = self.vp.slots[node]
        return self.vp.names[node] if node in self.vp.local else f"sv[{slot}]"

    def load(self, node: Node) -> str:
        """A local holding the scalar ``node``: its own, or one loaded from ``sv`` (a
        node of an earlier pass) under its name."""
        if node not in self.vp.local:
            self.src.emit(1, f"{self.vp.names[node]} = sv[{self.vp.slots[node]}]")
        return self.vp.names[node]

    def vector(self, node: Node) -> list[str]:
        names = self.venue_names.get(node)
        if names is None:  # a venue vector of an earlier pass, kept in sv as a list
            slot = self.vp.slots[node]
            names = [venue_local(self.vp.names[node], j) for j in range(self.n)]
            if names:
                self.src.emit(1, f"{', '.join(names)}, = sv[{slot}]")
            self.venue_names[node] = names
        return names

    def write(self) -> None:
        src, n = self.src, self.n
        src.emit(0, "def one_pass(now, st):")
        src.emit(1, "sv = st.sv; series = st.series; grid = st.grid")
        if n:
            src.emit(1, f"{', '.join(f's{j}' for j in range(n))}, = series")
        for node in self.vp.nodes:
            self.node(node)
            if node in self.vp.kept:
                slot = self.vp.slots[node]
                if level(node) == "venue":
                    src.emit(1, f"sv[{slot}] = [{', '.join(self.vector(node))}]")
                else:
                    src.emit(1, f"sv[{slot}] = {self.vp.names[node]}")

    def node(self, node: Node) -> None:
        src, n, vp = self.src, self.n, self.vp
        target = vp.names[node]
        if isinstance(node, At):
            self.at(node)
        elif isinstance(node, VenueLag):
            lag, size = vp.lags[node]
            names = [venue_local(target, j) for j in range(n)]
            for j, x in enumerate(self.vector(node.source)):
                src.emit(1, f"q = s{j}.lags[{lag}]; i = q.i; q.ring[i] = {x}")
                src.emit(1, f"i = q.i = (i + 1) % {size}")
                src.emit(1, f"if q.filled < {size}:")
                src.emit(2, "q.filled += 1")
                src.emit(1, f"{names[j]} = q.ring[i] if q.filled == {size} else None")
            self.venue_names[node] = names
        elif isinstance(node, VenueMap):
            fixed = {i: self.load(a) for i, a in enumerate(node.args) if level(a) != "venue"}
            vectors = {i: self.vector(a) for i, a in enumerate(node.args) if level(a) == "venue"}
            names = [venue_local(target, j) for j in range(n)]
            for j in range(n):
                args = [fixed[i] if i in fixed else vectors[i][j] for i in range(len(node.args))]
                src.formula(1, names[j], node.fn, args, node.consts)
            self.venue_names[node] = names
        elif isinstance(node, Reduce) and node.how in PRESENT_REDUCERS:
            values = self.vector(node.args[0])
            key = _vector_key(values, target)
            _emit_unrolled_reduce(src, self.views, node.how, values, key, target)
        elif isinstance(node, Reduce):
            xs, ws = (self.vector(a) for a in node.args)
            src.emit(1, "num = den = None")
            for x, w in zip(xs, ws, strict=True):
                top = f"{x} * {w}" if node.how == "wmean" else x
                src.emit(1, f"if {x} is not None and {w} is not None:")
                src.emit(2, f"num = {top} if num is None else num + {top}")
                src.emit(2, f"den = {w} if den is None else den + {w}")
            src.emit(1, f"{target} = None if num is None or not den else num / den")
            src.emit(1, f"if {target} is not None and {target} - {target} != 0.0:")
            src.emit(2, f"{target} = None")
        elif isinstance(node, Map):
            names = [self.load(a) for a in node.args]  # a local is read as it is
            src.formula(1, target, node.fn, names, node.consts)
        elif isinstance(node, GridLag | GridWindow | Corr):
            g, emit, formula, needed, names = vp.grid[node]
            emit(src, 1, f"grid[{g}]", [self.scalar(a) for a in node.inputs], target)
            if formula is not None:
                check = [x for x in names if x == "g_dev"]  # the window sums are floats
                present = [x for x in names if x != "g_dev"]
                src.formula(1, target, formula, names, [needed], check=check, present=present)
        else:
            raise TypeError(f"not a decision node: {node!r}")

    def at(self, node: At) -> None:
        """The fresh-row view of a channel and age: every At value of it per venue, or
        None for a venue whose latest row on the channel is older than the age."""
        src, rows, n = self.src, self.vp.rows, self.n
        ci = rows.channels.index(node.row.channel)
        pos = rows.at_rows[ci].index(node.row)
        age = max_age(node, self.vp.params)
        age_us = age // _US
        # one view per channel and age: every row value of the channel, per venue
        stems = [view_name(self.vp.names[row], age) for row in rows.at_rows[ci]]
        view = f"at{ci}_{age_us}"
        if view not in self.views:
            self.views.add(view)
            for j in range(n):
                names = [venue_local(stem, j) for stem in stems]
                src.emit(1, f"c = s{j}.latest[{ci}]")
                src.emit(1, f"if c is not None and now - c[0] <= {age_us}:")
                src.emit(2, f"_, {', '.join(names)}, = c")
                src.emit(1, "else:")
                src.emit(2, f"{' = '.join(names)} = None")
        self.venue_names[node] = [venue_local(stems[pos], j) for j in range(n)]


def _vector_key(values: Sequence[str], target: str) -> str:
    """The name a vector's statistics go by: its venue locals' common stem (``oi`` for
    ``oi_v0 .. oi_v3``), so every reduction of one vector shares them; the reducing
    node's ``target`` for an empty vector."""
    if not values:
        return f"{target}__empty"
    stem = values[0].rpartition("_v")[0]
    if stem and all(v == venue_local(stem, j) for j, v in enumerate(values)):
        return stem
    return f"{target}__empty"


def _present_stats(
    src: Source, views: set[str], values: Sequence[str], key: str, stats: str
) -> dict[str, str]:
    """Count, left fold (sum), max and min of the present values of a vector, each
    written once per pass (``stats`` picks which are needed)."""
    out = {s: f"p{s}_{key}" for s in ("n", "sum", "max", "min")}
    for stat in stats.split():
        name = out[stat]
        if name in views:
            continue
        views.add(name)
        src.emit(1, f"{name} = {'0' if stat == 'n' else 'None'}")
        for v in values:
            src.emit(1, f"if {v} is not None:")
            if stat == "n":
                src.emit(2, f"{name} += 1")
            elif stat == "sum":
                src.emit(2, f"{name} = {v} if {name} is None else {name} + {v}")
            else:
                op = ">" if stat == "max" else "<"
                src.emit(2, f"if {name} is None or {v} {op} {name}:")
                src.emit(3, f"{name} = {v}")
    return out


def _emit_unrolled_reduce(
    src: Source, views: set[str], how: str, values: Sequence[str], key: str, target: str
) -> None:
    """A reduction of venue locals ``values``, inline (at indent 1; ``key`` names the
    vector's statistics, written once into ``views``): the same operations as
    :data:`oihedge.features.online.state.PRESENT_REDUCERS` on the present values."""
    if how in ("max", "min"):
        p = _present_stats(src, views, values, key, how)
        src.emit(1, f"{target} = {p[how]}")
    elif how == "spread":
        p = _present_stats(src, views, values, key, "n max min")
        src.emit(1, f"{target} = {p['max']} - {p['min']} if {p['n']} >= 2 else None")
    elif how == "sum":
        p = _present_stats(src, views, values, key, "sum")
        src.emit(1, f"{target} = {p['sum']}")
    elif how == "mean":
        p = _present_stats(src, views, values, key, "n sum")
        src.emit(1, f"{target} = None if {p['sum']} is None else {p['sum']} / {p['n']}")
    elif how == "std":
        p = _present_stats(src, views, values, key, "n sum max min")
        src.emit(1, f"{target} = None")
        src.emit(1, f"if {p['n']} >= 2:")
        src.emit(2, f"gm = {p['sum']} / {p['n']}")
        src.emit(2, f"if {p['max']} == {p['min']}:")
        src.emit(3, f"{target} = 0.0")
        src.emit(2, "else:")
        src.emit(3, "gsq = None")
        for v in values:
            src.emit(3, f"if {v} is not None:")
            src.emit(4, f"gd = ({v} - gm) * ({v} - gm)")
            src.emit(4, "gsq = gd if gsq is None else gsq + gd")
        src.emit(3, f"{target} = _sqrt(gsq / {p['n']})")
    else:
        fn = src.bind(PRESENT_REDUCERS[how], f"reduce_{how}")
        present = f"[v for v in ({', '.join(values)},) if v is not None]" if values else "[]"
        src.emit(1, f"{target} = {fn}({present})")
