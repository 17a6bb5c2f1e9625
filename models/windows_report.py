"""The walk-forward evaluation's outputs: printed tables, files, a PNG, and MLflow runs.

:func:`write_outputs` writes ``windows.csv`` (one row per window and scorer),
``ablation.csv`` (with ``--ablation``) and ``pr_auc.png`` (PR-AUC per window and scorer,
with the window's base rate) into a folder; :func:`log_to_mlflow` records the study as one
parent run (the settings, the summary's numbers, the files as artifacts) with a child run
per window (its dates, base rate and every scorer's metrics). :func:`lines` is the
human-readable report the CLI prints.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, never a window

import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402

from oihedge.models.plots import save_figure  # noqa: E402
from oihedge.models.windows import WalkForwardEvaluation  # noqa: E402

#: the metrics each window's child run records per scorer
CHILD_METRICS = ("pr_auc", "roc_auc", "brier", "ece", "event_recall_at_alert")


def lines(result: WalkForwardEvaluation) -> list[str]:
    """The per-window PR-AUC table, the summary per scorer and (when run) the ablation."""
    scorers = result.scorers
    out = [f"{'window':<23} {'base':>6} {'events':>6}  " + " ".join(f"{s:>17}" for s in scorers)]
    for w in result.windows:
        cells = " ".join(
            f"{w.metrics[s].pr_auc:>17.4f}" if s in w.metrics else f"{'-':>17}" for s in scorers
        )
        out.append(
            f"{w.start:%Y-%m-%d}..{w.end:%Y-%m-%d}  {w.base_rate:>6.4f} {w.events:>6}  {cells}"
        )
    summary = result.summary()
    out.append(
        f"{summary['windows']} windows, mean base rate {summary['mean_base_rate']:.4f}; "
        "PR-AUC mean / median, ECE mean, windows best:"
    )
    for name, s in summary["scorers"].items():
        ratio = s["mean_pr_auc"] / summary["mean_base_rate"]
        out.append(
            f"  {name:<18} {s['mean_pr_auc']:.4f} / {s['median_pr_auc']:.4f}"
            f" ({ratio:.1f}x the base rate)  ECE {s['mean_ece']:.4f}  best in {s['windows_best']}"
        )
    if "model_beats" in summary:
        beats = ", ".join(f"{k} {v}" for k, v in summary["model_beats"].items())
        out.append(
            f"model beats, windows of {summary['windows']}: {beats}; every rival at once "
            f"{summary['model_beats_all']}"
        )
    ablation = result.ablation()
    if ablation.height:
        out.append(
            "ablation (mean PR-AUC change against the full model; drop: the family removed, "
            "alone: the family by itself):"
        )
        for r in ablation.iter_rows(named=True):
            out.append(
                f"  {r['family']:<14} {r['features']:>3} features  drop "
                f"{_signed(r['drop_mean_delta_pr_auc'])}  alone "
                f"{_signed(r['alone_mean_delta_pr_auc'])}  ({r['drop_windows']} windows)"
            )
    return out


def _signed(value: float) -> str:
    return "   nan" if math.isnan(value) else f"{value:+.4f}"


def write_outputs(result: WalkForwardEvaluation, folder: Path) -> list[Path]:
    """``windows.csv``, ``ablation.csv`` (when run) and ``pr_auc.png`` in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / "windows.csv"]
    result.table().write_csv(paths[0])
    ablation = result.ablation()
    if ablation.height:
        paths.append(folder / "ablation.csv")
        ablation.write_csv(paths[-1])
    paths.append(pr_auc_chart(result, folder / "pr_auc.png"))
    return paths


def pr_auc_chart(result: WalkForwardEvaluation, path: Path) -> Path:
    """PR-AUC per window, one line per scorer, and the window's base rate (dashed)."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    x = range(len(result.windows))
    scorers = result.scorers
    for name in scorers:
        y = [w.metrics[name].pr_auc if name in w.metrics else math.nan for w in result.windows]
        ax.plot(x, y, marker="o", lw=2.0 if name == "model" else 1.0, label=name)
    ax.plot(x, [w.base_rate for w in result.windows], "k--", lw=0.8, label="base rate")
    ax.set_xticks(list(x), [f"{w.start:%Y-%m-%d}" for w in result.windows], rotation=30)
    ax.set(ylabel="PR-AUC", title="Walk-forward PR-AUC per window")
    ax.legend(loc="upper left", fontsize=7)
    return save_figure(fig, path)


def log_to_mlflow(
    result: WalkForwardEvaluation,
    files: list[Path],
    *,
    run_name: str,
    params: Mapping[str, Any],
) -> str:
    """One parent run (``params``, the summary, ``files``) with a child run per window;
    returns the parent's run id. The caller has set the tracking URI and experiment."""
    summary = result.summary()
    with mlflow.start_run(run_name=run_name) as parent:
        mlflow.log_params({k: str(v) for k, v in params.items()})
        mlflow.set_tag("oihedge.kind", "walk_forward_evaluation")
        numbers = {"windows": summary["windows"], "mean_base_rate": summary["mean_base_rate"]}
        for name, s in summary["scorers"].items():
            numbers |= {f"{name}.{k}": v for k, v in s.items()}
        numbers |= {f"model_beats.{k}": v for k, v in summary.get("model_beats", {}).items()}
        mlflow.log_metrics({k: float(v) for k, v in numbers.items() if _finite(v)})
        for path in files:
            mlflow.log_artifact(str(path))
        for w in result.windows:
            with mlflow.start_run(run_name=f"window {w.start:%Y-%m-%d}", nested=True):
                mlflow.log_params({"start": w.start.isoformat(), "end": w.end.isoformat()})
                values = {
                    "base_rate": w.base_rate,
                    "rows": w.rows,
                    "train_rows": w.train_rows,
                    "events": w.events,
                }
                for name, m in w.metrics.items():
                    values |= {f"{name}.{k}": getattr(m, k) for k in CHILD_METRICS}
                values |= {_variant_key(k): v for k, v in w.variants.items()}
                mlflow.log_metrics({k: float(v) for k, v in values.items() if _finite(v)})
        return parent.info.run_id


def _variant_key(variant: str) -> str:
    """``-family`` / ``+family`` as an MLflow metric name (``+`` is not allowed in one)."""
    return ("ablation.drop." if variant.startswith("-") else "ablation.alone.") + variant[1:]


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)
