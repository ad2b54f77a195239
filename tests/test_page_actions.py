"""The page's actions on a real store and advisor (no sockets): a dose is given once, only for the
current answer; declines and acknowledgements carry who and why; entries are published as events."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from device.advisor import Advisor
from device.config import SafetyConfig
from device.contract.messages import ConfirmDose, Decline
from device.models.bundle import default_bundle_path, open_bundle
from device.models.choice import ModelSlot
from device.models.inference import DoseModel
from device.page.actions import EntryRefused, LinkDown, NotAllowed, PageActions
from device.page.users import Identity
from device.rules.dose_responses import ActionConflict
from device.state.store import Store, StoreError
from domain.events import Event, Insulin, Kind, PatientProfile

from . import event_factory

NOW = datetime(2026, 11, 22, 11, 25, tzinfo=UTC)
ANN = Identity("ann", "nurse")


@pytest.fixture(scope="module")
def dose_model() -> DoseModel:
    return DoseModel(open_bundle(default_bundle_path("dose")))


@pytest.fixture()
def ward(tmp_path, dose_model):
    """An advisor with a patient's history and a suggestion waiting; the page's actions on it."""
    clock = [NOW]
    store = Store(tmp_path / "state.sqlite3")
    advisor = Advisor(store, ModelSlot(dose_model), SafetyConfig(), "wall", wall_clock=lambda: clock[0])
    published: list = []  # what the device sent: events, answers, warnings
    link = {"problem": None}
    actions = PageActions("bed1", store, advisor, published.append, 900, lambda: link["problem"])
    for event in event_factory.history("p-1", NOW):
        advisor.handle(event_factory.raw(event))
    advisor.handle(event_factory.raw(event_factory.meal("m-now", "p-1", NOW)))  # the patient is eating
    answer = advisor.handle(event_factory.raw(event_factory.glucose("g-now", "p-1", NOW, 180))).suggestion
    assert answer is not None and answer.status == "suggest" and answer.units > 1 and not answer.meal_first
    return advisor, store, actions, published, answer, clock, link


def pre_meal_answer(store: Store, dose_model: DoseModel):
    """A patient's history, then a pre-meal reading with no meal recorded: (store, advisor, actions,
    what the device published, the answer)."""
    advisor = Advisor(store, ModelSlot(dose_model), SafetyConfig(), "wall", wall_clock=lambda: NOW)
    published: list = []
    actions = PageActions("bed1", store, advisor, published.append, 900, lambda: None)
    for event in event_factory.history("p-1", NOW):
        advisor.handle(event_factory.raw(event))
    answer = advisor.handle(event_factory.raw(event_factory.glucose("g-now", "p-1", NOW, 180))).suggestion
    return store, advisor, actions, published, answer


def test_a_pre_meal_dose_is_given_only_to_a_patient_who_eats(tmp_path, dose_model):
    """A pre-meal reading with no meal recorded: the dose is asked about, and the meal recorded with it."""
    store, advisor, actions, _published, answer = pre_meal_answer(Store(tmp_path / "state.sqlite3"), dose_model)
    assert answer is not None and answer.status == "suggest" and answer.meal_first and "meal_first" in answer.rules
    assert "Give it only if the patient eats" in answer.reasons[-1]
    with pytest.raises(ValueError, match="ask first whether the patient is eating"):
        actions.confirm_dose("p-1", ConfirmDose(answer.id, answer.units), ANN)
    assert store.response_for(answer.id) is None and store.doses_near("p-1", NOW, 60) == []
    event, _ = actions.confirm_dose("p-1", ConfirmDose(answer.id, answer.units, eating=True), ANN)
    meals = [e for e in store.events_for("p-1") if e.kind is Kind.MEAL]
    assert [m.ts for m in meals] == [event.ts] and meals[0].size == "typical"
    assert advisor.live_answer("p-1") is None, "the meal recorded with the dose retires nothing, answers nothing"


def test_a_patient_who_does_not_eat_declines_the_pre_meal_dose(tmp_path, dose_model):
    store, _advisor, actions, _published, answer = pre_meal_answer(Store(tmp_path / "state.sqlite3"), dose_model)
    assert answer is not None and answer.meal_first
    actions.decline("p-1", Decline(answer.id, "not_eating"), ANN)
    assert store.doses_near("p-1", NOW, 60) == [] and store.response_for(answer.id).reason == "not_eating"


def test_a_dose_is_given_once_and_shows_who_gave_it(ward, tmp_path):
    _advisor, store, actions, published, answer, _clock, _link = ward
    event, warnings = actions.confirm_dose("p-1", ConfirmDose(answer.id, answer.units), ANN)
    assert published == [event] and event.kind is Kind.INSULIN and event.units == answer.units and warnings == []
    assert [e.id for e in store.doses_near("p-1", event.ts, 1)] == [event.id], "stored before the answer"
    with pytest.raises(ActionConflict, match="already given by ann"):
        actions.confirm_dose("p-1", ConfirmDose(answer.id, 0.5, reason="other", note="top-up"), ANN)
    with pytest.raises(ActionConflict, match="already given"):
        actions.decline("p-1", Decline(answer.id, "patient_refused"), ANN)
    response = store.response_for(answer.id)
    assert response is not None and (response.action, response.user, response.units) == ("given", "ann", answer.units)
    db = sqlite3.connect(tmp_path / "state.sqlite3")
    rows = db.execute("SELECT action, detail FROM audit WHERE suggestion_id = ? ORDER BY seq", (answer.id,)).fetchall()
    assert [r[0] for r in rows] == ["suggest", "dose_given"]
    detail = json.loads(rows[1][1])
    assert (detail["user"], detail["role"], detail["suggested_units"]) == ("ann", "nurse", answer.units)
    assert len(published) == 1


def test_a_different_dose_needs_a_reason_and_the_reason_is_kept(ward):
    _advisor, store, actions, _published, answer, _clock, _link = ward
    lower = answer.units - 0.5
    with pytest.raises(ValueError, match="give a reason"):
        actions.confirm_dose("p-1", ConfirmDose(answer.id, lower), ANN)
    with pytest.raises(ValueError, match="pen steps"):
        actions.confirm_dose("p-1", ConfirmDose(answer.id, lower + 0.2, reason="not_eating"), ANN)
    with pytest.raises(ValueError, match="single-dose limit"):
        actions.confirm_dose("p-1", ConfirmDose(answer.id, 100.0, reason="clinicians_order"), ANN)
    actions.confirm_dose("p-1", ConfirmDose(answer.id, lower, reason="not_eating"), ANN)
    response = store.response_for(answer.id)
    assert response is not None and (response.units, response.reason) == (lower, "not_eating")


def test_an_answer_replaced_by_a_newer_one_or_expired_cannot_be_given(ward):
    advisor, _store, actions, _published, answer, clock, _link = ward
    clock[0] = NOW + timedelta(minutes=16)  # the reading is now older than 15 min
    with pytest.raises(ActionConflict, match="expired at"):
        actions.confirm_dose("p-1", ConfirmDose(answer.id, answer.units), ANN)
    low = advisor.handle(event_factory.raw(event_factory.glucose("g-low", "p-1", clock[0], 55))).suggestion
    assert low is not None and low.status == "withhold"
    with pytest.raises(ActionConflict, match=r"newer answer was made at 11:41 with glucose 55 mg/dL"):
        actions.confirm_dose("p-1", ConfirmDose(answer.id, answer.units), ANN)
    with pytest.raises(ValueError, match="not a dose"):
        actions.confirm_dose("p-1", ConfirmDose(low.id, 1.0, reason="other", note="x"), ANN)
    actions.acknowledge("p-1", low.id, Identity("pat", "patient", "p-1"))
    with pytest.raises(ActionConflict, match="already acknowledged by pat"):
        actions.acknowledge("p-1", low.id, ANN)


def test_a_decline_keeps_why_and_nothing_is_published(ward):
    _advisor, store, actions, published, answer, _clock, _link = ward
    with pytest.raises(ValueError, match="needs a note"):
        actions.decline("p-1", Decline(answer.id, "other"), ANN)
    actions.decline("p-1", Decline(answer.id, "patient_refused", note="wants to eat first"), ANN)
    response = store.response_for(answer.id)
    assert response is not None and (response.action, response.reason, response.note) == (
        "declined",
        "patient_refused",
        "wants to eat first",
    )
    assert published == []


def test_without_the_broker_nothing_is_recorded(ward):
    _advisor, store, actions, published, answer, _clock, link = ward
    link["problem"] = "connection refused"
    with pytest.raises(ActionConflict, match="not linked to its broker"):
        actions.confirm_dose("p-1", ConfirmDose(answer.id, answer.units), ANN)
    entry = event_factory.glucose("page-1", "p-1", NOW, 120)
    with pytest.raises(LinkDown, match="record on paper"):
        actions.enter(entry, ANN)
    assert published == [] and store.response_for(answer.id) is None
    link["problem"] = None
    assert actions.enter(entry, ANN) == []
    assert published[0] == entry and [type(m).__name__ for m in published[1:]] == ["Suggestion"]
    assert store.has_event("page-1"), "stored before the answer"
    audit = store.audit_rows("entered")
    assert audit[-1]["detail"]["user"] == "ann" and audit[-1]["event_id"] == "page-1"


def test_every_answer_carries_its_next_check(ward):
    advisor, _store, _actions, _published, answer, clock, _link = ward
    assert answer.next_check_at is not None
    assert datetime.fromisoformat(answer.next_check_at) == datetime(2026, 11, 22, 17, 30, tzinfo=UTC)
    low = advisor.handle(event_factory.raw(event_factory.glucose("g-low", "p-1", clock[0], 55))).suggestion
    assert low is not None and low.next_check_at == low.recheck_at


def test_the_store_gives_a_day_of_events_answers_and_responses(ward):
    _advisor, store, actions, _published, answer, _clock, _link = ward
    actions.decline("p-1", Decline(answer.id, "not_eating"), ANN)
    start, end = NOW.replace(hour=0, minute=0), NOW.replace(hour=0, minute=0) + timedelta(days=1)
    events = store.events_between("p-1", start, end)
    assert [e.id for e in events] == ["m-now", "g-now"]  # the history is on earlier days
    answers = store.suggestions_between("p-1", start, end)  # by decision time: a late reading is answered today
    assert answers[-1].id == answer.id and all(start <= datetime.fromisoformat(a.ts) < end for a in answers)
    assert store.suggestions_between("p-1", end, end + timedelta(days=1)) == []
    assert store.responses_to([answer.id, "s-none"])[answer.id].reason == "not_eating"


# ---------------------------------------------------------------- one live answer per need
def pen(event_id: str, at: datetime, units: float, insulin: Insulin = Insulin.REGULAR) -> Event:
    """A dose recorded another way: a pen, another nurse, the serial bridge."""
    return Event(id=event_id, patient="p-1", ts=at, kind=Kind.INSULIN, insulin=insulin, units=units)


def test_a_dose_recorded_another_way_retires_the_live_answer(ward, tmp_path):
    advisor, store, actions, published, answer, clock, _link = ward
    clock[0] = NOW + timedelta(minutes=2)
    outcome = advisor.handle(event_factory.raw(pen("pen-1", clock[0], 6)))
    assert outcome.suggestion is None, "a dose is not answered: the live answer is greyed with the reason"
    retired = advisor.retired(answer.id)
    assert retired is not None and retired.event_id == "pen-1" and retired.kind == "insulin"
    assert retired.reason.startswith("6 U of regular insulin was recorded at 11:27 after this answer")
    state = actions.state(answer, None)
    assert not state.actionable and state.why_not == retired.reason
    with pytest.raises(ActionConflict, match="6 U of regular insulin was recorded at 11:27"):
        actions.confirm_dose("p-1", ConfirmDose(answer.id, answer.units), ANN)
    with pytest.raises(ActionConflict, match="can no longer be acted on"):
        actions.decline("p-1", Decline(answer.id, "patient_refused"), ANN)
    assert published == [] and store.response_for(answer.id) is None, "nothing recorded, nothing published"
    audit = sqlite3.connect(tmp_path / "state.sqlite3").execute(
        "SELECT event_id FROM audit WHERE action = 'retired' AND suggestion_id = ?", (answer.id,)
    )
    assert audit.fetchall() == [("pen-1",)]


def test_any_insulin_retires_a_dose_and_only_the_first_event_counts(ward):
    advisor, _store, actions, _published, answer, clock, _link = ward
    advisor.handle(event_factory.raw(pen("nph-1", clock[0], 14, Insulin.NPH)))
    advisor.handle(event_factory.raw(pen("pen-2", clock[0], 4)))
    retired = advisor.retired(answer.id)
    assert retired is not None and retired.event_id == "nph-1" and "14 U of NPH insulin" in retired.reason
    with pytest.raises(ActionConflict, match="NPH insulin"):
        actions.confirm_dose("p-1", ConfirmDose(answer.id, answer.units), ANN)


def test_symptoms_retire_the_dose_and_are_answered_at_once(ward):
    advisor, store, actions, _published, answer, clock, _link = ward
    clock[0] = NOW + timedelta(minutes=3)
    symptoms = Event(id="hypo-1", patient="p-1", ts=clock[0], kind=Kind.HYPO_SYMPTOMS)
    new = advisor.handle(event_factory.raw(symptoms)).suggestion
    assert new is not None and new.status == "withhold" and new.rules[0] == "hypo_symptoms"
    assert new.replaces is not None and new.replaces.suggestion_id == answer.id
    assert new.replaces.reason.startswith("hypoglycaemia symptoms were recorded at 11:28")
    assert new.next_check_at == clock[0].isoformat(), "no reading since the symptoms: measure now"
    assert "measure glucose now" in " ".join(new.reasons)
    assert store.latest_suggestion("p-1") == new
    with pytest.raises(ActionConflict, match=r"replaced this suggestion \(hypoglycaemia symptoms were recorded"):
        actions.confirm_dose("p-1", ConfirmDose(answer.id, answer.units), ANN)


def test_a_meal_after_the_answer_makes_a_new_one(ward):
    advisor, _store, actions, _published, answer, clock, _link = ward
    clock[0] = NOW + timedelta(minutes=1)
    new = advisor.handle(event_factory.raw(event_factory.meal("m-1", "p-1", clock[0], "less"))).suggestion
    assert new is not None and new.replaces is not None
    assert new.replaces.reason == "a meal (smaller than usual) was recorded at 11:26"
    assert new.due == "meal" and new.glucose_mg_dl == 180
    with pytest.raises(ActionConflict, match="newer answer"):
        actions.confirm_dose("p-1", ConfirmDose(answer.id, answer.units), ANN)


def test_exercise_is_answered_only_when_it_retires_a_live_answer(ward):
    advisor, _store, actions, _published, _answer, clock, _link = ward
    workout = Event(id="ex-1", patient="p-1", ts=clock[0], kind=Kind.EXERCISE, intensity="more")
    new = advisor.handle(event_factory.raw(workout)).suggestion
    assert new is not None and new.replaces is not None and "exercise (harder than usual)" in new.replaces.reason
    if new.is_dose:
        actions.decline("p-1", Decline(new.id, "patient_refused"), ANN)
    else:
        actions.acknowledge("p-1", new.id, ANN)
    again = Event(id="ex-2", patient="p-1", ts=clock[0], kind=Kind.EXERCISE, intensity="less")
    assert advisor.handle(event_factory.raw(again)).suggestion is None, "nothing live to retire: no new answer"


def test_the_dose_a_confirmation_published_does_not_retire_anything(ward):
    advisor, _store, actions, published, answer, _clock, _link = ward
    given, _ = actions.confirm_dose("p-1", ConfirmDose(answer.id, answer.units), ANN)
    assert advisor.handle(event_factory.raw(given)).suggestion is None
    assert advisor.retired(answer.id) is None, "it was acted on; the dose it published is its own"
    assert published == [given]


def test_an_expired_answer_is_not_retired(ward):
    advisor, _store, _actions, _published, answer, clock, _link = ward
    clock[0] = NOW + timedelta(minutes=20)
    advisor.handle(event_factory.raw(pen("pen-late", clock[0], 6)))
    assert advisor.retired(answer.id) is None


def test_a_confirmation_looks_for_regular_insulin_stored_since(ward):
    """Even when no retirement was recorded (a dose held in memory, a race), the confirmation checks the store."""
    _advisor, store, actions, published, answer, _clock, _link = ward
    store.add_event(pen("bridge-1", NOW, 5))  # stored by another path, never handled by the advisor
    with pytest.raises(ActionConflict, match=r"not recorded: 5 U of regular insulin was recorded at 11:25 .*bridge-1"):
        actions.confirm_dose("p-1", ConfirmDose(answer.id, answer.units), ANN)
    assert published == [] and store.response_for(answer.id) is None


def test_a_stale_reading_makes_the_next_check_now(ward):
    advisor, _store, _actions, _published, _answer, clock, _link = ward
    clock[0] = NOW + timedelta(minutes=40)  # 12:05; the reading is 40 min old
    asked = advisor.handle(event_factory.raw(event_factory.request("r-1", "p-1", clock[0]))).suggestion
    assert asked is not None and asked.rules[0] == "stale_glucose"
    assert asked.next_check_at == clock[0].isoformat()


def test_a_reading_counts_for_a_check_by_its_own_time(ward):
    advisor, _store, _actions, _published, _answer, clock, _link = ward
    reading = NOW.replace(hour=10, minute=58) + timedelta(days=1)
    clock[0] = reading + timedelta(minutes=7)  # decided at 11:05, 25 min before the 11:30 check
    answer = advisor.handle(event_factory.raw(event_factory.glucose("g-1058", "p-1", reading, 140))).suggestion
    assert answer is not None
    assert answer.next_check_at == reading.replace(hour=11, minute=30).isoformat(), "10:58 is 32 min before 11:30"


def test_a_dose_recorded_again_seconds_or_minutes_later_is_flagged(ward):
    """A confirmation, then the same 4 U entered by hand 3 s later; then 2 U 12 min later: both flagged."""
    advisor, _store, actions, published, answer, clock, _link = ward
    given, _ = actions.confirm_dose("p-1", ConfirmDose(answer.id, answer.units), ANN)
    assert advisor.handle(event_factory.raw(given)).errors == [], "its own copy back from the broker: a duplicate"
    again = pen("manual-1", given.ts + timedelta(seconds=3), answer.units)
    warning = advisor.handle(event_factory.raw(again)).errors
    assert [w.level for w in warning] == ["warning"]
    assert warning[0].reason.startswith(f"likely duplicate dose: {answer.units:g} U regular at 11:25")
    clock[0] = given.ts + timedelta(minutes=12)
    later = pen("manual-2", clock[0], 2.0)
    second = advisor.handle(event_factory.raw(later)).errors
    assert second and second[0].reason.startswith("second regular dose: 2 U at 11:37 and")
    assert "12 min apart" in second[0].reason
    assert any("second regular dose" in n for n in advisor.store.notices("p-1")), "the page shows it"
    clock[0] = given.ts + timedelta(minutes=45)
    far = pen("manual-3", clock[0], 2.0)
    assert advisor.handle(event_factory.raw(far)).errors == []
    assert len(published) == 1


def test_a_late_reading_is_history_and_the_live_dose_stands(ward):
    """A meter syncs a reading from two hours ago: stored, not answered; the live dose is still the answer."""
    advisor, store, actions, _published, answer, _clock, _link = ward
    outcome = advisor.handle(event_factory.raw(event_factory.glucose("g-old", "p-1", NOW - timedelta(hours=2), 150)))
    assert outcome.suggestion is None and outcome.added is not None
    assert [e.level for e in outcome.errors] == ["warning"]
    assert outcome.errors[0].reason.startswith("a reading from 09:25 arrived after a newer one (11:25)")
    assert store.latest_suggestion("p-1") == answer and actions.state(answer, None).actionable
    assert "g-old" in [e.id for e in advisor.history("p-1").events]


# ---------------------------------------------------------------- "ok" means stored
def test_an_entry_the_device_refuses_is_not_recorded_and_says_why(ward):
    """A case twin of a known patient, an id reused with other content: 400-class, nothing stored or published."""
    _advisor, store, actions, published, _answer, _clock, _link = ward
    with pytest.raises(EntryRefused, match="not recorded: patient 'P-1' differs from the known patient 'p-1' only"):
        actions.enter(event_factory.glucose("page-twin", "P-1", NOW, 120), ANN)
    with pytest.raises(EntryRefused, match="already accepted with different content"):
        actions.enter(event_factory.glucose("g-now", "p-1", NOW, 99), ANN)
    assert published == [] and not store.has_event("page-twin") and not store.has_patient("P-1")
    assert store.audit_rows("entered") == []


def test_a_database_that_refuses_writes_records_nothing_the_page_is_told_of(tmp_path, dose_model):
    """A locked database (a backup holds the lock): the entry and the dose are refused, not held in memory."""
    path = tmp_path / "state.sqlite3"
    store, advisor, actions, published, answer = pre_meal_answer(Store(path, busy_timeout_s=0.1), dose_model)
    assert answer is not None and answer.is_dose
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreError, match="locked"):
            actions.confirm_dose("p-1", ConfirmDose(answer.id, answer.units, eating=True), ANN)
        with pytest.raises(StoreError, match="locked"):
            actions.enter(event_factory.glucose("page-1", "p-1", NOW, 150), ANN)
        assert published == [] and advisor.writes.held == 0, "nothing is kept in memory behind the page's back"
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert store.response_for(answer.id) is None and not store.has_event("page-1")
    event, _ = actions.confirm_dose(
        "p-1", ConfirmDose(answer.id, answer.units, eating=True), ANN
    )  # the disk is back: recorded
    assert store.has_event(event.id) and store.response_for(answer.id) is not None


def test_a_clock_set_back_does_not_revive_an_expired_answer(ward):
    """Made at 11:25, expired by 13:25; the wall clock is set back to 10:25: still not actionable, and said why."""
    _advisor, store, actions, _published, answer, clock, _link = ward
    clock[0] = NOW + timedelta(hours=2)
    with pytest.raises(ActionConflict, match="expired at"):
        actions.confirm_dose("p-1", ConfirmDose(answer.id, answer.units), ANN)
    clock[0] = NOW - timedelta(hours=1)
    with pytest.raises(
        ActionConflict, match=r"clock reads 10:25, before this answer was made \(11:25\): it was set back"
    ):
        actions.confirm_dose("p-1", ConfirmDose(answer.id, answer.units), ANN)
    assert store.response_for(answer.id) is None


def test_a_dose_is_never_dated_before_its_answer(ward):
    """A clock 30 s behind the answer (within the slack): the dose is stamped at the answer's time, not before."""
    _advisor, _store, actions, _published, answer, clock, _link = ward
    clock[0] = NOW - timedelta(seconds=30)
    event, _ = actions.confirm_dose("p-1", ConfirmDose(answer.id, answer.units), ANN)
    assert event.ts >= datetime.fromisoformat(answer.ts).replace(microsecond=0)


def test_a_low_then_a_value_typed_in_the_wrong_unit_gets_no_insulin(ward):
    """Meter 52 mg/dL; two minutes later '50' typed with the page in mmol/L (901 mg/dL): measure again."""
    from domain.validation import decode_event

    advisor, _store, actions, published, _answer, clock, _link = ward
    clock[0] = NOW + timedelta(minutes=1)
    low = advisor.handle(event_factory.raw(event_factory.glucose("g-52", "p-1", clock[0], 52))).suggestion
    assert low is not None and low.status == "withhold"
    clock[0] = NOW + timedelta(minutes=3)
    payload = {
        "id": "page-50",
        "patient": "p-1",
        "ts": clock[0].isoformat(),
        "kind": "glucose",
        "value": 50,
        "unit": "mmol/L",
        "context": "unspecified",
    }
    actions.enter(decode_event(json.dumps(payload).encode(), clock[0]), ANN)
    answer = next(m for m in published if getattr(m, "event_id", None) == "page-50" and hasattr(m, "status"))
    assert answer.status == "insufficient_data" and answer.units == 0 and answer.rules == ["implausible_change"]
    assert answer.reasons[0].startswith("Glucose 901 mg/dL 2 minutes after 52 mg/dL: a change no physiology allows")
    assert answer.next_check_at == clock[0].isoformat(), "measure again now"


# ---------------------------------------------------------------- a patient user
PAT = Identity("pat", "patient", "p-1")


def test_a_patient_user_records_for_their_patient_only(ward):
    advisor, store, actions, _published, answer, _clock, _link = ward
    for event in event_factory.history("p-2", NOW):
        advisor.handle(event_factory.raw(event))
    other = advisor.handle(event_factory.raw(event_factory.glucose("g-p2", "p-2", NOW, 180))).suggestion
    assert other is not None and other.is_dose
    with pytest.raises(NotAllowed, match="patient user of 'p-1' and records only for that patient"):
        actions.decline("p-2", Decline(other.id, "patient_refused"), PAT)
    with pytest.raises(NotAllowed):
        actions.confirm_dose("p-2", ConfirmDose(other.id, 20.0, reason="clinicians_order"), PAT)
    with pytest.raises(NotAllowed):
        actions.enter(replace(pen("page-40", NOW, 4.0), patient="p-2"), PAT)
    assert store.response_for(other.id) is None
    actions.confirm_dose("p-1", ConfirmDose(answer.id, answer.units), PAT)  # their own: recorded


def test_a_back_dated_entry_or_a_dose_above_the_limit_needs_a_nurse_and_a_reason(ward):
    """A patient back-dating 99 U six days would raise the limits fitted from history."""
    _advisor, store, actions, _published, _answer, _clock, _link = ward
    with pytest.raises(NotAllowed, match=r"an entry dated 8640 min ago \(more than 15\) needs a nurse"):
        actions.enter(pen("page-99", NOW - timedelta(days=6), 5.0), PAT)
    with pytest.raises(NotAllowed, match="25 U, above this patient's single-dose limit of 20 U, needs a nurse"):
        actions.enter(pen("page-25", NOW, 25.0), PAT)
    with pytest.raises(ValueError, match="needs a reason"):
        actions.enter(pen("page-nurse", NOW - timedelta(hours=2), 5.0), ANN)
    assert not {"page-99", "page-25", "page-nurse"} & {e.id for e in store.events_for("p-1")}
    actions.enter(pen("page-nurse", NOW - timedelta(hours=2), 5.0), ANN, reason="given at 09:25, charted late")
    entered = store.audit_rows("entered")[-1]["detail"]
    assert (entered["user"], entered["reason"]) == ("ann", "given at 09:25, charted late")


def test_an_answer_s_age_is_kept_on_the_monotonic_clock(tmp_path, dose_model):
    """The wall clock set back 10 min inside the answer's life cannot stretch it: 16 real minutes is expired."""
    wall, mono = [NOW], [1000.0]
    store = Store(tmp_path / "s.sqlite3")
    advisor = Advisor(
        store, ModelSlot(dose_model), SafetyConfig(), "wall", wall_clock=lambda: wall[0], monotonic=lambda: mono[0]
    )
    actions = PageActions("bed1", store, advisor, lambda _m: None, 900, lambda: None)
    for event in event_factory.history("p-1", NOW):
        advisor.handle(event_factory.raw(event))
    answer = advisor.handle(event_factory.raw(event_factory.glucose("g-now", "p-1", NOW, 180))).suggestion
    assert answer is not None and actions.state(answer, None).actionable
    wall[0], mono[0] = NOW + timedelta(minutes=6), mono[0] + 16 * 60  # 16 min passed; the clock says 6
    with pytest.raises(ActionConflict, match="expired at"):
        actions.confirm_dose("p-1", ConfirmDose(answer.id, answer.units), ANN)


def test_only_a_nurse_records_a_profile(ward):
    """A weight sets the dosing plan: a patient user or a viewer may not record one; a nurse may."""
    _advisor, store, actions, _published, _answer, _clock, _link = ward
    profile = Event("prof-1", "p-1", NOW, Kind.PROFILE, profile=PatientProfile(70.0))
    with pytest.raises(NotAllowed, match="a nurse records it, not a patient"):
        actions.enter(profile, PAT)
    assert not store.has_event("prof-1")
    actions.enter(profile, ANN)
    assert store.has_event("prof-1")


def test_a_long_acting_dose_is_judged_against_the_basal_limit(ward):
    _advisor, store, actions, _published, _answer, _clock, _link = ward
    actions.enter(Event("long-1", "p-1", NOW, Kind.INSULIN, insulin=Insulin.LONG, units=28.0), ANN)  # above 20 U
    assert store.has_event("long-1")
    with pytest.raises(ValueError, match="above this patient's basal limit of 40 U, needs a reason"):
        actions.enter(Event("long-2", "p-1", NOW, Kind.INSULIN, insulin=Insulin.LONG, units=45.0), ANN)
