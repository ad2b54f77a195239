"""Events for device tests: a patient's recent routine and single readings, typed.

``raw`` gives the bytes a sensor would publish, for tests that feed the device core directly.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from device.contract.messages import ModelInfo, Suggestion
from domain.events import Event, Insulin, Kind
from domain.validation import VisitHistory
from domain.visits import Visit


def history(patient: str, now: datetime, days: int = 5, units: float = 7.0) -> list[Event]:
    """A pre-meal glucose reading and one regular dose a day for ``days`` days before ``now``."""
    out = []
    for d in range(days, 0, -1):
        ts = now - timedelta(days=d)
        out.append(
            Event(id=f"{patient}-g{d}", patient=patient, ts=ts, kind=Kind.GLUCOSE, mg_dl=150.0, context="pre_lunch")
        )
        out.append(
            Event(id=f"{patient}-i{d}", patient=patient, ts=ts, kind=Kind.INSULIN, insulin=Insulin.REGULAR, units=units)
        )
    return out


def glucose(event_id: str, patient: str, ts: datetime, mg_dl: float, context: str = "pre_lunch") -> Event:
    """A reading; by default a pre-meal one, so a dose is due (``unspecified``: none is)."""
    return Event(id=event_id, patient=patient, ts=ts, kind=Kind.GLUCOSE, mg_dl=float(mg_dl), context=context)


def request(event_id: str, patient: str, ts: datetime) -> Event:
    return Event(id=event_id, patient=patient, ts=ts, kind=Kind.REQUEST)


def meal(event_id: str, patient: str, ts: datetime, size: str = "typical") -> Event:
    return Event(id=event_id, patient=patient, ts=ts, kind=Kind.MEAL, size=size)


def visit_history(patient: str, *visits: tuple[str, str, list[str]]) -> VisitHistory:
    """A visit history from (admit, discharge, codes) with ISO times, as a sender would build it."""
    return VisitHistory(patient, tuple(Visit(naive_utc(a), naive_utc(d), frozenset(c)) for a, d, c in visits))


def heart_failure_history(patient: str) -> VisitHistory:
    """Two admissions of a heart-failure patient, one code outside every demo vocabulary."""
    return visit_history(
        patient,
        (
            "2131-03-02T08:00:00+00:00",
            "2131-03-09T15:00:00+00:00",
            ["dx9:4280", "dx9:42731", "rx:furosemide", "rx:heparin", "dx9:never-seen-code"],
        ),
        (
            "2131-03-25T22:00:00+00:00",
            "2131-04-02T11:00:00+00:00",
            ["dx9:4280", "dx9:5849", "rx:furosemide", "rx:metoprolol tartrate"],
        ),
    )


def naive_utc(iso: str) -> datetime:
    return datetime.fromisoformat(iso).astimezone(UTC).replace(tzinfo=None)


def suggestion(event_id: str, patient: str = "p", units: float = 4.0) -> Suggestion:
    """A dose suggestion answering event ``event_id`` (id ``s-<event_id>``), as the device would send it."""
    return Suggestion(
        id=f"s-{event_id}",
        patient=patient,
        event_id=event_id,
        ts=datetime.now(UTC).isoformat(),
        status="suggest",
        units=units,
        model_units=units,
        usual_units=units,
        reasons=["Model estimate."],
        rules=[],
        glucose_mg_dl=150.0,
        glucose_age_min=0.0,
        iob_units=0.0,
        model=ModelInfo("dose", "test", None),
    )


def raw(event: Event) -> bytes:
    """The event's payload as published."""
    return json.dumps(event.to_payload()).encode()
