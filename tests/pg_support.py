"""A throwaway PostgreSQL cluster for tests and benchmarks, and the tune worker they start.

:class:`PostgresCluster` runs ``initdb`` and ``pg_ctl`` from the PATH (PostgreSQL 15 server
binaries) in a fresh temp folder, listening on 127.0.0.1 only, on a free port, with
``trust`` authentication for the superuser ``postgres``. PostgreSQL refuses to run as
root, so as root every server command goes through ``su postgres``; as any other user
the commands run directly (the cluster's superuser is still named ``postgres``).
:meth:`PostgresCluster.stop` stops the server and deletes the folder.

``python -m pg_support tune-worker ...`` (with the repo and ``tests/`` on PYTHONPATH) is one
Optuna worker process: it reads a training frame from Parquet, joins the shared study and
runs :func:`oihedge.models.tune.tune`; see :func:`tune_worker`. Tests and the tuning benchmark
start two of them against one PostgreSQL study.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import pwd
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

SUPERUSER = "postgres"
OS_USER = "postgres"  # the system account that runs the server when we are root


class PostgresUnavailableError(RuntimeError):
    """The PostgreSQL server binaries, ``su`` or the ``postgres`` account are missing."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise PostgresUnavailableError(
            f"`{name}` is not on the PATH: install the PostgreSQL 15 server binaries "
            "(Debian: postgresql-15, and put /usr/lib/postgresql/15/bin on the PATH)"
        )
    return path


@dataclass
class PostgresCluster:
    """One running throwaway cluster; build it with :meth:`start`.

    ``port`` is on 127.0.0.1; ``root`` holds the data folder, the socket and ``server.log``.
    """

    root: Path
    port: int
    as_root: bool
    _stopped: bool = field(default=False, repr=False)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_file(self) -> Path:
        return self.root / "server.log"

    @classmethod
    def start(cls, *, durable: bool = False, attempts: int = 3) -> PostgresCluster:
        """initdb + pg_ctl start on a free loopback port; raise if PostgreSQL cannot run.

        ``durable=False`` (tests) turns fsync off: the cluster is thrown away anyway.
        Raises :class:`PostgresUnavailableError` when a binary, ``su`` or the ``postgres``
        account is missing, ``RuntimeError`` (with the server log) when it will not start.
        """
        initdb, _ = _tool("initdb"), _tool("pg_ctl")
        as_root = os.geteuid() == 0
        if as_root:
            _tool("su")
            try:
                account = pwd.getpwnam(OS_USER)
            except KeyError:
                raise PostgresUnavailableError(
                    f"running as root but there is no `{OS_USER}` system account to run "
                    "PostgreSQL as (it refuses to run as root)"
                ) from None
        # as root, under /tmp: $TMPDIR may sit in a folder the postgres account cannot enter
        parent = "/tmp" if as_root and os.path.isdir("/tmp") else None
        root = Path(tempfile.mkdtemp(prefix="oihedge-pg-", dir=parent))
        if as_root:
            os.chown(root, account.pw_uid, account.pw_gid)
        root.chmod(0o700)
        cluster = cls(root=root, port=0, as_root=as_root)
        try:
            cluster._run(
                [initdb, "-D", str(cluster.data_dir), "-A", "trust", "-U", SUPERUSER, "-N"],
                "initdb",
            )
            cluster._launch(durable, attempts)
        except BaseException:
            cluster.stop()
            raise
        atexit.register(cluster.stop)  # a crash of the caller must not leave a server behind
        return cluster

    def _launch(self, durable: bool, attempts: int) -> None:
        settings = ["-c listen_addresses=127.0.0.1", f"-k {self.root}"]
        if not durable:
            settings += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        for attempt in range(attempts):
            # the port may be taken between free_port() and the bind: try another one
            self.port = free_port()
            options = " ".join([f"-p {self.port}", *settings])
            command = [_tool("pg_ctl"), "-D", str(self.data_dir), "-o", options]
            command += ["-l", str(self.log_file), "-w", "-t", "60", "start"]
            try:
                self._run(command, "pg_ctl start")
                return
            except RuntimeError:
                if attempt == attempts - 1:
                    raise

    def _run(self, command: list[str], what: str) -> None:
        argv = ["su", "-s", "/bin/sh", OS_USER, "-c", shlex.join(command)]
        proc = subprocess.run(
            argv if self.as_root else command,
            cwd=self.root,  # the postgres account may not be allowed into our cwd
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        if proc.returncode != 0:
            log = (
                self.log_file.read_text(errors="replace")[-3000:] if self.log_file.exists() else ""
            )
            raise RuntimeError(
                f"{what} failed (exit {proc.returncode}): {proc.stderr.strip() or proc.stdout}"
                + (f"\nserver log:\n{log}" if log else "")
            )

    def url(self, database: str, *, driver: str = "psycopg2") -> str:
        """SQLAlchemy URL of ``database``.

        The driver is spelled out: SQLAlchemy 2.1 maps a bare ``postgresql://`` to psycopg
        (3), while the project depends on psycopg2.
        """
        scheme = f"postgresql+{driver}" if driver else "postgresql"
        return f"{scheme}://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def connect(self, database: str = "postgres"):  # noqa: ANN201 - a psycopg2 connection
        """A psycopg2 connection (autocommit) to ``database`` as the superuser."""
        import psycopg2

        conn = psycopg2.connect(
            host="127.0.0.1", port=self.port, user=SUPERUSER, dbname=database, connect_timeout=10
        )
        conn.autocommit = True
        return conn

    def create_database(self, name: str) -> str:
        """(Re)create an empty database ``name``; return its name."""
        from psycopg2 import sql

        conn = self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        finally:
            conn.close()
        return name

    def query(self, database: str, statement: str) -> list[tuple]:
        """Rows of one SQL statement run in ``database``."""
        conn = self.connect(database)
        try:
            with conn.cursor() as cur:
                cur.execute(statement)
                return list(cur.fetchall())
        finally:
            conn.close()

    def stop(self) -> None:
        """Stop the server (fast, then immediate) and delete the folder; safe to repeat."""
        if self._stopped:
            return
        self._stopped = True
        try:
            if (self.data_dir / "postmaster.pid").exists():
                pg_ctl = _tool("pg_ctl")
                for mode in ("fast", "immediate"):
                    try:
                        self._run(
                            [pg_ctl, "-D", str(self.data_dir), "-m", mode, "-w", "stop"],
                            f"pg_ctl stop -m {mode}",
                        )
                        break
                    except (RuntimeError, subprocess.TimeoutExpired):
                        continue
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PostgresCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def worker_command(*args: str) -> tuple[list[str], dict[str, str]]:
    """argv and environment that run ``python -m pg_support`` with ``args`` from any cwd."""
    tests = Path(__file__).resolve().parent
    env = dict(os.environ)
    paths = [str(tests.parent), str(tests), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    return [sys.executable, "-m", "pg_support", *args], env


def tune_worker(argv: list[str]) -> dict[str, object]:
    """One Optuna worker: join ``--study`` in ``--storage`` and run ``--trials`` trials.

    The training frame is read from ``--data`` (Parquet with ts, symbol, the features and
    the label); folds come from :class:`oihedge.models.splits.WalkForwardSplit` with a 4h horizon.
    With ``--tracking-uri`` and ``--experiment-id`` every trial is an MLflow child run.
    With ``--wait-total`` the worker then waits until the study holds that many finished
    trials (every worker done) and reports the best trial as it sees it then.
    Returns (and prints, as one JSON line) what it did and saw.
    """
    parser = argparse.ArgumentParser(prog="pg_support tune-worker")
    parser.add_argument("--storage", required=True)
    parser.add_argument("--study", required=True)
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--label", default="y_cascade_4h")
    parser.add_argument("--trials", type=int, required=True)
    parser.add_argument("--worker", required=True)
    parser.add_argument("--splits", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tracking-uri", default=None)
    parser.add_argument("--experiment-id", default=None)
    parser.add_argument("--wait-total", type=int, default=0)
    parser.add_argument("--wait-timeout", type=float, default=300.0)
    args = parser.parse_args(argv)

    from datetime import timedelta

    import mlflow
    import optuna
    import polars as pl

    from oihedge.models.splits import WalkForwardSplit
    from oihedge.models.train import TrainingData
    from oihedge.models.tune import tune

    frame = pl.read_parquet(args.data)
    features = tuple(c for c in frame.columns if c not in ("ts", "symbol", args.label))
    data = TrainingData(frame, features, args.label)
    if args.tracking_uri:
        mlflow.set_tracking_uri(args.tracking_uri)
    started, cpu = time.time(), time.process_time()
    result = tune(
        data,
        WalkForwardSplit(args.splits, horizon=timedelta(hours=4)),
        n_trials=args.trials,
        study_name=args.study,
        storage=args.storage,
        seed=args.seed,
        experiment_id=args.experiment_id,
        worker=args.worker,
    )
    report: dict[str, object] = {
        "worker": args.worker,
        "pid": os.getpid(),
        "tune_s": time.time() - started,
        "tune_cpu_s": time.process_time() - cpu,
        "best_value": result.best_value,
        "best_params": result.best_params,
        "parent_run_id": result.parent_run_id,
    }
    if args.wait_total:
        finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        study = optuna.load_study(study_name=args.study, storage=args.storage)
        deadline = time.monotonic() + args.wait_timeout
        while len(study.get_trials(deepcopy=False, states=finished)) < args.wait_total:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the study never reached {args.wait_total} finished trials")
            time.sleep(0.2)
        report["final_best_number"] = study.best_trial.number
        report["final_best_value"] = study.best_value
    print(json.dumps(report, default=str), flush=True)
    return report


def main(argv: list[str]) -> int:
    if not argv or argv[0] != "tune-worker":
        print("usage: python -m pg_support tune-worker --storage URL --study NAME ...")
        return 2
    tune_worker(argv[1:])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
