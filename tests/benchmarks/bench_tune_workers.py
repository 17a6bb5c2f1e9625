"""Optuna tuning throughput: trials per minute for one and for two workers on one study
in PostgreSQL.

    .venv/bin/python tests/benchmarks/bench_tune_workers.py [--days 30] [--trials 24]

Data: a simulated panel (``--days`` of 5-minute bars, the simulator's default venues and
assets) through the ``oihedge train`` preparation with the default configuration
(feature spec, labels, holdout fraction): features + cascade labels, the development
rows only, as the tuner sees them. Folds: walk-forward with ``train.n_splits`` folds and
the label horizon as purge.

A throwaway PostgreSQL cluster (durable settings) holds, per configuration, a fresh
Optuna study and an MLflow tracking database: every trial is an MLflow child run, as in
``oihedge train``. Each configuration runs ``--trials`` trials in total: one worker
process runs all of them; two worker processes run half each on the same study. Worker
processes are separate Python processes (``python -m pg_support tune-worker``), as on
separate machines. Reported per configuration:

- trials/min over the tuning span (first trial start to last trial end, from the study),
- trials/min end to end (process start to the last exit: imports and data loading too),
- complete/pruned counts, mean trial seconds (wall) and CPU seconds per trial (the
  workers' CPU time inside ``tune()`` over the trials), the best OOF PR-AUC.

Pruning makes trial lengths differ between the two studies (each samples its own
parameters), so the mean trial length is printed beside the rate. Target: on a machine
with at least two CPUs, two workers reach at least 1.3x the trials/min of one worker;
it is judged only when the machine was not busy before the runs (1-minute load average
at most half the CPUs), since other processes take the second worker's CPU first.
Prints everything; exits 1 if a run fails or the target is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from _measure import check  # noqa: E402

from pg_support import PostgresCluster, worker_command  # noqa: E402

SPEEDUP_TARGET = 1.3


@dataclass(frozen=True)
class Outcome:
    workers: int
    finished: int
    complete: int
    pruned: int
    per_worker: dict[str, int]
    span_s: float
    end_to_end_s: float
    mean_trial_s: float
    cpu_per_trial_s: float
    best_value: float

    @property
    def per_min_span(self) -> float:
        return 60.0 * self.finished / self.span_s

    @property
    def per_min_end_to_end(self) -> float:
        return 60.0 * self.finished / self.end_to_end_s


def prepare_data(days: int, seed: int, out: Path) -> tuple[int, int, float, int]:
    """Write the development rows to ``out``; return (rows, features, positive rate, splits)."""
    from oihedge.features.registry import get_spec
    from oihedge.features.screening import validate
    from oihedge.models.label_params import LabelConfig
    from oihedge.models.workflow import prepare
    from oihedge.pipelines.cli.config import load_config
    from oihedge.pipelines.sim.simulate import SimulationConfig, simulate

    cfg = load_config(env={})
    bar = timedelta(minutes=5)
    panel = validate(simulate(SimulationConfig(days=days, seed=seed, bar=bar)).panel, bar=bar)
    labels = LabelConfig.from_mapping(cfg.labels.model_dump(), cfg.universe.altcoins)
    if labels.horizon != timedelta(hours=4):
        raise SystemExit(f"the worker folds assume a 4h horizon; labels say {labels.horizon}")
    prepared = prepare(
        panel.valid,
        get_spec(cfg.train.feature_spec),
        labels,
        holdout_fraction=cfg.train.holdout_fraction,
    )
    dev = prepared.dev
    dev.frame.select("ts", "symbol", *dev.features, dev.label).write_parquet(out)
    return dev.frame.height, len(dev.features), float(dev.y.mean()), cfg.train.n_splits


def worker_report(log: Path) -> dict[str, object]:
    """The JSON report line a worker prints when it is done."""
    for line in reversed(log.read_text().splitlines()):
        if line.startswith('{"worker"'):
            return json.loads(line)
    raise RuntimeError(f"no report in {log}")


def run_config(
    cluster: PostgresCluster, workers: int, total: int, data: Path, splits: int, logs: Path
) -> Outcome:
    """``workers`` processes, ``total`` trials between them, on a fresh study."""
    import optuna
    from mlflow import MlflowClient

    storage = cluster.url(cluster.create_database(f"optuna_{workers}w"))
    tracking = cluster.url(cluster.create_database(f"mlflow_{workers}w"))
    experiment_id = MlflowClient(tracking_uri=tracking).create_experiment(
        "bench", artifact_location=(logs / f"artifacts-{workers}w").as_uri()
    )
    shares = [total // workers + (1 if i < total % workers else 0) for i in range(workers)]
    started = time.perf_counter()
    procs = []
    for i, n in enumerate(shares):
        argv, env = worker_command(
            "tune-worker",
            *("--storage", storage, "--study", f"bench-{workers}w", "--data", str(data)),
            *("--trials", str(n), "--worker", f"w{i + 1}", "--splits", str(splits)),
            *("--tracking-uri", tracking, "--experiment-id", experiment_id),
        )
        log = logs / f"{workers}w-w{i + 1}.log"
        with open(log, "w") as handle:
            procs.append((subprocess.Popen(argv, env=env, stdout=handle, stderr=handle), log))
    for proc, log in procs:
        if proc.wait() != 0:
            raise RuntimeError(
                f"worker failed (exit {proc.returncode}):\n{log.read_text()[-3000:]}"
            )
    end_to_end = time.perf_counter() - started
    cpu = sum(float(worker_report(log)["tune_cpu_s"]) for _, log in procs)

    study = optuna.load_study(study_name=f"bench-{workers}w", storage=storage)
    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    trials = study.get_trials(deepcopy=False, states=done)
    span = max(t.datetime_complete for t in trials) - min(t.datetime_start for t in trials)
    lengths = [(t.datetime_complete - t.datetime_start).total_seconds() for t in trials]
    per_worker: dict[str, int] = {}
    for t in trials:
        per_worker[t.user_attrs["worker"]] = per_worker.get(t.user_attrs["worker"], 0) + 1
    complete = sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    return Outcome(
        workers=workers,
        finished=len(trials),
        complete=complete,
        pruned=len(trials) - complete,
        per_worker=dict(sorted(per_worker.items())),
        span_s=span.total_seconds(),
        end_to_end_s=end_to_end,
        mean_trial_s=sum(lengths) / len(lengths),
        cpu_per_trial_s=cpu / len(trials),
        best_value=float(study.best_value),
    )


def report(o: Outcome) -> None:
    print(
        f"  {o.workers} worker{'s' if o.workers > 1 else ' '}: {o.finished} trials "
        f"({o.complete} complete, {o.pruned} pruned; by worker {o.per_worker}) | "
        f"span {o.span_s:.1f} s -> {o.per_min_span:.1f} trials/min | end to end "
        f"{o.end_to_end_s:.1f} s -> {o.per_min_end_to_end:.1f} trials/min | mean trial "
        f"{o.mean_trial_s:.2f} s, {o.cpu_per_trial_s:.2f} CPU s | best OOF PR-AUC {o.best_value:.4f}",
        flush=True,
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--trials", type=int, default=24, help="trials per configuration")
    args = parser.parse_args(argv)
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="oihedge-bench-tune-") as tmp:
        folder = Path(tmp)
        data = folder / "dev.parquet"
        start = time.perf_counter()
        rows, n_features, rate, splits = prepare_data(args.days, args.seed, data)
        print(
            f"data: {args.days}-day simulated panel -> {rows:,} development rows x "
            f"{n_features} features, positive rate {rate:.2%}, {splits} walk-forward folds "
            f"(prepared in {time.perf_counter() - start:.1f} s)",
            flush=True,
        )
        with PostgresCluster.start(durable=True) as cluster:
            load_before = os.getloadavg()[0]
            print(
                f"PostgreSQL on 127.0.0.1:{cluster.port}; {os.cpu_count()} CPUs, load average "
                f"{load_before:.2f} before the runs (anything else running slows the 2-worker run most)",
                flush=True,
            )
            outcomes = {}
            for workers in (1, 2):
                outcomes[workers] = run_config(cluster, workers, args.trials, data, splits, folder)
                report(outcomes[workers])
    one, two = outcomes[1], outcomes[2]
    speedup = two.per_min_span / one.per_min_span
    print(
        f"trials/min: 1 worker {one.per_min_span:.1f}, 2 workers {two.per_min_span:.1f} "
        f"(x{speedup:.2f}; end to end x{two.per_min_end_to_end / one.per_min_end_to_end:.2f})"
    )
    for o in outcomes.values():
        check(
            f"{o.workers} worker(s) finished every trial",
            o.finished == args.trials,
            f"{o.finished} of {args.trials}",
            failures,
        )
    check(
        "both workers contributed to the shared study",
        len(two.per_worker) == 2 and all(two.per_worker.values()),
        str(two.per_worker),
        failures,
    )
    cpus = os.cpu_count() or 1
    if cpus < 2:
        print("  (one CPU: the speed-up target is not judged)")
    elif load_before > cpus / 2:
        print(
            f"  (load average {load_before:.2f} on {cpus} CPUs before the runs: the machine is "
            "busy, the speed-up target is not judged)"
        )
    else:
        check(
            f"2 workers >= {SPEEDUP_TARGET}x the trials/min of 1",
            speedup >= SPEEDUP_TARGET,
            f"x{speedup:.2f}",
            failures,
        )
    print(json.dumps({"trials_per_min": {"1": one.per_min_span, "2": two.per_min_span}}))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
