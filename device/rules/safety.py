"""The safety supervisor: every dose number passes a chain of rules that may only lower it.

Pure logic, no I/O. Modelled on the constraint chains of AndroidAPS and oref0's
determine-basal and on the bolus-wizard terms (carbohydrate, sensitivity, target, insulin on
board). The order is the order of danger (docs/safety.md):

1. the glucose first — none known, too old, low (withhold with treatment advice and a recheck
   time), hypoglycaemia symptoms — whatever the model says and whether or not one is loaded;
2. is a dose due? Only a meal (announced, or a pre-meal reading) or a person asking makes one
   due; any other reading is answered ``no_dose_due``, or with a conservative correction when
   the glucose is far above the correction threshold;
3. a due dose needs a model number, same-slot dosing history and the patient's insulin terms;
   the meal moves it (carbohydrate against the usual count, or the announced size); then the
   limits lower it: at most a little above the usual dose, the physiological guard (meal +
   correction − insulin on board), single and daily limits fitted to the patient's own history
   under the profile's and the hard ones, and last the pen step, always rounded down.

Every rule that changes or blocks the number says so in plain words and leaves a stable code.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Final

from device.contract.messages import SuggestionStatus
from domain.dose_context import LOW_AFTER_DOSE_MIN, RECENT_LOW_MIN, BasalGiven, DoseBeforeLow, Due

SUGGEST: Final = "suggest"
WITHHOLD: Final = "withhold"
INSUFFICIENT: Final = "insufficient_data"
NO_DOSE_DUE: Final = "no_dose_due"

HARD_MAX_SINGLE_UNITS = 30.0
HARD_MAX_BASAL_UNITS = 80.0
HARD_MAX_DAILY_REGULAR_UNITS = 100.0
HARD_MAX_IOB_UNITS = 60.0
HARD_MIN_LOW_GLUCOSE_MG_DL = 70.0
HARD_MAX_STALE_GLUCOSE_MIN = 30.0
HARD_MIN_TARGET_MG_DL = 90.0
HARD_MIN_CORRECTION_ABOVE_MG_DL = 180.0
STALE_AGE_CAP_MIN = 72 * 60.0  # glucose ages are capped at 72 h by the features
IN_RANGE_MAX_MG_DL = 180.0
VERY_HIGH_MG_DL = 250.0
SENSITIVITY_RULE = 1500.0  # mg/dL per U = 1500 / total daily dose (regular insulin)
CARB_RATIO_RULE = 500.0  # g per U = 500 / total daily dose
IMPLAUSIBLE_CHANGE_MG_DL = 100.0  # a change this large ...
MAX_PLAUSIBLE_MG_DL_PER_MIN = 10.0  # ... faster than this is not glucose moving but an entry or a meter wrong
IOB_RECHECK_MIN = 120.0  # a high reading with insulin on board: see where it goes before anything more
SIZE_FACTORS: Final = {"less": 0.75, "typical": 1.0, "more": 1.25}
PATTERN_BOUNDS = (0.8, 1.25)  # how far the network's reading of the patient's pattern may move the plan's meal dose
NPO_BASAL_SHARE = 0.8  # nothing by mouth: basal lowered by a fifth (ADA inpatient care)
MEAL_SIZE_WORDS: Final = {"less": "smaller than usual", "typical": "usual", "more": "larger than usual"}

_OPTIONAL = ("insulin_sensitivity_mg_dl_per_u", "carb_ratio_g_per_u")

RULE_WORDS: Final = {  # each rule code in plain words, for the clinician's day and reports
    "no_glucose": "no glucose reading known",
    "stale_glucose": "glucose reading too old",
    "implausible_change": "a change no physiology allows: measure again",
    "low_glucose": "low glucose: withheld and treated",
    "hypo_symptoms": "hypoglycaemia symptoms: withheld",
    "no_dose_due": "no dose due",
    "bedtime_snack": "bedtime snack advised",
    "insulin_on_board": "insulin still on board: no correction",
    "no_sensitivity": "no insulin sensitivity known",
    "correction_only": "correction only",
    "bedtime_reduced": "correction reduced at bedtime",
    "no_model": "no dose model loaded",
    "model_invalid": "no valid model output",
    "model_negative": "negative model output",
    "no_slot_history": "no dose at this time of day in the history",
    "plan_meal": "the plan's meal dose",
    "plan_correction": "correction by the plan",
    "pattern": "moved by the patient's own pattern",
    "plan_raised": "raised to the titrated plan",
    "meal_first": "give only once the meal is recorded",
    "npo": "nothing by mouth: no meal insulin",
    "eating_uncertain": "eating uncertain: dose after the meal",
    "eaten_share": "dose for the share eaten",
    "basal_plan": "basal by the plan",
    "basal_npo": "basal lowered: nothing by mouth",
    "basal_given": "basal already given today",
    "no_basal_plan": "no basal plan: weight needed",
    "max_basal": "basal limit",
    "meal_carbs": "meal carbohydrate against the usual",
    "meal_size": "meal size against the usual",
    "meal_contradiction": "meal size and grams contradict: check the entry",
    "above_usual_cap": "capped near the usual dose",
    "physiological_guard": "lowered by the physiological guard",
    "low_after_dose": "lowered: a low followed this dose before",
    "after_low": "reduced after a recent low",
    "max_single": "single-dose limit",
    "max_daily": "daily limit",
    "max_iob": "insulin on board limit",
    "pen_step": "rounded to the pen step",
    "nothing_left": "nothing left to give",
}


class ProfileError(ValueError):
    """A safety profile value is out of its allowed range."""


@dataclass(frozen=True)
class SafetyProfile:
    """Per-patient limits and terms; defaults are conservative and every value is checked on creation.

    ``insulin_sensitivity_mg_dl_per_u`` and ``carb_ratio_g_per_u`` are set by a clinician who
    knows them; otherwise they are estimated from the patient's total daily dose.
    """

    low_glucose_mg_dl: float = 70.0
    hypo_treatment_g: float = 15.0
    hypo_recheck_min: float = 15.0
    hypo_symptoms_lockout_h: float = 4.0
    stale_glucose_min: float = 15.0
    target_mg_dl: float = 110.0
    correction_above_mg_dl: float = 250.0
    bedtime_correction_above_mg_dl: float = 300.0
    bedtime_correction_share: float = 0.5
    after_low_share: float = 0.5
    low_after_dose_share: float = 0.8
    bedtime_snack_below_mg_dl: float = 110.0
    bedtime_snack_max_g: float = 30.0
    max_single_units: float = 20.0
    max_basal_units: float = 40.0
    max_daily_regular_units: float = 80.0
    max_iob_units: float = 25.0  # insulin on board after a dose, at most (oref0 max_iob, AAPS maxIOB)
    max_iob_share: float = 0.5  # … and at most this share of the patient's daily insulin (plan or own)
    history_limit_factor: float = 1.5
    history_daily_factor: float = 2.0
    max_above_usual_units: float = 3.0
    iob_ignore_below_units: float = 0.5
    pen_step_units: float = 0.5
    insulin_sensitivity_mg_dl_per_u: float | None = None
    carb_ratio_g_per_u: float | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None and f.name in _OPTIONAL:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ProfileError(f"{f.name} must be a finite number")
            if value < 0:
                raise ProfileError(f"{f.name} must not be negative")
        self._check_ranges()

    def _check_ranges(self) -> None:
        checks = [
            (
                self.low_glucose_mg_dl >= HARD_MIN_LOW_GLUCOSE_MG_DL,
                f"low_glucose_mg_dl may not be below {HARD_MIN_LOW_GLUCOSE_MG_DL:g} mg/dL",
            ),
            (
                0 < self.stale_glucose_min <= HARD_MAX_STALE_GLUCOSE_MIN,
                f"stale_glucose_min must be in (0, {HARD_MAX_STALE_GLUCOSE_MIN:g}] minutes",
            ),
            (
                0 < self.max_single_units <= HARD_MAX_SINGLE_UNITS,
                f"max_single_units must be in (0, {HARD_MAX_SINGLE_UNITS:g}] U",
            ),
            (
                0 < self.max_basal_units <= HARD_MAX_BASAL_UNITS,
                f"max_basal_units must be in (0, {HARD_MAX_BASAL_UNITS:g}] U",
            ),
            (
                0 < self.max_daily_regular_units <= HARD_MAX_DAILY_REGULAR_UNITS,
                f"max_daily_regular_units must be in (0, {HARD_MAX_DAILY_REGULAR_UNITS:g}] U",
            ),
            (0 < self.pen_step_units <= 2, "pen_step_units must be in (0, 2] U"),
            (0 < self.max_iob_units <= HARD_MAX_IOB_UNITS, f"max_iob_units must be in (0, {HARD_MAX_IOB_UNITS:g}] U"),
            (0.2 <= self.max_iob_share <= 1, "max_iob_share must be in [0.2, 1]"),
            (5 <= self.hypo_treatment_g <= 60, "hypo_treatment_g must be in [5, 60] g"),
            (5 <= self.hypo_recheck_min <= 60, "hypo_recheck_min must be in [5, 60] minutes"),
            (
                HARD_MIN_TARGET_MG_DL <= self.target_mg_dl <= 180 and self.target_mg_dl > self.low_glucose_mg_dl,
                f"target_mg_dl must be in [{HARD_MIN_TARGET_MG_DL:g}, 180] mg/dL and above low_glucose_mg_dl",
            ),
            (
                min(self.correction_above_mg_dl, self.bedtime_correction_above_mg_dl)
                >= HARD_MIN_CORRECTION_ABOVE_MG_DL,
                f"correction thresholds may not be below {HARD_MIN_CORRECTION_ABOVE_MG_DL:g} mg/dL",
            ),
            (self.bedtime_correction_share <= 1, "bedtime_correction_share must be in [0, 1]"),
            (self.after_low_share <= 1, "after_low_share must be in [0, 1]"),
            (self.low_after_dose_share <= 1, "low_after_dose_share must be in [0, 1]"),
            (self.bedtime_snack_below_mg_dl <= 180, "bedtime_snack_below_mg_dl must be in [0, 180] mg/dL (0: never)"),
            (10 <= self.bedtime_snack_max_g <= 60, "bedtime_snack_max_g must be in [10, 60] g"),
            (1 <= self.history_limit_factor <= 3, "history_limit_factor must be in [1, 3]"),
            (1 <= self.history_daily_factor <= 3, "history_daily_factor must be in [1, 3]"),
            (
                self.insulin_sensitivity_mg_dl_per_u is None or 5 <= self.insulin_sensitivity_mg_dl_per_u <= 500,
                "insulin_sensitivity_mg_dl_per_u must be in [5, 500] mg/dL per U",
            ),
            (
                self.carb_ratio_g_per_u is None or 2 <= self.carb_ratio_g_per_u <= 150,
                "carb_ratio_g_per_u must be in [2, 150] g per U",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ProfileError(message)

    @classmethod
    def from_dict(cls, data: dict) -> SafetyProfile:
        """Build from config; unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ProfileError(f"unknown safety setting(s): {', '.join(sorted(unknown))}")
        return cls(**data)

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True, slots=True)
class DecisionInputs:
    """What the supervisor knows at a decision; ``None`` means not known.

    ``due`` says why a dose is due (``request``, ``meal``, ``pre_meal``) or ``None``;
    ``usual_units`` is the patient's recent dose in the same time-of-day slot only.
    """

    model_units: float | None
    glucose_mg_dl: float | None
    glucose_age_min: float | None
    hypo_symptoms_age_min: float | None
    iob_units: float
    regular_24h_units: float
    usual_units: float | None
    due: Due | None = None
    meal_size: str | None = None
    carbs_g: float | None = None
    usual_carbs_g: float | None = None
    total_daily_units: float | None = None
    typical_daily_regular: float | None = None
    largest_dose: float | None = None
    own_carb_ratio: float | None = None
    bedtime: bool = False
    meal_dosed_units: float | None = None
    recent_lowest_mg_dl: float | None = None
    dose_before_low: DoseBeforeLow | None = None
    first_of_night: bool = False
    change_from_mg_dl: float | None = None  # the reading before, and the minutes between the two
    change_over_min: float | None = None
    eaten_share: float | None = None
    basal_given: BasalGiven | None = None
    plan_meal_units: float | None = None  # the patient's dosing plan (device/rules/plan.py), when one is set
    plan_sensitivity: float | None = None
    plan_carb_ratio: float | None = None
    plan_basal_units: float | None = None
    plan_daily_units: float | None = None  # the plan's basal and three usual meals
    nutrition: str | None = None  # the eating state recorded last: eating, npo, uncertain
    plan_note: str | None = None  # the latest change of the plan's dose for this meal, in words
    basal: bool = False  # the long-acting (basal) dose is asked for, not meal insulin


@dataclass(frozen=True, slots=True)
class Verdict:
    """The supervisor's answer: status, the only number to act on, why, and which rules acted.

    ``rules`` holds a stable code per rule that changed or blocked the number (the first one
    is the cause of a withhold, insufficient-data or no-dose-due answer), for reports and
    dashboards. ``recheck_min`` is when glucose must be measured again (after a low);
    ``carbs_g`` is the carbohydrate to eat now (a low's treatment, a bedtime snack).
    """

    status: SuggestionStatus
    units: float
    reasons: list[str] = field(default_factory=list)
    rules: list[str] = field(default_factory=list)
    recheck_min: float | None = None
    carbs_g: float | None = None
    meal_first: bool = False  # a pre-meal dose: given only once the meal is recorded (its own answer follows)


@dataclass(frozen=True, slots=True)
class InsulinTerms:
    """Insulin sensitivity (mg/dL per U) and carbohydrate ratio (g per U), and where they come from."""

    sensitivity: float
    carb_ratio: float
    source: str


def _fmt(units: float) -> str:
    return f"{units:.1f} U"


def _from_to(before: float, after: float) -> str:
    """The change in words, with two decimals where one would show the same number twice."""
    digits = 1 if f"{before:.1f}" != f"{after:.1f}" else 2
    return f"from {before:.{digits}f} U to {after:.{digits}f} U"


def _describe_age(age_min: float) -> str:
    if age_min < 1:
        return "less than a minute"
    if age_min >= STALE_AGE_CAP_MIN:
        return f"at least {STALE_AGE_CAP_MIN / 60:.0f} hours"
    if age_min < 120:
        return f"{age_min:.0f} minutes"
    return f"{age_min / 60:.1f} hours"


def _floor_to_step(units: float, step: float) -> float:
    return math.floor(units / step + 1e-9) * step


def glucose_state(mg_dl: float, profile: SafetyProfile) -> str:
    """The glucose in plain words: low, in range, high or very high."""
    if mg_dl < profile.low_glucose_mg_dl:
        return "low"
    if mg_dl <= IN_RANGE_MAX_MG_DL:
        return "in range"
    return "high" if mg_dl < VERY_HIGH_MG_DL else "very high"


def insulin_terms(inputs: DecisionInputs, profile: SafetyProfile) -> InsulinTerms | None:
    """Sensitivity and carb ratio: the profile's where a clinician set them, else estimated.

    Sensitivity by the 1500 rule on the patient's own total daily insulin once two days of it
    are recorded, else by the plan's (by weight). Carb ratio from the patient's own dosed meals
    (carbs ÷ units) when enough are recorded, else the dosing plan's for this meal
    (device/rules/plan.py), else by the 500 rule. A dose by the plan uses the plan's ratio.
    """
    tdd = inputs.total_daily_units
    known = tdd is not None and tdd > 0
    isf = profile.insulin_sensitivity_mg_dl_per_u
    cr = profile.carb_ratio_g_per_u
    if isf is not None and cr is not None:
        return InsulinTerms(isf, cr, "the patient's profile")
    if not known and inputs.plan_sensitivity is None:
        return None
    sources = ["the profile"] if isf is not None or cr is not None else []
    if isf is None and known:
        assert tdd is not None
        isf = SENSITIVITY_RULE / tdd
        sources.append(f"1500 ÷ the patient's {tdd:.0f} U of insulin a day")
    elif isf is None:
        assert inputs.plan_sensitivity is not None
        isf = inputs.plan_sensitivity
        sources.append("1500 ÷ the plan's daily insulin by weight")
    if cr is None and inputs.own_carb_ratio is not None:
        cr = inputs.own_carb_ratio
        sources.append("the patient's own dosed meals")
    elif cr is None and inputs.plan_carb_ratio is not None:
        cr = inputs.plan_carb_ratio
        sources.append("the dosing plan's carb ratio for this meal")
    elif cr is None:
        assert tdd is not None
        cr = CARB_RATIO_RULE / tdd
        sources.append(f"500 ÷ the patient's {tdd:.0f} U a day")
    return InsulinTerms(isf, cr, ", ".join(sources))


def supervise(inputs: DecisionInputs, profile: SafetyProfile, model_problem: str | None = None) -> Verdict:
    """Run the rule chain; ``model_problem`` says why no model is loaded, when none is."""
    blocked = _glucose_checks(inputs, profile)
    if blocked is not None:
        return blocked
    if inputs.basal:
        return _basal(inputs, profile)
    if inputs.due in ("meal", "pre_meal") and inputs.nutrition == "npo":
        return _not_due(inputs, profile, "the patient is nil by mouth (npo): no meal insulin")
    if inputs.due == "pre_meal" and inputs.nutrition == "uncertain":
        return _not_due(
            inputs,
            profile,
            "whether the patient eats is uncertain: no meal insulin before the meal. After it, record the meal "
            "with the share eaten, and the dose for that share follows",
        )
    if inputs.due is None:
        return _not_due(inputs, profile)
    if inputs.plan_meal_units is not None and not _history_dose(inputs):
        return _meal_first(_due_by_plan(inputs, profile), inputs)
    return _meal_first(_due(inputs, profile, model_problem), inputs)


def _history_dose(inputs: DecisionInputs) -> bool:
    """Whether the patient's own history can dose this meal: a valid network number and doses at this time.

    History first, the plan where there is none (a new patient, a new time of day, no model): the
    in-silico trial chose this order (docs/insilico.md, "The plan and the network").
    """
    m = inputs.model_units
    return m is not None and math.isfinite(m) and m >= 0 and inputs.usual_units is not None


def _meal_first(verdict: Verdict, inputs: DecisionInputs) -> Verdict:
    """A dose answered to a pre-meal reading, with no meal recorded: it may be given only once the meal is."""
    if verdict.status != SUGGEST or inputs.due != "pre_meal":
        return verdict
    return replace(
        verdict,
        reasons=[
            *verdict.reasons,
            "Give it only if the patient eats this meal: record the meal first (its answer replaces this one). "
            "If the patient does not eat, give no meal insulin.",
        ],
        rules=[*verdict.rules, "meal_first"],
        meal_first=True,
    )


def _glucose_checks(inputs: DecisionInputs, profile: SafetyProfile) -> Verdict | None:
    """A fresh low first, then recent hypoglycaemia symptoms (whatever the reading's age), then no or an old reading."""
    g, g_age = inputs.glucose_mg_dl, inputs.glucose_age_min
    fresh = g is not None and g_age is not None and g_age <= profile.stale_glucose_min
    if fresh and g is not None and g < profile.low_glucose_mg_dl:
        return Verdict(
            WITHHOLD,
            0.0,
            [
                f"Glucose {g:.0f} mg/dL is below {profile.low_glucose_mg_dl:.0f} mg/dL: no insulin.",
                f"Treat the low now: {profile.hypo_treatment_g:.0f} g of fast-acting carbohydrate by mouth, then "
                f"recheck glucose in {profile.hypo_recheck_min:.0f} minutes. If the patient cannot swallow safely, "
                "follow the severe hypoglycaemia protocol and call the physician.",
            ],
            ["low_glucose"],
            recheck_min=profile.hypo_recheck_min,
            carbs_g=profile.hypo_treatment_g,
        )
    hypo_age = inputs.hypo_symptoms_age_min
    if hypo_age is not None and hypo_age <= profile.hypo_symptoms_lockout_h * 60:
        measured_since = g_age is not None and g_age < hypo_age
        return Verdict(
            WITHHOLD,
            0.0,
            [
                f"Hypoglycaemia symptoms were reported {_describe_age(hypo_age)} ago "
                f"(lock-out {profile.hypo_symptoms_lockout_h:g} h): no insulin.",
                "If the patient has symptoms now, measure glucose and treat a low."
                if measured_since
                else f"No glucose was measured since: measure glucose now. Below {profile.low_glucose_mg_dl:.0f} "
                f"mg/dL, give {profile.hypo_treatment_g:.0f} g of fast-acting carbohydrate and recheck in "
                f"{profile.hypo_recheck_min:.0f} minutes.",
            ],
            ["hypo_symptoms"],
        )
    if g is None or g_age is None:
        return Verdict(INSUFFICIENT, 0.0, ["No glucose reading is known; measure glucose first."], ["no_glucose"])
    if not fresh:
        return Verdict(
            INSUFFICIENT,
            0.0,
            [
                f"The last glucose reading is {_describe_age(g_age)} old (limit {profile.stale_glucose_min:.0f} "
                "minutes); measure glucose again."
            ],
            ["stale_glucose"],
        )
    return _implausible_change(g, inputs)


def _implausible_change(g: float, inputs: DecisionInputs) -> Verdict | None:
    """A change no physiology allows (a typo, a wrong unit, a meter error): measure again before any insulin."""
    before, minutes = inputs.change_from_mg_dl, inputs.change_over_min
    if before is None or minutes is None:
        return None
    change = abs(g - before)
    if change < IMPLAUSIBLE_CHANGE_MG_DL or change / max(minutes, 1.0) <= MAX_PLAUSIBLE_MG_DL_PER_MIN:
        return None
    return Verdict(
        INSUFFICIENT,
        0.0,
        [
            f"Glucose {g:.0f} mg/dL {_describe_age(minutes)} after {before:.0f} mg/dL: a change no physiology "
            "allows. Measure again and check the unit (mg/dL or mmol/L) before any insulin."
        ],
        ["implausible_change"],
    )


def measure_now(verdict: Verdict, inputs: DecisionInputs) -> bool:
    """Whether the answer's next glucose check is now: no reading, an old one, or symptoms not measured since."""
    cause = verdict.rules[0] if verdict.rules else None
    if cause in ("no_glucose", "stale_glucose", "implausible_change"):
        return True
    if cause == "hypo_symptoms":
        g_age, hypo_age = inputs.glucose_age_min, inputs.hypo_symptoms_age_min
        return g_age is None or (hypo_age is not None and g_age >= hypo_age)
    return False


def _iob_used(inputs: DecisionInputs, profile: SafetyProfile) -> float:
    return inputs.iob_units if inputs.iob_units >= profile.iob_ignore_below_units else 0.0


def _not_due(inputs: DecisionInputs, profile: SafetyProfile, not_eating: str | None = None) -> Verdict:
    """No meal and no one asking: no dose, or a conservative correction of a glucose far above threshold.

    ``not_eating``: why a meal dose that would be due is not (nothing by mouth, eating uncertain);
    its rule code follows ``no_dose_due``.
    """
    verdict = _no_meal_dose(inputs, profile, not_eating)
    if not_eating is None:
        return verdict
    extra_rules: list[str] = []
    if inputs.nutrition == "npo":
        extra_rules.append("npo")
    else:
        extra_rules.append("eating_uncertain")
    at = 1 if verdict.rules[:1] == ["no_dose_due"] else 0
    return replace(verdict, rules=[*verdict.rules[:at], *extra_rules, *verdict.rules[at:]])


def _no_meal_dose(inputs: DecisionInputs, profile: SafetyProfile, not_eating: str | None) -> Verdict:
    """The answer when no meal dose is due: nothing, a bedtime snack, or a conservative correction."""
    g = inputs.glucose_mg_dl
    assert g is not None
    state = glucose_state(g, profile)
    threshold = profile.bedtime_correction_above_mg_dl if inputs.bedtime else profile.correction_above_mg_dl
    when = "at bedtime" if inputs.bedtime else "now"
    if not_eating is not None:
        why = not_eating
    elif inputs.meal_dosed_units is not None:
        why = f"the meal already has its dose ({_fmt(inputs.meal_dosed_units)} given)"
    else:
        why = "no meal was announced and no one asked for a dose"
    head = f"No dose is due {when}: {why}. Glucose {g:.0f} mg/dL is {state}."
    if g < threshold:
        advice = (
            f"A correction is considered only above {threshold:.0f} mg/dL{' at bedtime' if inputs.bedtime else ''}; "
            "give meal insulin only with a meal: record the meal, and its answer follows."
        )
        snack = _bedtime_snack(g, inputs, profile) if inputs.first_of_night else None
        if snack is not None:
            grams, why = snack
            return Verdict(NO_DOSE_DUE, 0.0, [head, why, advice], ["no_dose_due", "bedtime_snack"], carbs_g=grams)
        return Verdict(NO_DOSE_DUE, 0.0, [head, advice], ["no_dose_due"])
    terms = insulin_terms(inputs, profile)
    if terms is None:
        return Verdict(
            NO_DOSE_DUE,
            0.0,
            [
                head,
                "A correction cannot be estimated: fewer than 2 days of insulin records and no sensitivity in the "
                "patient's profile. Tell the physician about the high glucose.",
            ],
            ["no_dose_due", "no_sensitivity"],
        )
    iob = _iob_used(inputs, profile)
    predicted = g - iob * terms.sensitivity
    if predicted < threshold:
        return Verdict(
            NO_DOSE_DUE,
            0.0,
            [
                head,
                f"{_fmt(iob)} of regular insulin is still on board and is expected to bring glucose to about "
                f"{max(predicted, 0):.0f} mg/dL: no correction on top (no stacking). Recheck glucose in "
                f"{IOB_RECHECK_MIN / 60:g} hours.",
            ],
            ["no_dose_due", "insulin_on_board"],
            recheck_min=IOB_RECHECK_MIN,
        )
    raw = (g - profile.target_mg_dl) / terms.sensitivity
    reasons = [
        head,
        f"Correction only: ({g:.0f} mg/dL − {profile.target_mg_dl:.0f} mg/dL) ÷ {terms.sensitivity:.0f} mg/dL per U "
        f"= {_fmt(raw)}, less {_fmt(iob)} still on board (sensitivity from {terms.source}).",
    ]
    rules = ["correction_only"]
    units = raw - iob
    if inputs.bedtime and units > 0:
        reduced = units * profile.bedtime_correction_share
        reasons.append(f"Reduced {_from_to(units, reduced)} at bedtime ({profile.bedtime_correction_share:.0%}).")
        rules.append("bedtime_reduced")
        units = reduced
    units = _after_low(_titrated(units, inputs, profile, reasons, rules), inputs, profile, reasons, rules)
    return _finish(units, inputs, profile, reasons, rules, "no_dose_due")


def _due(inputs: DecisionInputs, profile: SafetyProfile, model_problem: str | None) -> Verdict:
    """A dose is due: model number, meal adjustment, then the lowering limits."""
    m = inputs.model_units
    if m is None or not math.isfinite(m):
        if model_problem is not None:
            return Verdict(
                INSUFFICIENT,
                0.0,
                [f"No valid dose model is loaded ({model_problem}); no dose can be suggested."],
                ["no_model"],
            )
        return Verdict(INSUFFICIENT, 0.0, ["No valid model output; no dose can be suggested."], ["model_invalid"])
    if m < 0:
        return Verdict(
            INSUFFICIENT,
            0.0,
            [f"The model gave a negative dose ({m:.2f} U); no dose can be suggested."],
            ["model_negative"],
        )
    usual = inputs.usual_units
    if usual is None:
        return Verdict(
            INSUFFICIENT,
            0.0,
            [
                "No regular dose is recorded at this time of day in the patient's history, so a dose here cannot "
                "be suggested from it. Dose by the physician's plan; suggestions start once doses at this time "
                "are recorded."
            ],
            ["no_slot_history"],
        )
    terms = insulin_terms(inputs, profile)
    if terms is None:
        return Verdict(
            INSUFFICIENT,
            0.0,
            [
                "Fewer than 2 days of insulin records: the patient's insulin sensitivity cannot be estimated. "
                "Dose by the physician's plan, or set insulin_sensitivity_mg_dl_per_u and carb_ratio_g_per_u in "
                "the patient's safety profile."
            ],
            ["no_sensitivity"],
        )
    g = inputs.glucose_mg_dl
    assert g is not None
    why = {"request": "a dose was asked for", "meal": "a meal was announced", "pre_meal": "a pre-meal reading"}
    assumed = "; the usual meal assumed" if inputs.meal_size is None and inputs.carbs_g is None else ""
    reasons = [
        f"Dose due ({why.get(inputs.due or '', inputs.due)}{assumed}). Model estimate {m:.2f} U; usual dose at "
        f"this time {_fmt(usual)}."
    ]
    rules: list[str] = []
    units, meal_units, usual_for_meal = _meal_adjusted(m, usual, inputs, terms, reasons, rules)
    planned = _planned_meal(inputs)
    if planned is not None and planned > units:  # titration found this patient needs more than the pattern
        reasons.append(
            f"Raised {_from_to(units, planned)}: the dosing plan's dose for this meal, titrated from the doses given "
            "and the glucose that followed them."
        )
        rules.append("plan_raised")
        units = planned
        meal_units = max(meal_units, planned)
    anchor, anchor_words = usual_for_meal, "the usual dose for this meal"
    if planned is not None and planned > usual_for_meal:  # titration has found this patient needs more
        anchor, anchor_words = planned, "the dosing plan's dose for this meal"
    cap = anchor + profile.max_above_usual_units
    if units > cap:
        reasons.append(
            f"Lowered {_from_to(units, cap)}: at most {profile.max_above_usual_units:g} U above "
            f"{anchor_words} ({_fmt(anchor)})."
        )
        rules.append("above_usual_cap")
        units = cap
    correction = (g - profile.target_mg_dl) / terms.sensitivity
    if inputs.bedtime and correction > 0:
        correction *= profile.bedtime_correction_share
    iob = _iob_used(inputs, profile)
    ceiling = meal_units + correction - iob
    if units > ceiling:
        lowered = max(0.0, ceiling)
        reasons.append(
            f"Lowered {_from_to(units, lowered)} by the physiological guard: meal {_fmt(meal_units)} "
            f"{'+' if correction >= 0 else '−'} {_fmt(abs(correction))} for glucose {g:.0f} mg/dL against the target "
            f"{profile.target_mg_dl:.0f} mg/dL (sensitivity {terms.sensitivity:.0f} mg/dL per U) − {_fmt(iob)} "
            f"still on board; terms from {terms.source}."
        )
        rules.append("physiological_guard")
        units = lowered
    # A meal dose is rounded to the nearest pen step, as by the plan: always down would shave up to a
    # step off every small dose and, copied into the history, ratchet a child's doses down. Below the
    # target it is rounded down.
    meal_ceiling = min(cap, ceiling) + (profile.pen_step_units / 2 if g >= profile.target_mg_dl else 0.0)
    reduced = _after_low(_titrated(units, inputs, profile, reasons, rules), inputs, profile, reasons, rules)
    if reduced < units:
        units = meal_ceiling = reduced  # rounded down from here
    return _finish(units, inputs, profile, reasons, rules, "nothing_left", meal_ceiling)


def _planned_meal(inputs: DecisionInputs) -> float | None:
    """The plan's insulin for this meal: the grams at its ratio, or its usual-meal dose by the size."""
    if inputs.plan_meal_units is None:
        return None
    if inputs.carbs_g is not None and inputs.plan_carb_ratio is not None:
        return inputs.carbs_g / inputs.plan_carb_ratio
    return inputs.plan_meal_units * SIZE_FACTORS.get(inputs.meal_size or "typical", 1.0)


def _due_by_plan(inputs: DecisionInputs, profile: SafetyProfile) -> Verdict:
    """A meal dose from the patient's dosing plan: the plan's meal (or the grams at its ratio), moved
    within :data:`PATTERN_BOUNDS` by the network's reading of the patient's own pattern, plus the
    plan's correction, less insulin on board; then the same lowering rules and limits."""
    g, plan_meal = inputs.glucose_mg_dl, inputs.plan_meal_units
    assert g is not None and plan_meal is not None
    terms = insulin_terms(inputs, profile)
    assert terms is not None  # the plan's terms at least
    why = {"request": "a dose was asked for", "meal": "a meal was announced", "pre_meal": "a pre-meal reading"}
    assumed = "; the usual meal assumed" if inputs.meal_size is None and inputs.carbs_g is None else ""
    rules: list[str] = ["plan_meal"]
    ratio = profile.carb_ratio_g_per_u or inputs.plan_carb_ratio or terms.carb_ratio
    if inputs.carbs_g is not None:
        meal = inputs.carbs_g / ratio
        what = f"{inputs.carbs_g:.0f} g at {ratio:.0f} g per U = {_fmt(meal)}"
    else:
        factor = SIZE_FACTORS.get(inputs.meal_size or "typical", 1.0)
        meal = plan_meal * factor
        size = MEAL_SIZE_WORDS[inputs.meal_size or "typical"]
        what = f"{_fmt(plan_meal)} for a usual meal" + ("" if factor == 1.0 else f", × {factor:g} for a meal {size}")
    reasons = [f"Dose due ({why.get(inputs.due or '', inputs.due)}{assumed}). The plan's meal dose: {what}."]
    if inputs.plan_note is not None:
        reasons.append(f"The plan for this meal last changed on {inputs.plan_note}.")
    if inputs.eaten_share is not None and inputs.eaten_share < 1.0:
        reasons.append(f"{inputs.eaten_share:.0%} of the meal eaten: {_from_to(meal, meal * inputs.eaten_share)}.")
        rules.append("eaten_share")
        meal *= inputs.eaten_share
    m, usual = inputs.model_units, inputs.usual_units
    units = meal
    if m is not None and math.isfinite(m) and m >= 0 and usual is not None and usual > 0:
        low, high = PATTERN_BOUNDS
        ratio = min(high, max(low, m / usual))
        if abs(ratio - 1.0) >= 0.01:
            reasons.append(
                f"The network reads {m:.2f} U against the patient's usual {_fmt(usual)} at this time: the meal dose "
                f"× {ratio:.2f} (the patient's own pattern, within × {low:g}–{high:g})."
            )
            rules.append("pattern")
            units = meal * ratio
    correction = (g - profile.target_mg_dl) / terms.sensitivity
    if inputs.bedtime and correction > 0:
        correction *= profile.bedtime_correction_share
    iob = _iob_used(inputs, profile)
    if abs(correction) >= 0.05 or iob > 0:
        reasons.append(
            f"{'Plus' if correction >= 0 else 'Less'} {_fmt(abs(correction))} for glucose {g:.0f} mg/dL against the "
            f"target {profile.target_mg_dl:.0f} mg/dL at {terms.sensitivity:.0f} mg/dL per U, less {_fmt(iob)} still "
            f"on board (terms from {terms.source})."
        )
        rules.append("plan_correction")
    units = max(0.0, units + correction - iob)
    reduced = _after_low(_titrated(units, inputs, profile, reasons, rules), inputs, profile, reasons, rules)
    nearest = reduced + profile.pen_step_units / 2  # a meal dose is rounded to the nearest pen step
    return _finish(reduced, inputs, profile, reasons, rules, "nothing_left", nearest)


def _basal(inputs: DecisionInputs, profile: SafetyProfile) -> Verdict:
    """The once-daily long-acting dose: the plan's basal, lowered when the patient takes nothing by mouth."""
    given = inputs.basal_given
    if given is not None:
        return Verdict(
            NO_DOSE_DUE,
            0.0,
            [
                f"Basal insulin was already given today: {_fmt(given.units)} at {given.given_at:%H:%M}. "
                "No second basal dose."
            ],
            ["no_dose_due", "basal_given"],
        )
    planned = inputs.plan_basal_units
    if planned is None:
        return Verdict(
            INSUFFICIENT,
            0.0,
            [
                "No basal plan: the patient's weight is not recorded. Record a profile (weight in kg) and the "
                "basal dose follows; until then, basal by the physician's plan."
            ],
            ["no_basal_plan"],
        )
    reasons = [f"Basal (long-acting, once a day) by the patient's dosing plan: {_fmt(planned)}."]
    rules = ["basal_plan"]
    units = planned
    if inputs.nutrition == "npo":
        reduced = units * NPO_BASAL_SHARE
        reasons.append(f"Lowered {_from_to(units, reduced)}: the patient takes nothing by mouth (npo).")
        rules.append("basal_npo")
        units = reduced
    if units > profile.max_basal_units:
        reasons.append(f"Lowered {_from_to(units, profile.max_basal_units)}: the profile's basal limit.")
        rules.append("max_basal")
        units = profile.max_basal_units
    rounded = _floor_to_step(units, profile.pen_step_units)
    if abs(rounded - units) > 1e-9:
        reasons.append(f"Rounded down from {units:.2f} U to the pen step of {profile.pen_step_units:g} U.")
        rules.append("pen_step")
    if rounded <= 0:
        return Verdict(WITHHOLD, 0.0, [*reasons, "No basal insulin remains to suggest."], ["nothing_left", *rules])
    return Verdict(SUGGEST, round(rounded, 3), reasons, rules)


def _bedtime_snack(g: float, inputs: DecisionInputs, profile: SafetyProfile) -> tuple[float, str] | None:
    """Carbohydrate before sleep when the insulin on board is expected to take glucose under the threshold.

    Predicted glucose = glucose − IOB × sensitivity; the snack brings it back to the target at
    the carb ratio: (target − predicted) × carb ratio ÷ sensitivity, 10 g at least, whole 5 g,
    at most ``bedtime_snack_max_g``.
    """
    terms = insulin_terms(inputs, profile)
    if terms is None:
        return None
    iob = _iob_used(inputs, profile)
    predicted = g - iob * terms.sensitivity
    if predicted >= profile.bedtime_snack_below_mg_dl:
        return None
    grams = (profile.target_mg_dl - predicted) * terms.carb_ratio / terms.sensitivity
    grams = min(profile.bedtime_snack_max_g, max(10.0, 5.0 * math.ceil(grams / 5.0)))
    on_board = f"with {_fmt(iob)} of regular insulin still on board " if iob > 0 else ""
    return grams, (
        f"Offer a bedtime snack of {grams:.0f} g of carbohydrate: glucose {g:.0f} mg/dL {on_board}is expected to "
        f"reach about {max(predicted, 0):.0f} mg/dL overnight (below {profile.bedtime_snack_below_mg_dl:.0f} mg/dL)."
    )


def _titrated(
    units: float, inputs: DecisionInputs, profile: SafetyProfile, reasons: list[str], rules: list[str]
) -> float:
    """At most ``low_after_dose_share`` of the smallest dose at this time of day that a low followed."""
    before = inputs.dose_before_low
    if before is None or units <= 0:
        return units
    limit = before.units * profile.low_after_dose_share
    if units <= limit:
        return units
    reasons.append(
        f"Lowered {_from_to(units, limit)}: {_fmt(before.units)} at this time of day on "
        f"{before.given_at:%d %b at %H:%M} was followed by a low of {before.low_mg_dl:.0f} mg/dL within "
        f"{LOW_AFTER_DOSE_MIN / 60:g} hours, so at most {profile.low_after_dose_share:.0%} of it."
    )
    rules.append("low_after_dose")
    return limit


def _after_low(
    units: float, inputs: DecisionInputs, profile: SafetyProfile, reasons: list[str], rules: list[str]
) -> float:
    """A dose within 3 h of a low reading: ``after_low_share`` of it (a low just treated is still acting)."""
    lowest = inputs.recent_lowest_mg_dl
    if units <= 0 or lowest is None or lowest >= profile.low_glucose_mg_dl:
        return units
    reduced = units * profile.after_low_share
    reasons.append(
        f"Reduced {_from_to(units, reduced)} ({profile.after_low_share:.0%}): glucose was {lowest:.0f} "
        f"mg/dL, below {profile.low_glucose_mg_dl:.0f} mg/dL, within the last {RECENT_LOW_MIN / 60:g} hours."
    )
    rules.append("after_low")
    return reduced


def _meal_adjusted(
    m: float, usual: float, inputs: DecisionInputs, terms: InsulinTerms, reasons: list[str], rules: list[str]
) -> tuple[float, float, float]:
    """The model number moved by the meal; the meal's insulin for the guard; the usual dose for this meal.

    Grams outrank the size. Grams and a size that contradict each other (60 g "larger than usual"
    against a usual 80 g) are flagged for the person to check; the dose follows the grams (the
    in-silico trial: following the smaller reading instead lowered time in range and added level-2
    lows, docs/safety.md).
    """
    factor = SIZE_FACTORS.get(inputs.meal_size or "typical", 1.0)
    carbs = inputs.carbs_g
    if carbs is None:
        if factor != 1.0:
            reasons.append(f"Meal {MEAL_SIZE_WORDS[inputs.meal_size or 'typical']}: the dose × {factor:g}.")
            rules.append("meal_size")
        return m * factor, usual * factor, usual * factor
    usual_carbs, counted = inputs.usual_carbs_g, "counted"
    if usual_carbs is None:  # no earlier count at this meal: the usual dose through the carb ratio
        usual_carbs, counted = usual * terms.carb_ratio, "estimated from the usual dose"
    delta = (carbs - usual_carbs) / terms.carb_ratio
    if abs(delta) >= 0.05:
        reasons.append(
            f"Meal of {carbs:.0f} g against the usual {usual_carbs:.0f} g at this time ({counted}): "
            f"{delta:+.1f} U at {terms.carb_ratio:.0f} g per U."
        )
        rules.append("meal_carbs")
    size = inputs.meal_size or "typical"
    if (size == "more" and carbs < usual_carbs) or (size == "less" and carbs > usual_carbs):
        reasons.append(
            f"Check the meal entry: it says {MEAL_SIZE_WORDS[size]} but {carbs:.0f} g is "
            f"{'less' if carbs < usual_carbs else 'more'} than the usual {usual_carbs:.0f} g; the dose follows the "
            f"{carbs:.0f} g. Correct the entry if the grams are wrong."
        )
        rules.append("meal_contradiction")
    return max(0.0, m + delta), carbs / terms.carb_ratio, max(0.0, usual + delta)


def _iob_cap(inputs: DecisionInputs, profile: SafetyProfile) -> tuple[float, str]:
    """The most insulin on board a dose may leave, and why: the profile's limit, or a share of the
    patient's daily insulin (the plan's, else their own recorded) when that is lower."""
    daily, whose = inputs.plan_daily_units, "the plan's"
    if daily is None:
        daily, whose = inputs.total_daily_units, "the patient's"
    if daily is not None and daily > 0 and profile.max_iob_share * daily < profile.max_iob_units:
        return profile.max_iob_share * daily, f"{profile.max_iob_share:.0%} of {whose} {daily:.0f} U a day"
    return profile.max_iob_units, "the profile's limit"


def _finish(
    units: float,
    inputs: DecisionInputs,
    profile: SafetyProfile,
    reasons: list[str],
    rules: list[str],
    empty_rule: str,
    meal_ceiling: float | None = None,
) -> Verdict:
    """The limits every number passes last: single and daily limits, insulin on board, then the pen step.

    A correction is always rounded down. A meal dose (``meal_ceiling``: the lowest of the cap and
    the guard) is rounded to the nearest step when that stays under every ceiling, else down.
    """
    single, single_why = profile.max_single_units, "the profile's maximum single dose"
    if inputs.largest_dose is not None and inputs.largest_dose * profile.history_limit_factor < single:
        single = inputs.largest_dose * profile.history_limit_factor
        single_why = (
            f"{profile.history_limit_factor:g} × the patient's largest recent dose of {_fmt(inputs.largest_dose)}"
        )
    if units > single:
        reasons.append(f"Lowered {_from_to(units, single)}: {single_why}.")
        rules.append("max_single")
        units = single
    daily, daily_why = profile.max_daily_regular_units, "the profile's daily limit"
    typical = inputs.typical_daily_regular
    if typical is not None and typical * profile.history_daily_factor < daily:
        daily = typical * profile.history_daily_factor
        daily_why = f"{profile.history_daily_factor:g} × the patient's typical {_fmt(typical)} a day"
    room = max(0.0, daily - inputs.regular_24h_units)
    if units > room:
        reasons.append(
            f"Lowered {_from_to(units, room)}: {_fmt(inputs.regular_24h_units)} of regular insulin in "
            f"the last 24 h, limit {_fmt(daily)} ({daily_why})."
        )
        rules.append("max_daily")
        units = room
    on_board, on_board_why = _iob_cap(inputs, profile)
    iob_room = max(0.0, on_board - max(0.0, inputs.iob_units))
    if units > iob_room:
        reasons.append(
            f"Lowered {_from_to(units, iob_room)}: at most {_fmt(on_board)} of insulin on board after a dose "
            f"({on_board_why}); {_fmt(max(0.0, inputs.iob_units))} is on board now."
        )
        rules.append("max_iob")
        units = iob_room
    step = profile.pen_step_units
    rounded = _floor_to_step(max(0.0, units), step)
    if meal_ceiling is not None and units > 0:
        nearest = round(units / step) * step
        if nearest <= min(meal_ceiling, single, room, iob_room) + 1e-9:
            rounded = nearest
    if abs(rounded - units) > 1e-9 and units > 0:
        direction = "up" if rounded > units else "down"
        reasons.append(f"Rounded {direction} from {units:.2f} U to the pen step of {step:g} U.")
        rules.append("pen_step")
    units = round(rounded, 3)
    if units <= 0:
        if empty_rule == "no_dose_due":
            reasons.append("No correction remains after insulin on board and the limits: give no insulin now.")
            return Verdict(NO_DOSE_DUE, 0.0, reasons, ["no_dose_due", *rules])
        reasons.append(
            "After the safety limits no insulin remains to suggest: give no regular insulin now; if the patient "
            "eats, recheck glucose in 2 hours."
        )
        return Verdict(WITHHOLD, 0.0, reasons, [empty_rule, *rules])
    if len(reasons) == 1:
        reasons.append("Within every safety limit.")
    return Verdict(SUGGEST, units, reasons, rules)
