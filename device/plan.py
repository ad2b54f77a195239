"""A patient's dosing plan: set from a profile by body weight, moved by titration (pure logic).

The plan is what the device would give a patient it knows only by weight, and what the
glucose that followed each dose has taught it since (docs/safety.md, "The dosing plan"):

* **Start by weight** (RABBIT 2, GlucoTab): a total daily dose of 0.5 U/kg; 0.4 U/kg for an
  insulin-naive patient with type 2 diabetes; 0.3 U/kg over 70 years or with impaired kidneys.
  Half is basal (long-acting, once a day), half is meal insulin in three equal meal doses.
  Steroids raise the meal doses by a fifth (their hyperglycaemia is mostly after meals).
  Carbohydrate ratio 500 ÷ the total and sensitivity 1500 ÷ the total (the rules the
  supervisor already uses on a patient's own totals).
* **Titrate both ways**, from the reading that followed (Diabetes Care 2003;26:3080, the
  basal-bolus titration table: the pre-lunch reading moves breakfast, the pre-supper reading
  lunch, the bedtime reading supper; the fasting reading moves basal, as in RABBIT 2): a
  reading below 70 mg/dL −20 %, 70–100 −10 %, in the target band no change, above it +10 %,
  above 250 (basal: 180) +20 %. A low within 8 h of a meal dose steps that meal down at once.
  Never upward within 24 h of a low or while glucose falls fast; each part at most once a day;
  every part kept between a quarter and four times its weight-based start.

The plan is a fold over the patient's events in time order (:class:`PlanTracker`), so it is
rebuilt exactly from the stored log after a restart, and every change carries its reason.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field, replace
from datetime import datetime

from preprocessing.events import Event, Kind, PatientProfile
from preprocessing.features import minutes, slot_of

MEALS = ("breakfast", "lunch", "supper")  # the meal of time-of-day slots 0, 1, 2
PARTS = ("basal", *MEALS)
UNITS_PER_KG = 0.5
UNITS_PER_KG_NAIVE_TYPE2 = 0.4
UNITS_PER_KG_FRAGILE = 0.3  # over 70 years, impaired kidneys
FRAGILE_AGE_YEARS = 70.0
BASAL_SHARE = 0.5
STEROID_MEAL_FACTOR = 1.2
CARB_RATIO_RULE = 500.0
SENSITIVITY_RULE = 1500.0
MIN_FACTOR, MAX_FACTOR = 0.25, 4.0
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
    """Basal units a day, a dose per meal, a carbohydrate ratio and a sensitivity, with their history.

    ``base`` is the weight-based start of each part (basal, breakfast, lunch, supper);
    ``factors`` what titration has made of it.
    """

    weight_kg: float
    per_kg: float
    base: tuple[float, float, float, float]
    factors: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    changes: tuple[PlanChange, ...] = ()
    why: str = ""

    @classmethod
    def from_profile(cls, profile: PatientProfile) -> DosingPlan:
        per_kg, why = units_per_kg(profile)
        total = per_kg * profile.weight_kg
        meal = total * (1 - BASAL_SHARE) / len(MEALS)
        if profile.steroids:
            meal *= STEROID_MEAL_FACTOR
            why += "; meal doses +20 % for steroids"
        return cls(profile.weight_kg, per_kg, (total * BASAL_SHARE, meal, meal, meal), why=why)

    def part(self, name: str) -> float:
        i = PARTS.index(name)
        return self.base[i] * self.factors[i]

    @property
    def basal_units(self) -> float:
        return self.part("basal")

    def meal_units(self, slot: int) -> float | None:
        """The plan's dose for the meal of time-of-day slot ``slot`` (None at bedtime)."""
        return self.part(MEALS[slot]) if slot < len(MEALS) else None

    def meal_factor(self, slot: int) -> float:
        return self.factors[1 + slot] if slot < len(MEALS) else 1.0

    @property
    def start_total(self) -> float:
        return sum(self.base)

    @property
    def sensitivity(self) -> float:
        """mg/dL per U: 1500 ÷ the weight-based total daily dose."""
        return SENSITIVITY_RULE / self.start_total

    def carb_ratio(self, slot: int) -> float:
        """g per U at this meal: 500 ÷ the weight-based total, moved by the meal's titration."""
        return CARB_RATIO_RULE / self.start_total / self.meal_factor(slot)

    def describe(self) -> str:
        """The plan in one line a nurse reads."""
        meals = ", ".join(f"{m} {self.part(m):.1f} U" for m in MEALS)
        return (
            f"basal {self.basal_units:.1f} U a day; {meals}; started at {self.per_kg:g} U/kg for "
            f"{self.weight_kg:g} kg ({self.why})"
        )

    def stepped(self, part: str, factor: float, at: datetime, why: str) -> DosingPlan:
        """The plan with ``part`` multiplied by ``factor`` (kept within its bounds), the change recorded."""
        i = PARTS.index(part)
        new = min(MAX_FACTOR, max(MIN_FACTOR, self.factors[i] * factor))
        if abs(new - self.factors[i]) < 1e-9:
            return self
        factors = tuple(new if j == i else f for j, f in enumerate(self.factors))
        change = PlanChange(at, part, self.base[i] * self.factors[i], self.base[i] * new, why)
        return replace(self, factors=factors, changes=(*self.changes, change))  # type: ignore[arg-type]

    def rebased(self, profile: PatientProfile) -> DosingPlan:
        """A new profile: the start by weight again, titration kept (the factors)."""
        fresh = DosingPlan.from_profile(profile)
        return replace(fresh, factors=self.factors, changes=self.changes)


def meal_step(mg_dl: float) -> tuple[float, str]:
    """The factor for a meal dose from the reading that followed it, and the band in words."""
    if mg_dl < LOW_MG_DL:
        return 0.8, f"a low of {mg_dl:.0f} mg/dL followed"
    if mg_dl < 100:
        return 0.9, f"{mg_dl:.0f} mg/dL followed (under 100)"
    if mg_dl <= 180:
        return 1.0, ""
    if mg_dl <= 250:
        return 1.1, f"{mg_dl:.0f} mg/dL followed (over 180)"
    return 1.2, f"{mg_dl:.0f} mg/dL followed (over 250)"


def basal_step(mg_dl: float) -> tuple[float, str]:
    """The factor for basal from a fasting reading, and the band in words."""
    if mg_dl < LOW_MG_DL:
        return 0.8, f"fasting glucose {mg_dl:.0f} mg/dL (a low)"
    if mg_dl < 100:
        return 0.9, f"fasting glucose {mg_dl:.0f} mg/dL (under 100)"
    if mg_dl <= 140:
        return 1.0, ""
    if mg_dl <= 180:
        return 1.1, f"fasting glucose {mg_dl:.0f} mg/dL (over 140)"
    return 1.2, f"fasting glucose {mg_dl:.0f} mg/dL (over 180)"


@dataclass(slots=True)
class PlanTracker:
    """The plan as of the newest event: fold events in time order with :meth:`add`."""

    plan: DosingPlan | None = None
    nutrition: str | None = None  # the latest eating state recorded (eating, npo, uncertain)
    _pending: dict[int, float] = field(default_factory=dict)  # meal slot -> time of its latest meal dose
    _lows: list[float] = field(default_factory=list)  # times of readings below LOW_MG_DL
    _last_step: dict[str, float] = field(default_factory=dict)  # part -> time of its latest titration
    _fasting_day: object = None  # the date whose fasting reading has been used
    _meal_dosed_today: object = None  # the date of the newest meal dose in the morning slot
    _last_reading: tuple[float, float] | None = None  # (time, mg/dL)

    def add(self, event: Event) -> None:
        """Fold one event (the newest) into the plan."""
        t = minutes(event.ts)
        if event.kind is Kind.PROFILE and event.profile is not None:
            self.plan = (
                DosingPlan.from_profile(event.profile) if self.plan is None else self.plan.rebased(event.profile)
            )
        elif event.kind is Kind.NUTRITION:
            self.nutrition = event.nutrition
        elif event.is_meal_dose:
            slot = slot_of(event.ts)
            if slot < len(MEALS):
                self._pending[slot] = t
                if slot == 0:
                    self._meal_dosed_today = event.ts.date()
        elif event.kind is Kind.GLUCOSE and event.mg_dl is not None:
            self._reading(event, t, event.mg_dl)

    def _reading(self, event: Event, t: float, mg_dl: float) -> None:
        falling = self._falling_fast(t, mg_dl)
        self._last_reading = (t, mg_dl)
        if mg_dl < LOW_MG_DL:
            self._lows.append(t)
        if self.plan is None:
            return
        for slot, dosed in list(self._pending.items()):
            waited = t - dosed
            if waited > OUTCOME_WITHIN_MIN:
                del self._pending[slot]
            elif waited >= OUTCOME_AFTER_MIN or mg_dl < LOW_MG_DL:
                del self._pending[slot]
                self._step(MEALS[slot], *meal_step(mg_dl), event.ts, t, falling)
        slot = slot_of(event.ts)
        fasting = slot == 0 and (event.context == "pre_breakfast" or self._meal_dosed_today != event.ts.date())
        if fasting and self._fasting_day != event.ts.date():
            self._fasting_day = event.ts.date()
            self._step("basal", *basal_step(mg_dl), event.ts, t, falling)

    def _falling_fast(self, t: float, mg_dl: float) -> bool:
        if self._last_reading is None:
            return False
        before_t, before = self._last_reading
        gap = t - before_t
        return 0 < gap <= FALLING_WITHIN_MIN and (before - mg_dl) / gap >= FALLING_FAST_MG_DL_PER_MIN

    def _step(self, part: str, factor: float, why: str, at: datetime, t: float, falling: bool) -> None:
        assert self.plan is not None
        if factor == 1.0 or t - self._last_step.get(part, -1e18) < MIN_STEP_GAP_MIN:
            return
        if factor > 1.0:
            i = bisect.bisect_left(self._lows, t - NO_RISE_AFTER_LOW_MIN)
            if i < len(self._lows) or falling:
                return  # never upward within 24 h of a low or while glucose falls fast
        word = "raised" if factor > 1 else "lowered"
        self.plan = self.plan.stepped(part, factor, at, f"{part} {word} {abs(factor - 1):.0%}: {why}")
        self._last_step[part] = t
