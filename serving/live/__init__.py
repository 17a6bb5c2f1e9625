"""The live loop: intake, decide, explain, the model watch, the decision log, metrics.

:class:`oihedge.serving.live.loop.HedgeLoop` is one class for every source (replay or live
venues), every bar the same path.

Per bar close ``t`` (:meth:`HedgeLoop.process`):

1. **Rows** (:class:`oihedge.serving.live.intake.RowIntake`). Every row the source delivered is
   checked (:func:`oihedge.serving.feeds._base.check_row`: missing fields, wrong types, NaN,
   negative amounts, off-grid ``ts``); a bad row, a row the source already rejected and
   a row the online features refuse (out of order) is *quarantined*: recorded in the
   state store (``events``, kind ``quarantine``, with the reason), counted in the
   metrics, and never pushed. Good rows go to
   :class:`~oihedge.features.online.engine.OnlineFeatures` in arrival order.
2. **Prices and fills.** The price of a symbol is the median close over the venues at its
   newest bar (the backtest's reference price). When it moves to a new bar it is given to
   the paper brokers (:meth:`~oihedge.serving.execution.brokers.PaperBroker.on_price`): orders
   decided at an earlier bar fill there, at the next price, as in the backtest. Active
   orders are then reconciled with their broker.
3. **Staleness** (this and the next two steps: :class:`oihedge.serving.live.decide.Decider`,
   one symbol at a time). A venue whose newest bar is older than ``max_staleness`` (the feature
   spec's, two bars by default) at ``t`` is stale; the features already leave it out of
   the cross-venue features (same rule). The decision records every venue left out and
   why (``stale``, ``no data``, ``quarantined``, the source's error kind), and the policy
   gets the number of fresh venues: with fewer than ``min_fresh_venues`` it may grow the
   hedge but never reduce it.
4. **Model.** The symbols' feature vectors go to the serving model together
   (``predict_vectors`` when it has one: the calibrator runs once per bar; else
   ``predict_vector`` per symbol, :meth:`oihedge.serving.live.decide.Decider.score`); a model
   error, or no model, gives no probability: the policy then holds or grows only.
5. **Policy and orders.** :func:`oihedge.serving.policy.signals.signals_from_row` ->
   :func:`oihedge.serving.policy.policy.decide` (the position, including working orders, is the
   hedge the policy starts from) ->
   :func:`oihedge.serving.execution.rebalancer.plan_orders` (the whole hedge of a symbol
   on ``hedge_venue``) -> :meth:`oihedge.serving.execution.executor.Executor.submit`
   (kill switch, caps, state written before and after sending).
6. **Record.** The decision and its policy state are persisted (before the orders are
   sent) whenever the state changed or an order is planned; once every symbol's orders
   are out, the latency is observed and the bar's records go to the explainer
   (:mod:`oihedge.serving.live.explain`): the top feature contributions (LightGBM
   ``pred_contrib``; recomputed when the decision can have changed them, else carried
   over with the bar they explain) are computed on a worker thread, and one
   decision-log line per symbol is written once they are in -- at the end of the bar
   for a live loop, as the worker's batches finish for a replay (and all of them at the
   end of the run) -- or, when a decision is persisted first, at once without them,
   and they follow in a ``contributions`` line (below).

**Start** (:meth:`HedgeLoop.start`): redaction of credentials in every log record, the
model, the persisted policy states, the decision log reconciled with them (below), then
:meth:`Executor.reconcile` -- before any decision. **Restart**: bars before the last
persisted decision ``R`` only warm the features up (no decision, no order); at ``R``, a
symbol whose decision is persisted is not decided again. Re-deciding the same bar yields
the same client order ids, and the executor skips an id it has already recorded: no
order is ever sent twice.

**The decision log follows the state** (exactly one line per decision, after ``kill -9``
at any instruction). The state decides what a restart does again: everything after
``R``, nothing before. So the log must hold every line before ``R``, may hold any line
after it, and a line at ``R`` is written from the state if missing:

* *nothing before R is lost*: before a decision is persisted (:class:`Decider`'s
  ``before_record``), every earlier bar's lines are written and flushed (fsynced for a
  live loop) -- the state can only move past a bar once its lines are on file. The
  loop does not wait for their SHAP contributions there (that wait, at every persisted
  decision -- the policy's exit clock alone changes the state every ~9 bars of a
  replay -- cost a replay a quarter of its speed): a line whose contributions are not
  in yet is written without them, marked ``contributions_follow``, and a
  ``contributions`` line keyed by its bar and symbol follows once the worker is done
  (:meth:`Explainer.take`; the format and its reader,
  :func:`oihedge.serving.live.decision_log.read_records`:
  :mod:`oihedge.serving.live.decision_log`). A kill between the two loses only those
  contributions, never the decision. A live loop waits for each bar's contributions at
  its end anyway (at most ``explain_timeout``), so its lines are never split; a replay
  otherwise writes lines in blocks. (Persisting the exit clock's moves less eagerly
  would have cut the waits only in part: a clock stopped must be persisted at once, or a
  restart could reduce a hedge on a clock that no longer runs.)
* *nothing after R is repeated*: on start, :meth:`DecisionLog.resume` reads back the
  lines at or after ``R`` of this state (a partial last line is cut when the file is
  opened), and the re-decided bars' lines already there are dropped. The re-decided
  lines are the same decisions (same state, positions and features), so the one on
  file stands for both.
* *the decisions at R*: a symbol persisted at ``R`` is not decided again, and a kill
  between its row and its line (the orders are sent in between) leaves no line: it is
  written from the state at start (:func:`oihedge.serving.live.book.recovered_records`:
  ``recovered``, the orders with their state now, no contributions).

A decision that places orders is one transaction with its first order's intent
(:meth:`oihedge.serving.execution.state.StateStore.record_decision`): a restart finds both, and
resolves the order with its broker, or neither, and decides the bar again with the same
client ids. The log is appended in order by one process (one loop per state:
:class:`oihedge.serving.execution.state_schema.StateLock`), so what a kill leaves is a
prefix of it.

**Kill switch.** At start and at every bar, before any decision, an engagement or a
release of the kill switch is recorded (:meth:`Executor.check_kill_switch`: state store
and a ``kill_switch`` log line) with its reason, stamped with the loop's ``now`` -- the
bar's time in a replay, the wall clock live (the operator's own times are in its
detail) -- whether or not an order follows.

**Errors are caught here** (the boundary): a failing venue, model, broker or policy input
never stops the loop; it is logged, counted and recorded in the decision.
"""
