"""One feature implementation, bulk and incremental, using only what is known at decision time."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from domain.events import Event, Insulin, Kind, within_timestamp_rank
from domain.features import FEATURE_NAMES, FeatureSpec, OutOfOrderError, PatientHistory, feature, slot_of, window_at
from domain.insulin_activity import ActivityCurve
from preprocessing.decisions import decision_points

SPEC = FeatureSpec()


def _replay_order(events):
    """Device replay order: by time, non-insulin first inside a timestamp (stable)."""
    return sorted(events, key=lambda e: (e.ts, within_timestamp_rank(e)))


def test_incremental_equals_bulk_for_every_patient(aim94_logs):
    """Replay each patient event by event (pruning as the device does) and compare windows."""
    checked = 0
    for log in aim94_logs:
        bulk = {p.ts: p.window for p in decision_points(log, SPEC)}
        history = PatientHistory(SPEC)
        for event in _replay_order(log.events):
            if event.is_regular_dose and event.ts in bulk:
                incremental = window_at(history, event.ts)
                np.testing.assert_allclose(
                    incremental, bulk.pop(event.ts), rtol=1e-6, atol=1e-5, err_msg=f"patient {log.number} at {event.ts}"
                )
                checked += 1
            history.append(event)
            history.prune(event.ts)
        assert not bulk, f"patient {log.number}: decision points never reached"
    assert checked > 9000


def _points_to_probe(log, every=7):
    return [p for i, p in enumerate(decision_points(log, SPEC)) if i % every == 3]


def _window_with(log, events, at):
    history = PatientHistory(SPEC)
    history.extend(sorted(events, key=lambda e: e.ts))
    return window_at(history, at)


@pytest.mark.parametrize("patient", [1, 8, 20, 29, 45, 61, 70])
def test_features_ignore_target_same_time_insulin_and_future(aim94_logs, patient):
    log = next(log for log in aim94_logs if log.number == patient)
    rng = np.random.default_rng(patient)
    for point in _points_to_probe(log):
        original = _window_with(log, log.events, point.ts)
        changed = []
        for e in log.events:
            if e.ts == point.ts and e.is_insulin:
                changed.append(replace(e, units=float(rng.integers(1, 40))))  # target and same-time insulin
            elif e.ts > point.ts:
                if e.kind is Kind.GLUCOSE:
                    changed.append(replace(e, mg_dl=float(rng.integers(20, 600))))
                elif e.is_insulin:
                    changed.append(replace(e, units=float(rng.integers(1, 40))))
                else:
                    continue  # drop later non-numeric records entirely
            else:
                changed.append(e)
        changed.append(Event("future-hypo", log.patient_id, point.ts + timedelta(minutes=1), Kind.HYPO_SYMPTOMS))
        np.testing.assert_array_equal(_window_with(log, changed, point.ts), original)


def test_earlier_records_do_change_features(aim94_logs):
    """The no-leak test above would pass for constant features; prove the past matters."""
    log = aim94_logs[0]
    point = decision_points(log, SPEC)[40]
    original = _window_with(log, log.events, point.ts)
    earlier = [replace(e, units=e.units + 5) if e.is_regular_dose and e.ts < point.ts else e for e in log.events]
    assert not np.array_equal(_window_with(log, earlier, point.ts), original)


def _at(hour, minute=0):
    return datetime(1991, 4, 21, hour, minute, tzinfo=UTC)


@pytest.mark.parametrize("hour, slot", [(4, 0), (10, 0), (11, 1), (15, 1), (16, 2), (20, 2), (21, 3), (0, 3), (3, 3)])
def test_slots_follow_evaluation_hours(hour, slot):
    assert slot_of(_at(hour, 30)) == slot


def test_cyclic_time_and_padding():
    history = PatientHistory(SPEC)
    history.append(Event("g", "p", _at(6), Kind.GLUCOSE, mg_dl=150.0, context="pre_breakfast"))
    w = window_at(history, _at(6))
    current = w[-1]
    angle = 6 / 24 * 2 * math.pi
    assert current[feature("tod_sin")] == pytest.approx(math.sin(angle), abs=1e-6)
    assert current[feature("tod_cos")] == pytest.approx(math.cos(angle), abs=1e-6)
    assert current[feature("glucose_measured")] == 1.0
    assert current[feature("glucose_last_mg_dl")] == 150.0
    assert current[feature("is_current")] == 1.0
    assert np.all(w[:-1] == 0.0)  # no past decisions yet: all padding


def test_forward_fill_marks_unmeasured_glucose():
    history = PatientHistory(SPEC)
    history.append(Event("g", "p", _at(6), Kind.GLUCOSE, mg_dl=150.0))
    current = window_at(history, _at(9))[-1]
    assert current[feature("glucose_last_mg_dl")] == 150.0
    assert current[feature("glucose_measured")] == 0.0
    assert current[feature("glucose_age_h")] == pytest.approx(3.0)


def test_past_steps_carry_their_dose_and_same_slot_lags():
    history = PatientHistory(SPEC)
    for day, units in enumerate((8.0, 9.0, 10.0)):
        ts = _at(7) + timedelta(days=day)
        history.append(Event(f"g{day}", "p", ts, Kind.GLUCOSE, mg_dl=120.0))
        history.append(Event(f"r{day}", "p", ts, Kind.INSULIN, insulin=Insulin.REGULAR, units=units))
    w = window_at(history, _at(7) + timedelta(days=3))
    assert list(w[-4:-1, feature("dose_regular_units")]) == [8.0, 9.0, 10.0]
    current = w[-1]
    assert current[feature("reg_same_slot_lag1")] == 10.0
    assert current[feature("reg_same_slot_lag3")] == 8.0
    assert current[feature("reg_same_slot_median5")] == 9.0
    assert current[feature("reg_usual_units")] == 9.0
    assert w[-2, feature("step_age_h")] == pytest.approx(24.0)


def test_out_of_order_event_is_refused():
    history = PatientHistory(SPEC)
    history.append(Event("a", "p", _at(9), Kind.GLUCOSE, mg_dl=100.0))
    with pytest.raises(OutOfOrderError):
        history.append(Event("b", "p", _at(8), Kind.GLUCOSE, mg_dl=100.0))


def test_feature_spec_round_trip_and_validation():
    assert FeatureSpec.from_json(SPEC.to_json()) == SPEC
    bad = SPEC.to_json() | {"features": list(FEATURE_NAMES[:-1])}
    with pytest.raises(ValueError):
        FeatureSpec.from_json(bad)
    with pytest.raises(ValueError):
        FeatureSpec(window=0)


def test_insulin_on_board_curve():
    curve = ActivityCurve(duration_min=360, peak_min=120)
    values = [curve.fraction_remaining(m) for m in range(0, 400, 10)]
    assert values[0] == 1.0 and values[-1] == 0.0
    assert all(a >= b for a, b in itertools.pairwise(values))
    assert 0.5 < curve.fraction_remaining(120) < 0.75  # most still on board at the peak
    with pytest.raises(ValueError):
        ActivityCurve(duration_min=100, peak_min=60)


def test_the_history_keeps_its_events_by_sort_through_pruning():
    """Readings, lows and the other events stay the same events as the history, in order, after every prune."""
    start = datetime(2026, 1, 5, 6, tzinfo=UTC)
    history = PatientHistory(FeatureSpec(lookback_days=1.0))
    for i in range(2000):  # a CGM reading every 5 min, a dose and a meal now and then
        ts = start + timedelta(minutes=5 * i)
        history.append(Event(f"g{i}", "p", ts, Kind.GLUCOSE, mg_dl=float(40 + (i * 37) % 300)))
        if i % 50 == 0:
            history.append(Event(f"m{i}", "p", ts, Kind.MEAL, size="typical"))
            history.append(Event(f"i{i}", "p", ts, Kind.INSULIN, insulin=Insulin.REGULAR, units=4.0))
        if i % 97 == 0:
            history.prune(ts)
            readings = [e for e in history.events if e.kind is Kind.GLUCOSE]
            assert history.readings.events == readings
            assert history.others.events == [e for e in history.events if e.kind is not Kind.GLUCOSE]
            assert history.lows.events == [e for e in readings if e.reading < 70.0]
            glucose_times = [t for t, e in zip(history.times, history.events, strict=True) if e.kind is Kind.GLUCOSE]
            assert history.readings.times == glucose_times
    assert history.newest_reading() is history.events[-1]
    assert history.newest_meal_dose() is not None and history.newest_meal_dose().id == "i1950"
    assert len(history.events) < 2000  # two look-backs kept, the rest forgotten
