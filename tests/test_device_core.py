"""The device core without sockets: SQLite store, per-patient history, model and supervisor.

Uses the packaged bundle on the real LiteRT interpreter. The golden replay sends a recorded
AIM-94 patient through :class:`Advisor` event by event and checks every decision equals the
bulk evaluation path (docs/evaluation.md, "Dose model on AIM-94"), so the live device and the published figures agree.
"""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from device.advisor import Advisor
from device.config import DeviceConfig, SafetyConfig
from device.models.bundle import default_bundle_path, open_bundle
from device.models.choice import ModelSlot, load_dose_model
from device.models.inference import DoseModel
from device.page.backend import patient_view
from device.rules.safety import SafetyProfile
from device.state.store import Added, Store
from domain.events import Event, Insulin, Kind, within_timestamp_rank
from domain.features import PatientHistory, window_at
from domain.validation import decode_event
from model.evaluation import evaluate

from . import event_factory

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def dose_model() -> DoseModel:
    return DoseModel(open_bundle(default_bundle_path("dose")))


def make_advisor(tmp_path, dose_model, clock="wall", safety=None) -> Advisor:
    store = Store(tmp_path / "state.sqlite3")
    return Advisor(store, ModelSlot(dose_model), safety or SafetyConfig(), clock, wall_clock=lambda: NOW)


glucose, request, raw = event_factory.glucose, event_factory.request, event_factory.raw


def history_payloads(patient="p-1"):
    return [raw(e) for e in event_factory.history(patient, NOW)]


# ------------------------------------------------------------------------ store
def test_store_duplicates_conflicts_and_order(tmp_path):
    store = Store(tmp_path / "s.sqlite3")
    reading = glucose("e1", "p", NOW, 100)
    dose = Event(id="e0", patient="p", ts=NOW, kind=Kind.INSULIN, insulin=Insulin.REGULAR, units=3.0)
    assert store.add_event(dose) is Added.NEW
    assert store.add_event(reading) is Added.NEW
    assert store.add_event(reading) is Added.DUPLICATE
    changed = glucose("e1", "p", NOW, 101)
    assert store.add_event(changed) is Added.CONFLICT
    assert store.count_events() == 2
    assert [e.id for e in store.events_for("p")] == ["e1", "e0"]  # insulin after glucose at one timestamp
    store.close()
    reopened = Store(tmp_path / "s.sqlite3")
    assert reopened.events_for("p")[0] == reading
    assert reopened._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_audit_is_append_only(tmp_path):
    store = Store(tmp_path / "s.sqlite3")
    store.audit("dose_confirmed", {"units": 4.0}, patient="p")
    with pytest.raises(Exception, match="append-only"):
        store._db.execute("UPDATE audit SET action = 'x'")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        store._db.execute("DELETE FROM audit")
    assert [r["action"] for r in store.audit_rows()] == ["dose_confirmed"]


# ---------------------------------------------------------------------- advisor
def test_fresh_glucose_gets_a_supervised_suggestion(tmp_path, dose_model):
    advisor = make_advisor(tmp_path, dose_model)
    for payload in history_payloads():
        advisor.handle(payload)
    outcome = advisor.handle(raw(glucose("now", "p-1", NOW, 180)))
    s = outcome.suggestion
    assert s.status == "suggest" and s.event_id == "now" and s.id == "s-now"
    assert s.usual_units == 7.0 and 0 < s.units <= s.model_units + 1e-9
    assert s.units % 0.5 == 0 and s.latency_ms > 0
    assert s.model.name == "dose" and s.model.version == dose_model.bundle.version
    assert [r["action"] for r in advisor.store.audit_rows()][-1] == "suggest"


@pytest.mark.parametrize(
    "event, status, words",
    [
        (glucose("e", "p-1", NOW, 55), "withhold", "below 70"),
        (glucose("e", "p-1", NOW - timedelta(minutes=20), 150), "insufficient_data", "20 minutes old"),
        (request("e", "p-1", NOW), "insufficient_data", "5.0 hours old"),  # the last reading is 5 h old
    ],
)
def test_withhold_and_insufficient(tmp_path, dose_model, event, status, words):
    advisor = make_advisor(tmp_path, dose_model)
    for payload in history_payloads():
        advisor.handle(payload)
    if event.kind is Kind.REQUEST:
        advisor.handle(raw(glucose("g-old", "p-1", NOW - timedelta(minutes=300), 140)))
    s = advisor.handle(raw(event)).suggestion
    assert s.status == status and s.units == 0.0
    assert words in " ".join(s.reasons)


def test_hypo_symptoms_then_glucose_withholds(tmp_path, dose_model):
    advisor = make_advisor(tmp_path, dose_model)
    for payload in history_payloads():
        advisor.handle(payload)
    advisor.handle(raw(Event(id="h", patient="p-1", ts=NOW - timedelta(hours=1), kind=Kind.HYPO_SYMPTOMS)))
    s = advisor.handle(raw(glucose("g", "p-1", NOW, 160))).suggestion
    assert s.status == "withhold" and "symptoms" in s.reasons[0]


def test_per_patient_profile(tmp_path, dose_model):
    strict = SafetyProfile(max_single_units=2.0)
    advisor = make_advisor(tmp_path, dose_model, safety=SafetyConfig(patients={"p-1": strict}))
    for payload in history_payloads() + history_payloads("p-2"):
        advisor.handle(payload)
    one = advisor.handle(raw(glucose("a", "p-1", NOW, 180))).suggestion
    two = advisor.handle(raw(glucose("b", "p-2", NOW, 180))).suggestion
    assert one.units == 2.0 and "maximum single dose" in " ".join(one.reasons)
    assert two.units > 2.0


def test_duplicates_and_conflicts(tmp_path, dose_model):
    advisor = make_advisor(tmp_path, dose_model)
    for payload in history_payloads():
        advisor.handle(payload)
    first = advisor.handle(raw(glucose("now", "p-1", NOW, 180)))
    assert first.added is Added.NEW and first.suggestion
    again = advisor.handle(raw(glucose("now", "p-1", NOW, 180)))
    assert again.added is Added.DUPLICATE
    assert again.messages == []  # its suggestion was sent already: never again
    assert advisor.store.count_events() == 11 and len(advisor.history("p-1")) == 11
    conflict = advisor.handle(raw(glucose("now", "p-1", NOW, 90)))
    assert "different content" in conflict.errors[0].reason and conflict.messages == conflict.errors


def test_bad_payload_is_an_error_and_nothing_is_stored(tmp_path, dose_model):
    advisor = make_advisor(tmp_path, dose_model)
    outcome = advisor.handle(b'{"id": "x1", "patient": "p", "ts": "2026-11-21T12:00:00+00:00", "kind": "glucose"}')
    assert outcome.errors[0].event_id == "x1" and outcome.messages == outcome.errors
    assert advisor.store.count_events() == 0


def test_late_event_rebuilds_history_in_order(tmp_path, dose_model):
    advisor = make_advisor(tmp_path, dose_model, clock="event")
    raws = history_payloads()
    late = raws.pop(3)  # the insulin of day 4 arrives last
    for payload in raws + [late]:
        advisor.handle(payload)
    expected = PatientHistory(advisor.spec)
    events = sorted((decode_event(r, NOW) for r in history_payloads()), key=lambda e: (e.ts, within_timestamp_rank(e)))
    expected.extend(events)
    assert [e.id for e in advisor.history("p-1").events] == [e.id for e in events]
    assert (window_at(advisor.history("p-1"), NOW) == window_at(expected, NOW)).all()


def test_restart_reloads_history_from_the_store(tmp_path, dose_model):
    advisor = make_advisor(tmp_path, dose_model)
    for payload in history_payloads():
        advisor.handle(payload)
    before = window_at(advisor.history("p-1"), NOW)
    advisor.store.close()
    fresh = make_advisor(tmp_path, dose_model)
    assert (window_at(fresh.history("p-1"), NOW) == before).all()


def test_without_a_model_a_due_dose_is_insufficient_and_a_low_still_treated(tmp_path):
    advisor = Advisor(
        Store(tmp_path / "s.sqlite3"),
        ModelSlot(None, "bundle signature invalid"),
        SafetyConfig(),
        wall_clock=lambda: NOW,
    )
    s = advisor.handle(raw(glucose("g", "p", NOW, 150))).suggestion
    assert s.status == "insufficient_data" and "bundle signature invalid" in s.reasons[0]
    assert s.model.version is None
    idle = advisor.handle(raw(glucose("g2", "q", NOW, 150, context="unspecified"))).suggestion
    assert idle.status == "no_dose_due"
    low = advisor.handle(raw(glucose("g3", "p", NOW, 35))).suggestion  # a new user's first reading: a severe low
    assert low.status == "withhold" and low.rules == ["low_glucose"] and "15 g" in low.reasons[1]
    assert low.recheck_at == (NOW + timedelta(minutes=15)).isoformat()


def test_broken_configured_bundle_falls_back_to_packaged(tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text("{}")
    slot, notes = load_dose_model(DeviceConfig(state_dir=tmp_path, bundle=broken))
    assert slot.model is not None and slot.model.bundle.path == default_bundle_path("dose")
    assert any("was not used" in n for n in notes) and any("instead" in n for n in notes)


def test_golden_replay_matches_the_evaluation_path(tmp_path, dose_model, aim94_logs):
    """Replay AIM-94 patient 3 event by event with a request at every decision point."""
    log = next(lg for lg in aim94_logs if lg.number == 3)
    rows = evaluate(dose_model.bundle, [log])
    advisor = make_advisor(tmp_path, dose_model, clock="event")
    events = sorted(log.events, key=lambda e: (e.ts, within_timestamp_rank(e)))
    got = []
    requested = set()
    for event in events:
        if event.is_regular_dose and event.ts not in requested:
            requested.add(event.ts)
            got.append(advisor.handle(raw(request(f"req-{len(requested)}", event.patient, event.ts))).suggestion)
        advisor.handle(raw(event))
    by_ts = {s.ts: s for s in got}
    assert len(rows) >= len(by_ts) > 50
    for row in rows:
        s = by_ts[row.ts]
        assert s.model_units == pytest.approx(row.model_units, abs=1e-3)
        assert s.status == row.status and s.units == row.suggested_units


def test_patient_histories_in_memory_are_bounded_and_rebuilt_on_use(tmp_path, dose_model):
    """A ward of senders (100,000 ids in the attack) must not grow memory without end."""
    small = Advisor(
        Store(tmp_path / "a.sqlite3"), ModelSlot(dose_model), SafetyConfig(), wall_clock=lambda: NOW, max_histories=3
    )
    large = Advisor(Store(tmp_path / "b.sqlite3"), ModelSlot(dose_model), SafetyConfig(), wall_clock=lambda: NOW)
    for advisor in (small, large):
        for p in range(8):
            for payload in history_payloads(f"p-{p}"):
                advisor.handle(payload)
    assert len(small._histories) == 3 and len(large._histories) == 8
    evicted = small.handle(raw(glucose("again", "p-0", NOW, 170))).suggestion  # p-0 was evicted first
    kept = large.handle(raw(glucose("again", "p-0", NOW, 170))).suggestion
    assert evicted.model_units == kept.model_units and evicted.units == kept.units
    assert len(small._histories) == 3


def test_lookalike_and_case_twin_patient_ids(tmp_path, dose_model):
    advisor = make_advisor(tmp_path, dose_model)
    for payload in history_payloads("p1"):
        advisor.handle(payload)
    twin = advisor.handle(raw(glucose("t", "P1", NOW, 150)))
    assert twin.event is None and twin.suggestion is None and "only in letter case" in twin.errors[0].reason
    look = advisor.handle(raw(glucose("l", "pl", NOW, 150)))
    assert look.event is not None and look.suggestion is not None
    assert look.errors[0].level == "warning" and "'p1'" in look.errors[0].reason
    assert patient_view(advisor, advisor.store, "pl").notices == [look.errors[0].reason]
    again = advisor.handle(raw(glucose("l2", "pl", NOW, 151)))  # known now: no second warning
    assert again.errors == []
    assert not advisor.store.has_patient("P1")


def test_time_of_day_is_read_in_the_ward_zone(tmp_path, dose_model):
    """A sender on UTC at a Berlin ward: taken as Berlin time, flagged; the decision equals a Berlin sender's."""
    berlin = ZoneInfo("Europe/Berlin")
    utc_sender = Advisor(
        Store(tmp_path / "a.sqlite3"), ModelSlot(dose_model), SafetyConfig(), wall_clock=lambda: NOW, zone=berlin
    )
    local_sender = Advisor(
        Store(tmp_path / "b.sqlite3"), ModelSlot(dose_model), SafetyConfig(), wall_clock=lambda: NOW, zone=berlin
    )
    for event in event_factory.history("p-1", NOW):
        utc_sender.handle(raw(event))
        local_sender.handle(raw(replace(event, ts=event.ts.astimezone(berlin))))
    a = utc_sender.handle(raw(glucose("g", "p-1", NOW, 180)))
    b = local_sender.handle(raw(glucose("g", "p-1", NOW.astimezone(berlin), 180)))
    assert a.suggestion.model_units == b.suggestion.model_units and a.suggestion.ts == b.suggestion.ts
    assert a.suggestion.ts.endswith("+01:00")
    assert [e.level for e in a.errors] == ["warning"] and "taken as 2026-11-21 13:00 ward time" in a.errors[0].reason
    assert b.errors == []
    assert utc_sender.store.events_for("p-1")[-1].ts.utcoffset() == timedelta(hours=1)  # stored in ward time


def test_events_before_the_configured_floor_are_refused(tmp_path, dose_model):
    floor = datetime(2000, 1, 1, tzinfo=UTC)
    advisor = Advisor(
        Store(tmp_path / "s.sqlite3"), ModelSlot(dose_model), SafetyConfig(), wall_clock=lambda: NOW, earliest=floor
    )
    old = advisor.handle(raw(glucose("old", "p-1", datetime(1970, 1, 1, tzinfo=UTC), 120)))
    assert old.event is None and "earliest date this device accepts" in old.errors[0].reason
    assert advisor.handle(raw(glucose("new", "p-1", NOW, 120))).event is not None
    assert DeviceConfig().earliest_event == floor and DeviceConfig(clock="event").earliest_event is None


def test_a_wrong_zone_warning_names_both_offsets_plainly(tmp_path, dose_model):
    """A sender stamping UTC with microseconds at a Berlin ward: the offsets read +00:00 and +01:00, no fractions."""
    berlin = ZoneInfo("Europe/Berlin")
    advisor = Advisor(
        Store(tmp_path / "a.sqlite3"), ModelSlot(dose_model), SafetyConfig(), wall_clock=lambda: NOW, zone=berlin
    )
    warning = advisor.handle(raw(glucose("g", "p-1", NOW + timedelta(microseconds=698000), 150))).errors[0]
    assert warning.reason.startswith("the offset of 'ts' (+00:00) is not the ward's (+01:00, Europe/Berlin)")


def test_the_event_clock_runs_on_after_the_last_event(tmp_path, dose_model):
    """A replay that ends leaves the device's now moving with the wall clock, as a ward's would."""
    wall = [NOW]
    advisor = Advisor(Store(tmp_path / "s.sqlite3"), ModelSlot(dose_model), SafetyConfig(), "event", lambda: wall[0])
    event_time = NOW - timedelta(days=30)
    advisor.handle(raw(glucose("g", "p-1", event_time, 150)))
    assert advisor.now() == event_time
    wall[0] = NOW + timedelta(minutes=125)
    assert advisor.now() == event_time + timedelta(minutes=125)
