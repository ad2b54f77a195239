"""A ward's first hour on the real decision path (validation, SQLite, features, LiteRT, supervisor):
a new patient with only a weight gets a dose, basal is advised, not eating gets no meal insulin."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from device.advisor import Advisor
from device.config import ConfigError, DeviceConfig, SafetyConfig
from device.models.bundle import default_bundle_path, open_bundle
from device.models.choice import ModelSlot
from device.models.inference import DoseModel
from device.page.backend import patient_view
from device.state.store import Store

NOON = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def dose_model() -> DoseModel:
    return DoseModel(open_bundle(default_bundle_path("dose")))


@pytest.fixture()
def advisor(dose_model) -> Advisor:
    return Advisor(Store(Path(":memory:")), ModelSlot(dose_model), SafetyConfig(), "wall", wall_clock=lambda: NOON)


def send(advisor: Advisor, event_id: str, kind: str, ts: datetime = NOON, patient: str = "new-1", **fields):
    payload = {"id": event_id, "patient": patient, "ts": ts.isoformat(), "kind": kind, **fields}
    return advisor.handle(json.dumps(payload).encode())


def test_a_new_patient_with_no_history_gets_insufficient_data_without_a_weight(advisor):
    answer = send(advisor, "g1", "glucose", mg_dl=260, context="pre_lunch").suggestion
    assert answer is not None and answer.status == "insufficient_data"


def test_a_new_patient_with_a_weight_gets_a_dose_at_the_first_meal_reading(advisor):
    send(advisor, "prof", "profile", NOON - timedelta(minutes=30), weight_kg=80, diabetes_type="type2")
    send(advisor, "meal", "meal", size="typical")
    answer = send(advisor, "g1", "glucose", mg_dl=260, context="pre_lunch").suggestion
    assert answer is not None and answer.status == "suggest", answer.reasons
    # 80 kg × 0.5 U/kg = 40 U a day; lunch 40 / 6 = 6.67 U; + (260 − 110) ÷ (1500 / 40) = 4.0 U
    assert answer.units == pytest.approx(10.5)
    assert answer.rules[:2] == ["plan_meal", "plan_correction"] and not answer.meal_first
    assert "6.7 U for a usual meal" in answer.reasons[0]


def test_the_dose_rises_with_the_glucose_and_the_grams(advisor):
    send(advisor, "prof", "profile", NOON - timedelta(hours=1), weight_kg=60)
    units = []
    for i, (mg_dl, carbs) in enumerate([(120, 60), (200, 60), (300, 60), (120, 90)]):
        patient = f"p{i}"
        send(advisor, f"prof{i}", "profile", NOON - timedelta(hours=1), patient=patient, weight_kg=60)
        send(advisor, f"m{i}", "meal", patient=patient, size="typical", carbs_g=carbs)
        units.append(
            send(advisor, f"g{i}", "glucose", patient=patient, mg_dl=mg_dl, context="pre_lunch").suggestion.units
        )
    assert units[0] < units[1] < units[2] and units[0] < units[3], units


def test_a_pre_meal_reading_with_no_meal_asks_whether_the_patient_eats(advisor):
    send(advisor, "prof", "profile", NOON - timedelta(hours=1), weight_kg=70)
    answer = send(advisor, "g1", "glucose", mg_dl=95, context="pre_lunch").suggestion
    assert answer is not None and answer.status == "suggest" and answer.meal_first
    assert "Give it only if the patient eats" in answer.reasons[-1]


@pytest.mark.parametrize(("state", "rule"), [("npo", "npo"), ("uncertain", "eating_uncertain")])
def test_not_eating_gets_no_meal_insulin(advisor, state, rule):
    send(advisor, "prof", "profile", NOON - timedelta(hours=2), weight_kg=70)
    send(advisor, "eat", "nutrition", NOON - timedelta(hours=1), state=state)
    answer = send(advisor, "g1", "glucose", NOON - timedelta(minutes=14), mg_dl=180, context="pre_lunch").suggestion
    assert answer is not None and answer.status == "no_dose_due" and answer.units == 0
    assert answer.rules[:2] == ["no_dose_due", rule]
    high = send(advisor, "g2", "glucose", mg_dl=300, context="pre_lunch").suggestion
    assert high is not None and high.status == "suggest" and "correction_only" in high.rules, "corrections go on"


def test_npo_retires_a_pre_meal_dose_and_answers_anew(advisor):
    send(advisor, "prof", "profile", NOON - timedelta(hours=1), weight_kg=70)
    first = send(advisor, "g1", "glucose", mg_dl=150, context="pre_lunch").suggestion
    assert first is not None and first.status == "suggest"
    outcome = send(advisor, "eat", "nutrition", NOON + timedelta(minutes=2), state="npo")
    assert outcome.suggestion is not None and outcome.suggestion.status == "no_dose_due"
    assert outcome.suggestion.replaces is not None and "nothing by mouth" in outcome.suggestion.replaces.reason


def test_the_dose_for_the_share_eaten(advisor):
    send(advisor, "prof", "profile", NOON - timedelta(hours=2), weight_kg=90)
    send(advisor, "eat", "nutrition", NOON - timedelta(hours=1), state="uncertain")
    send(advisor, "meal", "meal", size="typical", eaten_share=0.5)
    answer = send(advisor, "g1", "glucose", mg_dl=110, context="pre_lunch").suggestion
    assert answer is not None and answer.status == "suggest" and "eaten_share" in answer.rules
    assert answer.units == pytest.approx(4.0)  # 90 × 0.5 / 6 = 7.5 U; half eaten 3.75; the nearest pen step


def test_basal_is_advised_once_a_day_in_long_acting_units(advisor):
    send(advisor, "g0", "glucose", NOON - timedelta(minutes=5), mg_dl=140, patient="nobody")
    refused = send(advisor, "r0", "request", insulin="long", patient="nobody")
    assert refused.suggestion is not None and refused.suggestion.rules == ["no_basal_plan"]
    send(advisor, "prof", "profile", NOON - timedelta(hours=1), weight_kg=70, age_years=75)
    send(advisor, "g1", "glucose", NOON - timedelta(minutes=5), mg_dl=140, context="unspecified")
    answer = send(advisor, "r1", "request", insulin="long").suggestion
    assert answer is not None and answer.status == "suggest" and answer.insulin == "long"
    assert answer.units == pytest.approx(10.5)  # 70 × 0.3 / 2
    send(advisor, "d1", "insulin", NOON + timedelta(minutes=1), insulin="long", units=10.5)
    again = send(advisor, "r2", "request", NOON + timedelta(minutes=2), insulin="long").suggestion
    assert again is not None and again.status == "no_dose_due" and again.rules == ["no_dose_due", "basal_given"]


def test_basal_is_lowered_for_a_patient_nil_by_mouth(advisor):
    send(advisor, "prof", "profile", NOON - timedelta(hours=1), weight_kg=80)
    send(advisor, "eat", "nutrition", NOON - timedelta(minutes=30), state="npo")
    send(advisor, "g1", "glucose", NOON - timedelta(minutes=5), mg_dl=140)
    answer = send(advisor, "r1", "request", insulin="long").suggestion
    assert answer is not None and answer.units == pytest.approx(16.0) and "basal_npo" in answer.rules


def test_a_meal_answer_names_the_patients_meal_insulin(advisor):
    send(advisor, "prof", "profile", NOON - timedelta(hours=6), weight_kg=80)
    send(advisor, "d0", "insulin", NOON - timedelta(hours=5), insulin="rapid", units=4)
    send(advisor, "meal", "meal", size="typical")
    answer = send(advisor, "g1", "glucose", mg_dl=150, context="pre_lunch").suggestion
    assert answer is not None and answer.insulin == "rapid"


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"weight_kg": 12}, "'weight_kg' 12 is outside 20–300 kg"),
        ({}, "missing field 'weight_kg'"),
        ({"weight_kg": 70, "bmi": 24}, "unexpected field(s) for a profile event: bmi"),
        ({"weight_kg": 70, "height_cm": 17}, "'height_cm' 17 is outside 50–250 cm"),
        ({"weight_kg": 70, "steroids": "yes"}, "'steroids' must be true or false"),
        ({"weight_kg": 70, "kidney": "bad"}, "'kidney' must be one of: normal, impaired"),
    ],
)
def test_a_bad_profile_is_refused_in_one_line_and_nothing_else_is_lost(advisor, fields, reason):
    outcome = send(advisor, "prof", "profile", **fields)
    assert [e.reason for e in outcome.errors] == [reason]
    assert send(advisor, "g1", "glucose", mg_dl=150).suggestion is not None, "the device goes on"


def test_bad_eating_states_and_shares_are_refused(advisor):
    assert send(advisor, "n", "nutrition", state="fasting").errors[0].reason.startswith("'state' must be one of")
    assert "outside 0–1" in send(advisor, "m", "meal", size="typical", eaten_share=1.5).errors[0].reason


def test_a_profile_in_the_config_starts_the_plan_and_an_event_outranks_it(dose_model):
    config = DeviceConfig.from_mapping({"profiles": {"new-1": {"weight_kg": 60, "age_years": 80}}})
    advisor = Advisor(
        Store(Path(":memory:")),
        ModelSlot(dose_model),
        SafetyConfig(),
        "wall",
        wall_clock=lambda: NOON,
        profiles=config.profiles,
    )
    send(advisor, "g0", "glucose", NOON - timedelta(minutes=5), mg_dl=140)
    basal = send(advisor, "r1", "request", insulin="long").suggestion
    assert basal is not None and basal.units == pytest.approx(9.0)  # 60 kg × 0.3 U/kg ÷ 2
    send(advisor, "prof", "profile", NOON, weight_kg=70)
    heavier = send(advisor, "r2", "request", insulin="long").suggestion
    assert heavier is not None and heavier.units == pytest.approx(10.5)  # the age stays: 70 kg × 0.3 ÷ 2
    send(advisor, "prof2", "profile", NOON, weight_kg=60, age_years=50)
    again = send(advisor, "r3", "request", insulin="long").suggestion
    assert again is not None and again.units == pytest.approx(15.0)  # the event's age: 0.5 U/kg


def test_a_weight_alone_updates_the_weight_and_keeps_the_steroids(advisor):
    """A new weight (the page's Weight entry, an ADT^A08) changes the weight only: the steroid
    course, the diabetes type and the age recorded before still shape the plan."""
    send(advisor, "prof", "profile", NOON - timedelta(hours=3), weight_kg=80, age_years=50, steroids=True)
    before = send(advisor, "g1", "glucose", NOON - timedelta(minutes=10), mg_dl=150, context="pre_lunch").suggestion
    assert before is not None and before.status == "suggest"
    outcome = send(advisor, "weigh", "profile", NOON - timedelta(minutes=5), weight_kg=70, height_cm=172)
    plan = advisor.plan("new-1")
    assert plan.profile is not None and plan.profile.steroids and plan.profile.age_years == 50
    assert plan.plan is not None and plan.plan.meal_units(1) == pytest.approx(70 * 0.5 / 6 * 1.2)
    replaced = outcome.suggestion
    assert replaced is not None and replaced.replaces is not None
    assert "weight 80 → 70 kg; height not given → 172 cm" in replaced.replaces.reason


def test_a_profile_that_repeats_what_is_known_leaves_the_live_answer(advisor):
    send(advisor, "prof", "profile", NOON - timedelta(hours=3), weight_kg=80, diabetes_type="type2")
    live = send(advisor, "g1", "glucose", NOON - timedelta(minutes=10), mg_dl=150, context="pre_lunch").suggestion
    assert live is not None and live.status == "suggest"
    again = send(advisor, "prof-again", "profile", NOON - timedelta(minutes=5), weight_kg=80)
    assert again.event is not None and again.suggestion is None, "nothing changed: no new answer"
    assert advisor.retired(live.id) is None and advisor.live_answer("new-1") == live


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"p": {"weight_kg": 5}}, "profiles.p: 'weight_kg' 5 is outside 20–300 kg"),
        ({"p": {"weight": 70}}, "profiles.p: unknown profile field(s): weight"),
        ({"p": 70}, 'profiles."<patient>" must be tables of profile settings'),
    ],
)
def test_a_bad_profile_in_the_config_is_one_line(table, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        DeviceConfig.from_mapping({"profiles": table})


def test_the_page_view_shows_the_plan_and_why_it_changed(advisor):
    send(advisor, "prof", "profile", NOON - timedelta(hours=8), weight_kg=80)
    send(advisor, "m1", "meal", NOON - timedelta(hours=5), size="typical")
    send(advisor, "d1", "insulin", NOON - timedelta(hours=5), insulin="rapid", units=6)
    send(advisor, "g1", "glucose", NOON - timedelta(minutes=5), mg_dl=230, context="pre_lunch")
    plan = patient_view(advisor, advisor.store, "new-1").plan
    assert plan is not None and plan.basal_units == pytest.approx(20.0)
    assert plan.meal_units[0] == pytest.approx(6.6)  # 6 U given, 230 mg/dL followed: +10 %
    assert plan.changes[0].part == "breakfast" and "230 mg/dL followed (over 180): +10 %" in plan.changes[0].why
    assert patient_view(advisor, advisor.store, "nobody").plan is None


def test_an_answer_by_the_plan_says_why_the_plan_is_what_it_is():
    """A device with no dose model doses by the plan; the answer says when and why the meal's dose changed."""
    morning = NOON - timedelta(hours=4)  # 08:00
    advisor = Advisor(
        Store(Path(":memory:")), ModelSlot(None, "no bundle"), SafetyConfig(), "wall", wall_clock=lambda: morning
    )
    day_before = morning - timedelta(days=1)
    send(advisor, "prof", "profile", day_before - timedelta(hours=2), weight_kg=80)
    send(advisor, "d1", "insulin", day_before, insulin="rapid", units=6)
    send(advisor, "g1", "glucose", day_before + timedelta(hours=4), mg_dl=230, context="pre_lunch")
    send(advisor, "m2", "meal", morning - timedelta(minutes=1), size="typical")
    answer = send(advisor, "g2", "glucose", morning, mg_dl=120, context="pre_breakfast").suggestion
    assert answer is not None and answer.status == "suggest" and answer.rules[0] == "plan_meal", answer.reasons
    note = next(r for r in answer.reasons if "last changed" in r)
    assert "6.7 U → 6.6 U" in note and "230 mg/dL followed (over 180): +10 %" in note
