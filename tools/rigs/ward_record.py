"""A device state folder holding a synthetic ward's record, written through the device's own core
(``advisor fhir sample-ward``): for trying and timing the exports on the data a ward really has.

Each patient gets a weight-based profile, three meals a day, each with a fingerstick reading and
the dose a nurse gives for the advisor's answer to the meal (confirmed as the page does, sometimes with other
units and a reason, sometimes declined), and optionally a CGM reading every few minutes.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from device.advisor import Advisor
from device.config import SafetyConfig
from device.contract.messages import OverrideReason, Response, Suggestion
from device.models.bundle import default_bundle_path, open_bundle
from device.models.choice import ModelSlot
from device.models.inference import DoseModel
from device.state.store import DATABASE_NAME, Store
from domain.events import Event, Insulin, Kind, PatientProfile

MEALS = ((7, 30), (12, 15), (18, 0))


@dataclass(frozen=True)
class WardRecord:
    """What was written: counts and how long it took."""

    patients: int
    days: int
    events: int
    answers: int
    doses_given: int
    declined: int
    seconds: float


def _payload(event: Event) -> bytes:
    return json.dumps(event.to_payload()).encode()


def build_ward_record(
    state_dir: Path, patients: int, days: int, cgm_minutes: int | None, end: datetime, seed: int = 0
) -> WardRecord:
    """Write ``patients`` × ``days`` ending at ``end`` into ``state_dir`` (which must not hold a record yet)."""
    path = state_dir / DATABASE_NAME
    if path.exists():
        raise FileExistsError(f"{path} exists: give an empty --state-dir")
    state_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    store = Store(path)
    model = DoseModel(open_bundle(default_bundle_path("dose")))
    advisor = Advisor(store, ModelSlot(model), SafetyConfig(), "event", wall_clock=lambda: end, zone=end.tzinfo or UTC)
    start_clock = time.perf_counter()
    events = answers = given = declined = 0
    start = (end - timedelta(days=days)).replace(hour=0, minute=0, second=0, microsecond=0)
    for number in range(patients):
        patient = f"ward-p{number:03d}"
        profile = PatientProfile(weight_kg=round(rng.uniform(55, 110), 1), diabetes_type="type2")
        timeline = [Event(f"{patient}-profile", patient, start, Kind.PROFILE, profile=profile)]
        meals = set()  # the answers a nurse acts on
        for day in range(days):
            midnight = start + timedelta(days=day)
            for hour, minute in MEALS:
                at = midnight.replace(hour=hour, minute=minute)
                mg_dl = round(rng.gauss(165, 45))
                timeline.append(Event(f"{patient}-g{day}-{hour}", patient, at, Kind.GLUCOSE, mg_dl=max(45, mg_dl)))
                meal = Event(f"{patient}-m{day}-{hour}", patient, at + timedelta(seconds=10), Kind.MEAL, size="typical")
                timeline.append(meal)
                meals.add(meal.id)
            if cgm_minutes:
                for step in range(0, 24 * 60, cgm_minutes):
                    at = midnight + timedelta(minutes=step, seconds=30)
                    sensed = round(150 + 50 * rng.random())
                    timeline.append(Event(f"{patient}-c{day}-{step}", patient, at, Kind.GLUCOSE, mg_dl=sensed))
        for event in sorted((e for e in timeline if e.ts < end), key=lambda e: e.ts):
            outcome = advisor.handle(_payload(event))
            events += 1
            answer = outcome.suggestion
            if answer is None:
                continue
            answers += 1
            if event.id in meals and answer.status == "suggest" and answer.units > 0:
                if rng.random() < 0.1:
                    store.record_response(answer, Response("declined", answer.ts, "bob", "nurse", None, "not_eating"))
                    declined += 1
                else:
                    given += _give(advisor, answer, rng)
                    events += 1
    store.close()
    return WardRecord(patients, days, events, answers, given, declined, round(time.perf_counter() - start_clock, 1))


def _give(advisor: Advisor, answer: Suggestion, rng: random.Random) -> int:
    """Confirm the answer's dose as the page does: mostly as suggested, sometimes a unit more or less."""
    at = datetime.fromisoformat(answer.ts) + timedelta(seconds=20)  # before the next CGM reading retires it
    override = rng.random() < 0.15
    units = max(0.5, answer.units + rng.choice((-1, 1))) if override else answer.units
    reason: OverrideReason | None = "clinicians_order" if override else None
    dose = Event(f"given-{answer.id}", answer.patient, at, Kind.INSULIN, insulin=Insulin(answer.insulin), units=units)
    response = Response("given", at.isoformat(), "ann", "nurse", units, reason, None, dose.id)
    earlier, _warnings = advisor.record_given(answer, response, dose)
    return 1 if earlier is None else 0
