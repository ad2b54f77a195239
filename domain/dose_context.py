"""What a dose decision needs to know from a patient's history besides the model input (pure).

One implementation for the device (each answer) and the bulk evaluation path, so both decide
alike. It reads only what was known at the decision time ``at`` (events before it, and the
non-insulin events at it), within the last :data:`HISTORY_DAYS` days:

* **why a dose is due** — a person asked (a ``request``), a meal was announced (a meal event in
  the last :data:`MEAL_WINDOW_MIN` minutes), or a pre-meal reading was taken in that time;
  otherwise none is due. A meal (or pre-meal reading) that already has a regular dose, given
  from :data:`DOSE_BEFORE_MEAL_MIN` minutes before it on, or in the same time-of-day slot in the
  :data:`SAME_MEAL_MIN` minutes before it if that dose was itself given for a meal (a second
  "pre-lunch" reading an hour after lunch was dosed, a meal entered again; a correction given
  between meals is not a meal's dose), makes no second dose due: every later reading (a CGM value every
  5 minutes) would otherwise suggest the meal dose again;
* the announced meal's size and carbohydrate, and the patient's usual carbohydrate at this
  meal (their last five counts at the same time of day);
* the patient's **total daily insulin** (regular and long-acting, per day of history; a regular
  dose above :data:`FITTED_MAX_UNITS`, which no one could have given, left out), from which
  the supervisor estimates insulin sensitivity (the 1500 rule), their typical daily regular
  insulin and their largest regular dose;
* the **lowest glucose in the last :data:`RECENT_LOW_MIN` minutes** before this reading, so
  a dose soon after a low (a treated pre-meal low, then the recheck) can be reduced;
* the **smallest dose at this time of day that a low followed** in the last
  :data:`LOW_AFTER_DOSE_DAYS` days: a reading below 70 mg/dL (the history's ``lows``) within
  :data:`LOW_AFTER_DOSE_MIN` minutes of a regular dose (the last one before the low) in the
  same slot — the titration signal that this dose was too much for this patient;
* whether this is the **first reading of the night** (a bedtime-slot reading with no other one
  in the :data:`RECENT_LOW_MIN` minutes before it): a bedtime snack is advised once, not at
  every CGM value;
* the **reading before the newest one** and the minutes between them, so a change no physiology
  allows (52 mg/dL, then "50" typed in mmol/L two minutes later: 901 mg/dL) is caught;
* the patient's **own carbohydrate ratio**: the median of carbs ÷ regular insulin over their
  recent counted meals that were dosed (a regular dose from 15 minutes before to
  :data:`MEAL_WINDOW_MIN` after the meal), when at least :data:`MIN_MEALS_FOR_RATIO` exist.
"""

from __future__ import annotations

import bisect
import statistics
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from domain.events import Kind
from domain.features import MEAL_ANNOUNCED_MIN, MINUTES_PER_DAY, SLOTS, PatientHistory, minutes, slot_of

HISTORY_DAYS = 7
MEAL_WINDOW_MIN = MEAL_ANNOUNCED_MIN
MIN_DAYS_FOR_TOTALS = 2.0  # fewer days of history tell nothing reliable about daily totals
PRE_MEAL_CONTEXTS = ("pre_breakfast", "pre_lunch", "pre_supper")
USUAL_CARB_MEALS = 5
RATIO_MEALS = 10
MIN_MEALS_FOR_RATIO = 3
DOSE_BEFORE_MEAL_MIN = 15.0
SAME_MEAL_MIN = 180.0  # a regular dose this recent, at the same time of day, was for this meal
FITTED_MAX_UNITS = 30.0  # the hard single-dose limit: a larger regular dose is left out of the daily totals
RECENT_LOW_MIN = 180.0
LOW_AFTER_DOSE_DAYS = 7
LOW_AFTER_DOSE_MIN = 840.0
BASAL_DAY_MIN = 20 * 60.0  # a basal dose this recent is today's
Due = Literal["request", "meal", "pre_meal"]


@dataclass(frozen=True, slots=True)
class DoseBeforeLow:
    """A regular dose that a low followed: its size, when it was given, and the low."""

    units: float
    given_at: datetime
    low_mg_dl: float


@dataclass(frozen=True, slots=True)
class BasalGiven:
    """A basal dose already given today: its units and when."""

    units: float
    given_at: datetime


@dataclass(frozen=True, slots=True)
class DoseContext:
    """The history's answer to "is a dose due, and how big is this patient's insulin need?"."""

    due: Due | None  # None: no dose is due
    meal_size: str | None = None
    carbs_g: float | None = None
    usual_carbs_g: float | None = None
    total_daily_units: float | None = None  # regular and long-acting, per day
    typical_daily_regular: float | None = None
    largest_dose: float | None = None
    own_carb_ratio: float | None = None  # g per U, from the patient's dosed meals
    bedtime: bool = False
    meal_dosed_units: float | None = None  # regular insulin already given for the announced meal
    recent_lowest_mg_dl: float | None = None  # lowest reading in the RECENT_LOW_MIN before this one
    dose_before_low: DoseBeforeLow | None = None  # at this time of day, in the last LOW_AFTER_DOSE_DAYS
    first_of_night: bool = False  # a bedtime-slot reading with no other one in the RECENT_LOW_MIN before it
    change_from_mg_dl: float | None = None  # the reading before the newest one, and the minutes between them:
    change_over_min: float | None = None  # a change no physiology allows is a typo or a wrong unit
    eaten_share: float | None = None  # the announced meal: the share of it eaten, when not all
    basal_given: BasalGiven | None = None  # the newest basal (long-acting) dose of the last BASAL_DAY_MIN


def dose_context(history: PatientHistory, at: datetime, request: bool) -> DoseContext:
    """The dose context of a decision at ``at`` (``request``: a person asked for a suggestion)."""
    t = minutes(at)
    floor_t = t - HISTORY_DAYS * MINUTES_PER_DAY
    slot = slot_of(at)
    due: Due | None = "request" if request else None
    meal_size = carbs = eaten = None
    meal_t: float | None = None
    basal: BasalGiven | None = None
    slot_carbs: list[float] = []
    total = regular = largest = 0.0
    first_t: float | None = None
    counted_meals: list[tuple[float, float]] = []  # (time, carbs) of earlier meals with a count
    regular_doses: list[tuple[float, float]] = []  # (time, units), newest first
    dosed_at: list[tuple[float, datetime]] = []  # (time, timestamp) of the regular doses, newest first
    events, times = history.others.events, history.others.times
    first = bisect.bisect_left(times, floor_t)
    for i in range(bisect.bisect_right(times, t) - 1, first - 1, -1):
        e, et = events[i], times[i]
        if e.is_insulin and et == t:
            continue  # insulin at the decision's own time is not known yet
        first_t = et
        kind = e.kind
        if kind is Kind.MEAL:
            if due is None and t - et <= MEAL_WINDOW_MIN:
                due, meal_size, carbs, eaten, meal_t = "meal", e.size, e.carbs_g, e.eaten_share, et
            elif due in ("meal", "request") and meal_size is None and t - et <= MEAL_WINDOW_MIN:
                meal_size, carbs, eaten = e.size, e.carbs_g, e.eaten_share
            if (
                e.carbs_g is not None
                and slot_of(e.ts) == slot
                and t - et > MEAL_WINDOW_MIN
                and len(slot_carbs) < USUAL_CARB_MEALS
            ):
                slot_carbs.append(e.carbs_g)
            if e.carbs_g is not None and t - et > MEAL_WINDOW_MIN and len(counted_meals) < RATIO_MEALS:
                counted_meals.append((et, e.carbs_g))
        elif kind is Kind.INSULIN:
            if basal is None and not e.is_meal_dose and t - et <= BASAL_DAY_MIN:
                basal = BasalGiven(e.dose, e.ts)
            # a regular dose no one could have given does not widen the limits (long-acting doses are larger)
            fits = not e.is_meal_dose or e.dose <= FITTED_MAX_UNITS
            total += e.dose if fits else 0.0
            if e.is_meal_dose:
                regular += e.dose if fits else 0.0
                largest = max(largest, e.dose) if fits else largest
                regular_doses.append((et, e.dose))
                dosed_at.append((et, e.ts))
    recent = _recent_readings(history, t, floor_t, slot)
    if recent.first_t is not None and (first_t is None or recent.first_t < first_t):
        first_t = recent.first_t
    lows = [
        (lt, e.mg_dl)
        for e, lt in zip(reversed(history.lows.events), reversed(history.lows.times), strict=True)
        if floor_t <= lt < t and e.mg_dl is not None
    ]
    two = recent.newest_two  # the reading before the newest one: a change no physiology allows
    if due is None and recent.pre_meal_t is not None and t - recent.pre_meal_t <= MEAL_WINDOW_MIN:
        due, meal_t = "pre_meal", recent.pre_meal_t
    dosed = None
    if due in ("meal", "pre_meal") and meal_t is not None:
        dosed = _meal_dosed_units(history, meal_t, slot, regular_doses, dosed_at)
        if dosed is not None:
            due = None
    days = (t - first_t) / MINUTES_PER_DAY if first_t is not None else 0.0
    known = days >= MIN_DAYS_FOR_TOTALS
    return DoseContext(
        due=due,
        meal_size=meal_size,
        carbs_g=carbs,
        usual_carbs_g=statistics.median(slot_carbs) if slot_carbs else None,
        total_daily_units=total / days if known and total > 0 else None,
        typical_daily_regular=regular / days if known and regular > 0 else None,
        largest_dose=largest or None,
        own_carb_ratio=_own_carb_ratio(counted_meals, regular_doses),
        bedtime=SLOTS[slot] == "bedtime",
        meal_dosed_units=dosed,
        recent_lowest_mg_dl=recent.lowest,
        dose_before_low=_dose_before_low(slot, t, regular_doses, dosed_at, lows),
        first_of_night=SLOTS[slot] == "bedtime" and not recent.night_reading_before,
        change_from_mg_dl=two[1][1] if len(two) == 2 else None,
        change_over_min=two[0][0] - two[1][0] if len(two) == 2 else None,
        eaten_share=eaten,
        basal_given=basal,
    )


@dataclass(frozen=True, slots=True)
class _RecentReadings:
    """What a decision reads from the glucose readings: all of it lies within hours of the decision."""

    first_t: float | None  # the oldest reading of the history window
    pre_meal_t: float | None  # the newest pre-meal reading within MEAL_WINDOW_MIN
    lowest: float | None  # the lowest reading in the RECENT_LOW_MIN before this one
    night_reading_before: bool  # a bedtime-slot reading in the RECENT_LOW_MIN before this one
    newest_two: list[tuple[float, float]]  # (time, mg/dL) of the newest two readings, newest first


def _recent_readings(history: PatientHistory, t: float, floor_t: float, slot: int) -> _RecentReadings:
    readings, times = history.readings.events, history.readings.times
    first = bisect.bisect_left(times, floor_t)
    end = bisect.bisect_right(times, t)
    newest_two: list[tuple[float, float]] = []
    i = end - 1
    while i >= first and len(newest_two) < 2:
        if readings[i].mg_dl is not None:
            newest_two.append((times[i], readings[i].mg_dl))  # type: ignore[arg-type]
        i -= 1
    pre_meal_t: float | None = None
    lowest: float | None = None
    night = False
    for i in range(end - 1, first - 1, -1):
        e, et = readings[i], times[i]
        if t - et > max(MEAL_WINDOW_MIN, RECENT_LOW_MIN):
            break
        if pre_meal_t is None and e.context in PRE_MEAL_CONTEXTS and t - et <= MEAL_WINDOW_MIN:
            pre_meal_t = et
        if et < t and t - et <= RECENT_LOW_MIN:
            night = night or SLOTS[slot_of(e.ts)] == "bedtime"
            if e.mg_dl is not None:
                lowest = e.mg_dl if lowest is None else min(lowest, e.mg_dl)
    return _RecentReadings(times[first] if first < end else None, pre_meal_t, lowest, night, newest_two)


def _meal_dosed_units(
    history: PatientHistory,
    meal_t: float,
    slot: int,
    doses: list[tuple[float, float]],
    dosed_at: list[tuple[float, datetime]],
) -> float | None:
    """Regular insulin already given for the meal (or pre-meal reading) at ``meal_t``, None if none.

    A dose from :data:`DOSE_BEFORE_MEAL_MIN` before the meal on is this meal's. An earlier one in the
    same slot within :data:`SAME_MEAL_MIN` is this meal's only when it was itself given for a meal (a
    meal or pre-meal reading from :data:`MEAL_WINDOW_MIN` before it to :data:`DOSE_BEFORE_MEAL_MIN`
    after it): the meal entered again. A correction given between meals is not a meal's dose."""
    earliest = meal_t - SAME_MEAL_MIN - MEAL_WINDOW_MIN
    evidence = [et for e, et in history.others.between(earliest, meal_t) if e.kind is Kind.MEAL]
    evidence += [et for e, et in history.readings.between(earliest, meal_t) if e.context in PRE_MEAL_CONTEXTS]

    def for_this_meal(dt: float, stamp: datetime) -> bool:
        if dt >= meal_t - DOSE_BEFORE_MEAL_MIN:
            return True
        same_meal = meal_t - dt <= SAME_MEAL_MIN and slot_of(stamp) == slot
        return same_meal and any(dt - MEAL_WINDOW_MIN <= et <= dt + DOSE_BEFORE_MEAL_MIN for et in evidence)

    units = sum(u for (dt, u), (_, stamp) in zip(doses, dosed_at, strict=True) if for_this_meal(dt, stamp))
    return units or None


def _dose_before_low(
    slot: int,
    t: float,
    doses: list[tuple[float, float]],
    dosed_at: list[tuple[float, datetime]],
    lows: list[tuple[float, float]],
) -> DoseBeforeLow | None:
    """The smallest same-slot dose of the last days that the next low followed within the window."""
    by_time: dict[float, float] = {}
    for dose_t, units in doses:
        by_time[dose_t] = by_time.get(dose_t, 0.0) + units
    times = sorted(by_time)
    stamps = dict(dosed_at)
    found: DoseBeforeLow | None = None
    for low_t, mg_dl in lows:
        if t - low_t > LOW_AFTER_DOSE_DAYS * MINUTES_PER_DAY:
            continue
        i = bisect.bisect_left(times, low_t) - 1  # the last dose before the low
        if i < 0 or low_t - times[i] > LOW_AFTER_DOSE_MIN:
            continue
        dose_t = times[i]
        if slot_of(stamps[dose_t]) != slot:
            continue
        units = by_time[dose_t]
        if found is None or units < found.units:
            found = DoseBeforeLow(units, stamps[dose_t], mg_dl)
    return found


def _own_carb_ratio(meals: list[tuple[float, float]], doses: list[tuple[float, float]]) -> float | None:
    """Median grams per unit over counted meals that were dosed; None with too few of them."""
    doses_by_time = sorted(doses)
    dose_times = [d[0] for d in doses_by_time]
    ratios = []
    for meal_t, carbs in meals:
        lo = bisect.bisect_left(dose_times, meal_t - DOSE_BEFORE_MEAL_MIN)
        hi = bisect.bisect_right(dose_times, meal_t + MEAL_WINDOW_MIN)
        units = sum(u for _, u in doses_by_time[lo:hi])
        if units > 0 and carbs > 0:
            ratios.append(carbs / units)
    return statistics.median(ratios) if len(ratios) >= MIN_MEALS_FOR_RATIO else None
