"""What happens to each virtual patient, day by day (pure logic, seeded).

The protocol of docs/insilico.md: three meals with day-to-day variation in size and time, a
finger-stick before each meal and at bedtime with meter error, basal insulin as a continuous
infusion, lows treated by the rule of 15. Every random draw comes from a generator seeded by
(seed, patient, day), so every arm sees the same meals, readings and meter errors (common
random numbers) and arms are compared paired. Stress scenarios change the plan.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

SLOT_NAMES = ("breakfast", "lunch", "supper")
PRE_MEAL_CONTEXT = {"breakfast": "pre_breakfast", "lunch": "pre_lunch", "supper": "pre_supper"}
SCENARIOS = {
    "standard": "the protocol as described",
    "skipped_meal": "each day one meal (drawn at random) is skipped; its reading still happens, with no meal context",
    "late_snack": "an unannounced 30 g snack between 21:00 and 23:00 every day",
    "missed_readings": "each reading is missed with probability 0.3 (no reading, no correction)",
    "biased_meter": "the meter reads 15 % high",
    "exercise": "45 min of moderate exercise in the afternoon on about half the days, reported to the advisor",
    "poor_habit": "during the warm-up the patient's own doses are 30 % too high",
    "new_patient": "no warm-up: the advisor meets the patient on day 1 and knows only the profile (weight, age)",
    "steroids": "insulin sensitivity 40 % lower from trial day 3 for 5 days, then back over 3 days; the advisor "
    "is told (a profile with steroids: true at the start, false once the course ends)",
    "underdosed_habit": "during the warm-up the patient's own meal doses are 40 % too low (titration must find "
    "the need)",
    "basal_error": "during the warm-up the patient's own basal is 70 % of need (every other patient) or 130 % "
    "(the others); the advisor's basal must find the need",
    "dawn": "insulin sensitivity varies within the day: each patient's own morning, afternoon and evening levels "
    "(day to day ±10 %) and a dawn phenomenon, 15–35 % less sensitive from 03:00 to 08:00 (UVA/Padova 2017)",
    "not_eating": "no meal is announced before its reading; after it the meal is skipped with probability 0.2, and "
    "about one day in five the patient is nil by mouth (npo) from 05:00 to 21:30",
}
SKIP_AFTER_READING = 0.2
STEROIDS_FROM, STEROIDS_DAYS, STEROIDS_TAPER_DAYS, STEROIDS_SENSITIVITY = 2, 5, 3, 0.6
NPO_DAY = 0.2
NPO_FROM, NPO_UNTIL = 5 * 60, 21 * 60 + 30


@dataclass(frozen=True)
class Protocol:
    """The trial protocol; defaults in one place."""

    warmup_days: int = 7
    days: int = 14
    meal_times: tuple[int, ...] = (7 * 60, 12 * 60, 18 * 60)  # minutes after midnight
    meal_carbs: tuple[float, ...] = (45.0, 70.0, 80.0)  # g for a 70 kg adult; scaled by body weight
    bedtime: int = 22 * 60
    carb_variation: float = 0.2  # day-to-day: log-normal sigma of meal size
    time_jitter: int = 20  # ± minutes around each meal time
    meter_cv: float = 0.05  # finger-stick meter error (coefficient of variation)
    carb_count_error: float = 0.25  # sigma of a person's carbohydrate estimate (the counting-error arm)
    hypo_threshold: float = 70.0  # a reading below this is treated: 15 g, recheck in 15 min
    hypo_carbs: float = 15.0
    recheck_min: int = 15
    max_treatments: int = 3  # still low after this many: escalated (30 g, the physician called), no more rechecks
    escalation_carbs: float = 30.0
    cgm: bool = False  # also a CGM reading every 5 min (simglucose's sensor noise) between the finger-sticks
    cgm_sensor: str = "GuardianRT"  # simglucose's 5-minute sensor
    scenario: str = "standard"

    def __post_init__(self) -> None:
        if self.scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {self.scenario!r}; choose one of {', '.join(SCENARIOS)}")
        if self.days < 1 or self.warmup_days < 0:
            raise ValueError("days must be at least 1 and warmup_days not negative")

    @property
    def effective_warmup_days(self) -> int:
        return 0 if self.scenario == "new_patient" else self.warmup_days

    def sensitivity(self, trial_minute: int) -> float:
        """Insulin sensitivity against the patient's own at this minute of the trial (``steroids``)."""
        if self.scenario != "steroids":
            return 1.0
        day = trial_minute / 1440.0
        if STEROIDS_FROM <= day < STEROIDS_FROM + STEROIDS_DAYS:
            return STEROIDS_SENSITIVITY
        taper = day - STEROIDS_FROM - STEROIDS_DAYS
        if 0 <= taper < STEROIDS_TAPER_DAYS:
            return STEROIDS_SENSITIVITY + (1 - STEROIDS_SENSITIVITY) * taper / STEROIDS_TAPER_DAYS
        return 1.0

    @property
    def habit_scale(self) -> float:
        """The patient's own meal doses during the warm-up against the basal-bolus rule's."""
        return {"poor_habit": 1.3, "underdosed_habit": 0.6}.get(self.scenario, 1.0)

    def basal_factor(self, key: int) -> float:
        """The patient's own basal during the warm-up against their need (``basal_error``: 0.7 or 1.3)."""
        if self.scenario != "basal_error":
            return 1.0
        return 0.7 if key % 2 == 0 else 1.3

    def with_scenario(self, scenario: str) -> Protocol:
        return replace(self, scenario=scenario)


@dataclass(frozen=True)
class Meal:
    minute: int  # of the day
    slot: str
    carbs: float  # g eaten
    announced: bool  # the person tells the advisor (a snack is not announced)
    size: str  # typical / more / less against the patient's usual for the slot


@dataclass(frozen=True)
class DayPlan:
    """One patient's day: meals, reading times and the meter's error factors."""

    meals: tuple[Meal, ...]
    readings: tuple[tuple[int, str], ...]  # (minute of the day, glucose context)
    meter_factor: dict[int, float] = field(default_factory=dict)  # minute -> multiplicative meter error
    carb_estimate: dict[int, float] = field(default_factory=dict)  # minute -> the person's carb estimate
    exercise: int | None = None  # minute the day's exercise starts
    skipped: frozenset[int] = frozenset()  # minutes of pre-meal readings whose meal is not eaten
    npo: bool = False  # nil by mouth from NPO_FROM to NPO_UNTIL (recorded as nutrition events)
    ask: bool = False  # meals are not announced with their reading: the person asks whether the patient eats
    sensitivity: np.ndarray | None = None  # (1440,) insulin sensitivity by minute of the day (scenario dawn)


EXERCISE_MIN = 45
EXERCISE_AFTER_MIN = 180
EXERCISE_UPTAKE = 1.5  # glucose utilisation during exercise, × rest
EXERCISE_AFTER_UPTAKE = 1.25  # for EXERCISE_AFTER_MIN after it


DAWN = (3 * 60, 6 * 60, 8 * 60)  # the dawn phenomenon starts, is deepest, and has passed (minutes of the day)
DAWN_DEPTH = (0.15, 0.35)  # less sensitive at its deepest, drawn per patient
PERIODS = (4 * 60, 11 * 60, 17 * 60)  # morning, afternoon and evening levels begin (the evening runs to 04:00)
PERIOD_SPREAD = 0.2  # log-normal sigma of a patient's level in each period
DAY_TO_DAY = 0.1  # log-normal sigma of a day's levels around the patient's own
RAMP_MIN = 60  # a level changes smoothly over an hour


def within_day_sensitivity(seed: int, patient: int, day: int) -> np.ndarray:
    """Insulin sensitivity by minute of one day (scenario ``dawn``), against the patient's average.

    As the UVA/Padova 2017 simulator describes it: a patient's own sensitivity differs between
    the morning, the afternoon and the evening (drawn per patient and seed, varied day to day), and
    the liver's glucose output rises before waking (the dawn phenomenon: sensitivity of the liver and
    tissues lower from 03:00, deepest at 06:00, gone by 08:00). The model's sensitivity multiplier
    acts on insulin's suppression of glucose production and on its uptake into tissues.
    """
    own = np.random.default_rng([seed, patient, 7])
    levels = own.lognormal(0.0, PERIOD_SPREAD, size=3)
    levels /= np.exp(np.log(levels).mean())  # the patient's own average stays theirs
    depth = own.uniform(*DAWN_DEPTH)
    today = levels * np.random.default_rng([seed, patient, day, 7]).lognormal(0.0, DAY_TO_DAY, size=3)
    minutes = np.arange(1440)
    period = np.searchsorted(PERIODS, minutes, side="right") - 1  # -1: before 04:00, the evening's
    step = today[period]
    kernel = np.ones(RAMP_MIN) / RAMP_MIN
    padded = np.concatenate([step[-RAMP_MIN:], step, step[:RAMP_MIN]])
    smooth = np.convolve(padded, kernel, mode="same")[RAMP_MIN:-RAMP_MIN]
    start, deepest, end = DAWN
    dawn = np.interp(minutes, [start, deepest, end], [0.0, depth, 0.0], left=0.0, right=0.0)
    return smooth * (1.0 - dawn)


def uptake_by_minute(plan: DayPlan) -> np.ndarray | None:
    """The day's glucose-utilisation multiplier minute by minute, or None on a day without exercise."""
    if plan.exercise is None:
        return None
    uptake = np.ones(1440)
    start, end = plan.exercise, plan.exercise + EXERCISE_MIN
    uptake[start:end] = EXERCISE_UPTAKE
    uptake[end : end + EXERCISE_AFTER_MIN] = EXERCISE_AFTER_UPTAKE
    return uptake


def day_plan(protocol: Protocol, seed: int, patient: int, day: int, body_weight: float) -> DayPlan:
    """The plan of ``day`` for virtual patient number ``patient`` (:attr:`Cohort.keys`) under ``seed``."""
    rng = np.random.default_rng([seed, patient, day])
    scale = float(np.clip(body_weight / 70.0, 0.45, 1.25))
    skip = int(rng.integers(len(SLOT_NAMES))) if protocol.scenario == "skipped_meal" else -1
    meals, readings = [], []
    for i, (base_minute, base_carbs, slot) in enumerate(
        zip(protocol.meal_times, protocol.meal_carbs, SLOT_NAMES, strict=True)
    ):
        minute = base_minute + int(rng.integers(-protocol.time_jitter, protocol.time_jitter + 1))
        ratio = float(rng.lognormal(0.0, protocol.carb_variation))
        size = "more" if ratio > 1.2 else "less" if ratio < 0.8 else "typical"
        if i != skip:
            meals.append(Meal(minute, slot, round(base_carbs * scale * ratio, 1), True, size))
        readings.append((minute, PRE_MEAL_CONTEXT[slot] if i != skip else "unspecified"))
    readings.append((protocol.bedtime, "unspecified"))
    snack_minute = int(rng.integers(21 * 60, 23 * 60))
    if protocol.scenario == "late_snack":
        meals.append(Meal(snack_minute, "snack", round(30.0 * scale, 1), False, "typical"))
    missed = rng.random(len(readings)) < 0.3
    if protocol.scenario == "missed_readings":
        readings = [r for r, gone in zip(readings, missed, strict=True) if not gone]
    bias = 1.15 if protocol.scenario == "biased_meter" else 1.0
    meter = {m: bias * float(np.clip(rng.normal(1.0, protocol.meter_cv), 0.8, 1.2)) for m, _ in readings}
    estimate = {
        meal.minute: meal.carbs * float(np.clip(rng.normal(1.0, protocol.carb_count_error), 0.4, 1.8))
        for meal in meals
        if meal.announced
    }
    exercise_day = rng.random() < 0.5
    exercise_start = int(rng.integers(15 * 60, 17 * 60))
    exercise = exercise_start if protocol.scenario == "exercise" and exercise_day else None
    skips, npo_draw = rng.random(len(SLOT_NAMES)), rng.random()  # drawn last: other scenarios' streams stay
    skipped: frozenset[int] = frozenset()
    npo = False
    if protocol.scenario == "not_eating":
        npo = bool(npo_draw < NPO_DAY)
        pre_meal = [m.minute for m in meals if m.slot in SLOT_NAMES]
        skipped = frozenset(m for m, p in zip(pre_meal, skips, strict=False) if npo or p < SKIP_AFTER_READING)
        meals = [m for m in meals if m.minute not in skipped]
    return DayPlan(
        tuple(sorted(meals, key=lambda m: m.minute)),
        tuple(sorted(readings)),
        meter,
        estimate,
        exercise,
        skipped,
        npo,
        protocol.scenario == "not_eating",
        within_day_sensitivity(seed, patient, day) if protocol.scenario == "dawn" else None,
    )


def metered(true_glucose: float, factor: float) -> float:
    """A finger-stick reading: the true value times the meter's error, whole mg/dL, within 20–600."""
    return float(np.clip(round(true_glucose * factor), 20, 600))
