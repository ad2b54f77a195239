"""The page's actions on a real store and advisor (no sockets): a dose is given once, only for the
current answer; declines and acknowledgements carry who and why; entries are published as events."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta

import pytest

from device.advisor import Advisor, ModelSlot
from device.bundle import default_bundle_path, open_bundle
from device.config import SafetyConfig
from device.dose_responses import ActionConflict
from device.inference import DoseModel
from device.messages import ConfirmDose, Decline
from device.page_actions import LinkDown, PageActions
from device.store import Store
from device.users import Identity
from preprocessing.events import Event, Kind

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
    published: list[Event] = []
    link = {"problem": None}
    actions = PageActions("bed1", store, advisor, published.append, 900, lambda: link["problem"])
    for event in event_factory.history("p-1", NOW):
        advisor.handle(event_factory.raw(event))
    answer = advisor.handle(event_factory.raw(event_factory.glucose("g-now", "p-1", NOW, 180))).suggestion
    assert answer is not None and answer.status == "suggest" and answer.units > 1
    return advisor, store, actions, published, answer, clock, link


def test_a_dose_is_given_once_and_shows_who_gave_it(ward, tmp_path):
    _advisor, store, actions, published, answer, _clock, _link = ward
    event = actions.confirm_dose("p-1", ConfirmDose(answer.id, answer.units), ANN)
    assert published == [event] and event.kind is Kind.INSULIN and event.units == answer.units
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
    with pytest.raises(ActionConflict, match="newer answer"):
        actions.confirm_dose("p-1", ConfirmDose(answer.id, answer.units), ANN)
    with pytest.raises(ValueError, match="not a dose"):
        actions.confirm_dose("p-1", ConfirmDose(low.id, 1.0, reason="other", note="x"), ANN)
    actions.acknowledge("p-1", low.id, Identity("pat", "patient"))
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
    actions.enter(entry, ANN)
    assert published == [entry]
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
    assert [e.id for e in events] == ["g-now"]  # the history is on earlier days
    answers = store.suggestions_between("p-1", start, end)  # by decision time: a late reading is answered today
    assert answers[-1].id == answer.id and all(start <= datetime.fromisoformat(a.ts) < end for a in answers)
    assert store.suggestions_between("p-1", end, end + timedelta(days=1)) == []
    assert store.responses_to([answer.id, "s-none"])[answer.id].reason == "not_eating"
