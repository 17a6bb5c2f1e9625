"""Benchmark: `oihedge simulate --days 180` (4 venues x 3 assets, 5-minute bars).

Targets (issue #2): under 60 s wall time and under 2 GiB peak memory on 2 cores, for the
simulation and the validated write of the panel to a store.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from _measure import check, measure, peak_rss_mib  # noqa: E402

from oihedge.pipelines.sim.simulate import SimulationConfig, simulate  # noqa: E402
from oihedge.pipelines.store import PanelStore  # noqa: E402


def main() -> int:
    failures: list[str] = []
    config = SimulationConfig(days=180, seed=7)
    with measure() as sim:
        result = simulate(config)
    folder = Path(tempfile.mkdtemp(prefix="oihedge-bench-sim-"))
    try:
        with measure() as write:
            report = PanelStore(folder).append(
                result.panel, source="bench", bar=config.bar, arrival_order=True
            )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    total = sim.wall_s + write.wall_s
    peak = peak_rss_mib()
    print(
        f"rows: {result.panel.height:,} ({report.rows_written:,} written, "
        f"{report.quarantined} quarantined), cascade events: {result.events.height}"
    )
    print(
        f"simulate: {sim.wall_s:.1f} s wall, {sim.cpu_s:.1f} s CPU; "
        f"store write: {write.wall_s:.1f} s; peak RSS {peak:,.0f} MiB"
    )
    check("180 days under 60 s", total < 60, f"{total:.1f} s", failures)
    check("peak memory under 2 GiB", peak < 2048, f"{peak:,.0f} MiB", failures)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
