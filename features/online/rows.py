"""The generated per-row pass of the online backend: ``row(series, ts, row)``.

Every row node of one new bar of one (venue, symbol), written once per spec as
straight-line Python and compiled with :func:`exec` (the scheme is
:mod:`oihedge.features.online.codegen`'s, which writes the decision-time pass): the bar's fields,
its references back in time, its row windows (one running sum per source, shared by every
window over it) and the latest values each channel keeps for the decision-time pass. The
source is kept on the plan (``RowPlan.source``) for reading.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta

from oihedge.features import formulas as f
from oihedge.features.graph import At, Field, Node, Ref, RowMap, RowWindow
from oihedge.features.online.names import node_names
from oihedge.features.online.trace import Source
from oihedge.features.spec import ResolvedParams
from oihedge.features.windows import bars_ceil, ref_offsets, window_needed

_US = timedelta(microseconds=1)


@dataclass
class RowPlan:
    """What one bar of one series computes, and the state each series needs."""

    channels: list[tuple[str, ...]]
    #: per referenced column: the longest look-back in bars
    ref_spans: list[int]
    #: per window source: the bar counts of its windows
    window_bars: list[list[int]]
    #: per channel: the row node of each At reading it, by position in ``latest[channel]``
    #: (after the row's ts: one flat tuple per channel)
    at_rows: list[list[Node]]
    run: Callable[..., None]
    source: str
    bar_us: int


def row_plan(
    order: Sequence[Node],
    at_nodes: Sequence[At],
    params: ResolvedParams,
    *,
    names: Mapping[Node, str] | None = None,
    label: str = "",
) -> RowPlan:
    """Generate ``row(series, ts, row)`` for the row nodes ``order`` (dependency order).

    ``names``: each node's variable (:func:`oihedge.features.online.names.node_names` of
    ``order`` by default); ``label`` names the code in tracebacks (the spec).
    """
    bar = params.bar
    src = Source()
    channels = sorted({n.channel for n in order})  # type: ignore[union-attr]
    chan = {c: i for i, c in enumerate(channels)}
    columns = sorted({c for ch in channels for c in ch})
    col = {c: f"c{i}" for i, c in enumerate(columns)}
    var = {n: names[n] for n in order} if names is not None else node_names(order)
    at_rows: list[list[Node]] = [[] for _ in channels]
    for a in at_nodes:
        if a.row not in at_rows[chan[a.row.channel]]:
            at_rows[chan[a.row.channel]].append(a.row)
    # references to one column share one ring, as long as the longest look-back
    spans: dict[str, int] = {}
    for node in order:
        offsets = ref_offsets(node, bar) if isinstance(node, Ref) else None
        if offsets is not None:
            spans[node.column] = max(spans.get(node.column, 0), offsets[1])  # type: ignore[union-attr]
    ref_cols = sorted(spans)
    ref_spans = [spans[c] for c in ref_cols]
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
    src.emit(1, f"k = ts // {bar // _US}")
    for slot in range(len(ref_cols)):  # each ring's lists, loaded once per row
        src.emit(1, f"rs{slot} = refs[{slot}].slots; rv{slot} = refs[{slot}].values")
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
            slot = ref_cols.index(node.column)
            _emit_ref(src, v, a, slot, ref_spans[slot] + 1, *offsets)
        elif isinstance(node, RowWindow):
            group, position = windows[node]
            if group not in added:
                added.add(group)
                _emit_prefix_add(src, group, var[node.source], max(window_bars[group]) + 1)
            fn = f.window_sum if node.how == "sum" else f.window_mean
            needed = float(window_needed(node, params))
            _emit_prefix_window(src, group, window_bars[group][position], max(window_bars[group]))
            src.emit(1, f"if {a}:")
            sums = ["w_total", "w_count"]  # floats: never None
            src.formula(2, v, fn, sums, [needed], check=[], present=sums)
            src.emit(1, "else:")
            src.emit(2, f"{v} = None")
        elif isinstance(node, RowMap):
            src.formula(1, v, node.fn, [var[x] for x in node.args], node.consts)
    # a column read alone as a field is already a float: its ring stores that value
    fields = {n.column: var[n] for n in order if isinstance(n, Field) and n.channel == (n.column,)}
    for slot, column in enumerate(ref_cols):
        size = ref_spans[slot] + 1
        value = fields.get(column, f"float({col[column]})")
        src.emit(1, f"if {col[column]} is not None:")
        src.emit(2, f"s = k % {size}; rs{slot}[s] = k; rv{slot}[s] = {value}")
    for i, rows in enumerate(at_rows):
        if rows:
            values = ", ".join(var[r] for r in rows) + ","
            src.emit(1, f"if a{i}:")
            src.emit(2, f"latest[{i}] = (ts, {values})")
    return RowPlan(
        channels=channels,
        ref_spans=ref_spans,
        window_bars=window_bars,
        at_rows=at_rows,
        run=src.compile("row", label),
        source="\n".join(src.lines),
        bar_us=bar // _US,
    )


def _emit_ref(
    src: Source, target: str, active: str, slot: int, size: int, first: int, last: int
) -> None:
    """Inline :meth:`oihedge.features.online.state.RowRef.lookup` on ring ``slot`` (its lists
    loaded as ``rs<slot>`` / ``rv<slot>``, ``size`` slots): the newest candidate bar in
    ``[k - last, k - first]`` that holds a row wins."""
    src.emit(1, f"{target} = None")
    src.emit(1, f"if {active}:")
    for i, n in enumerate(range(first, last + 1)):
        if i:
            src.emit(1 + i, "else:")
        pad = 2 + i
        src.emit(pad, f"j = k - {n}; s = j % {size}")
        src.emit(pad, f"if rs{slot}[s] == j:")
        src.emit(pad + 1, f"{target} = rv{slot}[s]")


def _emit_prefix_add(src: Source, group: int, source: str, size: int) -> None:
    """Inline :meth:`oihedge.features.online.state.RowPrefixes.add`: the running sums at bar k
    (its lists loaded once as ``ps`` / ``pt`` / ``pc<group>``; ``fill`` writes into them)."""
    src.emit(1, f"pf{group} = prefixes[{group}]")
    src.emit(1, f"ps{group} = pf{group}.slots; pt{group} = pf{group}.totals")
    src.emit(1, f"pc{group} = pf{group}.counts")
    src.emit(1, f"if pf{group}.last >= 0 and k - pf{group}.last > 1:")
    src.emit(2, f"pf{group}.fill(k)")
    src.emit(1, f"if {source} is not None:")
    src.emit(2, f"pf{group}.total += {source}")
    src.emit(2, f"pf{group}.count += 1.0")
    src.emit(1, f"tot{group} = pf{group}.total; cnt{group} = pf{group}.count")
    src.emit(1, f"s = k % {size}")
    src.emit(1, f"ps{group}[s] = k; pt{group}[s] = tot{group}")
    src.emit(1, f"pc{group}[s] = cnt{group}; pf{group}.last = k")


def _emit_prefix_window(src: Source, group: int, bars: int, span: int) -> None:
    """Inline the window part of ``RowPrefixes.add``: sums over the last ``bars`` bars."""
    src.emit(1, f"j = k - {bars}; s = j % {span + 1}")
    src.emit(1, f"if ps{group}[s] == j:")
    src.emit(2, f"w_total = tot{group} - pt{group}[s]")
    src.emit(2, f"w_count = cnt{group} - pc{group}[s]")
    src.emit(1, "else:")
    src.emit(2, f"w_total = tot{group} - 0.0")
    src.emit(2, f"w_count = cnt{group} - 0.0")
