"""Dose-model metrics of docs/evaluation.md ("Dose model on AIM-94"): MAE, RMSE, R² and the share within ±1 U."""

from __future__ import annotations

import numpy as np


def regression_metrics(actual: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """The four metrics on the rows given; non-finite predictions count as errors of the actual."""
    actual = np.asarray(actual, dtype=np.float64)
    predicted = np.asarray(predicted, dtype=np.float64)
    predicted = np.where(np.isfinite(predicted), predicted, 0.0)
    err = predicted - actual
    ss_tot = float(((actual - actual.mean()) ** 2).sum())
    return {
        "mae": float(np.abs(err).mean()),
        "rmse": float(np.sqrt((err**2).mean())),
        "r2": float(1.0 - (err**2).sum() / ss_tot) if ss_tot > 0 else float("nan"),
        "within_1u": float((np.abs(err) <= 1.0).mean()),
        "n": len(actual),
    }
