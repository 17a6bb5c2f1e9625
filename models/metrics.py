"""Classification and alerting metrics for the cascade probability.

Pure functions of (labels, probabilities[, times]); no model, no I/O. Used for the
model and for every baseline alike, on the same rows.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import timedelta

import numpy as np
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score


@dataclass(frozen=True)
class ClassificationMetrics:
    """Metrics of one score on one window. NaN where undefined (e.g. one class only)."""

    n: int
    positives: int
    pr_auc: float
    roc_auc: float
    brier: float
    log_loss: float
    ece: float
    alert_rate: float
    alert_threshold: float
    precision_at_alert: float
    recall_at_alert: float
    event_recall_at_alert: float
    mean_lead_time_h: float

    def as_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}


def expected_calibration_error(y: np.ndarray, p: np.ndarray, n_bins: int = 10) -> float:
    """ECE: occupancy-weighted mean |mean predicted - observed frequency| over equal-width bins."""
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins!r}")
    y = np.asarray(y, dtype=float)
    p = np.asarray(p, dtype=float)
    if y.size == 0:
        return float("nan")
    mean_p, freq, count = reliability_curve(y, p, n_bins)
    return float(np.sum(count * np.abs(mean_p - freq)) / y.size)


def reliability_curve(
    y: np.ndarray, p: np.ndarray, n_bins: int = 10
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per equal-width bin: mean predicted, observed frequency, count (empty bins dropped)."""
    y = np.asarray(y, dtype=float)
    p = np.asarray(p, dtype=float)
    bins = np.minimum((p * n_bins).astype(int), n_bins - 1)
    mean_p, freq, count = [], [], []
    for b in range(n_bins):
        mask = bins == b
        if mask.any():
            mean_p.append(p[mask].mean())
            freq.append(y[mask].mean())
            count.append(mask.sum())
    return np.array(mean_p), np.array(freq), np.array(count)


def alert_threshold(p: np.ndarray, alert_rate: float) -> float:
    """The score above which a fraction ``alert_rate`` of rows raise an alert."""
    if not 0 < alert_rate < 1:
        raise ValueError(f"alert_rate must be in (0, 1), got {alert_rate!r}")
    return float(np.quantile(np.asarray(p, dtype=float), 1 - alert_rate))


def event_alerts(
    event_starts: np.ndarray,
    event_symbols: np.ndarray,
    times: np.ndarray,
    symbols: np.ndarray,
    alerts: np.ndarray,
    horizon: timedelta,
) -> tuple[float, float]:
    """Event recall and mean lead time (hours) of ``alerts``.

    An event is caught when its symbol has an alert in [start - horizon, start]; the lead
    time is start minus the first such alert. Returns (recall, mean lead hours); NaN
    without events (or without caught events, for the lead time).
    """
    if len(event_starts) == 0:
        return float("nan"), float("nan")
    horizon_ns = np.timedelta64(int(horizon.total_seconds() * 1e9), "ns")
    times = np.asarray(times).astype("datetime64[ns]")
    caught, leads = 0, []
    for start, symbol in zip(
        np.asarray(event_starts).astype("datetime64[ns]"), event_symbols, strict=True
    ):
        mask = (symbols == symbol) & alerts & (times >= start - horizon_ns) & (times <= start)
        if mask.any():
            caught += 1
            leads.append((start - times[mask].min()) / np.timedelta64(1, "h"))
    lead = float(np.mean(leads)) if leads else float("nan")
    return caught / len(event_starts), lead


def classification_metrics(
    y: np.ndarray,
    p: np.ndarray,
    *,
    alert_rate: float = 0.05,
    times: np.ndarray | None = None,
    symbols: np.ndarray | None = None,
    event_starts: np.ndarray | None = None,
    event_symbols: np.ndarray | None = None,
    horizon: timedelta = timedelta(hours=4),
) -> ClassificationMetrics:
    """Every metric of score ``p`` against binary ``y`` (rows with a label only).

    Event metrics need ``times``, ``symbols`` and the events; without them they are NaN.
    """
    y = np.asarray(y, dtype=float)
    p = np.clip(np.asarray(p, dtype=float), 0.0, 1.0)
    if y.shape != p.shape:
        raise ValueError(f"y and p must have the same shape, got {y.shape} and {p.shape}")
    both = 0 < y.sum() < y.size
    nan = float("nan")
    threshold = alert_threshold(p, alert_rate) if y.size else nan
    alerts = p > threshold if y.size else np.zeros(0, dtype=bool)
    if alerts.sum() == 0 and y.size:
        alerts = p >= threshold  # ties at the threshold: alert on them rather than on nothing
    precision = float(y[alerts].mean()) if alerts.any() else nan
    recall = float(alerts[y == 1].mean()) if (y == 1).any() else nan
    event_recall, lead = nan, nan
    if times is not None and symbols is not None and event_starts is not None:
        event_recall, lead = event_alerts(
            event_starts,
            np.asarray(event_symbols),
            times,
            np.asarray(symbols),
            alerts,
            horizon,
        )
    return ClassificationMetrics(
        n=int(y.size),
        positives=int(y.sum()),
        pr_auc=float(average_precision_score(y, p)) if both else nan,
        roc_auc=float(roc_auc_score(y, p)) if both else nan,
        brier=float(brier_score_loss(y, p)) if y.size else nan,
        log_loss=float(log_loss(y, np.clip(p, 1e-6, 1 - 1e-6), labels=[0, 1])) if y.size else nan,
        ece=expected_calibration_error(y, p),
        alert_rate=float(alerts.mean()) if y.size else nan,
        alert_threshold=threshold,
        precision_at_alert=precision,
        recall_at_alert=recall,
        event_recall_at_alert=event_recall,
        mean_lead_time_h=lead,
    )
