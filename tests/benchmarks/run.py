"""`make bench`: run every benchmark in this folder, each in its own process.

Each ``bench_*.py`` is a script that prints its measurements (and exits non-zero when a
target is missed). Running them in separate processes keeps each peak-memory reading
its own. Pass names to run a subset: ``python tests/benchmarks/run.py simulate features``.
Not collected by pytest (the files are not named ``test_*``).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def main(argv: list[str]) -> int:
    scripts = sorted(HERE.glob("bench_*.py"))
    if argv:
        scripts = [s for s in scripts if any(name in s.stem for name in argv)]
    failed = []
    for script in scripts:
        print(f"\n=== {script.stem} ===", flush=True)
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, str(script)], cwd=REPO, check=False)
        print(f"--- {script.stem}: exit {proc.returncode} in {time.perf_counter() - start:.1f} s")
        if proc.returncode != 0:
            failed.append(script.stem)
    print(f"\n{len(scripts) - len(failed)} of {len(scripts)} benchmarks met their targets")
    if failed:
        print("missed: " + ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
