"""A clearly labelled synthetic patient for the demo when no AIM-94 data is at hand.

Not real data and not a physiological simulation: a seeded generator of a plausible
AIM-94-style routine (glucose before meals, regular insulin on a sliding scale around a
usual dose, NPH morning and evening, meals, an occasional low with symptoms), so the device
has history to work with. The patient id starts with ``synthetic`` and the page labels it.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from domain.events import Event, Insulin, Kind, within_timestamp_rank
from domain.validation import VisitHistory
from domain.visits import Visit

PATIENT_ID = "synthetic-demo"

# (hour, minute, glucose context, usual regular units, NPH units or 0)
ROUTINE = (
    (7, 30, "pre_breakfast", 7.0, 14.0),
    (12, 0, "pre_lunch", 5.0, 0.0),
    (18, 0, "pre_supper", 6.0, 8.0),
    (22, 0, "pre_snack", 0.0, 0.0),
)


def synthetic_patient(days: int = 14, end: datetime | None = None, seed: int = 7) -> list[Event]:
    """``days`` days of events ending at ``end`` (timezone-aware; none later), in replay order."""
    if end is None or end.tzinfo is None:
        raise ValueError("end must be a timezone-aware datetime")
    rng = random.Random(seed)
    first_day = (end - timedelta(days=days - 1)).replace(hour=0, minute=0, second=0, microsecond=0)
    events: list[Event] = []

    def add(ts: datetime, kind: Kind, **fields) -> None:
        events.append(Event(id=f"{PATIENT_ID}-{len(events):05d}", patient=PATIENT_ID, ts=ts, kind=kind, **fields))

    for day in range(days):
        date = first_day + timedelta(days=day)
        for hour, minute, context, usual, nph in ROUTINE:
            ts = date.replace(hour=hour, minute=minute) + timedelta(minutes=rng.randint(-20, 20))
            glucose = max(40.0, min(400.0, rng.gauss(150.0, 45.0)))
            if rng.random() < 0.04:
                glucose = rng.uniform(45.0, 65.0)
            add(ts, Kind.GLUCOSE, mg_dl=round(glucose), context=context)
            if glucose < 70:
                add(ts, Kind.HYPO_SYMPTOMS)
                continue
            if usual > 0:
                scale = round((glucose - 140.0) / 50.0)
                add(ts, Kind.INSULIN, insulin=Insulin.REGULAR, units=float(max(1.0, usual + scale)))
            if nph > 0:
                add(ts, Kind.INSULIN, insulin=Insulin.NPH, units=nph)
            if context != "pre_snack":
                add(ts + timedelta(minutes=10), Kind.MEAL, size=rng.choice(("typical", "typical", "more", "less")))
        if rng.random() < 0.3:
            add(date.replace(hour=16, minute=30), Kind.EXERCISE, intensity="typical")
    events.sort(key=lambda e: (e.ts, within_timestamp_rank(e)))
    return [e for e in events if e.ts <= end]  # the rest of the last day has not happened yet


def synthetic_visit_history(patient: str, end: datetime) -> VisitHistory:
    """A made-up visit history (two earlier admissions with common diabetes codes) for the demo."""
    first = (end - timedelta(days=400)).astimezone(UTC).replace(tzinfo=None)
    second = (end - timedelta(days=60)).astimezone(UTC).replace(tzinfo=None)
    return VisitHistory(
        patient,
        (
            Visit(
                first,
                first + timedelta(days=5),
                frozenset({"dx9:25000", "dx9:4019", "rx:insulin", "rx:metformin", "rx:heparin"}),
            ),
            Visit(
                second,
                second + timedelta(days=8),
                frozenset({"dx9:25000", "dx9:4280", "dx9:5849", "rx:furosemide", "rx:insulin", "rx:heparin"}),
            ),
        ),
    )
