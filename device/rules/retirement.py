"""What retires a live answer: an event that bears on it, recorded after it was made (pure logic).

A suggestion is actionable only while nothing that bears on it has happened since it was made
(docs/bedside.md). Recorded for the same patient after it, by any path (a sensor over MQTT, a
page entry, the serial bridge, an import):

* a dose of **any insulin** retires it: the dose it suggested may have been given another way;
* **hypoglycaemia symptoms** retire it, and are answered at once (withhold, measure, treat);
* a **meal** retires it, and is answered (the meal makes a dose due, or changes it);
* **exercise**, an **eating state** (``nutrition``) or a **profile** that changes something retires
  it, and a new answer is made in its place (a profile that repeats what is known changes nothing);
* a **newer reading** or a **request** is answered itself, and that answer replaces it.

The first event that bears on a live answer retires it; later ones find it retired already.
"""

from __future__ import annotations

from datetime import tzinfo

from device.contract.messages import Retired, Suggestion
from device.rules.safety import MEAL_SIZE_WORDS
from domain.events import Event, Kind

RETIRING_KINDS = frozenset({Kind.INSULIN, Kind.HYPO_SYMPTOMS, Kind.MEAL, Kind.EXERCISE, Kind.NUTRITION, Kind.PROFILE})
ALWAYS_ANSWERED = frozenset({Kind.GLUCOSE, Kind.REQUEST, Kind.HYPO_SYMPTOMS, Kind.MEAL})
ANSWERED_WHEN_RETIRING = frozenset({Kind.EXERCISE, Kind.NUTRITION, Kind.PROFILE})  # a new answer in its place
NUTRITION_WORDS = {"eating": "eating", "npo": "nothing by mouth (npo)", "uncertain": "eating uncertain"}
EXERCISE_WORDS = {"typical": "usual", "more": "harder than usual", "less": "lighter than usual"}


def retirement(
    live: Suggestion, event: Event, zone: tzinfo, profile_changes: list[str] | None = None
) -> Retired | None:
    """How ``event``, recorded after ``live`` (the patient's live answer), retires it; None if it does not.

    ``profile_changes``: for a ``profile`` event, what it changed in the patient's profile ("weight
    80 → 72 kg"); an empty list (it repeats what is known) does not retire; None: no earlier profile.
    """
    if event.kind not in RETIRING_KINDS or event.patient != live.patient or event.id == live.event_id:
        return None
    if event.kind is Kind.PROFILE and profile_changes == []:
        return None
    return Retired(live.id, event.id, event.kind.value, event.ts.isoformat(), describe(event, zone, profile_changes))


def describe(event: Event, zone: tzinfo, profile_changes: list[str] | None = None) -> str:
    """What happened, in one line a nurse reads before acting."""
    at = event.ts.astimezone(zone).strftime("%H:%M")
    if event.kind is Kind.INSULIN:
        insulin = event.insulin.label if event.insulin else "unknown"
        return (
            f"{event.dose:g} U of {insulin} insulin was recorded at {at} after this answer: do not give this dose; "
            "check what was given before any more insulin"
        )
    if event.kind is Kind.HYPO_SYMPTOMS:
        return f"hypoglycaemia symptoms were recorded at {at}: no insulin; measure glucose now and treat a low"
    if event.kind is Kind.MEAL:
        size = MEAL_SIZE_WORDS.get(event.size or "", event.size or "size not given")
        grams = f", {event.carbs_g:g} g" if event.carbs_g is not None else ""
        return f"a meal ({size}{grams}) was recorded at {at}"
    if event.kind is Kind.EXERCISE:
        intensity = EXERCISE_WORDS.get(event.intensity or "", event.intensity or "intensity not given")
        return f"exercise ({intensity}) was recorded at {at}"
    if event.kind is Kind.NUTRITION:
        return f"the eating state was recorded as {NUTRITION_WORDS.get(event.nutrition or '', event.nutrition)} at {at}"
    if event.kind is Kind.PROFILE and event.profile is not None:
        if profile_changes:
            return f"the profile was updated at {at} ({'; '.join(profile_changes)}): the dosing plan changed"
        return f"a new profile ({event.profile.weight_kg:g} kg) was recorded at {at}: the dosing plan changed"
    return f"a {event.kind.value} event was recorded at {at}"


def answers(event: Event, retired: Retired | None) -> bool:
    """Whether ``event`` gets an answer of its own (``retired``: the live answer it retired)."""
    return event.kind in ALWAYS_ANSWERED or (retired is not None and event.kind in ANSWERED_WHEN_RETIRING)
