"""Two Optuna worker processes on one study in a throwaway PostgreSQL (issue #5).

Each worker is its own Python process (``python -m pg_support tune-worker``), as it would
be on its own machine: it joins the study through the PostgreSQL URL and logs its trials
to an MLflow store in the same cluster.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient
from mlflow.entities import ViewType

from oihedge.models.tune import PARENT_ATTR, WORKER_ATTR
from pg_support import PostgresCluster, PostgresUnavailableError, worker_command
from tests_support import synthetic_training_frame

pytestmark = pytest.mark.postgres

TRIALS_PER_WORKER = 4
WORKERS = ("w1", "w2")
STUDY = "two-workers"
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


def _run_workers(
    storage: str, tracking: str, experiment_id: str, data: Path, logs: Path
) -> dict[str, dict]:
    """Start every worker at once; each one's JSON report once all have finished."""
    procs = {}
    for worker in WORKERS:
        argv, env = worker_command(
            "tune-worker",
            *("--storage", storage, "--study", STUDY, "--data", str(data)),
            *("--trials", str(TRIALS_PER_WORKER), "--worker", worker),
            *("--tracking-uri", tracking, "--experiment-id", experiment_id),
            *("--wait-total", str(TRIALS_PER_WORKER * len(WORKERS)), "--wait-timeout", "120"),
        )
        # files, not pipes: a worker must never block on a full pipe nobody reads yet
        with open(logs / f"{worker}.out", "w") as out, open(logs / f"{worker}.err", "w") as err:
            procs[worker] = subprocess.Popen(argv, env=env, stdout=out, stderr=err)
    try:
        return _collect(procs, logs, timeout_s=150)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _collect(procs: dict[str, subprocess.Popen], logs: Path, timeout_s: float) -> dict[str, dict]:
    """Fails as soon as one worker fails (the other would wait for its trials in vain)."""
    deadline = time.monotonic() + timeout_s
    reports: dict[str, dict] = {}
    while len(reports) < len(procs):
        for worker, proc in procs.items():
            if worker in reports or proc.poll() is None:
                continue
            err = (logs / f"{worker}.err").read_text()[-4000:]
            assert proc.returncode == 0, f"worker {worker} failed:\n{err}"
            stdout = (logs / f"{worker}.out").read_text()
            reports[worker] = json.loads(stdout.strip().splitlines()[-1])
        assert time.monotonic() < deadline, f"workers still running after {timeout_s} s"
        time.sleep(0.2)
    return reports


def test_two_worker_processes_share_one_postgres_study(
    postgres: PostgresCluster, tmp_path: Path
) -> None:
    storage = postgres.url(postgres.create_database("optuna_two_workers"))
    tracking = postgres.url(postgres.create_database("mlflow_two_workers"))
    data = tmp_path / "train.parquet"
    synthetic_training_frame(n_bars=3000, seed=0).write_parquet(data)
    client = MlflowClient(tracking_uri=tracking)  # creates MLflow's tables before the workers
    experiment_id = client.create_experiment(
        "tune-workers", artifact_location=(tmp_path / "artifacts").as_uri()
    )

    reports = _run_workers(storage, tracking, experiment_id, data, tmp_path)

    study = optuna.load_study(study_name=STUDY, storage=storage)
    trials = study.get_trials(deepcopy=False)
    total = TRIALS_PER_WORKER * len(WORKERS)
    assert len(trials) == total and all(t.state in FINISHED for t in trials)
    assert Counter(t.user_attrs[WORKER_ATTR] for t in trials) == dict.fromkeys(
        WORKERS, TRIALS_PER_WORKER
    )
    # the joining worker samples with its own seed: no parameter set was tried twice
    assert len({tuple(sorted(t.params.items())) for t in trials}) == total

    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    best = max(complete, key=lambda t: t.value)
    assert study.best_trial.number == best.number and study.best_value == best.value
    for worker, report in reports.items():
        assert report["final_best_number"] == best.number, worker
        assert report["final_best_value"] == best.value, worker
        assert float(report["best_value"]) <= best.value, worker  # its view when it stopped

    # MLflow: one parent run for the study, every trial of both workers nested under it
    parents = {str(r["parent_run_id"]) for r in reports.values()}
    assert parents == {study.user_attrs[PARENT_ATTR]}
    parent = parents.pop()
    runs = client.search_runs([experiment_id], run_view_type=ViewType.ALL, max_results=1000)
    assert len(runs) == total + 1  # no second parent created and deleted by a race
    studies = [r for r in runs if r.data.tags.get("oihedge.kind") == "study"]
    assert [r.info.run_id for r in studies] == [parent]
    # ended by the last worker out (the first one out saw the other's trials running)
    assert studies[0].info.status == "FINISHED"
    children = {
        int(r.data.tags["optuna.trial"]): r
        for r in runs
        if r.data.tags.get("mlflow.parentRunId") == parent
    }
    assert sorted(children) == sorted(t.number for t in trials)
    for t in trials:
        run = children[t.number]
        assert run.data.tags["oihedge.worker"] == t.user_attrs[WORKER_ATTR]
        if t.state == optuna.trial.TrialState.COMPLETE:
            assert run.info.status == "FINISHED"
            assert run.data.metrics["oof_pr_auc_mean"] == pytest.approx(t.value)
        else:
            assert run.info.status == "KILLED" and run.data.tags["optuna.state"] == "PRUNED"


def test_cluster_fails_clearly_without_the_server_binaries(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(PostgresUnavailableError, match="`initdb` is not on the PATH"):
        PostgresCluster.start()
