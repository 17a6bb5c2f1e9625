"""`oihedge evaluate --walk-forward` on the real panel: the time of a 7-window study.

    .venv/bin/python tests/benchmarks/bench_walkforward.py [--panel ../shared/data/real-1h]

Runs the command as a user would (its own process, a throwaway MLflow store): monthly
windows from 2025-06-01 with the fixed ``[backtest.model]`` hyperparameters, the model and
its five rivals refitted before each window. Prints the wall time, the peak memory of the
command and its summary lines (PR-AUC per scorer against the base rate).

Target (issue #21): under 5 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _measure import REPO, check  # noqa: E402

TARGET_S = 300.0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="walk-forward evaluation on the real panel")
    parser.add_argument("--panel", type=Path, default=REPO.parent / "shared" / "data" / "real-1h")
    parser.add_argument("--start", default="2025-06-01")
    args = parser.parse_args(argv)
    if not args.panel.is_dir():
        print(f"no panel at {args.panel}: nothing to measure")
        return 1
    failures: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            **os.environ,
            "OIHEDGE_MLFLOW__TRACKING_URI": f"sqlite:///{tmp}/mlflow.db",
            "OIHEDGE_MLFLOW__ARTIFACT_ROOT": f"{tmp}/artifacts",
        }
        report = Path(tmp) / "wf.json"
        command = [
            str(Path(sys.executable).with_name("oihedge")),
            "evaluate",
            "--walk-forward",
            "--panel",
            str(args.panel),
            "--start",
            args.start,
            "--out",
            f"{tmp}/out",
            "--json",
            str(report),
        ]
        start = time.perf_counter()
        proc = subprocess.run(
            command,
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            print(proc.stderr[-2000:])
            return 1
        peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(proc.stdout)
        summary = json.loads(report.read_text())["summary"]
    print(f"{summary['windows']} windows in {wall:.1f} s, peak {peak_mib:.0f} MiB")
    check("walk-forward on the real panel < 5 min", wall < TARGET_S, f"{wall:.1f} s", failures)
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"\n{'all targets met' if not failures else 'missed: ' + ', '.join(failures)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
