"""The clinician's day for one patient (pure logic): readings, doses suggested and given with the
reasons, lows and how they were treated, time in range of the readings, the supervisor's rules.

:func:`summarise` takes what the store holds for the day; :mod:`device.page.summary_pdf` prints it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import date, datetime, time, timedelta, tzinfo
from typing import NamedTuple, Protocol

from device.contract.messages import (
    Adherence,
    DaySummary,
    DoseLine,
    DosePoint,
    LowLine,
    Response,
    Retired,
    Suggestion,
    WardAdherence,
)
from device.rules.dose_responses import replacement
from device.rules.safety import RULE_WORDS
from domain.events import Event, Kind

LOW_MG_DL = 70.0
IN_RANGE = (70.0, 180.0)


class DoseAnswer(NamedTuple):
    """The fields of a dose answer that adherence needs; ``replaced``: why it was replaced unanswered."""

    id: str
    patient: str
    ts: str
    units: float
    replaced: str | None = None


def day_bounds(day: date, zone: tzinfo) -> tuple[datetime, datetime]:
    """Midnight to midnight of ``day`` in the ward's time zone."""
    start = datetime.combine(day, time.min, tzinfo=zone)
    return start, datetime.combine(day + timedelta(days=1), time.min, tzinfo=zone)


def replaced_answers(
    answers: Sequence[Suggestion], responses: Mapping[str, Response], retired: Mapping[str, Retired], expiry_s: float
) -> dict[str, str]:
    """The dose answers (in order) that were replaced before anyone acted on them, and why."""
    found = {}
    for i, s in enumerate(answers):
        if not s.is_dose or s.id in responses:
            continue
        why = replacement(s.ts, answers[i + 1].ts if i + 1 < len(answers) else None, retired.get(s.id), expiry_s)
        if why is not None:
            found[s.id] = why
    return found


def summarise(
    patient: str,
    day: date,
    zone: tzinfo,
    events: Sequence[Event],
    suggestions: Sequence[Suggestion],
    responses: dict[str, Response],
    retired: Mapping[str, Retired] | None = None,
    expiry_s: float = 900.0,
) -> DaySummary:
    """The day's summary from its events and answers (both in time order), the responses and the
    retirements by suggestion id; ``expiry_s``: how long an answer could be acted on."""
    start, end = day_bounds(day, zone)
    todays = [e for e in events if start <= e.ts < end]
    readings = [e for e in todays if e.kind is Kind.GLUCOSE and e.mg_dl is not None]
    values = [float(e.mg_dl) for e in readings if e.mg_dl is not None]
    answers = [s for s in suggestions if start <= datetime.fromisoformat(s.ts) < end]
    in_range = sum(IN_RANGE[0] <= v <= IN_RANGE[1] for v in values)
    given_ids = {r.event_id for r in responses.values() if r.event_id}
    rules = dict(Counter(rule for s in answers for rule in s.rules).most_common())
    replaced = replaced_answers(answers, responses, retired or {}, expiry_s)
    return DaySummary(
        patient=patient,
        date=day.isoformat(),
        timezone=str(zone),
        readings=len(values),
        mean_mg_dl=round(sum(values) / len(values), 1) if values else None,
        in_range_share=round(in_range / len(values), 3) if values else None,
        lows=_lows(readings, answers, responses),
        doses=[_dose_line(s, responses.get(s.id), replaced.get(s.id)) for s in answers if s.is_dose],
        other_doses=[
            DosePoint(e.ts.isoformat(), e.insulin.value, float(e.units))
            for e in todays
            if e.kind is Kind.INSULIN and e.insulin is not None and e.units is not None and e.id not in given_ids
        ],
        adherence=adherence([s for s in answers if s.is_dose], responses, replaced),
        rules=rules,
        answers=dict(Counter(s.status for s in answers).most_common()),
        rule_words={code: RULE_WORDS.get(code, code.replace("_", " ")) for code in rules},
    )


def _dose_line(suggestion: Suggestion, response: Response | None, replaced: str | None) -> DoseLine:
    return DoseLine(
        at=suggestion.ts,
        glucose_mg_dl=suggestion.glucose_mg_dl,
        suggested_units=suggestion.units,
        response=None if response is None else response.action,
        given_units=None if response is None else response.units,
        user=None if response is None else response.user,
        reason=None if response is None else response.reason,
        note=None if response is None else response.note,
        replaced=replaced,
    )


def _lows(readings: Sequence[Event], answers: Sequence[Suggestion], responses: dict[str, Response]) -> list[LowLine]:
    by_event = {s.event_id: s for s in answers}
    lines = []
    for i, reading in enumerate(readings):
        if reading.mg_dl is None or reading.mg_dl >= LOW_MG_DL:
            continue
        answer = by_event.get(reading.id)
        response = None if answer is None else responses.get(answer.id)
        following = next((r for r in readings[i + 1 :] if r.mg_dl is not None), None)
        lines.append(
            LowLine(
                at=reading.ts.isoformat(),
                mg_dl=float(reading.mg_dl),
                carbs_g=None if answer is None else answer.carbs_g,
                acknowledged_by=None if response is None else response.user,
                recheck_at=None if answer is None else answer.recheck_at,
                next_reading_mg_dl=None if following is None else following.mg_dl,
                next_reading_at=None if following is None else following.ts.isoformat(),
            )
        )
    return lines


class _Dose(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def units(self) -> float: ...


def adherence(
    doses: Sequence[_Dose], responses: Mapping[str, Response], replaced: Mapping[str, str] | None = None
) -> Adherence:
    """How suggested doses were followed: exactly, with other units, declined, replaced before anyone
    acted (a later event or answer), or not answered."""
    followed = different = declined = superseded = 0
    reasons: Counter[str] = Counter()
    for suggestion in doses:
        response = responses.get(suggestion.id)
        if response is None:
            superseded += suggestion.id in (replaced or {})
            continue
        if response.action == "declined":
            declined += 1
        elif response.units is not None and abs(response.units - suggestion.units) < 1e-9:
            followed += 1
        else:
            different += 1
        if response.reason is not None:
            reasons[response.reason] += 1
    answered = followed + different + declined
    return Adherence(
        suggested=len(doses),
        followed=followed,
        given_different=different,
        declined=declined,
        unanswered=len(doses) - answered - superseded,
        replaced=superseded,
        followed_share=round(followed / len(doses), 3) if doses else None,
        reasons=dict(reasons.most_common()),
    )


def ward_adherence(day: date, zone: tzinfo, doses: Sequence[tuple[DoseAnswer, Response | None]]) -> WardAdherence:
    """Adherence of every patient's dose answers that day, and over the ward."""
    by_patient: dict[str, list[DoseAnswer]] = {}
    responses = {s.id: r for s, r in doses if r is not None}
    replaced = {s.id: s.replaced for s, _ in doses if s.replaced is not None}
    for suggestion, _ in doses:
        by_patient.setdefault(suggestion.patient, []).append(suggestion)
    return WardAdherence(
        date=day.isoformat(),
        timezone=str(zone),
        total=adherence([s for s, _ in doses], responses, replaced),
        patients={p: adherence(found, responses, replaced) for p, found in sorted(by_patient.items())},
    )
