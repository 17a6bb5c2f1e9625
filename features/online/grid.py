"""Decision-grid and cross-asset state for the online backend.

Windows on the decision grid (lags, mean / std / z, correlations) keep running sums over
one window of decision times; cross-asset nodes (the portfolio mean, pairwise
correlations) run once per decision time over all symbols, sorted by name. The formulas
applied to the sums are those of :mod:`oihedge.features.formulas`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from oihedge.features import formulas as f
from oihedge.features.graph import Corr, CorrOthers, CorrPair, CrossMean, GridLag, GridWindow, Node
from oihedge.features.online.state import GridLagQueue, GridPrefix
from oihedge.features.online.trace import Source
from oihedge.features.spec import ResolvedParams
from oihedge.features.windows import bars_ceil, min_count

if TYPE_CHECKING:
    from oihedge.features.online.codegen import StepPlan


class _Shifted:
    """Window sums of ``x - k`` (``k`` = the first value seen), for std and z."""

    __slots__ = ("k", "prefix")

    def __init__(self, width: int, bars: int) -> None:
        self.prefix = GridPrefix(width, bars)
        self.k: float | None = None

    def __len__(self) -> int:
        return len(self.prefix)


#: ``emit(src, indent, state, args, target)``: writes the inline update of one grid node
Emit = Callable[["Source", int, str, Sequence[str], str], None]


def grid_update(
    node: GridLag | GridWindow | Corr, params: ResolvedParams, plan: StepPlan
) -> tuple[Emit, f.Formula | None, float, list[str]]:
    """The state update of a decision-grid node, written inline by the returned emitter
    (the operations of :class:`~oihedge.features.online.state.GridLagQueue` and
    :meth:`~oihedge.features.online.state.GridPrefix.add`, without a call), and the formula (with
    its input names, which the update assigns) the generated code applies after it. A
    lag assigns ``target`` itself and has no formula."""
    bars = bars_ceil(node.window, params.bar)
    size = bars + 1
    if isinstance(node, GridLag):
        plan.grid_factories.append(lambda: GridLagQueue(bars))

        def lag(src: Source, at: int, state: str, args: Sequence[str], target: str) -> None:
            src.emit(at, f"gq = {state}; i = gq.i; gq.ring[i] = {args[0]}")
            src.emit(at, f"i = gq.i = (i + 1) % {size}")
            src.emit(at, f"if gq.filled < {size}:")
            src.emit(at + 1, "gq.filled += 1")
            src.emit(at, f"{target} = gq.ring[i] if gq.filled == {size} else None")

        return lag, None, 0.0, []
    needed = float(min_count(node.window, params))
    if isinstance(node, Corr):
        plan.grid_factories.append(lambda: GridPrefix(6, bars))
        names = ["g_n", "g_sx", "g_sy", "g_sxy", "g_sxx", "g_syy"]

        def corr(src: Source, at: int, state: str, args: Sequence[str], target: str) -> None:
            # pair_sums, inline: zeros unless both are present
            src.emit(at, f"gx = {args[0]}; gy = {args[1]}")
            added = ["1.0", "gx", "gy", "gx * gy", "gx * gx", "gy * gy"]
            _emit_prefix(src, at, state, "gx is not None and gy is not None", added, size, names)

        return corr, f.corr_from_sums, needed, names
    if node.how == "mean":
        plan.grid_factories.append(lambda: GridPrefix(2, bars))

        def mean(src: Source, at: int, state: str, args: Sequence[str], target: str) -> None:
            src.emit(at, f"gx = {args[0]}")
            _emit_prefix(
                src, at, state, "gx is not None", ["1.0", "gx"], size, ["g_count", "g_total"]
            )

        return mean, f.window_mean, needed, ["g_total", "g_count"]
    plan.grid_factories.append(lambda: _Shifted(3, bars))

    def spread(src: Source, at: int, state: str, args: Sequence[str], target: str) -> None:
        # sums of x - k, k the first value seen (_Shifted)
        src.emit(at, f"gs = {state}; gx = {args[0]}")
        src.emit(at, "if gx is not None and gs.k is None:")
        src.emit(at + 1, "gs.k = gx")
        src.emit(at, "g_dev = None if gx is None else gx - gs.k")
        added = ["1.0", "g_dev", "g_dev * g_dev"]
        out = ["g_count", "g_s1", "g_s2"]
        _emit_prefix(src, at, "gs.prefix", "g_dev is not None", added, size, out)

    if node.how == "std":
        return spread, f.window_std, needed, ["g_count", "g_s1", "g_s2"]
    return spread, f.window_z, needed, ["g_dev", "g_count", "g_s1", "g_s2"]


def _emit_prefix(
    src: Source,
    at: int,
    state: str,
    present: str,
    added: Sequence[str],
    size: int,
    out: Sequence[str],
) -> None:
    """Inline :meth:`~oihedge.features.online.state.GridPrefix.add` of ``added`` (the expressions
    when ``present`` holds, zeros otherwise) on the prefix ``state`` of ``size`` slots;
    the window sums go to the names ``out``, in order."""
    width = len(added)
    src.emit(at, f"gp = {state}; gsum = gp.sums")
    src.emit(at, f"if {present}:")
    for j, value in enumerate(added):
        src.emit(at + 1, f"ga{j} = gsum[{j}] + {value}")
    src.emit(at, "else:")
    for j in range(width):
        src.emit(at + 1, f"ga{j} = gsum[{j}] + 0.0")
    snapshot = ", ".join(f"ga{j}" for j in range(width)) + ","
    src.emit(at, f"gp.sums = gsnap = ({snapshot})")
    src.emit(at, f"gring = gp.ring; i = gp.i; gring[i] = gsnap; i = gp.i = (i + 1) % {size}")
    src.emit(at, f"if gp.filled < {size}:")
    src.emit(at + 1, "gp.filled += 1")
    src.emit(at, f"if gp.filled < {size}:")
    for j, name in enumerate(out):
        src.emit(at + 1, f"{name} = ga{j} - 0.0")
    src.emit(at, "else:")
    src.emit(at + 1, "gold = gring[i]")
    for j, name in enumerate(out):
        src.emit(at + 1, f"{name} = ga{j} - gold[{j}]")


def traced(fn: f.Formula, arity: int, consts: Sequence[float]) -> Callable[..., float | None]:
    """``fn`` with ``consts`` as a compiled function of ``arity`` floats: what
    :func:`~oihedge.features.online.state.apply_formula` returns, from the formula traced into
    straight-line code (:meth:`oihedge.features.online.trace.Source.formula`, the same operations
    without a call per operation)."""
    src = Source()
    names = [f"a{i}" for i in range(arity)]
    src.emit(0, f"def formula({', '.join(names)}):")
    src.formula(1, "out", fn, names, consts)
    src.emit(1, "return out")
    return src.compile("formula")


def pair_sums(x: float | None, y: float | None) -> tuple[float, ...]:
    """What a pair adds to the correlation sums (zeros unless both are present)."""
    if x is None or y is None:
        return (0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    return (1.0, x, y, x * y, x * x, y * y)


def pair_update(size: int, needed: float) -> Callable[..., float | None]:
    """``update(x, y, prefix)``: adds a pair's values to its correlation sums (a
    :class:`~oihedge.features.online.state.GridPrefix` of ``size`` slots) and returns the
    correlation over the window, as ``traced(corr_from_sums)(*prefix.add(pair_sums(x,
    y)))`` does, written inline (the same operations, without the calls)."""
    src = Source()
    names = ["g_n", "g_sx", "g_sy", "g_sxy", "g_sxx", "g_syy"]
    src.emit(0, "def update(gx, gy, prefix):")
    added = ["1.0", "gx", "gy", "gx * gy", "gx * gx", "gy * gy"]
    _emit_prefix(src, 1, "prefix", "gx is not None and gy is not None", added, size, names)
    src.formula(1, "out", f.corr_from_sums, names, [needed], check=[], present=names)
    src.emit(1, "return out")
    return src.compile("update")


def cross_runner(
    node: Node, slots: dict[Node, int], params: ResolvedParams, plan: StepPlan
) -> Callable[[int, Sequence[Any]], None]:
    """The cross-asset node ``node`` for all symbols (``states`` sorted by symbol)."""
    k = slots[node]
    if isinstance(node, CrossMean):
        src = slots[node.source]

        def cross_mean(now: int, states: Sequence[Any]) -> None:
            # fold_sum of the present values over their count, in one pass (no list)
            acc = None
            count = 0
            for st in states:
                v = st.sv[src]
                if v is not None:
                    acc = v if acc is None else acc + v
                    count += 1
            mean = acc / count if count else None  # type: ignore[operator]
            for st in states:
                st.sv[k] = mean

        return cross_mean
    assert isinstance(node, CorrOthers | CorrPair)
    table = _pair_table(node.x, node.window, slots, params, plan)
    if isinstance(node, CorrPair):
        key = tuple(sorted((node.a, node.b)))

        def corr_pair(now: int, states: Sequence[Any]) -> None:
            value = table(now, states).get(key) if len(states) >= 2 else None
            for st in states:
                st.sv[k] = value

        return corr_pair

    def corr_others(now: int, states: Sequence[Any]) -> None:
        # per symbol, its correlations with the others in symbol order (None on the
        # diagonal): the mean of the present ones, folded left to right
        if len(states) < 2:  # no pair: no correlation with another symbol
            for st in states:
                st.sv[k] = None
            return
        table(now, states)
        for st, row in zip(states, table.matrix, strict=True):
            acc = None
            count = 0
            for v in row:
                if v is not None:
                    acc = v if acc is None else acc + v
                    count += 1
            st.sv[k] = acc / count if count else None

    return corr_others


class _PairTable:
    """Pairwise correlations of one symbol value over one window, computed once per
    decision time: ``table(now, states)`` returns them by (symbol, symbol) sorted, and
    leaves :attr:`matrix` (per symbol, its correlation with each symbol in ``states``
    order; None with itself)."""

    def __init__(self, src: int, bars: int, needed: float) -> None:
        self.src, self.bars = src, bars
        self.update = pair_update(bars + 1, needed)
        #: per pair: its correlation sums (a GridPrefix)
        self.state: dict[tuple[str, str], GridPrefix] = {}
        self.now: int | None = None
        self.pairs: dict[tuple[str, str], float | None] = {}
        self.matrix: list[list[float | None]] = []

    def __call__(self, now: int, states: Sequence[Any]) -> dict[tuple[str, str], Any]:
        if self.now == now:
            return self.pairs
        n = len(states)
        if n < 2:  # no pair: nothing to update or correlate (the runners skip the call)
            self.now, self.pairs, self.matrix = now, {}, [[None]] * n
            return self.pairs
        src, state, update = self.src, self.state, self.update
        out: dict[tuple[str, str], float | None] = {}
        matrix: list[list[float | None]] = [[None] * n for _ in range(n)]
        for i in range(n):  # the pairs in the order of combinations(states, 2)
            a = states[i]
            xa, row = a.sv[src], matrix[i]
            for j in range(i + 1, n):
                b = states[j]
                pair = (a.symbol, b.symbol)
                prefix = state.get(pair)
                if prefix is None:
                    prefix = state[pair] = GridPrefix(6, self.bars)
                out[pair] = row[j] = matrix[j][i] = update(xa, b.sv[src], prefix)
        self.now, self.pairs, self.matrix = now, out, matrix
        return out


def _pair_table(
    x: Node, window: timedelta, slots: dict[Node, int], params: ResolvedParams, plan: StepPlan
) -> _PairTable:
    """The pair table of ``x`` over ``window`` (one per value and window, shared)."""
    bars = bars_ceil(window, params.bar)
    key = (x, bars)
    if key not in plan.pair_tables:
        plan.pair_tables[key] = _PairTable(slots[x], bars, float(min_count(window, params)))
    return plan.pair_tables[key]
