"""From a decision window and a model number to the supervisor's verdict (pure)."""

from __future__ import annotations

import numpy as np

from preprocessing.features import AGE_CAP_H, feature

from .safety import DecisionInputs, SafetyProfile, Verdict, supervise


def decision_inputs(window: np.ndarray, model_units: float | None) -> DecisionInputs:
    """Read what the supervisor needs from the raw (unscaled) current step of a window."""
    row = window[-1]
    glucose_known = row[feature("glucose_known")] > 0
    hypo_age_h = float(row[feature("hypo_age_h")])
    usual_known = row[feature("reg_same_slot_count")] > 0 or row[feature("reg_last_units")] > 0
    return DecisionInputs(
        model_units=model_units,
        glucose_mg_dl=float(row[feature("glucose_last_mg_dl")]) if glucose_known else None,
        glucose_age_min=float(row[feature("glucose_age_h")]) * 60.0 if glucose_known else None,
        hypo_symptoms_age_min=hypo_age_h * 60.0 if hypo_age_h < AGE_CAP_H else None,
        iob_units=float(row[feature("reg_iob_units")]),
        regular_24h_units=float(row[feature("reg_24h_units")]),
        usual_units=float(row[feature("reg_usual_units")]) if usual_known else None,
    )


def decide(window: np.ndarray, model_units: float | None, profile: SafetyProfile) -> Verdict:
    """The supervised suggestion for one decision window."""
    return supervise(decision_inputs(window, model_units), profile)
