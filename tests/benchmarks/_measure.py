"""Small helpers for the benchmark scripts: wall time, CPU time, peak memory."""

from __future__ import annotations

import resource
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass


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
