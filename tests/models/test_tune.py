"""oihedge.models.tune with MLflow: the study's parent run ends with the tuning (also when it
fails or is interrupted), trial runs never stay RUNNING, and trials left RUNNING by a
killed process are marked FAIL when the study is opened again."""

from __future__ import annotations

import subprocess
import sys

import mlflow
import optuna
import pytest

from oihedge.models import tune as tune_module
from oihedge.models.tracking import OWNER_TAGS, owner_tags
from oihedge.models.train import make_training_data
from oihedge.models.tune import OWNER_ATTR, tune
from tests_support import TwoBlockSplit, synthetic_training_frame


@pytest.fixture(scope="module")
def data():
    frame = synthetic_training_frame(n_bars=1200)
    return make_training_data(frame, frame, ["f_signal", "f_noise"], "y_cascade_4h")


def _runs(experiment: str) -> dict[str, tuple[str, dict[str, str]]]:
    """run name -> (status, tags) of every run of ``experiment``."""
    found = mlflow.MlflowClient().search_runs([experiment])
    return {r.info.run_name: (r.info.status, r.data.tags) for r in found}


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_the_study_parent_run_ends_with_the_tuning(local_mlflow, data, tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    for _ in range(2):  # a second train joins the same study and its parent run
        result = tune(
            data,
            TwoBlockSplit(2),
            n_trials=2,
            study_name="s",
            storage=storage,
            experiment_id=local_mlflow,
        )
        runs = _runs(local_mlflow)
        status, tags = runs["study-s"]
        assert status == "FINISHED"
        assert all(s != "RUNNING" for s, _ in runs.values())
        assert {tags[k] for k in OWNER_TAGS} == set(owner_tags().values())
    assert mlflow.get_run(result.parent_run_id).info.status == "FINISHED"
    assert len(runs) == 5  # one parent, four trials
    assert all(set(OWNER_TAGS) <= set(t) for _, t in runs.values())


def test_a_failed_tuning_ends_its_parent_run_failed(local_mlflow, data):
    def boom(study, trial):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        tune(
            data,
            TwoBlockSplit(2),
            n_trials=3,
            study_name="f",
            experiment_id=local_mlflow,
            callbacks=[boom],
        )
    runs = _runs(local_mlflow)
    assert runs["study-f"][0] == "FAILED"
    assert runs["trial-0"][0] == "FINISHED"


def test_an_interrupted_trial_ends_its_run_and_the_parent_killed(local_mlflow, data, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(tune_module, "out_of_fold", interrupted)
    with pytest.raises(KeyboardInterrupt):
        tune(data, TwoBlockSplit(2), n_trials=2, study_name="k", experiment_id=local_mlflow)
    runs = _runs(local_mlflow)
    assert runs["trial-0"][0] == "KILLED" and runs["study-k"][0] == "KILLED"


def test_trials_left_running_by_a_dead_process_are_failed_when_the_study_opens(data, tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="o", storage=storage, direction="maximize")
    dead, alive, elsewhere, unknown = (study.ask() for _ in range(4))
    dead.set_user_attr(OWNER_ATTR, {**owner_tags(), OWNER_TAGS[1]: str(_dead_pid())})
    alive.set_user_attr(OWNER_ATTR, owner_tags())  # this process: a live worker
    elsewhere.set_user_attr(
        OWNER_ATTR, {**owner_tags(), OWNER_TAGS[0]: "another-host", OWNER_TAGS[1]: "1"}
    )
    tune(data, TwoBlockSplit(2), n_trials=1, study_name="o", storage=storage)
    states = {t.number: t.state for t in optuna.load_study(study_name="o", storage=storage).trials}
    assert states[dead.number] == optuna.trial.TrialState.FAIL
    for kept in (alive, elsewhere, unknown):
        assert states[kept.number] == optuna.trial.TrialState.RUNNING
    assert states[4] == optuna.trial.TrialState.COMPLETE
