"""Hyperparameter search with Optuna (TPE + median pruning), tracked in MLflow.

Objective: the mean out-of-fold PR-AUC (average precision) over the walk-forward folds,
maximised. PR-AUC, not log-loss, because cascades are rare (a few percent of bars): it
measures how well the rare positives are ranked above the mass of calm bars, which is
what decides an alert; probabilities are calibrated afterwards on the OOF scores, so the
search need not trade ranking for calibration. The running mean after each fold is
reported to the pruner, which stops trials that fall behind the median at the same fold.

Storage is any Optuna storage URL: SQLite by default, PostgreSQL (or any SQLAlchemy URL)
when several worker processes on several machines share one study: each worker calls
:func:`tune` with the same ``study_name`` and ``storage``. MLflow gets one parent run per
study (its id is kept in the study's user attributes, so every worker nests under the
same parent) and one nested run per trial with its parameters and fold metrics.

Several workers: the worker whose ``create_study`` succeeds (the storage makes that
atomic) creates the parent run and samples with ``seed``; the others wait for the parent
id to appear and sample with a seed derived from ``seed`` and their worker id, so that
they do not all propose the same parameters. Each trial records its ``worker`` (user
attribute, and tag ``oihedge.worker`` of its MLflow run).

Nothing is left RUNNING: the parent run ends when :func:`tune` returns or raises
(FINISHED, FAILED, or KILLED on Ctrl-C), unless another live worker still has a trial
running (the last worker out ends it); a worker that joins a study later reopens its
parent run. Each trial run ends with its trial, an interrupted one too. Every run and
trial names the process that owns it (:func:`oihedge.models.tracking.owner_tags`, as run tags and
as the trial's ``owner`` user attribute): a process killed outright cannot end its runs,
so the next :func:`tune` on the study marks FAIL the trials still RUNNING whose owner is
gone (:func:`fail_orphaned_trials`); the MLflow runs are failed the same way when
`oihedge train` starts (:func:`oihedge.models.tracking.fail_orphaned_runs`).
"""

from __future__ import annotations

import math
import os
import socket
import time
import zlib
from dataclasses import dataclass
from typing import Any

import mlflow
import numpy as np
import optuna
import sqlalchemy.exc
from mlflow.entities import Param
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from oihedge.models.tracking import ORPHANED_TAG, owner_tags, process_gone
from oihedge.models.train import Splitter, TrainingData, out_of_fold

PARENT_ATTR = "mlflow_parent_run_id"
WORKER_ATTR = "worker"
#: trial user attribute: the :func:`oihedge.models.tracking.owner_tags` of the process running it
OWNER_ATTR = "owner"
#: how long a joining worker waits for the study's creator to publish the parent run id
PARENT_WAIT_S = 60.0


@dataclass(frozen=True)
class TuneResult:
    """The best trial of the study (over every worker's trials)."""

    study_name: str
    best_params: dict[str, Any]
    best_value: float
    n_trials: int
    n_pruned: int
    parent_run_id: str | None


def search_space(trial: optuna.Trial, positive_rate: float) -> dict[str, Any]:
    """LightGBM hyperparameters for one trial.

    ``scale_pos_weight`` ranges from 1 (no reweighting) to the negative/positive ratio
    (balanced classes) on a log scale.
    """
    ratio = max(1.0, (1 - positive_rate) / max(positive_rate, 1e-6))
    return {
        "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.2, log=True),
        "num_boost_round": trial.suggest_int("num_boost_round", 50, 400, step=25),
        "num_leaves": trial.suggest_int("num_leaves", 7, 63, log=True),
        "min_data_in_leaf": trial.suggest_int("min_data_in_leaf", 20, 400, log=True),
        "feature_fraction": trial.suggest_float("feature_fraction", 0.5, 1.0),
        "bagging_fraction": trial.suggest_float("bagging_fraction", 0.5, 1.0),
        "lambda_l2": trial.suggest_float("lambda_l2", 1e-3, 10.0, log=True),
        "scale_pos_weight": trial.suggest_float(
            "scale_pos_weight", 1.0, max(ratio, 1.0001), log=True
        ),
    }


class _Objective:
    """Optuna objective: mean walk-forward OOF PR-AUC, one nested MLflow run per trial."""

    def __init__(
        self,
        data: TrainingData,
        splitter: Splitter,
        seed: int,
        parent_run_id: str | None,
        experiment_id: str | None,
        worker: str,
    ) -> None:
        self.experiment_id = experiment_id
        self.worker = worker
        self.data = data
        self.splitter = splitter
        self.seed = seed
        self.parent_run_id = parent_run_id
        self.positive_rate = float(data.y.mean())

    def __call__(self, trial: optuna.Trial) -> float:
        trial.set_user_attr(OWNER_ATTR, owner_tags())
        params = search_space(trial, self.positive_rate)
        trial.set_user_attr(WORKER_ATTR, self.worker)

        def report(fold: int, mean_so_far: float) -> None:
            trial.report(mean_so_far, step=fold)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after fold {fold}: {mean_so_far:.4f}")

        if self.parent_run_id is None:
            return self._score(params, report, None)
        # the client API (not the fluent one) so that a caller's active run is untouched
        client = mlflow.MlflowClient()
        run = client.create_run(
            self.experiment_id,
            run_name=f"trial-{trial.number}",
            tags={
                MLFLOW_PARENT_RUN_ID: self.parent_run_id,
                "optuna.trial": str(trial.number),
                "oihedge.worker": self.worker,
                **owner_tags(),
            },
        )
        run_id = run.info.run_id
        client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()])
        try:
            value = self._score(params, report, (client, run_id))
        except optuna.TrialPruned:
            client.set_tag(run_id, "optuna.state", "PRUNED")
            client.set_terminated(run_id, "KILLED")
            raise
        except BaseException as err:  # Ctrl-C too: Optuna fails the trial, end its run
            client.set_tag(run_id, "optuna.state", "FAIL")
            client.set_terminated(run_id, "FAILED" if isinstance(err, Exception) else "KILLED")
            raise
        client.set_tag(run_id, "optuna.state", "COMPLETE")
        client.log_metric(run_id, "oof_pr_auc_mean", value)
        client.set_terminated(run_id, "FINISHED")
        return value

    def _score(
        self, params: dict[str, Any], report: Any, run: tuple[mlflow.MlflowClient, str] | None
    ) -> float:
        oof = out_of_fold(self.data, params, self.splitter, seed=self.seed, on_fold=report)
        if run is not None:
            client, run_id = run
            for i, value in enumerate(oof.fold_pr_auc):
                client.log_metric(run_id, "fold_pr_auc", value, step=i)
        if not oof.fold_pr_auc:
            raise optuna.TrialPruned("no fold had both classes in its test block")
        return float(np.mean(oof.fold_pr_auc))


def _sampler(seed: int | None) -> optuna.samplers.BaseSampler:
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=5)


def _pruner() -> optuna.pruners.BasePruner:
    return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)


def worker_seed(seed: int | None, worker: str) -> int | None:
    """The sampler seed of a worker that joins a study: ``seed`` mixed with its id."""
    return None if seed is None else (seed + zlib.crc32(worker.encode())) % 2**32


def _open_storage(url: str, attempts: int = 5) -> optuna.storages.BaseStorage:
    """Open an RDB storage, retrying while another worker creates its tables.

    Workers started together on an empty database all run ``CREATE TABLE``/``CREATE TYPE``;
    all but one fail with a duplicate-object error, and succeed on a retry.
    """
    for attempt in range(attempts):
        try:
            return optuna.storages.get_storage(url)
        except sqlalchemy.exc.DBAPIError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


def open_study(
    study_name: str, storage: str | None, seed: int | None, *, worker: str | None = None
) -> tuple[optuna.Study, bool]:
    """Create the study ``study_name`` in ``storage`` (maximise PR-AUC) or join it.

    Returns the study and whether this call created it. The creator samples with
    ``seed``; a joining worker with :func:`worker_seed` of ``seed`` and ``worker``.
    """
    opened = _open_storage(storage) if storage is not None else None
    try:
        study = optuna.create_study(
            study_name=study_name,
            storage=opened,
            load_if_exists=False,
            direction="maximize",
            sampler=_sampler(seed),
            pruner=_pruner(),
        )
        return study, True
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(
            study_name=study_name,
            storage=opened,
            sampler=_sampler(worker_seed(seed, worker or default_worker())),
            pruner=_pruner(),
        )
        return study, False


def default_worker() -> str:
    """``<host>:<pid>``: who ran a trial, when the caller gives no worker id."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _parent_run(study: optuna.Study, experiment_id: str, created: bool) -> str:
    """The study's MLflow parent run: created by the study's creator, joined by the rest.

    The creator publishes the id before it starts its first trial, so a joiner waits until
    the id or a trial appears. A study created without MLflow never gets an id: the first
    worker that wants one claims it (two such workers racing may then each keep their own).
    """
    if not created:
        deadline = time.monotonic() + PARENT_WAIT_S
        while not study.user_attrs.get(PARENT_ATTR):
            if study.get_trials(deepcopy=False) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        existing = study.user_attrs.get(PARENT_ATTR)
        if existing:
            _reopen(str(existing))
            return str(existing)
    client = mlflow.MlflowClient()
    run = client.create_run(
        experiment_id,
        run_name=f"study-{study.study_name}",
        tags={"oihedge.kind": "study", "optuna.study": study.study_name, **owner_tags()},
    )
    study.set_user_attr(PARENT_ATTR, run.info.run_id)
    if created:
        return run.info.run_id
    # joiners of a study made without MLflow may race: whichever id the storage holds wins
    winner = str(study.user_attrs[PARENT_ATTR])
    if winner != run.info.run_id:
        client.delete_run(run.info.run_id)
    return winner


def _reopen(parent: str) -> None:
    """Mark the parent run of a joined study RUNNING again, owned by this process."""
    client = mlflow.MlflowClient()
    run = client.get_run(parent)
    for key, value in owner_tags().items():
        client.set_tag(parent, key, value)
    if ORPHANED_TAG in run.data.tags:
        client.delete_tag(parent, ORPHANED_TAG)
    if run.info.status != "RUNNING":
        client.update_run(parent, status="RUNNING")


def _others_running(study: optuna.Study) -> bool:
    """Whether a trial of another live process is still running in ``study``."""
    mine = owner_tags()
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        owner = trial.user_attrs.get(OWNER_ATTR) or {}
        if owner != mine and not process_gone(owner):
            return True
    return False


def _end_parent(study: optuna.Study, parent: str, status: str) -> None:
    """End the study's parent run with ``status``, unless another live worker still
    runs a trial of the study (it ends the run when it is done)."""
    if status == "FINISHED" and _others_running(study):
        return
    mlflow.MlflowClient().set_terminated(parent, status)


def fail_orphaned_trials(study: optuna.Study) -> list[int]:
    """Mark FAIL the RUNNING trials of ``study`` whose owning process is gone
    (:func:`oihedge.models.tracking.process_gone` of their ``owner`` user attribute); returns
    their numbers. Trials of live processes, other hosts or unknown owners are kept."""
    running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    gone = [t.number for t in running if process_gone(t.user_attrs.get(OWNER_ATTR) or {})]
    for number in gone:
        study.tell(number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
    return gone


def tune(
    data: TrainingData,
    splitter: Splitter,
    *,
    n_trials: int,
    study_name: str,
    storage: str | None = None,
    seed: int | None = 0,
    timeout_s: float | None = None,
    experiment_id: str | None = None,
    callbacks: list[Any] | None = None,
    worker: str | None = None,
) -> TuneResult:
    """Run ``n_trials`` trials of the shared study; return its best trial so far.

    With ``experiment_id`` every trial is an MLflow run nested under the study's parent
    run; without it nothing is logged. ``worker`` names this process in each trial's
    user attributes and run tags (default ``<host>:<pid>``). Raises ``ValueError`` when
    no trial completed.
    """
    if n_trials < 1:
        raise ValueError(f"n_trials must be >= 1, got {n_trials!r}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    worker = worker or default_worker()
    study, created = open_study(study_name, storage, seed, worker=worker)
    fail_orphaned_trials(study)
    parent = _parent_run(study, experiment_id, created) if experiment_id is not None else None
    status = "FAILED"  # what the parent run ends as unless the tuning completes
    try:
        study.optimize(
            _Objective(data, splitter, seed or 0, parent, experiment_id, worker),
            n_trials=n_trials,
            timeout=timeout_s,
            callbacks=callbacks,
            gc_after_trial=False,
        )
        result = _best(study, data, parent)
        status = "FINISHED"
        return result
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        if parent is not None:
            _end_parent(study, parent, status)


def _best(study: optuna.Study, data: TrainingData, parent: str | None) -> TuneResult:
    """The study's best trial, also logged to its parent run."""
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        raise ValueError(f"study {study.study_name!r}: no trial completed (all pruned or failed)")
    pruned = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.PRUNED,))
    best = study.best_trial
    params = search_space(optuna.trial.FixedTrial(best.params), float(data.y.mean()))
    if parent is not None:
        client = mlflow.MlflowClient()
        client.log_metric(parent, "best_oof_pr_auc", float(best.value))
        client.set_tag(parent, "best_trial", str(best.number))
    value = float(best.value) if best.value is not None else math.nan
    return TuneResult(study.study_name, params, value, len(complete), len(pruned), parent)
