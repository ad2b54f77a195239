"""A patient's dosing plan: set from a profile by body weight, moved by titration (pure logic).

The plan is what the device would give a patient it knows only by weight, and what the
glucose that followed each dose has taught it since (docs/safety.md, "The dosing plan"):

* **Start by weight** (RABBIT 2, GlucoTab): a total daily dose of 0.5 U/kg; 0.4 U/kg for an
  insulin-naive patient with type 2 diabetes; 0.3 U/kg over 70 years or with impaired kidneys.
  Half is basal (long-acting, once a day), half is meal insulin in three equal meal doses.
  Steroids raise the meal doses by a fifth (their hyperglycaemia is mostly after meals).
  Carbohydrate ratio 500 ÷ the total and sensitivity 1500 ÷ the total (the rules the
  supervisor already uses on a patient's own totals).
* **Titrate both ways from the dose that was given** (Glucommander: the next same-time dose is
  the last one moved by the glucose that followed it). The reading that follows a meal dose
  (Diabetes Care 2003;26:3080, the basal-bolus titration table: the pre-lunch reading judges
  breakfast, the pre-supper reading lunch, the bedtime reading supper) sets that meal's plan to
  the meal part of the dose given (less the correction for the glucose before it, at the plan's
  sensitivity; per usual meal, by the announced size; the grams per unit when they were counted)
  times a step: below 70 mg/dL −20 %, 70–100 −10 %, 100–180 none, above 180 +10 %, above 250
  +20 %. A low within 8 h of a meal dose judges it at once. Basal follows the long-acting dose
  given (one within a tenth of the plan's is the plan's own) and the fasting reading (RABBIT 2):
  below 70 −20 %, 70–100 −10 %, above 140 +10 %, above 180 +20 %. Never upward within 24 h of a
  low or while glucose falls fast; each part at most once a day; every part kept between a
  quarter and four times its weight-based start.

The plan is a fold over the patient's events in time order (:class:`PlanTracker`), so it is
rebuilt exactly from the stored log after a restart, and every change carries its reason.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field, replace
from datetime import datetime

from domain.events import Event, Kind, PatientProfile
from domain.features import minutes, slot_of

MEALS = ("breakfast", "lunch", "supper")  # the meal of time-of-day slots 0, 1, 2
PARTS = ("basal", *MEALS)
UNITS_PER_KG = 0.5
UNITS_PER_KG_NAIVE_TYPE2 = 0.4
UNITS_PER_KG_FRAGILE = 0.3  # over 70 years, impaired kidneys
FRAGILE_AGE_YEARS = 70.0
BASAL_SHARE = 0.5
CHILD_BASAL_SHARE, CHILD_AGE_YEARS = 0.4, 12.0  # prepubertal children: 38 ± 11 % basal (J Diabetes Sci Technol 2017)
STEROID_MEAL_FACTOR = 1.2
CARB_RATIO_RULE = 500.0
SENSITIVITY_RULE = 1500.0
MIN_FACTOR, MAX_FACTOR = 0.25, 4.0  # of the weight-based start
PLAN_TARGET_MG_DL = 110.0  # the correction part of a dose given is what brought glucose to this
SAME_MEAL_MIN = 60.0  # meal doses this close in one slot are one meal's insulin
MEAL_CONTEXT_MIN = 30.0  # the meal and the reading a dose was given for are at most this much older
SIZE_FACTORS = {"less": 0.75, "typical": 1.0, "more": 1.25}
OWN_DOSE_SHARE = 0.1  # a basal dose this close to the plan's is the plan's own, rounded to the pen: no change
OUTCOME_AFTER_MIN = 150.0  # a reading this long after a meal dose tells how it did ...
OUTCOME_WITHIN_MIN = 480.0  # ... up to this long after it
NO_RISE_AFTER_LOW_MIN = 1440.0
FALLING_FAST_MG_DL_PER_MIN = 2.0
FALLING_WITHIN_MIN = 60.0
LOW_MG_DL = 70.0
MIN_STEP_GAP_MIN = 20 * 60.0  # each part at most once a day
NPO_BASAL_SHARE = 0.8  # nothing by mouth: basal lowered by a fifth (ADA inpatient care)


def units_per_kg(profile: PatientProfile) -> tuple[float, str]:
    """The weight-based total daily dose per kg, and why that one."""
    if (profile.age_years is not None and profile.age_years > FRAGILE_AGE_YEARS) or profile.kidney == "impaired":
        why = "over 70 years" if profile.kidney != "impaired" else "impaired kidneys"
        return UNITS_PER_KG_FRAGILE, why
    if profile.diabetes_type == "type2" and profile.insulin_naive:
        return UNITS_PER_KG_NAIVE_TYPE2, "insulin-naive type 2 diabetes"
    return UNITS_PER_KG, "the usual start"


@dataclass(frozen=True, slots=True)
class PlanChange:
    """One change of the plan: when, which part, from and to (U), and why in plain words."""

    at: datetime
    part: str
    before: float
    after: float
    why: str


@dataclass(frozen=True, slots=True)
class DosingPlan:
    """Basal units a day, a dose per usual meal and a carbohydrate ratio per meal, a sensitivity, with
    their history. ``base`` is the weight-based start (basal, breakfast, lunch, supper)."""

    weight_kg: float
    per_kg: float
    base: tuple[float, float, float, float]
    basal_units: float
    meals: tuple[float, float, float]
    ratios: tuple[float, float, float]  # g per U at each meal
    changes: tuple[PlanChange, ...] = ()
    why: str = ""

    @classmethod
    def from_profile(cls, profile: PatientProfile) -> DosingPlan:
        per_kg, why = units_per_kg(profile)
        total = per_kg * profile.weight_kg
        share = BASAL_SHARE
        if profile.age_years is not None and profile.age_years < CHILD_AGE_YEARS:
            share = CHILD_BASAL_SHARE
            why += f"; {CHILD_BASAL_SHARE:.0%} basal for a child under {CHILD_AGE_YEARS:g}"
        meal = total * (1 - share) / len(MEALS)
        ratio = CARB_RATIO_RULE / total
        if profile.steroids:
            meal *= STEROID_MEAL_FACTOR
            ratio /= STEROID_MEAL_FACTOR
            why += "; meal doses +20 % for steroids"
        basal = total * share
        return cls(profile.weight_kg, per_kg, (basal, meal, meal, meal), basal, (meal,) * 3, (ratio,) * 3, why=why)

    def meal_units(self, slot: int) -> float:
        """The plan's dose for a usual meal of time-of-day slot ``slot`` (a meal at night: the smallest)."""
        return self.meals[slot] if slot < len(MEALS) else min(self.meals)

    def carb_ratio(self, slot: int) -> float:
        """g per U at the meal of this slot (a meal at night: the highest, the least insulin per gram)."""
        return self.ratios[slot] if slot < len(MEALS) else max(self.ratios)

    def last_change(self, slot: int) -> str | None:
        """The latest change of this slot's meal dose in words, with its date (None: as it started)."""
        part = MEALS[slot] if slot < len(MEALS) else None
        change = next((c for c in reversed(self.changes) if c.part == part), None)
        if change is None:
            return None
        return f"{change.at:%d %b}: {change.before:.1f} U → {change.after:.1f} U ({change.why})"

    @property
    def start_total(self) -> float:
        return sum(self.base)

    @property
    def sensitivity(self) -> float:
        """mg/dL per U: 1500 ÷ the weight-based total daily dose."""
        return SENSITIVITY_RULE / self.start_total

    def describe(self) -> str:
        """The plan in one line a nurse reads."""
        meals = ", ".join(f"{m} {u:.1f} U" for m, u in zip(MEALS, self.meals, strict=True))
        return (
            f"basal {self.basal_units:.1f} U a day; {meals}; started at {self.per_kg:g} U/kg for "
            f"{self.weight_kg:g} kg ({self.why})"
        )

    def _bounded(self, part: int, units: float) -> float:
        return min(self.base[part] * MAX_FACTOR, max(self.base[part] * MIN_FACTOR, units))

    def with_meal(self, slot: int, units: float, ratio: float, at: datetime, why: str) -> DosingPlan:
        """The plan with the meal of ``slot`` set to ``units`` (and ``ratio`` g per U), within bounds."""
        new = self._bounded(1 + slot, units)
        start_ratio = CARB_RATIO_RULE / self.start_total
        ratio = min(start_ratio / MIN_FACTOR, max(start_ratio / MAX_FACTOR, ratio))
        meals = tuple(new if i == slot else u for i, u in enumerate(self.meals))
        ratios = tuple(ratio if i == slot else r for i, r in enumerate(self.ratios))
        changes = self.changes
        if abs(new - self.meals[slot]) >= 0.05:
            changes = (*changes, PlanChange(at, MEALS[slot], self.meals[slot], new, why))
        return replace(self, meals=meals, ratios=ratios, changes=changes)  # type: ignore[arg-type]

    def with_basal(self, units: float, at: datetime, why: str) -> DosingPlan:
        """The plan with basal set to ``units`` (within bounds), the change recorded."""
        new = self._bounded(0, units)
        if abs(new - self.basal_units) < 0.05:
            return replace(self, basal_units=new)
        change = PlanChange(at, "basal", self.basal_units, new, why)
        return replace(self, basal_units=new, changes=(*self.changes, change))

    def rebased(self, profile: PatientProfile, steroids_before: bool) -> DosingPlan:
        """A new profile: the start by weight again; what titration learnt from doses given is kept,
        and steroids started or stopped move the meal doses by the same fifth as at the start."""
        fresh = DosingPlan.from_profile(profile)
        if not self.changes:
            return fresh
        factor = STEROID_MEAL_FACTOR ** (int(bool(profile.steroids)) - int(steroids_before))
        meals = tuple(m * factor for m in self.meals)
        ratios = tuple(r / factor for r in self.ratios)
        return replace(
            self,
            weight_kg=fresh.weight_kg,
            per_kg=fresh.per_kg,
            base=fresh.base,
            why=fresh.why,
            meals=meals,  # type: ignore[arg-type]
            ratios=ratios,  # type: ignore[arg-type]
        )


MEAL_BANDS = (  # upper bound of the reading (mg/dL), the step, what it says
    (LOW_MG_DL, 0.8, "a low of {g} mg/dL followed: −20 %"),
    (100.0, 0.9, "{g} mg/dL followed (under 100): −10 %"),
    (180.0, 1.0, "{g} mg/dL followed (in range)"),
    (250.0, 1.1, "{g} mg/dL followed (over 180): +10 %"),
    (float("inf"), 1.2, "{g} mg/dL followed (over 250): +20 %"),
)
BASAL_BANDS = (
    (LOW_MG_DL, 0.8, "fasting glucose {g} mg/dL (a low): −20 %"),
    (100.0, 0.9, "fasting glucose {g} mg/dL (under 100): −10 %"),
    (140.0, 1.0, ""),
    (180.0, 1.1, "fasting glucose {g} mg/dL (over 140): +10 %"),
    (float("inf"), 1.2, "fasting glucose {g} mg/dL (over 180): +20 %"),
)


def step(mg_dl: float, bands: tuple[tuple[float, float, str], ...]) -> tuple[float, str]:
    """The titration step for a reading and the band in words (a low is strictly below its bound)."""
    for i, (upper, factor, words) in enumerate(bands):
        if mg_dl < upper if i < 2 else mg_dl <= upper:
            return factor, words.format(g=f"{mg_dl:.0f}")
    raise AssertionError("the last band is unbounded")


@dataclass(slots=True)
class _MealDose:
    """A meal's insulin waiting for the reading that judges it."""

    t: float
    units: float
    carbs: float | None
    size: str | None
    before_mg_dl: float | None


@dataclass(slots=True)
class PlanTracker:
    """The plan as of the newest event: fold events in time order with :meth:`add`."""

    plan: DosingPlan | None = None
    nutrition: str | None = None  # the latest eating state recorded (eating, npo, uncertain)
    _pending: dict[int, _MealDose] = field(default_factory=dict)  # meal slot -> its latest meal's insulin
    _lows: list[float] = field(default_factory=list)  # times of readings below LOW_MG_DL
    _last_step: dict[str, float] = field(default_factory=dict)  # part -> time of its latest titration
    _fasting_day: object = None  # the date whose fasting reading has been used
    _meal_dosed_today: object = None  # the date of the newest meal dose in the morning slot
    _last_reading: tuple[float, float] | None = None  # (time, mg/dL)
    _last_meal: tuple[float, float | None, str | None] | None = None  # (time, carbs, size)
    profile: PatientProfile | None = None  # every profile event so far, each updating what it sets

    @classmethod
    def starting(cls, profile: PatientProfile | None) -> PlanTracker:
        """A tracker with the plan of a configured profile (a ``profile`` event then starts it again)."""
        if profile is None:
            return cls()
        return cls(plan=DosingPlan.from_profile(profile), profile=profile)

    def profile_after(self, event: Event) -> PatientProfile | None:
        """The patient's profile once ``event`` (a ``profile`` event) updates the fields it sets."""
        if event.profile is None or self.profile is None:
            return event.profile
        return self.profile.updated(event.profile)

    def add(self, event: Event) -> None:
        """Fold one event (the newest) into the plan."""
        t = minutes(event.ts)
        if event.kind is Kind.PROFILE and event.profile is not None:
            profile = self.profile_after(event)
            assert profile is not None
            if self.plan is None or self.profile is None:
                self.plan = DosingPlan.from_profile(profile)
            else:
                self.plan = self.plan.rebased(profile, bool(self.profile.steroids))
            self.profile = profile
        elif event.kind is Kind.NUTRITION:
            self.nutrition = event.nutrition
        elif event.kind is Kind.MEAL:
            self._last_meal = (t, event.carbs_g, event.size)
        elif event.is_meal_dose:
            self._meal_dose(event, t)
        elif event.kind is Kind.INSULIN and event.insulin is not None and event.insulin.value in ("long", "ultralente"):
            if (
                self.plan is not None
                and abs(event.dose - self.plan.basal_units) > OWN_DOSE_SHARE * self.plan.basal_units
            ):
                why = f"{event.dose:g} U of {event.insulin.label} insulin given"
                self.plan = self.plan.with_basal(event.dose, event.ts, f"basal follows the dose given: {why}")
        elif event.kind is Kind.GLUCOSE and event.mg_dl is not None:
            self._reading(event, t, event.mg_dl)

    def _meal_dose(self, event: Event, t: float) -> None:
        slot = slot_of(event.ts)
        if slot >= len(MEALS):
            return
        if slot == 0:
            self._meal_dosed_today = event.ts.date()
        pending = self._pending.get(slot)
        if pending is not None and t - pending.t <= SAME_MEAL_MIN:
            pending.units += event.dose
            return
        meal = self._last_meal if self._last_meal and t - self._last_meal[0] <= MEAL_CONTEXT_MIN else None
        before = self._last_reading[1] if self._last_reading and t - self._last_reading[0] <= MEAL_CONTEXT_MIN else None
        self._pending[slot] = _MealDose(t, event.dose, meal[1] if meal else None, meal[2] if meal else None, before)

    def _reading(self, event: Event, t: float, mg_dl: float) -> None:
        falling = self._falling_fast(t, mg_dl)
        self._last_reading = (t, mg_dl)
        if mg_dl < LOW_MG_DL:
            self._lows.append(t)
        if self.plan is None:
            return
        for slot, dose in list(self._pending.items()):
            waited = t - dose.t
            if waited > OUTCOME_WITHIN_MIN:
                del self._pending[slot]
            elif waited >= OUTCOME_AFTER_MIN or mg_dl < LOW_MG_DL:
                del self._pending[slot]
                self._judge_meal(slot, dose, mg_dl, event.ts, t, falling)
        slot = slot_of(event.ts)
        fasting = slot == 0 and (event.context == "pre_breakfast" or self._meal_dosed_today != event.ts.date())
        if fasting and self._fasting_day != event.ts.date():
            self._fasting_day = event.ts.date()
            factor, why = step(mg_dl, BASAL_BANDS)
            factor = self._allowed(factor, t, falling)
            if factor != 1.0 and self._may_step("basal", t):
                self.plan = self.plan.with_basal(self.plan.basal_units * factor, event.ts, f"basal: {why}")

    def _judge_meal(self, slot: int, dose: _MealDose, mg_dl: float, at: datetime, t: float, falling: bool) -> None:
        """Set the meal's plan from the dose given and the reading that followed it."""
        assert self.plan is not None
        if not self._may_step(MEALS[slot], t):
            return
        correction = 0.0
        if dose.before_mg_dl is not None:
            correction = max(0.0, (dose.before_mg_dl - PLAN_TARGET_MG_DL) / self.plan.sensitivity)
        for_meal = dose.units - correction
        if for_meal <= 0:
            return  # all of it was correction: it says nothing about the meal
        factor, why = step(mg_dl, MEAL_BANDS)
        factor = self._allowed(factor, t, falling)
        units = for_meal / SIZE_FACTORS.get(dose.size or "typical", 1.0) * factor
        counted = dose.carbs / for_meal / factor if dose.carbs else None
        ratio = counted if counted is not None else self.plan.ratios[slot] * self.plan.meals[slot] / units
        given = f"{dose.units:g} U given" + (f" ({for_meal:.1f} U for the meal)" if correction > 0 else "")
        self.plan = self.plan.with_meal(slot, units, ratio, at, f"{MEALS[slot]}: {given}; {why}")

    def _allowed(self, factor: float, t: float, falling: bool) -> float:
        """Never upward within 24 h of a low or while glucose falls fast."""
        if factor > 1.0:
            i = bisect.bisect_left(self._lows, t - NO_RISE_AFTER_LOW_MIN)
            if i < len(self._lows) or falling:
                return 1.0
        return factor

    def _may_step(self, part: str, t: float) -> bool:
        if t - self._last_step.get(part, -1e18) < MIN_STEP_GAP_MIN:
            return False
        self._last_step[part] = t
        return True

    def _falling_fast(self, t: float, mg_dl: float) -> bool:
        if self._last_reading is None:
            return False
        before_t, before = self._last_reading
        gap = t - before_t
        return 0 < gap <= FALLING_WITHIN_MIN and (before - mg_dl) / gap >= FALLING_FAST_MG_DL_PER_MIN
