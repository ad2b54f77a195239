"""The baselines of docs/evaluation.md ("Dose model on AIM-94"), computed on the same rows as the network."""

from __future__ import annotations

import numpy as np

from domain.features import feature


def _fallback(current: np.ndarray, same_slot: np.ndarray) -> np.ndarray:
    """Same-slot value where the patient has one, else their last regular dose of any slot."""
    has_slot = current[:, feature("reg_same_slot_count")] > 0
    return np.where(has_slot, same_slot, current[:, feature("reg_last_units")])


def last_same_slot(current: np.ndarray) -> np.ndarray:
    """The patient's previous regular dose in the same slot."""
    return _fallback(current, current[:, feature("reg_same_slot_lag1")])


def median5_same_slot(current: np.ndarray) -> np.ndarray:
    """Median of the patient's last five regular doses in the same slot (the usual dose)."""
    return current[:, feature("reg_usual_units")].copy()


def fit_gradient_boosting(current: np.ndarray, targets: np.ndarray, seed: int = 0):
    """scikit-learn HistGradientBoosting on the decision point's tabular features."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    model = HistGradientBoostingRegressor(random_state=seed)
    model.fit(current, targets)
    return model
