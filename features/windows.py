"""Windows in bars: the arithmetic both backends share, and how much history a node needs.

Every window is a duration; the bar length (of the
:class:`~oihedge.features.spec.ResolvedParams`) turns it into bar counts here, in one place.
"""

from __future__ import annotations

import math
from datetime import timedelta

from oihedge.features.graph import (
    At,
    Corr,
    CorrOthers,
    CorrPair,
    GridLag,
    GridWindow,
    Node,
    Ref,
    RowWindow,
    VenueLag,
)
from oihedge.features.spec import ResolvedParams


def bars_ceil(window: timedelta, bar: timedelta) -> int:
    """Number of bars in ``window`` rounded up: the grid points in ``(t - window, t]``."""
    return -(-window // bar)


def min_count(window: timedelta, params: ResolvedParams, minimum: int = 2) -> int:
    """Values a window needs before it is given: ``min_coverage`` of the window's bars,
    and at least ``minimum`` (2 for statistics, so a window under two bars is null)."""
    n = bars_ceil(window, params.bar)
    return max(minimum, math.ceil(params.min_coverage * n - 1e-9))


def window_needed(node: RowWindow, params: ResolvedParams) -> int:
    """Rows a :class:`RowWindow` needs: a sum may rest on one bar, a mean on two."""
    return min_count(node.window, params, 1 if node.how == "sum" else 2)


def ref_offsets(node: Ref, bar: timedelta) -> tuple[int, int] | None:
    """Bar offsets ``(first, last)`` a reference may come from; ``None`` if none is valid.

    A reference ``window`` back is the latest row with ts in
    ``[ts - window - tolerance, ts - window]``; a window under one bar has none.
    """
    if node.window < bar:
        return None
    first = bars_ceil(node.window, bar)
    last = (node.window + node.tolerance) // bar
    return (first, last) if last >= first else None


def max_age(node: At, params: ResolvedParams) -> timedelta:
    return params.funding_max_age if node.age == "funding" else params.max_staleness


def min_history(node: Node, params: ResolvedParams) -> timedelta:
    """History a node needs before it can be non-null (a lower bound, for warm-up tests)."""
    bar = params.bar
    own = timedelta(0)
    if isinstance(node, Ref):
        offsets = ref_offsets(node, bar)
        own = node.window if offsets is None else offsets[0] * bar
    elif isinstance(node, RowWindow):
        own = (window_needed(node, params) - 1) * bar
    elif isinstance(node, GridWindow):
        own = (min_count(node.window, params) - 1) * bar
    elif isinstance(node, VenueLag | GridLag):
        own = bars_ceil(node.window, bar) * bar
    elif isinstance(node, Corr | CorrOthers | CorrPair):
        own = (min_count(node.window, params) - 1) * bar
    inner = max((min_history(c, params) for c in node.inputs), default=timedelta(0))
    return own + inner


WINDOWED = (RowWindow, GridWindow, Corr, CorrOthers, CorrPair, VenueLag, GridLag)


def full_span(node: Node, params: ResolvedParams) -> timedelta:
    """History every window under ``node`` reaches back, end to end: with this much
    history (plus staleness) a value equals the one computed on the full panel."""
    bar = params.bar
    own = timedelta(0)
    if isinstance(node, Ref):
        offsets = ref_offsets(node, bar)
        own = timedelta(0) if offsets is None else offsets[1] * bar
    elif isinstance(node, WINDOWED):
        own = bars_ceil(node.window, bar) * bar
    inner = max((full_span(c, params) for c in node.inputs), default=timedelta(0))
    return own + inner


def ref_tolerance(window: timedelta, params: ResolvedParams) -> timedelta:
    """How much older than ``ts - window`` a reference row may be:
    ``min(max_staleness, ref_tolerance_frac * window)``."""
    return min(params.max_staleness, window * params.ref_tolerance_frac)
