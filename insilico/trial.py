"""The in-silico trial: warm-up, then every arm on the same patients, meals and meters.

For each seed the 30 (or chosen) virtual patients first live ``warmup_days`` dosing by their own
habit (the basal-bolus rule with their carbohydrate-counting error), which becomes every arm's
history. Then each arm takes over a copy of each patient in the same state, for ``days`` days;
all copies step together in one :class:`PatientBatch`. The true glucose of every copy is kept
minute by minute for the metrics.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import numpy as np

from device.config import SafetyConfig
from device.models.inference import DoseModel
from domain.events import Event, Insulin, Kind, PatientProfile
from insilico.arms import ADVISOR_ARMS, AdvisorArm, Arm, DecisionDevice, PatientTerms, Reading, basal_bolus, make_arm
from insilico.basal import BasalSupply
from insilico.cgm import SAMPLE_MIN, CgmStreams
from insilico.metrics import GlucoseMetrics, glucose_metrics
from insilico.patient import PatientBatch
from insilico.population import cohort_of
from insilico.protocol import (
    NPO_FROM,
    NPO_UNTIL,
    STEROIDS_DAYS,
    STEROIDS_FROM,
    DayPlan,
    Meal,
    Protocol,
    day_plan,
    metered,
    uptake_by_minute,
)

START = datetime(2026, 1, 5, tzinfo=UTC)  # day 0 of the warm-up, a Monday
BASAL_REPORT_MINUTE = 6 * 60  # the day's basal infusion reported to the advisor as one long-acting dose
AskBasal = Callable[[int], float]  # ask a row's device for the basal dose now: the units given
Progress = Callable[[int, int, str], None]


@dataclass
class ArmResult:
    """One arm on one virtual patient under one seed."""

    arm: str
    patient: str
    group: str
    seed: int
    metrics: GlucoseMetrics
    doses: int = 0
    units: float = 0.0
    statuses: dict[str, int] = field(default_factory=dict)
    rules: dict[str, int] = field(default_factory=dict)
    hypo_treatments: int = 0
    escalations: int = 0  # lows still there after the rule of 15 three times
    level2_after_no_meal: int = 0  # level-2 events within 6 h after a no-meal reading that was not low
    level2_after_no_meal_dose: int = 0  # the same, counting only no-meal answers that carried insulin
    snacks: int = 0  # carbohydrate advised beside a reading that was not low (bedtime snacks), eaten
    plan_doses: int = 0  # meal doses by the physician's plan where the advisor had insufficient data
    skipped_meals: int = 0  # pre-meal readings whose meal the patient did not eat (scenario not_eating)
    skipped_meal_doses: int = 0  # meal insulin given at them (a correction alone is not counted)
    basal_per_day: float = 0.0  # basal insulin a day: the infusion (rule arms) or the long-acting doses given
    daily_tir: tuple[float, ...] = ()  # time in range 70–180 on each trial day, %
    daily_tbr_70: tuple[float, ...] = ()  # time below 70 on each trial day, %
    collapsed: str = ""  # "warm-up" or "trial" when the simulated glucose collapsed (PatientBatch.collapsed)
    trace: np.ndarray | None = None  # true glucose per minute of the trial (float32)


@dataclass
class _Row:
    arm: Arm
    patient: int
    doses: int = 0
    units: float = 0.0
    snacks: int = 0  # carbohydrate advised beside a reading that was not low, and eaten
    no_meal_minutes: list[int] = field(default_factory=list)  # trial minutes of no-meal readings, not low
    no_meal_dose_minutes: list[int] = field(default_factory=list)  # those of them answered with insulin
    skipped_meals: int = 0
    skipped_meal_doses: int = 0


@dataclass(frozen=True)
class _Item:
    """Something that happens to a row at a minute: a meal eaten, a reading taken, the basal reported."""

    kind: str  # meal, reading, recheck, basal (the infusion reported), basal_time, cgm, exercise, npo, eating
    meal: Meal | None = None  # eaten (meal) or announced with the reading (reading)
    context: str = "unspecified"  # of a reading


class _Day:
    """The events of one day for every row of a batch, by minute."""

    def __init__(self) -> None:
        self.at: dict[int, list[tuple[int, _Item]]] = defaultdict(list)

    def add(self, minute: int, row: int, item: _Item) -> None:
        self.at[minute].append((row, item))


@dataclass
class _Lows:
    """Each row's hypoglycaemia treatment state, carried from day to day."""

    in_a_row: np.ndarray  # treatments of the current low
    treated_at: np.ndarray  # absolute minute of the last treatment
    treatments: np.ndarray  # rule-of-15 treatments given
    escalated: np.ndarray  # lows escalated to the physician

    @classmethod
    def of(cls, rows: int) -> _Lows:
        zeros = np.zeros(rows, dtype=int)
        return cls(zeros.copy(), np.full(rows, -(10**9)), zeros.copy(), zeros.copy())

    def tiled(self, times: int) -> _Lows:
        """The state of every copy of the patients (copy-major), with the counts started afresh."""
        zeros = np.zeros(len(self.in_a_row) * times, dtype=int)
        return _Lows(np.tile(self.in_a_row, times), np.tile(self.treated_at, times), zeros.copy(), zeros.copy())


def _plan_day(
    plans: list[DayPlan], rows_patient: list[int], carry: list[tuple[int, int]], cgm: bool, basal_minute: int
) -> _Day:
    """Meals, readings (with the CGM stream between the finger-sticks) and rechecks by minute."""
    day = _Day()
    for row, patient in enumerate(rows_patient):
        plan = plans[patient]
        announced = {m.minute: m for m in plan.meals if m.announced}
        for meal in plan.meals:
            day.add(meal.minute, row, _Item("meal", meal))
        for minute, context in plan.readings:
            day.add(minute, row, _Item("reading", announced.get(minute), context))
        if cgm:
            taken = {minute for minute, _ in plan.readings}
            for minute in range(0, 1440, SAMPLE_MIN):
                if minute not in taken:
                    day.add(minute, row, _Item("cgm"))
        day.add(BASAL_REPORT_MINUTE, row, _Item("basal"))
        day.add(basal_minute, row, _Item("basal_time"))
        if plan.npo:
            day.add(NPO_FROM, row, _Item("npo"))
            day.add(NPO_UNTIL, row, _Item("eating"))
        if plan.exercise is not None:
            day.add(plan.exercise, row, _Item("exercise"))
    for minute, row in carry:
        day.add(minute, row, _Item("recheck"))
    return day


def _simulate_day(
    batch: PatientBatch,
    rows_patient: list[int],
    plans: list[DayPlan],
    day_start: datetime,
    clock: list[datetime],
    protocol: Protocol,
    carry: list[tuple[int, int]],
    decide: Callable[[int, Reading], tuple[float, float]],
    report: Callable[[int, Event], None],
    trace: np.ndarray | None,
    offset: int,
    lows: _Lows,
    sensor: tuple[CgmStreams, np.ndarray] | None,
    basal: tuple[BasalSupply, AskBasal],
) -> list[tuple[int, int]]:
    """Step one day; returns the rechecks that fall on the next day as (minute, row).

    A reading below the hypoglycaemia threshold is treated by the rule of 15 (15 g, recheck in
    15 min) unless a treatment was given less than 15 min ago (a CGM keeps reading meanwhile);
    after ``max_treatments`` in a row the low is escalated (30 g, no further rechecks: the
    physician takes over). ``sensor``: the CGM streams and this day's noise, in the CGM variant.
    ``basal``: each row's basal insulin, and how an advised row asks for its long-acting dose — at
    basal time, and again at each reading until one is given.
    """
    supply, ask_basal = basal
    day = _plan_day(plans, rows_patient, carry, sensor is not None, protocol.bedtime + 1)
    uptakes = {row: u for row, p in enumerate(rows_patient) if (u := uptake_by_minute(plans[p])) is not None}
    within_day = {row: s for row, p in enumerate(rows_patient) if (s := plans[p].sensitivity) is not None}
    next_day: list[tuple[int, int]] = []
    day_minute = int((day_start - START).total_seconds() // 60)

    def try_basal(row: int, now: int) -> None:
        units = ask_basal(row)
        if units > 0:
            supply.give(row, units, now + 1, now + 1)
            supply.given[row] += units
            supply.pending[row] = False

    for minute in range(1440):
        clock[0] = day_start + timedelta(minutes=minute)
        carbs = np.zeros(len(rows_patient))
        insulin = supply.at(day_minute + minute)
        if trace is not None and protocol.scenario == "steroids":
            batch.sensitivity[:] = protocol.sensitivity(offset + minute)
        for row, sensitivity in within_day.items():
            batch.sensitivity[row] = sensitivity[minute]
        for row, uptake in uptakes.items():
            batch.uptake[row] = uptake[minute]
        for row, item in day.at.get(minute, ()):
            if item.kind == "meal" and item.meal is not None:
                carbs[row] += item.meal.carbs
                continue
            if item.kind == "basal":
                if not supply.advised[row]:  # the infusion, told to the advisor as the day's long-acting dose
                    report(row, _long_acting(clock[0], float(supply.rate[row]) * 1440.0))
                continue
            if item.kind == "basal_time":
                if supply.advised[row]:
                    supply.pending[row] = True
                    try_basal(row, day_minute + minute)
                continue
            if item.kind == "exercise":
                report(row, Event("exercise", "", clock[0], Kind.EXERCISE, intensity="typical"))
                continue
            if item.kind in ("npo", "eating"):
                report(row, Event("nutrition", "", clock[0], Kind.NUTRITION, nutrition=item.kind))
                continue
            plan = plans[rows_patient[row]]
            meal, context = item.meal, item.context
            if item.kind == "cgm" and sensor is not None:
                streams, noise = sensor
                value = streams.reading(
                    float(batch.glucose[row]), float(noise[rows_patient[row], minute // SAMPLE_MIN])
                )
                source = "cgm"
            else:
                source = "meter"
                factor = plan.meter_factor.get(minute, 1.15 if protocol.scenario == "biased_meter" else 1.0)
                value = metered(float(batch.glucose[row]), factor)
            estimate = plan.carb_estimate.get(minute) if meal is not None else None
            skipped = item.kind == "reading" and minute in plan.skipped
            reading = Reading(clock[0], value, context, meal, estimate, source, plan.ask and source == "meter", skipped)
            units, snack = decide(row, reading)
            insulin[row] += units
            if supply.pending[row] and item.kind != "cgm":
                try_basal(row, day_minute + minute)
            if value >= protocol.hypo_threshold:
                lows.in_a_row[row] = 0
                carbs[row] += snack  # advice beside a reading that is not low (a low is treated below)
                continue
            now = day_minute + minute
            if now - lows.treated_at[row] < protocol.recheck_min:
                continue  # treated a moment ago: wait for the recheck
            lows.treated_at[row] = now
            lows.treatments[row] += 1
            lows.in_a_row[row] += 1
            if lows.in_a_row[row] > protocol.max_treatments:
                carbs[row] += protocol.escalation_carbs
                lows.escalated[row] += 1
                lows.in_a_row[row] = 0
                continue
            carbs[row] += protocol.hypo_carbs
            if sensor is not None:
                continue  # the stream is the recheck
            recheck = minute + protocol.recheck_min
            if recheck < 1440:
                day.add(recheck, row, _Item("recheck"))
            else:
                next_day.append((recheck - 1440, row))
        batch.step(carbs, insulin)
        if trace is not None:
            trace[:, offset + minute] = batch.glucose
    return next_day


def run_seed(
    protocol: Protocol,
    names: list[str],
    arms: list[str],
    seed: int,
    model: DoseModel | None,
    safety: SafetyConfig,
    progress: Progress = lambda _d, _t, _m: None,
    keep_traces: bool = True,
    device: DecisionDevice | None = None,
) -> list[ArmResult]:
    """One seed of the trial: warm-up, then every arm; the results per arm and patient.

    ``device``: where the ``advisor`` arm's events go (default: the device core in this process).
    """
    cohort = cohort_of(names)
    weights = cohort.params["BW"]
    keys = cohort.keys
    n = len(names)
    clock = [START]
    terms = [PatientTerms(float(cohort.carb_ratio[p]), float(cohort.correction_factor[p])) for p in range(n)]
    rows = [_Row(make_arm(arm, names[p], terms[p], model, safety, clock, device), p) for arm in arms for p in range(n)]
    warmup = protocol.effective_warmup_days
    total = warmup + protocol.days
    habit_scale = protocol.habit_scale

    def profile_of(patient: int, steroids: bool | None = None) -> Event:
        """What a ward knows of a patient: weight, age, type 1 diabetes (and, when told, steroids)."""
        weight, age = round(float(weights[patient]), 1), float(cohort.age[patient])
        profile = PatientProfile(weight, age, "type1", insulin_naive=False, steroids=steroids)
        return Event("profile", "", clock[0], Kind.PROFILE, profile=profile)

    for row in rows:
        _report(row.arm, profile_of(row.patient))

    # --- warm-up: each patient once, dosing by habit; every arm of the patient sees the same log
    batch = PatientBatch(cohort)
    by_patient: dict[int, list[_Row]] = defaultdict(list)
    for row in rows:
        by_patient[row.patient].append(row)

    def warm_decide(patient: int, reading: Reading) -> tuple[float, float]:
        units = 0.0
        if reading.meal is not None and reading.carb_estimate is not None:
            units = round(habit_scale * basal_bolus(reading.carb_estimate, reading.mg_dl, terms[patient]) * 2) / 2
        for row in by_patient[patient]:
            _observe_reading(row.arm, reading)
            row.arm.given(reading.meal.slot if reading.meal else None, units)
        return units, 0.0

    def warm_report(patient: int, event: Event) -> None:
        for row in by_patient[patient]:
            _report(row.arm, event)

    carry: list[tuple[int, int]] = []
    warm_lows = _Lows.of(n)
    home_basal = cohort.basal_rate * np.array([protocol.basal_factor(k) for k in keys])  # the patient's own
    warm_supply = BasalSupply(home_basal, np.zeros(n, dtype=bool))
    streams = CgmStreams(protocol.cgm_sensor, seed, cohort.keys) if protocol.cgm else None

    def sensor() -> tuple[CgmStreams, np.ndarray] | None:
        return None if streams is None else (streams, streams.next_day())

    for day in range(warmup):
        plans = [day_plan(protocol, seed, keys[p], day, float(weights[p])) for p in range(n)]
        carry = _simulate_day(
            batch,
            list(range(n)),
            plans,
            START + timedelta(days=day),
            clock,
            protocol,
            carry,
            warm_decide,
            warm_report,
            None,
            0,
            warm_lows,
            sensor(),
            (warm_supply, lambda _row: 0.0),
        )
        progress(day + 1, total, f"seed {seed}: warm-up day {day + 1} of {warmup}")
    for row in rows:
        if isinstance(row.arm, AdvisorArm):
            row.arm.statuses.clear()
            row.arm.rules.clear()

    # --- the trial: one copy of every patient per arm, all from the warmed-up state
    warm_collapsed = batch.collapsed
    trial = batch.repeat(len(arms))
    minutes = protocol.days * 1440
    traces = np.zeros((len(rows), minutes), dtype=np.float32)

    def decide(index: int, reading: Reading) -> tuple[float, float]:
        row = rows[index]
        decision = row.arm.decide(reading)
        units = max(0.0, float(decision.units))
        if decision.carbs_g > 0 and reading.mg_dl >= protocol.hypo_threshold:
            row.snacks += 1
        row.arm.given(reading.meal.slot if reading.meal else None, units)
        if units > 0:
            row.doses += 1
            row.units += units
        if reading.skipped:
            row.skipped_meals += 1
            row.skipped_meal_doses += units > 0 and "correction_only" not in decision.rules
        planned = reading.source == "meter" or units > 0  # a CGM value counts when it was acted on
        if reading.meal is None and reading.mg_dl >= protocol.hypo_threshold and planned:
            at = int((reading.at - START).total_seconds() // 60) - warmup * 1440
            row.no_meal_minutes.append(at)
            if units > 0:
                row.no_meal_dose_minutes.append(at)
        return units, decision.carbs_g

    def report(index: int, event: Event) -> None:
        _report(rows[index].arm, event)

    rows_patient = [row.patient for row in rows]
    lows = warm_lows.tiled(len(arms))
    advised = np.array([isinstance(row.arm, AdvisorArm) for row in rows])
    supply = BasalSupply(trial.cohort.basal_rate, advised)
    start = warmup * 1440
    for index, row in enumerate(rows):  # yesterday evening's long-acting dose, the patient's own, still acting
        if advised[index]:
            supply.give(index, float(home_basal[row.patient]) * 1440.0, start - 1440 + protocol.bedtime + 1, start)

    def ask_basal(index: int) -> float:
        arm = rows[index].arm
        return arm.basal() if isinstance(arm, AdvisorArm) else 0.0

    carry_rows = [
        (minute, row) for minute, patient in carry for row in range(len(rows)) if rows_patient[row] == patient
    ]
    course = {STEROIDS_FROM: True, STEROIDS_FROM + STEROIDS_DAYS: False} if protocol.scenario == "steroids" else {}
    for day in range(protocol.days):
        plans = [day_plan(protocol, seed, keys[p], warmup + day, float(weights[p])) for p in range(n)]
        if day in course:  # the ward tells the device the steroid course started, or ended
            clock[0] = START + timedelta(days=warmup + day)
            for row in rows:
                _report(row.arm, profile_of(row.patient, course[day]))
        carry_rows = _simulate_day(
            trial,
            rows_patient,
            plans,
            START + timedelta(days=warmup + day),
            clock,
            protocol,
            carry_rows,
            decide,
            report,
            traces,
            day * 1440,
            lows,
            sensor(),
            (supply, ask_basal),
        )
        progress(warmup + day + 1, total, f"seed {seed}: trial day {day + 1} of {protocol.days}")

    minute_of_day = np.arange(minutes) % 1440
    results = []
    for index, row in enumerate(rows):
        trace = traces[index]
        arm = row.arm
        results.append(
            ArmResult(
                arm=arm.name,
                patient=names[row.patient],
                group=names[row.patient].split("#")[0],
                seed=seed,
                metrics=glucose_metrics(trace, minute_of_day),
                doses=row.doses,
                units=round(row.units, 2),
                statuses=dict(arm.statuses) if isinstance(arm, AdvisorArm) else {},
                rules=dict(arm.rules) if isinstance(arm, AdvisorArm) else {},
                hypo_treatments=int(lows.treatments[index]),
                escalations=int(lows.escalated[index]),
                level2_after_no_meal=_level2_after(trace, row.no_meal_minutes),
                level2_after_no_meal_dose=_level2_after(trace, row.no_meal_dose_minutes),
                snacks=row.snacks,
                plan_doses=arm.plan_doses if isinstance(arm, AdvisorArm) else 0,
                skipped_meals=row.skipped_meals,
                skipped_meal_doses=row.skipped_meal_doses,
                basal_per_day=round(
                    float(supply.given[index]) / protocol.days
                    if advised[index]
                    else float(supply.rate[index]) * 1440.0,
                    2,
                ),
                daily_tir=_daily(trace, lambda g: (g >= 70.0) & (g <= 180.0)),
                daily_tbr_70=_daily(trace, lambda g: g < 70.0),
                collapsed="warm-up" if warm_collapsed[row.patient] else "trial" if trial.collapsed[index] else "",
                trace=trace if keep_traces else None,
            )
        )
    return results


def _daily(trace: np.ndarray, inside: Callable[[np.ndarray], np.ndarray]) -> tuple[float, ...]:
    """The share of each day's minutes (in %) whose glucose is ``inside``."""
    days = trace[: len(trace) // 1440 * 1440].reshape(-1, 1440)
    return tuple(round(100.0 * float(v), 2) for v in inside(days).mean(axis=1))


def _observe_reading(arm: Arm, reading: Reading) -> None:
    """Warm-up: the reading (and the meal announced with it) enters the arm's history."""
    if not isinstance(arm, AdvisorArm):
        return
    for event in arm.reading_events(reading):
        arm.observe(event)


def _long_acting(at: datetime, units: float) -> Event:
    """The day's basal infusion as the long-acting dose the advisor is told of (id and patient set on report)."""
    return Event("basal", "", at, Kind.INSULIN, insulin=Insulin.ULTRALENTE, units=round(units, 1))


def _report(arm: Arm, event: Event) -> None:
    """Tell an advisor arm of an event of its patient (the other arms need no reports)."""
    if isinstance(arm, AdvisorArm):
        arm.observe(replace(event, id=arm._id(), patient=arm.patient))


def _level2_after(trace: np.ndarray, minutes: list[int], window: int = 360) -> int:
    """Level-2 hypoglycaemia events (15 min below 54) that begin within ``window`` min after one of ``minutes``."""
    below = trace < 54.0
    starts = [
        i for i in range(len(below) - 14) if below[i] and (i == 0 or not below[i - 1]) and below[i : i + 15].all()
    ]
    return sum(1 for s in starts if any(0 <= s - m <= window for m in minutes))


def run_trial(
    protocol: Protocol,
    names: list[str],
    arms: list[str],
    seeds: list[int],
    model: DoseModel | None,
    safety: SafetyConfig,
    progress: Progress = lambda _d, _t, _m: None,
    device: Callable[[int], DecisionDevice] | None = None,
) -> tuple[list[ArmResult], float]:
    """Every seed in turn; the results and the wall time in seconds.

    ``device(seed)``: a fresh device for the ``advisor`` arm of each seed (default: in this process).
    """
    unknown = [a for a in arms if a not in (*ADVISOR_ARMS, "oracle", "carb_error", "habit")]
    if unknown:
        raise ValueError(f"unknown arm(s): {', '.join(unknown)}")
    started = time.perf_counter()
    results: list[ArmResult] = []
    days = protocol.effective_warmup_days + protocol.days
    for i, seed in enumerate(seeds):

        def seed_progress(done: int, _total: int, message: str, before: int = i * days) -> None:
            progress(before + done, len(seeds) * days, message)

        seed_device = device(seed) if device is not None else None
        results += run_seed(protocol, names, arms, seed, model, safety, seed_progress, device=seed_device)
    return results, time.perf_counter() - started


def clinician_terms(names: list[str]) -> SafetyConfig:
    """Safety profiles that set each patient's sensitivity and carb ratio (simglucose's CF and CR)."""
    cohort = cohort_of(names)
    default = SafetyConfig().default
    return SafetyConfig(
        default=default,
        patients={
            name.replace("#", "-"): replace(
                default,
                insulin_sensitivity_mg_dl_per_u=round(float(cohort.correction_factor[i]), 1),
                carb_ratio_g_per_u=round(float(cohort.carb_ratio[i]), 1),
            )
            for i, name in enumerate(names)
        },
    )
