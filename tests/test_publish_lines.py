"""``advisor publish``'s lines, without a broker: the reason that decided, warnings, repeats, a missing time."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from device.contract.messages import ErrorMessage
from device.rules.safety import DecisionInputs, SafetyProfile, supervise
from domain.events import Event, Insulin, Kind
from tools.mqtt_kit.publish import Answer, describe, key_reason, read_events, summary

from . import event_factory
from .test_safety import BASE as SAFETY_BASE

NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
DUE = DecisionInputs(**{**SAFETY_BASE, "due": "request"})  # the supervisor tests' base case, asked for


def _answer_to(inputs: DecisionInputs):
    verdict = supervise(inputs, SafetyProfile())
    base = event_factory.suggestion("r1")
    return replace(base, status=verdict.status, units=verdict.units, reasons=verdict.reasons, rules=verdict.rules)


def test_a_withhold_line_names_the_limit_that_left_no_insulin_not_the_dose_due_line():
    guard = _answer_to(replace(DUE, iob_units=9.0))
    assert guard.status == "withhold" and guard.reasons[0].startswith("Dose due (a dose was asked for")
    line = describe(Answer(event_factory.request("r1", "p", NOW), guard))
    assert line.startswith("r1: withhold: Lowered from ") and "physiological guard" in line
    daily = _answer_to(replace(DUE, regular_24h_units=40.0))
    assert "last 24 h" in (key_reason(daily) or "") and daily.rules[:1] == ["nothing_left"]
    low = _answer_to(replace(DUE, glucose_mg_dl=55.0))
    assert key_reason(low) == low.reasons[0] and "below 70 mg/dL" in low.reasons[0]
    dose = _answer_to(DUE)
    assert dose.status == "suggest" and key_reason(dose) == dose.reasons[0]


def test_warnings_follow_their_event_s_answer_line():
    reading = event_factory.glucose("g1", "p-2l", NOW, 120)
    warnings = [
        ErrorMessage("g1", "the offset of 'ts' (+05:00) is not the ward's", level="warning"),
        ErrorMessage("g1", "new patient id 'p-2l' looks like the known patient 'p-21'", level="warning"),
    ]
    lines = describe(Answer(reading, event_factory.suggestion("g1"), warnings)).splitlines()
    assert lines[0].startswith("g1: suggest 4 U")
    assert lines[1:] == [f"g1: warning: {w.reason}" for w in warnings]


def test_a_handled_reading_without_answer_is_a_repeat_and_an_unseen_one_is_not():
    reading = event_factory.glucose("g1", "p", NOW, 120)
    repeat = Answer(reading, handled=True)
    assert describe(repeat).startswith("g1: a repeat: the device already holds event g1 and answers an event once")
    unseen = Answer(reading)
    assert describe(unseen, "sensor-bed1").startswith("g1: no answer seen: the device may be offline, or sensor-bed1")
    refused = Answer(event_factory.glucose("g2", "p", NOW, 120), ErrorMessage("g2", "no"), handled=True)
    assert summary([repeat]) == (
        "1 of 1 events were repeats of events the device already holds (it answers an event once)"
    )
    assert summary([repeat, refused, unseen]) == (
        "3 of 3 events were refused or not answered: 1 a repeat of an event the device already holds "
        "(it answers an event once), 1 refused, 1 not answered"
    )
    dose = Event(id="i1", patient="p", ts=NOW, kind=Kind.INSULIN, insulin=Insulin.REGULAR, units=2.0)
    assert summary([Answer(dose, handled=True)]) is None
    assert describe(Answer(dose, handled=True)) == "i1: sent (insulin; no answer expected)"
    meal = Answer(event_factory.meal("m1", "p", NOW), handled=True)  # the device answers a meal
    assert describe(meal).startswith("m1: a repeat: the device already holds event m1")


def test_an_event_without_a_time_is_stamped_and_one_with_a_time_is_kept():
    now = datetime.now(UTC)
    stamped, kept = read_events(
        '{"id": "g1", "patient": "p-21", "kind": "glucose", "mg_dl": 55}\n'
        '{"id": "g2", "patient": "p-21", "ts": "2026-01-05T07:00:00+01:00", "kind": "glucose", "mg_dl": 90}\n',
        "events.jsonl",
        now,
    )
    assert stamped.stamped and stamped.event.ts == now
    assert not kept.stamped and kept.event.ts.isoformat() == "2026-01-05T07:00:00+01:00"


def test_a_late_reading_is_stored_with_its_warning_not_called_a_repeat():
    reading = event_factory.glucose("g-late", "p", NOW, 150)
    late = ErrorMessage("g-late", "a reading from 08:00 arrived after a newer one (10:00): kept", level="warning")
    answer = Answer(reading, None, [late], handled=True)
    assert answer.trouble is None
    assert describe(answer).splitlines() == [
        "g-late: stored, not answered (the warning below says why)",
        "g-late: warning: a reading from 08:00 arrived after a newer one (10:00): kept",
    ]
