"""From a decision window, its dose context and a model number to the supervisor's verdict (pure).

One path for every caller — the device (:meth:`device.advisor.Advisor.decide`), ``advisor evaluate``
(precomputed windows) and the in-silico trial — so they cannot drift apart: :func:`decide_at` reads
a patient's history at a time, :func:`decide` takes the window and context already read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import datetime

import numpy as np

from device.rules.plan import PlanTracker
from device.rules.safety import DecisionInputs, SafetyProfile, Verdict, supervise
from domain.dose_context import DoseContext, dose_context
from domain.features import AGE_CAP_H, PatientHistory, feature, window_at

_SLOT_FEATURES = ("slot_morning", "slot_midday", "slot_evening", "slot_bedtime")


def decision_inputs(
    window: np.ndarray,
    model_units: float | None,
    context: DoseContext,
    tracker: PlanTracker | None = None,
    basal: bool = False,
) -> DecisionInputs:
    """What the supervisor needs: the raw (unscaled) current step of a window, the dose context and
    the patient's dosing plan and eating state (``tracker``); ``basal``: the basal dose is asked for.

    Every field of :class:`DoseContext` is a field of :class:`DecisionInputs` of the same name.
    """
    row = window[-1]
    slot = next(i for i, name in enumerate(_SLOT_FEATURES) if row[feature(name)] > 0)
    plan = tracker.plan if tracker is not None else None
    glucose_known = row[feature("glucose_known")] > 0
    hypo_age_h = float(row[feature("hypo_age_h")])
    same_slot = row[feature("reg_same_slot_count")] > 0
    return DecisionInputs(
        model_units=model_units,
        glucose_mg_dl=float(row[feature("glucose_last_mg_dl")]) if glucose_known else None,
        glucose_age_min=float(row[feature("glucose_age_h")]) * 60.0 if glucose_known else None,
        hypo_symptoms_age_min=hypo_age_h * 60.0 if hypo_age_h < AGE_CAP_H else None,
        iob_units=float(row[feature("reg_iob_units")]),
        regular_24h_units=float(row[feature("reg_24h_units")]),
        usual_units=float(row[feature("reg_same_slot_median5")]) if same_slot else None,
        plan_meal_units=plan.meal_units(slot) if plan is not None else None,
        plan_sensitivity=plan.sensitivity if plan is not None else None,
        plan_carb_ratio=plan.carb_ratio(slot) if plan is not None else None,
        plan_basal_units=plan.basal_units if plan is not None else None,
        plan_daily_units=plan.basal_units + sum(plan.meals) if plan is not None else None,
        nutrition=tracker.nutrition if tracker is not None else None,
        plan_note=plan.last_change(slot) if plan is not None else None,
        basal=basal,
        **{f.name: getattr(context, f.name) for f in fields(DoseContext)},
    )


@dataclass(frozen=True, slots=True)
class Decision:
    """What one decision read and concluded: the model's own number, the supervisor's inputs and verdict."""

    model_units: float | None
    inputs: DecisionInputs
    verdict: Verdict


def decide(
    window: np.ndarray,
    model_units: float | None,
    context: DoseContext,
    profile: SafetyProfile,
    tracker: PlanTracker | None = None,
    basal: bool = False,
    model_problem: str | None = None,
) -> Decision:
    """The supervised decision for one window (``tracker``: the patient's plan and eating state;
    ``model_problem``: why no model number exists, said in the answer)."""
    inputs = decision_inputs(window, model_units, context, tracker, basal)
    return Decision(model_units, inputs, supervise(inputs, profile, model_problem))


def decide_at(
    history: PatientHistory,
    at: datetime,
    model: Callable[[np.ndarray], float] | None,
    profile: SafetyProfile,
    request: bool = False,
    tracker: PlanTracker | None = None,
    basal: bool = False,
    model_problem: str | None = None,
) -> Decision:
    """The decision for a patient's history at ``at``: the window and dose context known then, the
    model's number on the window (``model``: None when no model is loaded), the supervisor's verdict."""
    window = window_at(history, at)
    model_units = model(window) if model is not None else None
    context = dose_context(history, at, request)
    return decide(window, model_units, context, profile, tracker, basal, model_problem)
