"""The safety supervisor: every model number passes a chain of rules that may only lower it.

Pure logic, no I/O. Modelled on the constraint chains of AndroidAPS and oref0's
determine-basal: each rule may lower the dose or block it and says why in plain words; hard
limits that no profile can exceed sit under the configurable ones.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Final, Literal

SUGGEST: Final = "suggest"
WITHHOLD: Final = "withhold"
INSUFFICIENT: Final = "insufficient_data"
Status = Literal["suggest", "withhold", "insufficient_data"]

HARD_MAX_SINGLE_UNITS = 30.0
HARD_MAX_DAILY_REGULAR_UNITS = 100.0
HARD_MIN_LOW_GLUCOSE_MG_DL = 70.0
HARD_MAX_STALE_GLUCOSE_MIN = 30.0
STALE_AGE_CAP_MIN = 72 * 60.0  # glucose ages are capped at 72 h by the features


class ProfileError(ValueError):
    """A safety profile value is out of its allowed range."""


@dataclass(frozen=True)
class SafetyProfile:
    """Per-patient limits; defaults are conservative and every value is checked on creation."""

    low_glucose_mg_dl: float = 70.0
    hypo_symptoms_lockout_h: float = 4.0
    stale_glucose_min: float = 15.0
    max_single_units: float = 15.0
    max_daily_regular_units: float = 50.0
    max_above_usual_units: float = 3.0
    iob_ignore_below_units: float = 0.5
    pen_step_units: float = 0.5

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ProfileError(f"{f.name} must be a finite number")
            if value < 0:
                raise ProfileError(f"{f.name} must not be negative")
        if self.low_glucose_mg_dl < HARD_MIN_LOW_GLUCOSE_MG_DL:
            raise ProfileError(f"low_glucose_mg_dl may not be below {HARD_MIN_LOW_GLUCOSE_MG_DL:g} mg/dL")
        if not 0 < self.stale_glucose_min <= HARD_MAX_STALE_GLUCOSE_MIN:
            raise ProfileError(f"stale_glucose_min must be in (0, {HARD_MAX_STALE_GLUCOSE_MIN:g}] minutes")
        if not 0 < self.max_single_units <= HARD_MAX_SINGLE_UNITS:
            raise ProfileError(f"max_single_units must be in (0, {HARD_MAX_SINGLE_UNITS:g}] U")
        if not 0 < self.max_daily_regular_units <= HARD_MAX_DAILY_REGULAR_UNITS:
            raise ProfileError(f"max_daily_regular_units must be in (0, {HARD_MAX_DAILY_REGULAR_UNITS:g}] U")
        if not 0 < self.pen_step_units <= 2:
            raise ProfileError("pen_step_units must be in (0, 2] U")

    @classmethod
    def from_dict(cls, data: dict) -> SafetyProfile:
        """Build from config; unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ProfileError(f"unknown safety setting(s): {', '.join(sorted(unknown))}")
        return cls(**data)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class DecisionInputs:
    """What the supervisor knows at a decision; ``None`` means not known."""

    model_units: float | None
    glucose_mg_dl: float | None
    glucose_age_min: float | None
    hypo_symptoms_age_min: float | None
    iob_units: float
    regular_24h_units: float
    usual_units: float | None


@dataclass(frozen=True, slots=True)
class Verdict:
    """The supervisor's answer: status, the only number to act on, why, and which rules acted.

    ``rules`` holds a stable code per rule that changed or blocked the number (the first one
    is the cause of a withhold or insufficient-data answer), for reports and dashboards.
    """

    status: Status
    units: float
    reasons: list[str] = field(default_factory=list)
    rules: list[str] = field(default_factory=list)


def _fmt(units: float) -> str:
    return f"{units:.1f} U"


def _describe_age(age_min: float) -> str:
    if age_min >= STALE_AGE_CAP_MIN:
        return f"at least {STALE_AGE_CAP_MIN / 60:.0f} hours"
    if age_min < 120:
        return f"{age_min:.0f} minutes"
    return f"{age_min / 60:.1f} hours"


def _floor_to_step(units: float, step: float) -> float:
    return math.floor(units / step + 1e-9) * step


def supervise(inputs: DecisionInputs, profile: SafetyProfile) -> Verdict:
    """Run the rule chain; each rule may only lower or block the model's number."""
    m = inputs.model_units
    if m is None or not math.isfinite(m):
        return Verdict(INSUFFICIENT, 0.0, ["No valid model output; no dose can be suggested."], ["model_invalid"])
    if m < 0:
        return Verdict(
            INSUFFICIENT,
            0.0,
            [f"The model gave a negative dose ({m:.2f} U); no dose can be suggested."],
            ["model_negative"],
        )
    g, g_age = inputs.glucose_mg_dl, inputs.glucose_age_min
    if g is None or g_age is None:
        return Verdict(INSUFFICIENT, 0.0, ["No glucose reading is known; measure glucose first."], ["no_glucose"])
    if g_age > profile.stale_glucose_min:
        return Verdict(
            INSUFFICIENT,
            0.0,
            [
                f"The last glucose reading is {_describe_age(g_age)} old (limit {profile.stale_glucose_min:.0f} "
                "minutes); measure glucose again."
            ],
            ["stale_glucose"],
        )
    if g < profile.low_glucose_mg_dl:
        return Verdict(
            WITHHOLD,
            0.0,
            [
                f"Glucose {g:.0f} mg/dL is below {profile.low_glucose_mg_dl:.0f} mg/dL: no insulin. "
                "Treat the low and recheck."
            ],
            ["low_glucose"],
        )
    hypo_age = inputs.hypo_symptoms_age_min
    if hypo_age is not None and hypo_age <= profile.hypo_symptoms_lockout_h * 60:
        return Verdict(
            WITHHOLD,
            0.0,
            [
                f"Hypoglycaemia symptoms were reported {hypo_age / 60:.1f} h ago "
                f"(lock-out {profile.hypo_symptoms_lockout_h:g} h): no insulin."
            ],
            ["hypo_symptoms"],
        )
    if inputs.usual_units is None:
        return Verdict(
            INSUFFICIENT,
            0.0,
            ["Too little history: no earlier regular dose is known for this patient."],
            ["no_history"],
        )

    reasons: list[str] = []
    rules: list[str] = []
    units = m
    cap = inputs.usual_units + profile.max_above_usual_units
    if units > cap:
        reasons.append(
            f"Lowered from {_fmt(units)} to {_fmt(cap)}: at most {profile.max_above_usual_units:g} U "
            f"above the usual dose of {_fmt(inputs.usual_units)} at this time of day."
        )
        rules.append("above_usual_cap")
        units = cap
    if inputs.iob_units >= profile.iob_ignore_below_units and units > 0:
        lowered = max(0.0, units - inputs.iob_units)
        reasons.append(
            f"Lowered by {_fmt(units - lowered)}: {_fmt(inputs.iob_units)} of regular insulin from "
            "recent doses is still active (no stacking)."
        )
        rules.append("insulin_on_board")
        units = lowered
    if units > profile.max_single_units:
        reasons.append(f"Lowered from {_fmt(units)} to the maximum single dose of {_fmt(profile.max_single_units)}.")
        rules.append("max_single")
        units = profile.max_single_units
    room = max(0.0, profile.max_daily_regular_units - inputs.regular_24h_units)
    if units > room:
        reasons.append(
            f"Lowered from {_fmt(units)} to {_fmt(room)}: {_fmt(inputs.regular_24h_units)} of regular "
            f"insulin in the last 24 h, limit {_fmt(profile.max_daily_regular_units)}."
        )
        rules.append("max_daily")
        units = room
    rounded = _floor_to_step(units, profile.pen_step_units)
    if abs(rounded - units) > 1e-9:
        reasons.append(f"Rounded down from {units:.2f} U to the pen step of {profile.pen_step_units:g} U.")
        rules.append("pen_step")
    units = rounded
    if units <= 0:
        reasons.append("After the safety limits no insulin remains to suggest.")
        return Verdict(WITHHOLD, 0.0, reasons, ["nothing_left", *rules])
    if not reasons:
        reasons.append("Within every safety limit.")
    reasons.insert(0, f"Model estimate {m:.2f} U; usual dose at this time {_fmt(inputs.usual_units)}.")
    return Verdict(SUGGEST, units, reasons, rules)
