"""What a person may still do with a suggestion, and whether a recorded dose is acceptable (pure logic).

A suggestion is acted on at most once (given, declined or acknowledged), only while it is the
patient's current answer, nothing that bears on it has been recorded since (a dose of any
insulin, symptoms, a meal, exercise: :mod:`device.rules.retirement`), before it expires and while the
device is linked to its broker. It expires ``expiry_s`` after it was made, or earlier when the
reading it answered grows older than the profile's ``stale_glucose_min``. A dose given that
differs from the suggestion needs a reason; units must be whole pen steps and within the single-dose limit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo

from device.contract.messages import Response, Retired, Suggestion
from device.rules.safety import SafetyProfile
from domain.events import Event, Insulin

OVERRIDE_REASONS = {
    "patient_refused": "patient refused",
    "not_eating": "not eating",
    "clinicians_order": "clinician's order",
    "other": "other",
}
MAX_NOTE_CHARS = 200
CLOCK_SLACK = timedelta(minutes=1)  # a clock this far behind an answer's time was set back


class ActionConflict(ValueError):
    """The action no longer applies (already answered, replaced, expired): HTTP 409."""


@dataclass(frozen=True)
class Actionability:
    """Whether the current suggestion can be acted on now, why not, and until when."""

    actionable: bool
    why_not: str | None
    expires_at: datetime | None


def expires_at(suggestion: Suggestion, expiry_s: float, profile: SafetyProfile) -> datetime:
    """When a suggestion stops being actionable: its expiry, or its reading growing stale."""
    made = datetime.fromisoformat(suggestion.ts)
    end = made + timedelta(seconds=expiry_s)
    if suggestion.glucose_age_min is not None:
        stale = made + timedelta(minutes=profile.stale_glucose_min - suggestion.glucose_age_min)
        end = min(end, stale)
    return end


def actionability(
    suggestion: Suggestion,
    now: datetime,
    response: Response | None,
    expiry_s: float,
    profile: SafetyProfile,
    broker_problem: str | None,
    retired: Retired | None = None,
    age_s: float | None = None,
) -> Actionability:
    """Whether the patient's current ``suggestion`` can still be given, declined or acknowledged at ``now``.

    ``age_s``: the answer's age on the device's monotonic clock, when known (since the device
    made it), which no step of the wall clock can shorten.
    """
    end = expires_at(suggestion, expiry_s, profile)
    made = datetime.fromisoformat(suggestion.ts)
    if response is not None:
        return Actionability(False, f"already {response.action} by {response.user}", end)
    if retired is not None:
        return Actionability(False, retired.reason, end)
    if now < made - CLOCK_SLACK:  # the wall clock was set back: its "now" cannot be trusted to measure the age
        return Actionability(
            False,
            f"the device's clock reads {now.astimezone(made.tzinfo):%H:%M}, before this answer was made "
            f"({made:%H:%M}): it was set back; check the device's clock and measure glucose again",
            end,
        )
    if now >= end or (age_s is not None and age_s >= (end - made).total_seconds()):
        return Actionability(False, f"expired at {end.strftime('%H:%M')}: measure glucose again for a new answer", end)
    if broker_problem is not None:
        return Actionability(False, f"the device is not linked to its broker ({broker_problem}); record on paper", end)
    return Actionability(True, None, end)


def check_current(
    suggestion: Suggestion, latest: Suggestion | None, state: Actionability, retired: Retired | None = None
) -> None:
    """Raise :class:`ActionConflict` unless ``suggestion`` is the patient's current, actionable answer.

    ``retired``: why a later event retired it, which a replaced suggestion's refusal says too.
    """
    if latest is None or latest.id != suggestion.id:
        why = retired.reason if retired is not None else _newer(latest)
        raise ActionConflict(f"a newer answer has replaced this suggestion ({why}); act on the current one")
    if not state.actionable:
        raise ActionConflict(f"this suggestion can no longer be acted on: {state.why_not}")


def _newer(latest: Suggestion | None) -> str:
    """What the answer that replaced a suggestion answered, in a few words."""
    if latest is None:
        return "it is no longer on record"
    if latest.replaces is not None:
        return latest.replaces.reason
    reading = "" if latest.glucose_mg_dl is None else f" with glucose {latest.glucose_mg_dl:.0f} mg/dL"
    return f"a newer answer was made at {latest.ts[11:16]}{reading}"


def check_eating(suggestion: Suggestion, eating: bool | None) -> None:
    """Raise ValueError unless a pre-meal dose (``meal_first``) is given to a patient who is eating."""
    if suggestion.meal_first and eating is not True:
        raise ValueError(
            "ask first whether the patient is eating this meal: if yes, confirm with 'eating' (the meal is recorded "
            "with the dose); if not, record the dose as not given (not eating)"
        )


def check_no_dose_since(doses: list[Event], zone: tzinfo, suggestion: Suggestion) -> None:
    """Raise :class:`ActionConflict` if insulin of the suggestion's kind (meal or basal) is among ``doses``
    (those recorded since it)."""
    meal = Insulin(suggestion.insulin).for_meals
    same = [d for d in doses if d.insulin is not None and d.insulin.for_meals == meal]
    if same:
        d = same[-1]
        at = d.ts.astimezone(zone).strftime("%H:%M")
        insulin = d.insulin.label if d.insulin is not None else ""
        raise ActionConflict(
            f"not recorded: {d.dose:g} U of {insulin} insulin was recorded at {at} after this "
            f"suggestion (event {d.id}); check what was given before any more insulin"
        )


def replacement(at: str, next_at: str | None, retired: Retired | None, expiry_s: float) -> str | None:
    """Why an answer no one acted on was replaced before it lapsed: an event retired it, or a newer
    answer came while it was live; None when it simply went unanswered."""
    if retired is not None:
        return retired.reason
    if next_at is not None:
        made, newer = datetime.fromisoformat(at), datetime.fromisoformat(next_at)
        if newer - made < timedelta(seconds=expiry_s):
            return f"a newer answer at {newer:%H:%M} replaced it"
    return None


def check_reason(reason: str | None, note: str | None) -> None:
    """A reason is one of :data:`OVERRIDE_REASONS`; ``other`` needs a short note."""
    if reason is not None and reason not in OVERRIDE_REASONS:
        raise ValueError(f"reason must be one of {', '.join(OVERRIDE_REASONS)}")
    if note is not None and len(note) > MAX_NOTE_CHARS:
        raise ValueError(f"note must be at most {MAX_NOTE_CHARS} characters")
    if note is not None and any(not c.isprintable() for c in note):
        raise ValueError("note must be one line of text (no line breaks or control characters)")
    if reason == "other" and not (note or "").strip():
        raise ValueError("reason 'other' needs a note saying why")


def check_units_given(units: float, suggestion: Suggestion, reason: str | None, profile: SafetyProfile) -> None:
    """Raise ValueError (one line) unless ``units`` is a dose that may be recorded against ``suggestion``."""
    if not math.isfinite(units) or units <= 0:
        raise ValueError("units must be a positive number")
    basal = not Insulin(suggestion.insulin).for_meals
    limit, what = (profile.max_basal_units, "basal") if basal else (profile.max_single_units, "single-dose")
    if units > limit:
        raise ValueError(f"{units:g} U is above this patient's {what} limit of {limit:g} U")
    steps = units / profile.pen_step_units
    if abs(steps - round(steps)) > 1e-6:
        raise ValueError(f"{units:g} U is not a whole number of {profile.pen_step_units:g} U pen steps")
    if not math.isclose(units, suggestion.units, abs_tol=1e-9) and reason is None:
        raise ValueError(
            f"{units:g} U differs from the suggested {suggestion.units:g} U: give a reason "
            f"({', '.join(OVERRIDE_REASONS)})"
        )
