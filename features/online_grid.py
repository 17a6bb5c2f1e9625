"""Decision-grid and cross-asset state for the online backend.

Windows on the decision grid (lags, mean / std / z, correlations) keep running sums over
one window of decision times; cross-asset nodes (the portfolio mean, pairwise
correlations) run once per decision time over all symbols, sorted by name. The formulas
applied to the sums are those of :mod:`features.formulas`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import timedelta
from itertools import combinations
from typing import TYPE_CHECKING, Any

from features import formulas as f
from features.graph import Corr, CorrOthers, CorrPair, CrossMean, GridLag, GridWindow, Node
from features.online_state import GridLagQueue, GridPrefix, fold_sum
from features.online_trace import Source
from features.spec import FeatureParams
from features.windows import bars_ceil, min_count

if TYPE_CHECKING:
    from features.online_codegen import StepPlan


class _Shifted:
    """Window sums of ``x - k`` (``k`` = the first value seen), for std and z."""

    __slots__ = ("k", "prefix")

    def __init__(self, width: int, bars: int) -> None:
        self.prefix = GridPrefix(width, bars)
        self.k: float | None = None

    def __len__(self) -> int:
        return len(self.prefix)


def grid_update(
    node: GridLag | GridWindow | Corr, params: FeatureParams, plan: StepPlan
) -> tuple[Callable[..., Any], f.Formula | None, float, list[str]]:
    """The state update of a decision-grid node, and the formula (with its input names)
    the generated code applies to what the update returns."""
    assert params.bar is not None
    bars = bars_ceil(node.window, params.bar)
    if isinstance(node, GridLag):
        plan.grid_factories.append(lambda: GridLagQueue(bars))
        return (lambda state, x: state.add(x)), None, 0.0, []
    needed = float(min_count(node.window, params))
    if isinstance(node, Corr):
        plan.grid_factories.append(lambda: GridPrefix(6, bars))
        names = ["g_n", "g_sx", "g_sy", "g_sxy", "g_sxx", "g_syy"]
        return (lambda state, x, y: state.add(pair_sums(x, y))), f.corr_from_sums, needed, names
    if node.how == "mean":
        plan.grid_factories.append(lambda: GridPrefix(2, bars))

        def mean(state: GridPrefix, x: float | None) -> list[float]:
            count, total = state.add((1.0, x) if x is not None else (0.0, 0.0))
            return [total, count]

        return mean, f.window_mean, needed, ["g_total", "g_count"]
    plan.grid_factories.append(lambda: _Shifted(3, bars))

    def spread(state: _Shifted, x: float | None) -> tuple[float | None, float, float, float]:
        if x is not None and state.k is None:
            state.k = x
        dev = None if x is None else x - state.k  # type: ignore[operator]
        sums = (1.0, dev, dev * dev) if dev is not None else (0.0, 0.0, 0.0)
        count, s1, s2 = state.prefix.add(sums)
        return dev, count, s1, s2

    if node.how == "std":
        return (
            (lambda state, x: spread(state, x)[1:]),
            f.window_std,
            needed,
            ["g_count", "g_s1", "g_s2"],
        )
    return spread, f.window_z, needed, ["g_dev", "g_count", "g_s1", "g_s2"]


def traced(fn: f.Formula, arity: int, consts: Sequence[float]) -> Callable[..., float | None]:
    """``fn`` with ``consts`` as a compiled function of ``arity`` floats: what
    :func:`~features.online_state.apply_formula` returns, from the formula traced into
    straight-line code (:meth:`features.online_trace.Source.formula`, the same operations
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


def cross_runner(
    node: Node, slots: dict[Node, int], params: FeatureParams, plan: StepPlan
) -> Callable[[int, Sequence[Any]], None]:
    """The cross-asset node ``node`` for all symbols (``states`` sorted by symbol)."""
    assert params.bar is not None
    k = slots[node]
    if isinstance(node, CrossMean):
        src = slots[node.source]

        def cross_mean(now: int, states: Sequence[Any]) -> None:
            present = [st.sv[src] for st in states if st.sv[src] is not None]
            mean = fold_sum(present) / len(present) if present else None  # type: ignore[operator]
            for st in states:
                st.sv[k] = mean

        return cross_mean
    assert isinstance(node, CorrOthers | CorrPair)
    table = _pair_table(node.x, node.window, slots, params, plan)
    if isinstance(node, CorrPair):
        key = tuple(sorted((node.a, node.b)))

        def corr_pair(now: int, states: Sequence[Any]) -> None:
            value = table(now, states).get(key)
            for st in states:
                st.sv[k] = value

        return corr_pair

    def corr_others(now: int, states: Sequence[Any]) -> None:
        pairs = table(now, states)
        for st in states:
            s = st.symbol
            values = [
                pairs[(s, o.symbol) if s < o.symbol else (o.symbol, s)]
                for o in states
                if o is not st
            ]
            present = [v for v in values if v is not None]
            st.sv[k] = fold_sum(present) / len(present) if present else None  # type: ignore[operator]

    return corr_others


def _pair_table(
    x: Node, window: timedelta, slots: dict[Node, int], params: FeatureParams, plan: StepPlan
) -> Callable[[int, Sequence[Any]], dict[tuple[str, str], Any]]:
    """Pairwise correlations of ``x`` at ``now``, computed once per decision time."""
    assert params.bar is not None
    bars = bars_ceil(window, params.bar)
    key = (x, bars)
    if key in plan.pair_tables:
        return plan.pair_tables[key]
    corr = traced(f.corr_from_sums, 6, (float(min_count(window, params)),))
    src = slots[x]
    state: dict[tuple[str, str], GridPrefix] = {}
    cache: dict[str, Any] = {"now": None, "table": {}}

    def table(now: int, states: Sequence[Any]) -> dict[tuple[str, str], Any]:
        if cache["now"] == now:
            return cache["table"]
        out = {}
        for a, b in combinations(states, 2):
            pair = (a.symbol, b.symbol)
            prefix = state.get(pair)
            if prefix is None:
                prefix = state[pair] = GridPrefix(6, bars)
            out[pair] = corr(*prefix.add(pair_sums(a.sv[src], b.sv[src])))
        cache["now"], cache["table"] = now, out
        return out

    table.state = state  # type: ignore[attr-defined]
    plan.pair_tables[key] = table
    return table
