"""Small helpers for the benchmark scripts: wall time, CPU time, peak memory."""

from __future__ import annotations

import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


@dataclass
class Measurement:
    wall_s: float = 0.0
    cpu_s: float = 0.0


@contextmanager
def measure() -> Iterator[Measurement]:
    """Wall-clock and process CPU seconds spent inside the block."""
    m = Measurement()
    wall, cpu = time.perf_counter(), time.process_time()
    yield m
    m.wall_s = time.perf_counter() - wall
    m.cpu_s = time.process_time() - cpu


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def check(label: str, ok: bool, detail: str, failures: list[str]) -> None:
    """Print a target line and remember a miss."""
    print(f"  [{'ok' if ok else 'MISSED'}] {label}: {detail}")
    if not ok:
        failures.append(label)


def timed(fn: Callable[[], object]) -> tuple[object, Measurement]:
    with measure() as m:
        result = fn()
    return result, m


def simulator_hash() -> str:
    """Short hash of the simulator's source: part of the cached panel's name, so a changed
    simulator never serves a stale panel."""
    import hashlib

    digest = hashlib.sha256()
    for path in sorted((REPO / "pipelines" / "sim").glob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:10]


def make_panel(days: int, seed: int, path: Path) -> None:
    """Simulate and write the panel, as it arrives (bad rows included)."""
    from oihedge.pipelines.sim.simulate import SimulationConfig, simulate

    result = simulate(SimulationConfig(days=days, seed=seed, bar=timedelta(minutes=5)))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    result.panel.write_parquet(tmp)
    tmp.replace(path)


def cached_sim_panel(days: int, seed: int) -> Path:
    """A simulated 5-minute panel file, simulated once per (days, seed, simulator source)
    in a child process (its memory does not count against the caller's peak)."""
    path = (
        Path(tempfile.gettempdir())
        / "oihedge-bench"
        / f"sim-{days}d-seed{seed}-5m-{simulator_hash()}.parquet"
    )
    if not path.exists():
        print(f"simulating {days} days (once; cached in {path}) ...", flush=True)
        code = (
            "import sys; sys.path.insert(0, sys.argv[1]); sys.path.insert(0, sys.argv[2]);"
            "import _measure as m; m.make_panel(int(sys.argv[3]), int(sys.argv[4]),"
            " m.Path(sys.argv[5]))"
        )
        args = [str(REPO), str(HERE), str(days), str(seed), str(path)]
        subprocess.run([sys.executable, "-c", code, *args], check=True)
    return path
