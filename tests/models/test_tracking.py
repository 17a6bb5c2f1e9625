"""oihedge.models.tracking: runs left RUNNING by a process that is gone are marked FAILED when
`oihedge train` starts; runs of live processes, other hosts or unknown owners are kept."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta

import mlflow
import pytest
from mlflow import MlflowClient

from oihedge.features.registry import get_spec
from oihedge.models.label_params import LabelConfig
from oihedge.models.tracking import OWNER_TAGS, fail_orphaned_runs, owner_tags, process_gone
from oihedge.models.workflow import TrainSettings, run_training
from tests_support import make_panel


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _running_runs(experiment: str) -> dict[str, str]:
    """run name -> run id of the runs of ``experiment`` left RUNNING: a killed train."""
    client = MlflowClient()
    me = owner_tags()
    host, pid, started = OWNER_TAGS
    owners = {
        "dead": {**me, pid: str(_dead_pid())},
        "reused": {**me, started: "1"},  # this pid, but another process's start time
        "alive": me,  # a train running concurrently (here: this process)
        "elsewhere": {**me, host: "another-host", pid: "1"},
        "unknown": {},  # started before owner tags existed
    }
    return {
        name: client.create_run(experiment, run_name=name, tags=tags).info.run_id
        for name, tags in owners.items()
    }


def _status(run_id: str) -> str:
    return MlflowClient().get_run(run_id).info.status


def test_process_gone():
    me = owner_tags()
    host, pid, started = OWNER_TAGS
    assert not process_gone(me)
    assert process_gone({**me, pid: str(_dead_pid())})
    assert process_gone({**me, started: "1"})
    assert not process_gone({**me, host: "another-host", pid: str(_dead_pid())})
    assert not process_gone({})
    assert not process_gone({**me, pid: "not-a-pid"})
    assert me[pid] == str(os.getpid())


def test_fail_orphaned_runs_marks_only_runs_whose_owner_is_gone(local_mlflow):
    runs = _running_runs(local_mlflow)
    failed = fail_orphaned_runs([local_mlflow])
    assert sorted(failed) == sorted([runs["dead"], runs["reused"]])
    for name in ("dead", "reused"):
        assert _status(runs[name]) == "FAILED"
        assert "gone" in MlflowClient().get_run(runs[name]).data.tags["oihedge.orphaned"]
    for name in ("alive", "elsewhere", "unknown"):
        assert _status(runs[name]) == "RUNNING"
    assert fail_orphaned_runs([local_mlflow]) == []


def test_train_marks_the_runs_of_a_killed_train_failed_when_it_starts(local_mlflow):
    runs = _running_runs(local_mlflow)
    settings = TrainSettings(
        universe="unit",
        spec=get_spec("core"),
        labels=LabelConfig(altcoins=frozenset()),
        experiment="test",
    )
    # a panel far too short to train on: train starts, cleans up, then refuses the data
    with pytest.raises(ValueError, match="positive"):
        run_training(make_panel(n_bars=120, bar=timedelta(hours=1)), settings, git_commit="x")
    assert _status(runs["dead"]) == "FAILED" and _status(runs["reused"]) == "FAILED"
    assert _status(runs["alive"]) == "RUNNING" and _status(runs["unknown"]) == "RUNNING"
    assert mlflow.active_run() is None
