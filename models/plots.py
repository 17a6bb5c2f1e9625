"""Evaluation plots as PNG files: PR curves, reliability diagram, gain importance, |SHAP|."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import average_precision_score, precision_recall_curve  # noqa: E402

#: bins of the reliability diagram: equal counts of rows, so a rare event's probabilities
#: (all below 0.2, say) fill every bin instead of the first of ten equal widths
RELIABILITY_BINS = 10


def pr_curves(y: np.ndarray, scores: dict[str, np.ndarray], path: Path) -> Path:
    """Precision-recall curve of every score on one axis (legend: AP per score, base rate)."""
    return save_figure(pr_figure(y, scores), path)


def pr_figure(y: np.ndarray, scores: dict[str, np.ndarray]) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(6, 5))
    for name, p in scores.items():
        precision, recall, _ = precision_recall_curve(y, p)
        ap = average_precision_score(y, p)
        ax.plot(recall, precision, label=f"{name} (AP {ap:.3f})", drawstyle="steps-post")
    rate = float(np.mean(y))
    ax.axhline(rate, color="grey", lw=0.8, ls="--", label=f"base rate {rate:.3f}")
    ax.set(
        xlabel="recall",
        ylabel="precision",
        title="Precision-recall (held-out)",
        xlim=(0, 1),
        ylim=(0, 1.02),
    )
    ax.legend(loc="upper right", fontsize=8)
    return fig


def reliability(y: np.ndarray, scores: dict[str, np.ndarray], path: Path) -> Path:
    """Observed frequency against mean predicted probability per equal-count bin, zoomed
    to the range the probabilities occupy, above a histogram of the scores."""
    return save_figure(reliability_figure(y, scores), path)


def _equal_count_bins(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(p, kind="stable")
    chunks = [c for c in np.array_split(order, RELIABILITY_BINS) if c.size]
    return (np.array([p[c].mean() for c in chunks]), np.array([y[c].mean() for c in chunks]))


def reliability_figure(y: np.ndarray, scores: dict[str, np.ndarray]) -> plt.Figure:
    y = np.asarray(y, dtype=float)
    fig, (ax, hist) = plt.subplots(
        2, 1, figsize=(6, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    points = {name: _equal_count_bins(y, np.asarray(p, dtype=float)) for name, p in scores.items()}
    top = max(
        [float(np.quantile(np.asarray(p, dtype=float), 0.999)) for p in scores.values()]
        + [float(f.max()) for _, f in points.values()]
        + [float(y.mean())]
    )
    top = min(1.0, 1.1 * top) or 1.0
    ax.plot([0, top], [0, top], color="grey", lw=0.8, ls="--", label="perfect")
    for name, (mean_p, freq) in points.items():
        ax.plot(mean_p, freq, marker="o", label=name)
    ax.set(
        ylabel="observed frequency of the event",
        title=f"Reliability (held-out; {RELIABILITY_BINS} equal-count bins)",
        xlim=(0, top),
        ylim=(0, top),
    )
    ax.legend(loc="upper left", fontsize=8)
    edges = np.linspace(0, top, 41)
    for name, p in scores.items():
        hist.hist(np.clip(p, 0, top), bins=edges, histtype="step", label=name)
    hist.set(
        xlabel="predicted probability of the event",
        ylabel="rows (log)",
        yscale="log",
    )
    return fig


def importance(names: list[str], values: np.ndarray, title: str, path: Path, top: int = 20) -> Path:
    """Horizontal bars of the ``top`` largest values."""
    order = np.argsort(values)[::-1][:top][::-1]
    fig, ax = plt.subplots(figsize=(7, max(3, 0.3 * len(order) + 1)))
    ax.barh([names[i] for i in order], values[order])
    ax.set(title=title)
    ax.tick_params(axis="y", labelsize=7)
    return save_figure(fig, path)


def save_figure(fig: plt.Figure, path: Path) -> Path:
    """Write ``fig`` as PNG (creating the folder), close it, return ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
