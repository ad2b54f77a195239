"""Companion-model metrics: AUROC and AUPRC with bootstrap confidence intervals, and a
confusion matrix at a threshold chosen for sensitivity."""

from __future__ import annotations

import numpy as np

BOOTSTRAP_SEED = 0


def _both_classes(y: np.ndarray) -> bool:
    return 0 < int(y.sum()) < len(y)


def auroc(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p)) if _both_classes(y) else float("nan")


def auprc(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(y, p)) if _both_classes(y) else float("nan")


def bootstrap_ci(
    y: np.ndarray, p: np.ndarray, metric, resamples: int = 1000, level: float = 0.95
) -> tuple[float, float] | None:
    """Percentile interval of ``metric`` over patient resamples (None if it cannot be formed)."""
    y, p = np.asarray(y), np.asarray(p)
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    values = []
    for _ in range(resamples):
        pick = rng.integers(0, len(y), len(y))
        if _both_classes(y[pick]):
            values.append(metric(y[pick], p[pick]))
    if len(values) < resamples // 2:
        return None
    tail = (1.0 - level) / 2.0 * 100.0
    return float(np.percentile(values, tail)), float(np.percentile(values, 100.0 - tail))


def summary(y: np.ndarray, p: np.ndarray, resamples: int = 1000) -> dict:
    """AUROC and AUPRC with 95 % intervals, and the prevalence (AUPRC's chance level)."""
    y, p = np.asarray(y, dtype=int), np.asarray(p, dtype=float)
    return {
        "auroc": auroc(y, p),
        "auroc_ci95": bootstrap_ci(y, p, auroc, resamples),
        "auprc": auprc(y, p),
        "auprc_ci95": bootstrap_ci(y, p, auprc, resamples),
        "prevalence": float(y.mean()) if len(y) else float("nan"),
        "n": len(y),
        "positives": int(y.sum()),
    }


def threshold_for_sensitivity(y: np.ndarray, p: np.ndarray, target: float) -> float:
    """The highest threshold whose sensitivity (recall of positives) reaches ``target``."""
    positives = np.sort(np.asarray(p)[np.asarray(y) == 1])[::-1]
    if len(positives) == 0:
        return 0.5
    needed = int(np.ceil(target * len(positives)))
    return float(positives[max(needed, 1) - 1])


def confusion(y: np.ndarray, p: np.ndarray, threshold: float) -> dict:
    """Counts and rates at ``threshold`` (a probability at or above it is flagged)."""
    y = np.asarray(y, dtype=int)
    flagged = np.asarray(p) >= threshold
    tp = int((flagged & (y == 1)).sum())
    fp = int((flagged & (y == 0)).sum())
    fn = int((~flagged & (y == 1)).sum())
    tn = int((~flagged & (y == 0)).sum())

    def rate(a: int, b: int) -> float:
        return a / (a + b) if a + b else float("nan")

    return {
        "threshold": float(threshold),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
        "sensitivity": rate(tp, fn),
        "specificity": rate(tn, fp),
        "ppv": rate(tp, fp),
        "npv": rate(tn, fn),
    }
