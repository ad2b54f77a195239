"""The safety supervisor, case by case: inputs, expected status, units, rule codes and reason words.

The base case is a pre-meal reading of 160 mg/dL for a patient whose usual dose at this meal is
5 U, with 40 U of insulin a day (so sensitivity 1500/40 = 37.5 mg/dL per U and carb ratio
500/40 = 12.5 g per U), a largest recent dose of 8 U and 20 U of regular insulin on a typical day.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from pathlib import Path

import pytest

from device.rules.safety import (
    INSUFFICIENT,
    NO_DOSE_DUE,
    SUGGEST,
    WITHHOLD,
    DecisionInputs,
    ProfileError,
    SafetyProfile,
    insulin_terms,
    measure_now,
    supervise,
)
from domain.dose_context import DoseBeforeLow

BASE = dict(
    model_units=5.2,
    glucose_mg_dl=160.0,
    glucose_age_min=2.0,
    hypo_symptoms_age_min=None,
    iob_units=0.0,
    regular_24h_units=10.0,
    usual_units=5.0,
    due="meal",
    total_daily_units=40.0,
    typical_daily_regular=20.0,
    largest_dose=8.0,
)
NOT_DUE = {"due": None}
BEDTIME = {"due": None, "bedtime": True}

# (name, overrides, status, units, rule codes, words expected in the reasons)
CASES = [
    # --- the glucose comes first, whatever the model says and whether or not one is loaded
    ("low withholds with treatment", {"glucose_mg_dl": 55.0}, WITHHOLD, 0.0, ["low_glucose"], "15 g"),
    (
        "severe low without a model",
        {"glucose_mg_dl": 35.0, "model_units": None},
        WITHHOLD,
        0.0,
        ["low_glucose"],
        "recheck glucose in 15 minutes",
    ),
    (
        "low with a negative model number",
        {"glucose_mg_dl": 35.0, "model_units": -0.27},
        WITHHOLD,
        0.0,
        ["low_glucose"],
        "fast-acting carbohydrate",
    ),
    (
        "low at a reading with no dose due",
        {"glucose_mg_dl": 60.0, **NOT_DUE},
        WITHHOLD,
        0.0,
        ["low_glucose"],
        "below 70",
    ),
    (
        "low with symptoms and insulin on board",
        {"glucose_mg_dl": 62.0, "hypo_symptoms_age_min": 10.0, "iob_units": 3.0},
        WITHHOLD,
        0.0,
        ["low_glucose"],
        "below 70",
    ),
    ("recent hypo symptoms withhold", {"hypo_symptoms_age_min": 90.0}, WITHHOLD, 0.0, ["hypo_symptoms"], "lock-out"),
    ("old hypo symptoms do not", {"hypo_symptoms_age_min": 300.0}, SUGGEST, 5.0, ["pen_step"], None),
    (
        "hypo symptoms win over a high glucose",
        {"glucose_mg_dl": 250.0, "hypo_symptoms_age_min": 30.0, "model_units": 14.0},
        WITHHOLD,
        0.0,
        ["hypo_symptoms"],
        "lock-out",
    ),
    ("stale glucose", {"glucose_age_min": 16.0}, INSUFFICIENT, 0.0, ["stale_glucose"], "minutes old"),
    (
        "52 mg/dL, then '50' typed in mmol/L two minutes later (901 mg/dL): measure again, no insulin",
        {"glucose_mg_dl": 901.0, "change_from_mg_dl": 52.0, "change_over_min": 2.0, "model_units": 9.0},
        INSUFFICIENT,
        0.0,
        ["implausible_change"],
        "a change no physiology allows. measure again and check the unit",
    ),
    (
        "a treated low rising 95 mg/dL in 15 min is physiology, not an error",
        {"glucose_mg_dl": 150.0, "change_from_mg_dl": 55.0, "change_over_min": 15.0},
        SUGGEST,
        5.0,
        ["pen_step"],
        None,
    ),
    (
        "symptoms just now with an old reading: withhold and measure now, not 'not enough data'",
        {"glucose_age_min": 40.0, "hypo_symptoms_age_min": 0.0},
        WITHHOLD,
        0.0,
        ["hypo_symptoms"],
        "no glucose was measured since: measure glucose now",
    ),
    (
        "symptoms with no reading at all",
        {"glucose_mg_dl": None, "glucose_age_min": None, "hypo_symptoms_age_min": 5.0},
        WITHHOLD,
        0.0,
        ["hypo_symptoms"],
        "measure glucose now",
    ),
    (
        "no glucose known",
        {"glucose_mg_dl": None, "glucose_age_min": None},
        INSUFFICIENT,
        0.0,
        ["no_glucose"],
        "measure glucose first",
    ),
    (
        "stale beats low: ask for a fresh reading",
        {"glucose_mg_dl": 50.0, "glucose_age_min": 200.0},
        INSUFFICIENT,
        0.0,
        ["stale_glucose"],
        "measure glucose again",
    ),
    (
        "very old glucose is at least 72 hours",
        {"glucose_age_min": 4320.0},
        INSUFFICIENT,
        0.0,
        ["stale_glucose"],
        "at least 72 hours",
    ),
    # --- no dose due: no meal, no one asking
    (
        "bedtime reading of 80 with no meal",
        {"glucose_mg_dl": 80.0, **BEDTIME},
        NO_DOSE_DUE,
        0.0,
        ["no_dose_due"],
        "no dose is due at bedtime",
    ),
    ("daytime reading in range", {"glucose_mg_dl": 140.0, **NOT_DUE}, NO_DOSE_DUE, 0.0, ["no_dose_due"], "is in range"),
    (
        "daytime high under the correction threshold",
        {"glucose_mg_dl": 230.0, **NOT_DUE},
        NO_DOSE_DUE,
        0.0,
        ["no_dose_due"],
        "only above 250",
    ),
    (
        "no dose due needs no model",
        {"glucose_mg_dl": 140.0, "model_units": None, **NOT_DUE},
        NO_DOSE_DUE,
        0.0,
        ["no_dose_due"],
        None,
    ),
    (
        "very high daytime: a correction only",
        {"glucose_mg_dl": 320.0, **NOT_DUE},
        SUGGEST,
        5.5,
        ["correction_only", "pen_step"],
        "correction only",
    ),
    (
        "high soon after a meal dose: no stacking",
        {"glucose_mg_dl": 320.0, "iob_units": 5.0, **NOT_DUE},
        NO_DOSE_DUE,
        0.0,
        ["no_dose_due", "insulin_on_board"],
        "still on board",
    ),
    (
        "very high with a little on board",
        {"glucose_mg_dl": 360.0, "iob_units": 1.0, **NOT_DUE},
        SUGGEST,
        5.5,
        ["correction_only", "pen_step"],
        "less 1.0 U still on board",
    ),
    (
        "bedtime correction halved",
        {"glucose_mg_dl": 320.0, **BEDTIME},
        SUGGEST,
        2.5,
        ["correction_only", "bedtime_reduced", "pen_step"],
        "at bedtime",
    ),
    (
        "bedtime high under its threshold",
        {"glucose_mg_dl": 280.0, **BEDTIME},
        NO_DOSE_DUE,
        0.0,
        ["no_dose_due"],
        "only above 300 mg/dL at bedtime",
    ),
    (
        "very high without insulin history",
        {"glucose_mg_dl": 320.0, "total_daily_units": None, **NOT_DUE},
        NO_DOSE_DUE,
        0.0,
        ["no_dose_due", "no_sensitivity"],
        "tell the physician",
    ),
    (
        "correction limited by history",
        {"glucose_mg_dl": 400.0, "largest_dose": 2.0, **NOT_DUE},
        SUGGEST,
        3.0,
        ["correction_only", "max_single"],
        "largest recent dose",
    ),
    # --- a dose is due: model, history and terms needed
    ("plain suggestion, rounded down to the pen step", {}, SUGGEST, 5.0, ["pen_step"], "pen step"),
    ("exact step needs no rounding", {"model_units": 4.5}, SUGGEST, 4.5, [], "the usual meal assumed"),
    ("glucose exactly at the limit is allowed", {"glucose_mg_dl": 70.0, "model_units": 3.0}, SUGGEST, 3.0, [], None),
    (
        "a meal announced",
        {"due": "meal", "meal_size": "typical", "model_units": 4.5},
        SUGGEST,
        4.5,
        [],
        "within every safety limit",
    ),
    ("a person asking", {"due": "request", "model_units": 4.5}, SUGGEST, 4.5, [], "a dose was asked for"),
    ("nan model output", {"model_units": math.nan}, INSUFFICIENT, 0.0, ["model_invalid"], "no valid model output"),
    ("infinite model output", {"model_units": math.inf}, INSUFFICIENT, 0.0, ["model_invalid"], None),
    ("missing model output", {"model_units": None}, INSUFFICIENT, 0.0, ["model_invalid"], None),
    ("negative model output", {"model_units": -1.0}, INSUFFICIENT, 0.0, ["model_negative"], "negative"),
    (
        "no dose at this time of day before",
        {"usual_units": None},
        INSUFFICIENT,
        0.0,
        ["no_slot_history"],
        "no regular dose is recorded at this time of day",
    ),
    (
        "no insulin totals and no profile terms",
        {"total_daily_units": None},
        INSUFFICIENT,
        0.0,
        ["no_sensitivity"],
        "physician's plan",
    ),
    (
        "cap above the usual dose, then the guard",
        {"model_units": 14.0},
        SUGGEST,
        6.5,
        ["above_usual_cap", "physiological_guard", "pen_step"],
        "above the usual dose",
    ),
    (
        "insulin on board lowers through the guard",
        {"iob_units": 2.0},
        SUGGEST,
        4.5,
        ["physiological_guard", "pen_step"],
        "still on board",
    ),
    (
        "over the target the guard's dose is rounded to the nearest pen step",
        {"glucose_mg_dl": 125.0, "model_units": 7.0},  # guard 5 + 15 / 37.5 = 5.4 U
        SUGGEST,
        5.5,
        ["physiological_guard", "pen_step"],
        "Rounded up from 5.40 U",
    ),
    (
        "under the target it is rounded down",
        {"glucose_mg_dl": 102.0, "model_units": 7.0},  # guard 5 − 8 / 37.5 = 4.79 U
        SUGGEST,
        4.5,
        ["physiological_guard", "pen_step"],
        "Rounded down from 4.79 U",
    ),
    (
        "insulin on board capped at half the plan's daily insulin",
        {"iob_units": 4.0, "model_units": 9.0, "glucose_mg_dl": 300.0, "plan_daily_units": 16.0},
        SUGGEST,
        4.0,  # 8 U on board at most, 4 U of it there already
        ["above_usual_cap", "physiological_guard", "max_iob"],
        "at most 8.0 U of insulin on board after a dose (50% of the plan's 16 U a day); 4.0 U is on board now",
    ),
    (
        "without a plan, half the patient's own daily insulin",
        {"iob_units": 3.0, "model_units": 9.0, "glucose_mg_dl": 300.0, "total_daily_units": 12.0},
        SUGGEST,
        3.0,
        ["above_usual_cap", "physiological_guard", "max_iob"],
        "50% of the patient's 12 U a day",
    ),
    ("tiny insulin on board ignored", {"iob_units": 0.3}, SUGGEST, 5.0, ["pen_step"], None),
    (
        "insulin on board removes everything",
        {"iob_units": 9.0},
        WITHHOLD,
        0.0,
        ["nothing_left", "physiological_guard"],
        "no insulin remains",
    ),
    (
        "near the low threshold the dose is lowered",
        {"glucose_mg_dl": 85.0},
        SUGGEST,
        4.0,
        ["physiological_guard", "pen_step"],
        "target",
    ),
    (
        "near low with insulin on board",
        {"glucose_mg_dl": 75.0, "iob_units": 2.0},
        SUGGEST,
        2.0,
        ["physiological_guard", "pen_step"],
        "−",
    ),
    (
        "daily limit from the patient's own history",
        {"regular_24h_units": 37.0},
        SUGGEST,
        3.0,
        ["max_daily"],
        "typical 20.0 U a day",
    ),
    ("daily limit reached", {"regular_24h_units": 40.0}, WITHHOLD, 0.0, ["nothing_left", "max_daily"], "last 24 h"),
    (
        "profile daily limit when no typical day is known",
        {"typical_daily_regular": None, "regular_24h_units": 76.0},
        SUGGEST,
        4.0,
        ["max_daily"],
        "the profile's daily limit",
    ),
    (
        "single limit from the largest recent dose",
        {"largest_dose": 3.0},
        SUGGEST,
        4.5,
        ["max_single"],
        "largest recent dose",
    ),
    (
        "the profile's single limit",
        {
            "model_units": 24.0,
            "usual_units": 22.0,
            "largest_dose": None,
            "glucose_mg_dl": 400.0,
            "typical_daily_regular": None,
        },
        SUGGEST,
        20.0,
        ["max_single"],
        "maximum single dose",
    ),
    # --- meals reach the dose
    (
        "more carbohydrate than usual",
        {"due": "meal", "meal_size": "more", "carbs_g": 75.0, "usual_carbs_g": 60.0},
        SUGGEST,
        6.5,
        ["meal_carbs", "pen_step"],
        "+1.2 U at 12 g per U",
    ),
    (
        "less carbohydrate than usual",
        {"due": "meal", "meal_size": "less", "carbs_g": 30.0, "usual_carbs_g": 60.0},
        SUGGEST,
        3.0,
        ["meal_carbs", "pen_step"],
        "-2.4 U",
    ),
    (
        "carbs with no earlier count",
        {"due": "meal", "carbs_g": 120.0, "largest_dose": 12.0},
        SUGGEST,
        10.0,
        ["meal_carbs", "pen_step"],
        "estimated from the usual dose",
    ),
    ("a bigger meal by size", {"due": "meal", "meal_size": "more"}, SUGGEST, 6.5, ["meal_size"], "larger than usual"),
    (
        "'larger than usual' but fewer grams than usual: flagged, the grams followed",
        {"due": "meal", "meal_size": "more", "carbs_g": 60.0, "usual_carbs_g": 80.0},
        SUGGEST,
        3.5,
        ["meal_carbs", "meal_contradiction", "pen_step"],
        "check the meal entry: it says larger than usual but 60 g is less than the usual 80 g",
    ),
    (
        "'smaller than usual' but more grams: flagged, the grams followed within the limits",
        {"due": "meal", "meal_size": "less", "carbs_g": 90.0, "usual_carbs_g": 60.0},
        SUGGEST,
        7.5,
        ["meal_carbs", "meal_contradiction", "pen_step"],
        "it says smaller than usual but 90 g is more than the usual 60 g; the dose follows the 90 g",
    ),
    ("a smaller meal by size", {"due": "meal", "meal_size": "less"}, SUGGEST, 4.0, ["meal_size", "pen_step"], "× 0.75"),
    (
        "carbs bounded by the guard",
        {"due": "meal", "carbs_g": 75.0, "usual_carbs_g": 30.0, "largest_dose": 12.0},
        SUGGEST,
        7.5,
        ["meal_carbs", "physiological_guard", "pen_step"],
        "physiological guard",
    ),
    # --- after a low: a treated pre-meal low, then the recheck at which the meal dose is due
    (
        "a meal dose within 3 h of a low is halved and rounded down",
        {"glucose_mg_dl": 90.0, "recent_lowest_mg_dl": 55.0},
        SUGGEST,
        2.0,
        ["physiological_guard", "after_low", "pen_step"],
        "glucose was 55 mg/dL, below 70",
    ),
    ("a recent 75 mg/dL is not a low", {"recent_lowest_mg_dl": 75.0}, SUGGEST, 5.0, ["pen_step"], None),
    (
        "a correction within 3 h of a low is halved",
        {"glucose_mg_dl": 320.0, "recent_lowest_mg_dl": 60.0, **NOT_DUE},
        SUGGEST,
        2.5,
        ["correction_only", "after_low", "pen_step"],
        "Reduced from 5.6 U to 2.8 U (50%)",
    ),
    # --- a bedtime snack, once a night, when what is on board is expected to take glucose low
    (
        "bedtime snack: 140 mg/dL with 2 U on board",
        {"glucose_mg_dl": 140.0, "iob_units": 2.0, "first_of_night": True, **BEDTIME},
        NO_DOSE_DUE,
        0.0,
        ["no_dose_due", "bedtime_snack"],
        "Offer a bedtime snack of 15 g of carbohydrate: glucose 140 mg/dL with 2.0 U of regular insulin still on board",
    ),
    (
        "no snack when nothing takes glucose under 110",
        {"glucose_mg_dl": 140.0, "first_of_night": True, **BEDTIME},
        NO_DOSE_DUE,
        0.0,
        ["no_dose_due"],
        None,
    ),
    (
        "a snack is offered once a night, not at every CGM value",
        {"glucose_mg_dl": 140.0, "iob_units": 2.0, **BEDTIME},
        NO_DOSE_DUE,
        0.0,
        ["no_dose_due"],
        None,
    ),
    (
        "the snack is capped at 30 g",
        {"glucose_mg_dl": 100.0, "iob_units": 6.0, "first_of_night": True, **BEDTIME},
        NO_DOSE_DUE,
        0.0,
        ["no_dose_due", "bedtime_snack"],
        "30 g",
    ),
    # --- titration: a dose at this time of day that a low followed caps the next ones
    (
        "at most 80 % of a same-slot dose that a low followed",
        {"dose_before_low": DoseBeforeLow(5.0, datetime(2026, 11, 19, 18, 0), 48.0)},
        SUGGEST,
        4.0,
        ["low_after_dose"],
        "5.0 U at this time of day on 19 Nov at 18:00 was followed by a low of 48 mg/dL",
    ),
    (
        "a smaller dose than the cap is left alone",
        {"model_units": 3.0, "dose_before_low": DoseBeforeLow(5.0, datetime(2026, 11, 19, 18, 0), 48.0)},
        SUGGEST,
        3.0,
        [],
        None,
    ),
    (
        "a correction is capped the same way",
        {"glucose_mg_dl": 320.0, "dose_before_low": DoseBeforeLow(4.0, datetime(2026, 11, 19, 12, 0), 60.0), **NOT_DUE},
        SUGGEST,
        3.0,
        ["correction_only", "low_after_dose", "pen_step"],
        "at most 80% of it",
    ),
    # --- the meal already has its dose: the readings after it (CGM) make no second dose due
    (
        "a reading after the meal's dose",
        {"glucose_mg_dl": 190.0, "meal_dosed_units": 4.0, **NOT_DUE},
        NO_DOSE_DUE,
        0.0,
        ["no_dose_due"],
        "the meal already has its dose (4.0 U given)",
    ),
]


@pytest.mark.parametrize("name, overrides, status, units, rules, words", CASES, ids=[c[0] for c in CASES])
def test_supervisor_case(name, overrides, status, units, rules, words):
    verdict = supervise(DecisionInputs(**(BASE | overrides)), SafetyProfile())
    assert verdict.status == status
    assert verdict.units == pytest.approx(units)
    assert verdict.rules == rules
    assert verdict.reasons, "every verdict explains itself"
    if words:
        assert words.lower() in " ".join(verdict.reasons).lower()


def test_a_low_says_when_to_recheck():
    verdict = supervise(DecisionInputs(**(BASE | {"glucose_mg_dl": 50.0})), SafetyProfile(hypo_recheck_min=20.0))
    assert verdict.recheck_min == 20.0
    assert supervise(DecisionInputs(**BASE), SafetyProfile()).recheck_min is None


def test_no_model_loaded_is_named_when_a_dose_is_due():
    verdict = supervise(DecisionInputs(**(BASE | {"model_units": None})), SafetyProfile(), "no bundle found")
    assert verdict.status == INSUFFICIENT and verdict.rules == ["no_model"]
    assert "no bundle found" in verdict.reasons[0]


@pytest.mark.parametrize("model_units", [0.0, 0.4, 3.3, 7.9, 8.0, 11.2, 19.9, 40.0, 99.0])
@pytest.mark.parametrize("iob", [0.0, 0.6, 4.0])
@pytest.mark.parametrize("given_24h", [0.0, 14.0, 38.0])
@pytest.mark.parametrize("glucose", [70.0, 110.0, 240.0, 420.0])
def test_a_due_dose_never_exceeds_the_model_number_or_a_limit(model_units, iob, given_24h, glucose):
    """With no meal adjustment the supervisor only lowers the model's number (but for rounding to the
    nearest pen step), never passes a limit, and passes the guard only by rounding to the nearest pen
    step at or above the target (below it, down)."""
    inputs = DecisionInputs(
        **(
            BASE
            | {"model_units": model_units, "iob_units": iob, "regular_24h_units": given_24h, "glucose_mg_dl": glucose}
        )
    )
    profile = SafetyProfile()
    verdict = supervise(inputs, profile)
    assert 0.0 <= verdict.units <= model_units + profile.pen_step_units / 2
    assert verdict.units <= min(profile.max_single_units, 1.5 * 8.0)
    assert verdict.units + given_24h <= 2.0 * 20.0 + 1e-9
    ceiling = 5.0 + (glucose - profile.target_mg_dl) / 37.5 - (iob if iob >= 0.5 else 0.0)
    rounding = profile.pen_step_units / 2 if glucose >= profile.target_mg_dl else 0.0
    assert verdict.units <= max(0.0, ceiling) + rounding + 1e-9
    assert verdict.units / profile.pen_step_units == pytest.approx(round(verdict.units / profile.pen_step_units))


@pytest.mark.parametrize("glucose", [75.0, 150.0, 249.0, 250.0, 300.0, 450.0])
@pytest.mark.parametrize("iob", [0.0, 1.0, 6.0])
@pytest.mark.parametrize("bedtime", [False, True])
def test_with_no_dose_due_at_most_a_correction(glucose, iob, bedtime):
    """Without a meal the number is never more than (glucose − target) / sensitivity − insulin on board."""
    profile = SafetyProfile()
    inputs = DecisionInputs(**(BASE | {"due": None, "glucose_mg_dl": glucose, "iob_units": iob, "bedtime": bedtime}))
    verdict = supervise(inputs, profile)
    correction = (glucose - profile.target_mg_dl) / 37.5 - iob
    threshold = 300.0 if bedtime else 250.0
    if glucose < threshold:
        assert verdict.status == NO_DOSE_DUE and verdict.units == 0.0
    assert verdict.units <= max(0.0, correction * (0.5 if bedtime else 1.0)) + 1e-9
    assert verdict.status in (NO_DOSE_DUE, SUGGEST)
    assert (verdict.units > 0) == (verdict.status == SUGGEST)
    assert verdict.rules[0] in ("no_dose_due", "correction_only")


def test_terms_from_the_profile_win_over_the_rules():
    profile = SafetyProfile(insulin_sensitivity_mg_dl_per_u=50.0, carb_ratio_g_per_u=10.0)
    terms = insulin_terms(DecisionInputs(**BASE), profile)
    assert terms is not None and (terms.sensitivity, terms.carb_ratio) == (50.0, 10.0)
    assert terms.source == "the patient's profile"
    estimated = insulin_terms(DecisionInputs(**BASE), SafetyProfile())
    assert estimated is not None and (estimated.sensitivity, estimated.carb_ratio) == (37.5, 12.5)
    assert insulin_terms(DecisionInputs(**(BASE | {"total_daily_units": None})), SafetyProfile()) is None
    half = insulin_terms(DecisionInputs(**BASE), SafetyProfile(carb_ratio_g_per_u=8.0))
    assert half is not None and (half.sensitivity, half.carb_ratio) == (37.5, 8.0)
    own = insulin_terms(DecisionInputs(**(BASE | {"own_carb_ratio": 9.0})), SafetyProfile())
    assert own is not None and (own.sensitivity, own.carb_ratio) == (37.5, 9.0)
    assert "own dosed meals" in own.source
    # a profile's terms let a new patient (no totals yet) be dosed
    verdict = supervise(DecisionInputs(**(BASE | {"total_daily_units": None})), profile)
    assert verdict.status == SUGGEST


def test_profile_overrides_apply():
    strict = SafetyProfile(low_glucose_mg_dl=90.0, max_single_units=4.0, pen_step_units=1.0, target_mg_dl=120.0)
    verdict = supervise(DecisionInputs(**(BASE | {"glucose_mg_dl": 85.0})), strict)
    assert verdict.status == WITHHOLD
    verdict = supervise(DecisionInputs(**BASE), strict)
    assert verdict.units == 4.0 and "max_single" in verdict.rules
    child = SafetyProfile(pen_step_units=0.1)
    assert supervise(DecisionInputs(**(BASE | {"model_units": 1.37, "usual_units": 1.5})), child).units == 1.4


@pytest.mark.parametrize(
    "bad",
    [
        {"low_glucose_mg_dl": 50.0},  # under the hard floor
        {"max_single_units": 31.0},  # over the hard cap
        {"max_daily_regular_units": 500.0},
        {"stale_glucose_min": 120.0},
        {"pen_step_units": 0.0},
        {"max_above_usual_units": -1.0},
        {"iob_ignore_below_units": float("nan")},
        {"target_mg_dl": 70.0},
        {"correction_above_mg_dl": 150.0},
        {"bedtime_correction_share": 1.5},
        {"history_limit_factor": 0.5},
        {"history_daily_factor": 4.0},
        {"hypo_treatment_g": 2.0},
        {"insulin_sensitivity_mg_dl_per_u": 1000.0},
        {"carb_ratio_g_per_u": 0.5},
        {"carb_ratio_g_per_u": True},
    ],
)
def test_profile_cannot_exceed_hard_limits(bad):
    with pytest.raises(ProfileError):
        SafetyProfile(**bad)


def test_profile_from_dict_rejects_unknown_keys():
    assert SafetyProfile.from_dict({"max_single_units": 10}).max_single_units == 10
    with pytest.raises(ProfileError, match="unknown safety setting"):
        SafetyProfile.from_dict({"max_singel_units": 10})
    with_terms = SafetyProfile.from_dict({"carb_ratio_g_per_u": 9})
    assert with_terms.to_dict()["carb_ratio_g_per_u"] == 9
    assert "insulin_sensitivity_mg_dl_per_u" not in with_terms.to_dict()


@pytest.mark.parametrize(
    ("overrides", "now"),
    [
        ({"glucose_age_min": 16.0}, True),  # stale: measure now
        ({"glucose_mg_dl": None, "glucose_age_min": None}, True),
        ({"glucose_age_min": 40.0, "hypo_symptoms_age_min": 1.0}, True),  # symptoms, no reading since
        ({"glucose_age_min": 2.0, "hypo_symptoms_age_min": 30.0}, False),  # measured after the symptoms
        ({"glucose_mg_dl": 55.0}, False),  # a low has its own recheck
        ({}, False),
    ],
)
def test_when_the_next_check_is_now(overrides, now):
    inputs = DecisionInputs(**{**BASE, **overrides})
    assert measure_now(supervise(inputs, SafetyProfile()), inputs) is now


def test_every_glucose_number_in_a_reason_names_its_unit():
    """The page converts 'N mg/dL' to mmol/L; a bare glucose number would be left in mg/dL beside mmol/L ones."""
    bare = re.compile(r"\b(?:glucose|target|below|above|about|was)\s+\d+(?:\.\d+)?(?!\.?\d|\s*mg/dL| U| g\b)")
    for _name, overrides, *_ in CASES:
        for reason in supervise(DecisionInputs(**{**BASE, **overrides}), SafetyProfile()).reasons:
            assert not bare.search(reason), reason


def test_every_rule_code_has_plain_words():
    """The clinician's day shows rules in words: every code the supervisor can write has them."""
    from device.rules.safety import RULE_WORDS

    emitted = {
        rule
        for _name, overrides, *_ in CASES
        for rule in supervise(DecisionInputs(**{**BASE, **overrides}), SafetyProfile()).rules
    }
    source = (Path(__file__).resolve().parents[1] / "device" / "rules" / "safety.py").read_text()
    written = set(re.findall(r'rules\.append\("([a-z_]+)"\)', source))
    written |= {c for pair in re.findall(r'\["([a-z_]+)"(?:, "([a-z_]+)")?\]', source) for c in pair if c}
    assert emitted <= written | {"nothing_left"}, emitted - written
    assert written | emitted <= set(RULE_WORDS), (written | emitted) - set(RULE_WORDS)


def test_a_high_reading_with_insulin_on_board_carries_its_two_hour_recheck():
    """The reason says 'recheck glucose in 2 hours': the answer's recheck (and so its next check) says so too."""
    inputs = DecisionInputs(**{**BASE, "due": None, "glucose_mg_dl": 300.0, "iob_units": 6.5})
    verdict = supervise(inputs, SafetyProfile())
    assert verdict.rules == ["no_dose_due", "insulin_on_board"] and verdict.recheck_min == 120
    assert "Recheck glucose in 2 hours" in verdict.reasons[-1]


def test_a_lowering_never_reads_as_from_a_number_to_the_same_number():
    from device.rules.safety import _from_to

    assert _from_to(5.2, 4.6) == "from 5.2 U to 4.6 U"
    assert _from_to(5.04, 4.96) == "from 5.04 U to 4.96 U"


def test_titration_raises_a_dose_from_the_history_to_the_plan():
    """The network copies the patient's usual 5 U; the plan, titrated after highs, says 6.5 U for this meal."""
    inputs = DecisionInputs(**(BASE | {"plan_meal_units": 6.5, "plan_sensitivity": 40.0, "plan_carb_ratio": 10.0}))
    verdict = supervise(inputs, SafetyProfile())
    assert verdict.status == SUGGEST and verdict.units == 6.5 and "plan_raised" in verdict.rules
    assert "Raised from 5.2 U to 6.5 U: the dosing plan's dose for this meal" in " ".join(verdict.reasons)
    lower = DecisionInputs(**(BASE | {"plan_meal_units": 3.0, "plan_sensitivity": 40.0, "plan_carb_ratio": 10.0}))
    assert "plan_raised" not in supervise(lower, SafetyProfile()).rules, "a plan below the pattern lowers nothing"
