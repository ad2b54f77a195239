"""Decision-point features: cyclic time, slots, lags, flags and fixed-length windows.

One implementation serves training and the device. A :class:`PatientHistory` holds one
patient's events in time order; :func:`window_at` turns the history into the model input for
a decision at time ``T``. Training fills a history with a whole log and asks for every
decision point (bulk); the device appends events one at a time and asks when a glucose
reading or request arrives (incremental). Both call exactly the same code.

What is known at a decision at ``T`` (docs/evaluation.md, "Dose model on AIM-94"): every event with an earlier
timestamp, plus the non-insulin events at ``T``. Insulin records at ``T`` are not known, so
they are skipped even when the history already holds them.

A window is ``window`` steps, oldest first: the patient's previous decision times (each the
context then plus the regular dose given) and, last, the current decision's context with the
dose unknown. Missing steps are all-zero padding with ``present = 0``.
"""

from __future__ import annotations

import bisect
import math
import statistics
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from domain.events import Event, Insulin, Kind
from domain.insulin_activity import RAPID_ANALOGUE, REGULAR_INSULIN, ActivityCurve

SLOTS = ("morning", "midday", "evening", "bedtime")
MINUTES_PER_DAY = 1440.0
AGE_CAP_H = 72.0
STEP_AGE_CAP_H = 168.0
MEASURED_WITHIN_MIN = 30.0
MEAL_WITHIN_MIN = 180.0
MEAL_ANNOUNCED_MIN = 30.0  # a meal this recent is the one being dosed (domain/dose_context.py agrees)
EXERCISE_WITHIN_MIN = 720.0
SAME_SLOT_DOSES = 5
LOW_MG_DL = 70.0  # the hypoglycaemia threshold no profile may lower

CONTEXT_FEATURES = (
    "tod_sin",
    "tod_cos",
    "slot_morning",
    "slot_midday",
    "slot_evening",
    "slot_bedtime",
    "glucose_last_mg_dl",
    "glucose_known",
    "glucose_measured",
    "glucose_age_h",
    "glucose_ctx_pre_meal",
    "glucose_ctx_post_meal",
    "glucose_ctx_pre_snack",
    "glucose_mean_24h",
    "glucose_n_24h",
    "glucose_delta_prev",
    "reg_same_slot_lag1",
    "reg_same_slot_lag2",
    "reg_same_slot_lag3",
    "reg_same_slot_median5",
    "reg_same_slot_count",
    "reg_usual_units",
    "reg_last_units",
    "reg_last_age_h",
    "reg_24h_units",
    "reg_iob_units",
    "nph_last_units",
    "nph_last_age_h",
    "nph_same_slot_lag1",
    "ul_last_units",
    "ul_last_age_h",
    "meal_typical_3h",
    "meal_more_3h",
    "meal_less_3h",
    "meal_announced_30m",
    "exercise_typical_12h",
    "exercise_more_12h",
    "exercise_less_12h",
    "hypo_24h",
    "hypo_age_h",
    "special_24h",
    "prev_event_age_h",
)
STEP_FEATURES = ("dose_regular_units", "is_current", "present", "step_age_h")
FEATURE_NAMES = CONTEXT_FEATURES + STEP_FEATURES
_IDX = {name: i for i, name in enumerate(FEATURE_NAMES)}
_N_CONTEXT = len(CONTEXT_FEATURES)

_PRE_MEAL = {"pre_breakfast", "pre_lunch", "pre_supper"}
_POST_MEAL = {"post_breakfast", "post_lunch", "post_supper"}


@dataclass(frozen=True, slots=True)
class FeatureSpec:
    """The shape of the model input; recorded in the bundle manifest."""

    window: int = 12
    lookback_days: float = 30.0
    insulin_duration_min: float = REGULAR_INSULIN.duration_min
    insulin_peak_min: float = REGULAR_INSULIN.peak_min

    def __post_init__(self) -> None:
        if not 1 <= self.window <= 64:
            raise ValueError("window must be between 1 and 64 steps")
        if not 1 <= self.lookback_days <= 365:
            raise ValueError("lookback_days must be between 1 and 365")

    @property
    def names(self) -> tuple[str, ...]:
        return FEATURE_NAMES

    @property
    def n_features(self) -> int:
        return len(FEATURE_NAMES)

    @property
    def curve(self) -> ActivityCurve:
        return ActivityCurve(self.insulin_duration_min, self.insulin_peak_min)

    def to_json(self) -> dict:
        return {
            "window": self.window,
            "lookback_days": self.lookback_days,
            "insulin_duration_min": self.insulin_duration_min,
            "insulin_peak_min": self.insulin_peak_min,
            "features": list(FEATURE_NAMES),
        }

    @classmethod
    def from_json(cls, data: dict) -> FeatureSpec:
        spec = cls(
            window=int(data["window"]),
            lookback_days=float(data["lookback_days"]),
            insulin_duration_min=float(data["insulin_duration_min"]),
            insulin_peak_min=float(data["insulin_peak_min"]),
        )
        if list(data.get("features", [])) != list(FEATURE_NAMES):
            raise ValueError("feature names in the manifest do not match this software's features")
        return spec


def slot_of(ts: datetime) -> int:
    """Slot index by hour (docs/evaluation.md, "Slots"): 04–11, 11–16, 16–21, 21–04."""
    h = ts.hour
    if 4 <= h < 11:
        return 0
    if 11 <= h < 16:
        return 1
    if 16 <= h < 21:
        return 2
    return 3


def minutes(ts: datetime) -> float:
    """Absolute time in minutes, the history's clock."""
    return ts.timestamp() / 60.0


class OutOfOrderError(ValueError):
    """An event older than the newest one in the history; the caller must rebuild."""


@dataclass(slots=True)
class Series:
    """Events of one sort in time order, with their times in minutes (for bisecting)."""

    events: list[Event] = field(default_factory=list)
    times: list[float] = field(default_factory=list)

    def append(self, event: Event, t: float) -> None:
        self.events.append(event)
        self.times.append(t)

    def between(self, start: float, end: float) -> list[tuple[Event, float]]:
        """The events (with their times) from ``start`` up to, not including, ``end``."""
        lo, hi = bisect.bisect_left(self.times, start), bisect.bisect_left(self.times, end)
        return list(zip(self.events[lo:hi], self.times[lo:hi], strict=True))

    def prune(self, horizon: float) -> None:
        """Forget the events before ``horizon``."""
        cut = bisect.bisect_left(self.times, horizon)
        if cut:
            del self.events[:cut]
            del self.times[:cut]


@dataclass(slots=True)
class PatientHistory:
    """One patient's events in time order, also by sort, plus a cache of past decision steps.

    ``readings`` (glucose), ``lows`` (readings below :data:`LOW_MG_DL`) and ``others`` (every
    other kind) let a decision read a CGM reading every 5 minutes without walking through weeks
    of them: what a decision reads from readings lies within hours, the rest is a few events a day.
    """

    spec: FeatureSpec = field(default_factory=FeatureSpec)
    events: list[Event] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    readings: Series = field(default_factory=Series)
    lows: Series = field(default_factory=Series)
    others: Series = field(default_factory=Series)
    _steps: dict[float, np.ndarray] = field(default_factory=dict)

    def append(self, event: Event) -> None:
        """Add the newest event; raise :class:`OutOfOrderError` if it is older than the last."""
        t = minutes(event.ts)
        if self.times and t < self.times[-1]:
            raise OutOfOrderError(f"event {event.id} at {event.ts.isoformat()} is older than the newest event")
        self.events.append(event)
        self.times.append(t)
        if event.kind is Kind.GLUCOSE:
            self.readings.append(event, t)
            if event.mg_dl is not None and event.mg_dl < LOW_MG_DL:
                self.lows.append(event, t)
        else:
            self.others.append(event, t)
        self._steps.pop(t, None)  # a step at this very timestamp may now read differently

    def extend(self, events: list[Event]) -> None:
        for event in events:
            self.append(event)

    def prune(self, now: datetime) -> None:
        """Forget what no decision at or after ``now`` can read; features do not change.

        A window reaches back one look-back for its past steps, and each step's context one
        more, so two look-backs are kept.
        """
        horizon = minutes(now) - 2 * self.spec.lookback_days * MINUTES_PER_DAY
        cut = bisect.bisect_left(self.times, horizon)
        if cut:
            del self.events[:cut]
            del self.times[:cut]
            for series in (self.readings, self.lows, self.others):
                series.prune(horizon)
            self._steps = {t: v for t, v in self._steps.items() if t >= horizon}

    def newest_reading(self) -> Event | None:
        """The newest glucose reading held."""
        return self.readings.events[-1] if self.readings.events else None

    def newest_meal_dose(self) -> Event | None:
        """The newest regular or rapid-acting dose held."""
        return next((e for e in reversed(self.others.events) if e.is_meal_dose), None)

    def __len__(self) -> int:
        return len(self.events)


def context_at(history: PatientHistory, at: datetime) -> np.ndarray:
    """Context features for a decision at ``at`` from what is known then (unscaled)."""
    return _context(history, minutes(at), slot_of(at), at)


def _context(history: PatientHistory, t: float, slot: int, at: datetime) -> np.ndarray:
    spec = history.spec
    out = np.zeros(_N_CONTEXT, dtype=np.float64)
    tod = (at.hour * 60 + at.minute) / MINUTES_PER_DAY * 2 * math.pi
    out[_IDX["tod_sin"]] = math.sin(tod)
    out[_IDX["tod_cos"]] = math.cos(tod)
    out[_IDX["slot_morning"] + slot] = 1.0

    floor_t = t - spec.lookback_days * MINUTES_PER_DAY
    curve = spec.curve

    readings, reading_times = history.readings.events, history.readings.times
    first = bisect.bisect_left(reading_times, floor_t)
    end = bisect.bisect_right(reading_times, t)
    glucose_last: Event | None = readings[end - 1] if end - 1 >= first else None
    glucose_last_t = reading_times[end - 1] if glucose_last is not None else 0.0
    glucose_prev: float | None = readings[end - 2].reading if end - 2 >= first else None
    day_ago = max(first, bisect.bisect_left(reading_times, t - MINUTES_PER_DAY))  # t - 1440 is exact in minutes
    glucose_24h = [e.reading for e in readings[day_ago:end]]
    glucose_24h.reverse()  # newest first, the order they are summed in
    prev_event_t: float | None = glucose_last_t if glucose_last is not None else None

    same_slot: list[float] = []
    reg_last_t: float | None = None
    reg_last_units = 0.0
    reg_24h = 0.0
    iob = 0.0
    nph_last_t: float | None = None
    nph_same_slot: float | None = None
    ul_last_t: float | None = None
    hypo_last_t: float | None = None

    events, times = history.others.events, history.others.times
    first = bisect.bisect_left(times, floor_t)
    for i in range(bisect.bisect_right(times, t) - 1, first - 1, -1):
        e, et = events[i], times[i]
        age = t - et
        if e.is_insulin and age == 0.0:
            continue  # insulin at the decision's own timestamp is not known yet
        if prev_event_t is None or et > prev_event_t:
            prev_event_t = et
        kind = e.kind
        if kind is Kind.INSULIN:
            e_slot = slot_of(e.ts)
            if e.is_meal_dose:  # regular or rapid-acting: the dose features' meal insulin
                units = e.dose
                acting = RAPID_ANALOGUE if e.insulin is Insulin.RAPID else curve
                if reg_last_t is None:
                    reg_last_t, reg_last_units = et, units
                if age <= MINUTES_PER_DAY:
                    reg_24h += units
                if age < acting.duration_min:  # a dose past its duration of action is off board
                    iob += units * acting.fraction_remaining(age)
                if e_slot == slot and len(same_slot) < SAME_SLOT_DOSES:
                    same_slot.append(units)
            elif age <= AGE_CAP_H * 60.0:  # older long-acting doses no longer count
                if e.insulin is Insulin.NPH:
                    if nph_last_t is None:
                        nph_last_t = et
                        out[_IDX["nph_last_units"]] = e.units
                    if nph_same_slot is None and e_slot == slot:
                        nph_same_slot = e.units
                elif ul_last_t is None:
                    ul_last_t = et
                    out[_IDX["ul_last_units"]] = e.units
        elif kind is Kind.MEAL:
            if age <= MEAL_WITHIN_MIN:
                out[_IDX[f"meal_{e.size}_3h"]] = 1.0
            if age <= MEAL_ANNOUNCED_MIN:
                out[_IDX["meal_announced_30m"]] = 1.0
        elif kind is Kind.EXERCISE:
            if age <= EXERCISE_WITHIN_MIN:
                out[_IDX[f"exercise_{e.intensity}_12h"]] = 1.0
        elif kind is Kind.HYPO_SYMPTOMS:
            if hypo_last_t is None:
                hypo_last_t = et
        elif kind is Kind.SPECIAL:
            if age <= MINUTES_PER_DAY:
                out[_IDX["special_24h"]] = 1.0
        if age > AGE_CAP_H * 60.0 and glucose_prev is not None and len(same_slot) >= SAME_SLOT_DOSES:
            break  # everything further back is capped or already found

    def age_h(found: float | None) -> float:
        return AGE_CAP_H if found is None else min(AGE_CAP_H, (t - found) / 60.0)

    if glucose_last is not None:
        out[_IDX["glucose_last_mg_dl"]] = glucose_last.reading
        out[_IDX["glucose_known"]] = 1.0
        g_age = t - glucose_last_t
        out[_IDX["glucose_measured"]] = 1.0 if g_age <= MEASURED_WITHIN_MIN else 0.0
        if g_age <= MEASURED_WITHIN_MIN:
            ctx = glucose_last.context
            out[_IDX["glucose_ctx_pre_meal"]] = 1.0 if ctx in _PRE_MEAL else 0.0
            out[_IDX["glucose_ctx_post_meal"]] = 1.0 if ctx in _POST_MEAL else 0.0
            out[_IDX["glucose_ctx_pre_snack"]] = 1.0 if ctx == "pre_snack" else 0.0
        if glucose_prev is not None:
            out[_IDX["glucose_delta_prev"]] = glucose_last.reading - glucose_prev
    out[_IDX["glucose_age_h"]] = age_h(glucose_last_t if glucose_last is not None else None)
    if glucose_24h:
        out[_IDX["glucose_mean_24h"]] = sum(glucose_24h) / len(glucose_24h)
        out[_IDX["glucose_n_24h"]] = float(len(glucose_24h))
    for k, units in enumerate(same_slot[:3]):
        out[_IDX["reg_same_slot_lag1"] + k] = units
    if same_slot:
        out[_IDX["reg_same_slot_median5"]] = statistics.median(same_slot)
    out[_IDX["reg_same_slot_count"]] = float(len(same_slot))
    out[_IDX["reg_usual_units"]] = out[_IDX["reg_same_slot_median5"]] if same_slot else reg_last_units
    out[_IDX["reg_last_units"]] = reg_last_units
    out[_IDX["reg_last_age_h"]] = age_h(reg_last_t)
    out[_IDX["reg_24h_units"]] = reg_24h
    out[_IDX["reg_iob_units"]] = iob
    out[_IDX["nph_last_age_h"]] = age_h(nph_last_t)
    out[_IDX["nph_same_slot_lag1"]] = nph_same_slot or 0.0
    out[_IDX["ul_last_age_h"]] = age_h(ul_last_t)
    out[_IDX["hypo_24h"]] = 1.0 if hypo_last_t is not None and t - hypo_last_t <= MINUTES_PER_DAY else 0.0
    out[_IDX["hypo_age_h"]] = age_h(hypo_last_t)
    out[_IDX["prev_event_age_h"]] = age_h(prev_event_t)
    return out


def _past_decision_times(history: PatientHistory, t: float, count: int) -> list[tuple[float, Event]]:
    """The last ``count`` distinct regular-dose timestamps before ``t``, each with its dose (oldest first)."""
    events, times = history.others.events, history.others.times
    floor_t = t - history.spec.lookback_days * MINUTES_PER_DAY
    found: list[tuple[float, Event]] = []
    i = bisect.bisect_left(times, t) - 1
    while i >= 0 and times[i] >= floor_t and len(found) < count:
        if events[i].is_meal_dose and (not found or found[-1][0] != times[i]):
            found.append((times[i], events[i]))
        i -= 1
    found.reverse()
    return found


def _step(history: PatientHistory, t_k: float, event: Event) -> np.ndarray:
    """Context at a past decision time plus the regular insulin given then (cached)."""
    cached = history._steps.get(t_k)
    if cached is not None:
        return cached
    step = np.zeros(len(FEATURE_NAMES), dtype=np.float64)
    step[:_N_CONTEXT] = _context(history, t_k, slot_of(event.ts), event.ts)
    others, times = history.others.events, history.others.times
    lo = bisect.bisect_left(times, t_k)
    hi = bisect.bisect_right(times, t_k)
    step[_IDX["dose_regular_units"]] = sum(e.dose for e in others[lo:hi] if e.is_meal_dose)
    step[_IDX["present"]] = 1.0
    history._steps[t_k] = step
    return step


def window_at(history: PatientHistory, at: datetime) -> np.ndarray:
    """The model input for a decision at ``at``: ``(window, n_features)`` float32, unscaled."""
    spec = history.spec
    t = minutes(at)
    window = np.zeros((spec.window, len(FEATURE_NAMES)), dtype=np.float64)
    past = _past_decision_times(history, t, spec.window - 1)
    offset = spec.window - 1 - len(past)
    age_idx = _IDX["step_age_h"]
    for row, (t_k, event) in enumerate(past, start=offset):
        window[row] = _step(history, t_k, event)
        window[row, age_idx] = min(STEP_AGE_CAP_H, (t - t_k) / 60.0)
    current = window[-1]
    current[:_N_CONTEXT] = context_at(history, at)
    current[_IDX["is_current"]] = 1.0
    current[_IDX["present"]] = 1.0
    return window.astype(np.float32)


def feature(name: str) -> int:
    """Column index of a named feature."""
    return _IDX[name]
