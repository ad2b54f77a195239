"""When is a dose due: the dose context read from a patient's history, case by case (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from domain.dose_context import dose_context
from domain.events import Event, Insulin, Kind
from domain.features import PatientHistory
from tests.event_factory import glucose, history, meal

NOON = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def dose(event_id: str, ts: datetime, units: float) -> Event:
    return Event(id=event_id, patient="p", ts=ts, kind=Kind.INSULIN, insulin=Insulin.REGULAR, units=units)


def context_after(events: list[Event], at: datetime, request: bool = False):
    h = PatientHistory()
    h.extend(sorted(history("p", NOON - timedelta(hours=2)) + events, key=lambda e: e.ts))
    return dose_context(h, at, request)


def minutes(n: float) -> timedelta:
    return timedelta(minutes=n)


@pytest.mark.parametrize(
    "events, at, asked, due, dosed",
    [
        # a reading with no meal and no one asking: nothing is due
        ([glucose("g", "p", NOON, 140, "unspecified")], NOON, False, None, None),
        # a pre-meal reading makes a dose due; so does a meal announced in the last 30 min
        ([glucose("g", "p", NOON, 140)], NOON, False, "pre_meal", None),
        (
            [meal("m", "p", NOON), glucose("g", "p", NOON + minutes(10), 140, "unspecified")],
            NOON + minutes(10),
            False,
            "meal",
            None,
        ),
        # once the meal has its dose, the next readings (a CGM value every 5 min) make none due
        (
            [
                meal("m", "p", NOON),
                dose("d", NOON + minutes(2), 4.0),
                glucose("g", "p", NOON + minutes(5), 150, "unspecified"),
            ],
            NOON + minutes(5),
            False,
            None,
            4.0,
        ),
        (
            [
                glucose("g0", "p", NOON, 140),
                dose("d", NOON, 3.0),
                glucose("g", "p", NOON + minutes(5), 150, "unspecified"),
            ],
            NOON + minutes(5),
            False,
            None,
            3.0,
        ),
        # a dose given up to 15 min before the meal covers it, and so does one given for a meal earlier at
        # the same time of day (within 3 h: the meal entered again); a dose at another time of day does not
        ([dose("d", NOON - minutes(10), 4.0), meal("m", "p", NOON)], NOON + minutes(1), False, None, 4.0),
        (
            [meal("m0", "p", NOON - minutes(55)), dose("d", NOON - minutes(50), 4.0), meal("m", "p", NOON)],
            NOON + minutes(1),
            False,
            None,
            4.0,
        ),
        # ... but a correction given between meals (no meal or pre-meal reading with it) is not the meal's dose
        (
            [
                glucose("g0", "p", NOON - minutes(65), 260, "unspecified"),
                dose("d", NOON - minutes(64), 5.5),
                meal("m", "p", NOON),
            ],
            NOON + minutes(1),
            False,
            "meal",
            None,
        ),
        (
            [dose("d", NOON - minutes(50), 4.0), glucose("g", "p", NOON, 150)],
            NOON + minutes(1),
            False,
            "pre_meal",
            None,
        ),
        ([dose("d", NOON - minutes(150), 4.0), meal("m", "p", NOON)], NOON + minutes(1), False, "meal", None),
        # lunch dosed at 12:03; a second "pre-lunch" reading at 13:02 makes no second dose due
        (
            [
                dose("d", NOON + minutes(3), 5.0),
                meal("m", "p", NOON + minutes(13)),
                glucose("g", "p", NOON + minutes(62), 180),
            ],
            NOON + minutes(62),
            False,
            None,
            5.0,
        ),
        # the dose at the decision's own minute is not known yet: the meal is still due
        ([meal("m", "p", NOON), dose("d", NOON + minutes(5), 4.0)], NOON + minutes(5), False, "meal", None),
        # a pre-meal reading still makes the dose due at the readings that follow it, until dosed
        (
            [glucose("g0", "p", NOON, 140), glucose("g", "p", NOON + minutes(5), 150, "unspecified")],
            NOON + minutes(5),
            False,
            "pre_meal",
            None,
        ),
        ([glucose("g0", "p", NOON, 140)], NOON + minutes(31), False, None, None),
        # a person asking always makes a dose due (the guard subtracts what is on board)
        ([meal("m", "p", NOON), dose("d", NOON + minutes(2), 4.0)], NOON + minutes(5), True, "request", None),
    ],
)
def test_when_a_dose_is_due(events, at, asked, due, dosed):
    context = context_after(events, at, asked)
    assert context.due == due
    assert context.meal_dosed_units == dosed


def test_the_lowest_reading_of_the_last_three_hours_is_known():
    events = [
        glucose("g1", "p", NOON - timedelta(hours=4), 40, "unspecified"),  # too long ago
        glucose("g2", "p", NOON - minutes(15), 52),  # the treated pre-meal low
        glucose("g3", "p", NOON, 88, "unspecified"),  # the recheck: this reading
    ]
    context = context_after(events, NOON, False)
    assert context.recent_lowest_mg_dl == 52 and context.due == "pre_meal"
    assert context_after(events[:1] + events[2:], NOON, False).recent_lowest_mg_dl is None


def test_the_smallest_same_slot_dose_that_a_low_followed():
    supper = NOON.replace(hour=18)
    events = [
        dose("d1", supper - timedelta(days=2), 9.0),
        glucose("g1", "p", supper - timedelta(days=2) + timedelta(hours=13), 50, "pre_breakfast"),  # overnight
        dose("d2", supper - timedelta(days=1), 7.0),
        glucose("g2", "p", supper - timedelta(days=1) + timedelta(hours=4), 62, "unspecified"),
        dose("d3", supper - timedelta(hours=20), 3.0),  # a breakfast dose, then a low: another slot
        glucose("g3", "p", supper - timedelta(hours=17), 55, "unspecified"),
    ]
    before = context_after(events, supper, True).dose_before_low
    assert before is not None and (before.units, before.low_mg_dl) == (7.0, 62)
    assert before.given_at == supper - timedelta(days=1)
    # a low 15 h after the dose is not attributed to it; nor is one a week old
    late = [dose("d1", supper - timedelta(days=2), 9.0), glucose("g", "p", supper - timedelta(hours=33), 50)]
    assert context_after(late, supper, True).dose_before_low is None
    old = [
        dose("d1", supper - timedelta(days=8), 9.0),
        glucose("g", "p", supper - timedelta(days=8) + timedelta(hours=2), 50),
    ]
    assert context_after(old, supper, True).dose_before_low is None


def test_the_first_reading_of_the_night_only():
    night = NOON.replace(hour=22)
    first = context_after([glucose("g1", "p", night, 120, "unspecified")], night, False)
    assert first.first_of_night and first.due is None and first.bedtime
    later = [glucose("g1", "p", night, 120, "unspecified"), glucose("g2", "p", night + minutes(5), 118, "unspecified")]
    assert not context_after(later, night + minutes(5), False).first_of_night
    supper = context_after(
        [glucose("g1", "p", NOON.replace(hour=18), 120, "unspecified")], NOON.replace(hour=18), False
    )
    assert not supper.first_of_night


def test_a_dose_no_one_could_have_given_does_not_widen_the_fitted_limits():
    """A 99 U regular dose back-dated into the history: the largest dose and the daily totals ignore it."""
    honest = context_after([glucose("g", "p", NOON, 140)], NOON)
    bent = context_after([dose("d99", NOON - timedelta(days=1), 99.0), glucose("g", "p", NOON, 140)], NOON)
    assert bent.largest_dose == honest.largest_dose
    assert bent.total_daily_units == honest.total_daily_units


def test_a_large_long_acting_dose_still_counts_in_the_daily_total():
    """A 40 U daily basal is real (the 30 U bound is for regular insulin): it counts."""
    with_basal = context_after(
        [
            Event("nph", "p", NOON - timedelta(days=1), Kind.INSULIN, insulin=Insulin.ULTRALENTE, units=40.0),
            glucose("g", "p", NOON, 140),
        ],
        NOON,
    )
    without = context_after([glucose("g", "p", NOON, 140)], NOON)
    assert with_basal.total_daily_units > without.total_daily_units
