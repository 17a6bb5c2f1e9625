"""Evaluation plots as PNG files: PR curves, reliability diagram, gain importance, |SHAP|."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import precision_recall_curve  # noqa: E402

from models.metrics import reliability_curve  # noqa: E402


def pr_curves(y: np.ndarray, scores: dict[str, np.ndarray], path: Path) -> Path:
    """Precision-recall curve of every score on one axis."""
    fig, ax = plt.subplots(figsize=(6, 5))
    for name, p in scores.items():
        precision, recall, _ = precision_recall_curve(y, p)
        ax.plot(recall, precision, label=name, drawstyle="steps-post")
    ax.axhline(float(np.mean(y)), color="grey", lw=0.8, ls="--", label="base rate")
    ax.set(
        xlabel="recall",
        ylabel="precision",
        title="Precision-recall (held-out)",
        xlim=(0, 1),
        ylim=(0, 1.02),
    )
    ax.legend(loc="upper right", fontsize=8)
    return save_figure(fig, path)


def reliability(y: np.ndarray, scores: dict[str, np.ndarray], path: Path) -> Path:
    """Observed frequency against mean predicted probability, per bin."""
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--", label="perfect")
    for name, p in scores.items():
        mean_p, freq, _ = reliability_curve(y, p, n_bins=10)
        ax.plot(mean_p, freq, marker="o", label=name)
    ax.set(
        xlabel="mean predicted probability",
        ylabel="observed frequency",
        title="Reliability (held-out)",
        xlim=(0, 1),
        ylim=(0, 1),
    )
    ax.legend(loc="upper left", fontsize=8)
    return save_figure(fig, path)


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
