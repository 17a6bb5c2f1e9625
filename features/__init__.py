"""Feature pipelines: one definition per feature, computed in batch and online.

Where things are:

- :mod:`oihedge.features.schema` -- the market panel (owned by the data contract) and the bar
  read from it (:func:`~oihedge.features.schema.infer_bar`).
- :mod:`oihedge.features.spec` -- :class:`~oihedge.features.spec.FeatureSpec`, the named, versioned,
  hashed set of features (and their parameters) a model is trained on and served with;
  resolved for a bar, its parameters are :class:`~oihedge.features.spec.ResolvedParams`.
- :mod:`oihedge.features.registry` -- every feature by name, the named specs (``core``), and
  :func:`~oihedge.features.registry.build_features` (batch table for a spec over a panel frame).
- the families, each feature written once as a small graph of
  :mod:`oihedge.features.graph` nodes and :mod:`oihedge.features.formulas` formulas:
  :mod:`oihedge.features.oi_divergence`, :mod:`oihedge.features.funding`,
  :mod:`oihedge.features.correlation`, :mod:`oihedge.features.volatility` (volatility
  and liquidations), :mod:`oihedge.features.depth`, :mod:`oihedge.features.options` (in
  ``core@v2`` only; ``core`` v1 is frozen).
- :mod:`oihedge.features.windows` -- durations to bar counts, warm-up and look-back spans.
- the two computations of the same graph: :mod:`oihedge.features.batch.engine` (+ ``batch_rows``,
  ``batch_stage``; numpy columns over the whole panel, NaN for null) and
  :mod:`oihedge.features.online.engine` (+ ``online_codegen``, ``online_rows``,
  ``online_names``, ``online_trace``, ``online_grid``, ``online_state``; bar by bar,
  bounded state, for the live loop; its generated code is printed by
  :func:`oihedge.features.online.engine.dump_source` or ``oihedge features
  --dump-online``).
- :mod:`oihedge.features.stream` -- how both read the panel: arrival (``known_at``) order,
  out-of-order bars ignored, decisions on the bar grid.

Semantics shared by both computations (and pinned by tests/features):

- A feature at decision time ``t`` (a bar close) uses only rows with ``known_at <= t``.
- A row arriving after a newer row of its (venue, symbol) is out of order and ignored
  (``oihedge.features.screening.validate(..., arrival_order=True)`` quarantines it as such).
- A venue whose latest visible row (of the series a feature reads: OI, close, ...) is
  older than ``max_staleness`` (default two bars) is left out of cross-venue features at
  ``t``; funding is carried from its settlement row for at most ``funding_max_age``.
- A change over window ``W`` compares a venue's latest row with its row at ``ts - W``,
  or the latest one before it no older than ``min(max_staleness, W / 4)``; else null.
- Windowed statistics need ``min_coverage`` of their window (and 2 values; a sum 1):
  null before that (warm-up) and under gaps. Missing inputs give nulls, never zeros.
- Cross-venue numbers are symmetric in the venues (no venue names in the features).
"""
