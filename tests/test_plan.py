"""The dosing plan (device/rules/plan.py): the start by weight and the titration both ways, case by case."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from device.rules.plan import DosingPlan, PlanTracker
from domain.events import Event, Insulin, Kind, PatientProfile

DAY = datetime(2026, 12, 1, tzinfo=UTC)
BASE_MEAL = 80 * 0.5 / 6  # the weight-based meal dose of an 80 kg patient


def at(day: int, hour: float) -> datetime:
    return DAY + timedelta(days=day, hours=hour)


def profile(ts: datetime, **fields) -> Event:
    return Event(f"p{ts:%d%H%M}", "p", ts, Kind.PROFILE, profile=PatientProfile(**{"weight_kg": 80.0, **fields}))


def reading(ts: datetime, mg_dl: float, context: str = "unspecified") -> Event:
    return Event(f"g{ts:%d%H%M}", "p", ts, Kind.GLUCOSE, mg_dl=mg_dl, context=context)


def dose(ts: datetime, units: float, insulin: Insulin = Insulin.RAPID) -> Event:
    return Event(f"i{ts:%d%H%M}", "p", ts, Kind.INSULIN, insulin=insulin, units=units)


def tracked(*events: Event) -> PlanTracker:
    tracker = PlanTracker()
    for event in events:
        tracker.add(event)
    return tracker


@pytest.mark.parametrize(
    ("fields", "per_kg", "why"),
    [
        ({}, 0.5, "the usual start"),
        ({"diabetes_type": "type2", "insulin_naive": True}, 0.4, "insulin-naive type 2"),
        ({"diabetes_type": "type1", "insulin_naive": True}, 0.5, "the usual start"),
        ({"age_years": 71}, 0.3, "over 70"),
        ({"age_years": 70}, 0.5, "the usual start"),
        ({"kidney": "impaired", "diabetes_type": "type2", "insulin_naive": True}, 0.3, "impaired kidneys"),
    ],
)
def test_the_start_by_weight(fields, per_kg, why):
    plan = DosingPlan.from_profile(PatientProfile(80.0, **fields))
    total = per_kg * 80.0
    assert plan.basal_units == pytest.approx(total / 2)
    assert [plan.meal_units(s) for s in range(3)] == pytest.approx([total / 6] * 3)
    assert plan.meal_units(3) == min(plan.meals) and plan.carb_ratio(3) == max(plan.ratios), "a meal at night"
    assert plan.sensitivity == pytest.approx(1500 / total) and plan.carb_ratio(0) == pytest.approx(500 / total)
    assert why in plan.describe() and "80 kg" in plan.describe()


def test_a_child_under_12_starts_with_less_basal_and_more_for_meals():
    child = DosingPlan.from_profile(PatientProfile(30.0, age_years=9))
    assert child.basal_units == pytest.approx(0.4 * 15.0) and child.meal_units(1) == pytest.approx(0.6 * 15.0 / 3)
    assert "40% basal for a child under 12" in child.describe()
    assert DosingPlan.from_profile(PatientProfile(30.0, age_years=12)).basal_units == pytest.approx(7.5)


def test_steroids_raise_the_meal_doses_not_basal():
    plain, steroid = (DosingPlan.from_profile(PatientProfile(60.0, steroids=s)) for s in (False, True))
    assert steroid.basal_units == plain.basal_units
    assert steroid.meal_units(1) == pytest.approx(plain.meal_units(1) * 1.2)


@pytest.mark.parametrize(("after", "factor"), [(260.0, 1.2), (200.0, 1.1), (150.0, 1.0), (90.0, 0.9), (60.0, 0.8)])
def test_the_reading_after_a_meal_dose_sets_that_meal_from_the_dose_given(after, factor):
    """Glucommander's rule: the next same-time dose is the one given, moved by the glucose that followed."""
    tracker = tracked(profile(at(0, 6)), dose(at(0, 7), 6.0), reading(at(0, 12), after, "pre_lunch"))
    assert tracker.plan is not None
    assert tracker.plan.meals[0] == pytest.approx(6.0 * factor)
    assert tracker.plan.meals[1] == tracker.plan.meals[2] == pytest.approx(BASE_MEAL), "only breakfast moved"
    change = tracker.plan.changes[-1]
    assert change.part == "breakfast" and "6 U given" in change.why and f"{after:.0f} mg/dL" in change.why


def test_the_correction_and_the_meal_size_are_taken_out_of_the_dose_given():
    """6 U at 185 mg/dL before a larger meal: 2 U corrected (75 ÷ 37.5), 4 U for a meal 1.25 × the usual."""
    meal = Event("m", "p", at(0, 7), Kind.MEAL, size="more", carbs_g=80.0)
    events = (profile(at(0, 6)), reading(at(0, 6.9), 185.0, "pre_breakfast"), meal, dose(at(0, 7), 6.0))
    tracker = tracked(*events, reading(at(0, 12), 150.0, "pre_lunch"))
    assert tracker.plan is not None
    assert tracker.plan.meals[0] == pytest.approx(4.0 / 1.25) and tracker.plan.carb_ratio(0) == pytest.approx(20.0)
    assert "(4.0 U for the meal)" in tracker.plan.changes[-1].why


def test_a_dose_that_was_all_correction_says_nothing_about_the_meal():
    tracker = tracked(profile(at(0, 6)), reading(at(0, 6.9), 300.0), dose(at(0, 7), 3.0), reading(at(0, 12), 150.0))
    assert tracker.plan is not None and [c.part for c in tracker.plan.changes] == ["basal"], "the fasting reading"


def test_a_low_soon_after_a_meal_dose_judges_it_at_once():
    tracker = tracked(profile(at(0, 6)), dose(at(0, 7), 6.0), reading(at(0, 8.5), 62.0))
    assert tracker.plan is not None and tracker.plan.meals[0] == pytest.approx(4.8)


def test_never_upward_within_a_day_of_a_low():
    low_at_night = reading(at(0, 3), 60.0)
    tracker = tracked(profile(at(0, 0)), low_at_night, dose(at(0, 7), 6.0), reading(at(0, 12), 260.0, "pre_lunch"))
    assert tracker.plan is not None and tracker.plan.meals[0] == pytest.approx(6.0)
    tracker.add(dose(at(1, 7), 6.0))
    tracker.add(reading(at(1, 12), 260.0, "pre_lunch"))  # 33 h after the low: upward again
    assert tracker.plan.meals[0] == pytest.approx(7.2)


def test_never_upward_while_glucose_falls_fast():
    falling = (reading(at(0, 9 + 1 / 3), 330.0), reading(at(0, 9 + 7 / 12), 260.0))  # 70 mg/dL in 15 min
    tracker = tracked(profile(at(0, 0)), dose(at(0, 7), 6.0), *falling)
    assert tracker.plan is not None and tracker.plan.meals[0] == pytest.approx(6.0)


def test_a_meal_is_judged_once_a_day_and_its_doses_count_together():
    tracker = tracked(profile(at(0, 0)), dose(at(0, 7), 4.0), dose(at(0, 7.5), 2.0), reading(at(0, 10), 260.0))
    tracker.add(dose(at(0, 10.5), 2.0))  # a correction after it, judged the same day: not again
    tracker.add(reading(at(0, 13.5), 260.0))
    assert tracker.plan is not None and tracker.plan.meals[0] == pytest.approx(7.2)


def test_the_fasting_reading_moves_basal_both_ways():
    up = tracked(profile(at(0, 0)), reading(at(1, 6.5), 200.0, "pre_breakfast"))
    down = tracked(profile(at(0, 0)), reading(at(1, 6.5), 85.0, "pre_breakfast"))
    same = tracked(profile(at(0, 0)), reading(at(1, 6.5), 120.0, "pre_breakfast"))
    base = DosingPlan.from_profile(PatientProfile(80.0)).basal_units
    assert up.plan is not None and up.plan.basal_units == pytest.approx(base * 1.2)
    assert down.plan is not None and down.plan.basal_units == pytest.approx(base * 0.9)
    assert same.plan is not None and same.plan.basal_units == pytest.approx(base) and same.plan.changes == ()
    up.add(reading(at(1, 6.75), 210.0, "pre_breakfast"))  # the same morning again: no second step
    assert up.plan is not None and up.plan.basal_units == pytest.approx(base * 1.2)


def test_basal_follows_the_long_acting_dose_given():
    tracker = tracked(profile(at(0, 0)), dose(at(0, 6), 24.0, Insulin.LONG))
    assert tracker.plan is not None and tracker.plan.basal_units == pytest.approx(24.0)
    assert "24 U of long-acting insulin given" in tracker.plan.changes[-1].why


def test_titration_is_bounded():
    tracker = tracked(profile(at(0, 0)), dose(at(0, 7), 30.0), reading(at(0, 12), 400.0, "pre_lunch"))
    assert tracker.plan is not None and tracker.plan.meals[0] == pytest.approx(BASE_MEAL * 4)


def test_a_new_profile_starts_again_by_weight_and_keeps_what_was_learnt():
    tracker = tracked(profile(at(0, 0)), dose(at(0, 7), 6.0), reading(at(0, 12), 260.0, "pre_lunch"))
    tracker.add(profile(at(0, 13), weight_kg=100.0))
    assert tracker.plan is not None and tracker.plan.meals[0] == pytest.approx(7.2)
    assert tracker.plan.meals[1] == pytest.approx(BASE_MEAL) and tracker.plan.base[1] == pytest.approx(100 * 0.5 / 6)
    fresh = tracked(profile(at(0, 0)), profile(at(0, 1), weight_kg=100.0))
    assert fresh.plan is not None and fresh.plan.meals[1] == pytest.approx(100 * 0.5 / 6)


def test_no_plan_without_a_profile_and_the_eating_state_is_the_latest():
    tracker = tracked(dose(at(0, 7), 6.0), reading(at(0, 12), 260.0))
    assert tracker.plan is None
    tracker.add(Event("n1", "p", at(0, 13), Kind.NUTRITION, nutrition="npo"))
    tracker.add(Event("n2", "p", at(0, 14), Kind.NUTRITION, nutrition="uncertain"))
    assert tracker.nutrition == "uncertain"


def test_basal_doses_are_not_meal_doses():
    tracker = tracked(profile(at(0, 0)), dose(at(0, 7), 20.0, Insulin.LONG), reading(at(0, 12), 260.0, "pre_lunch"))
    assert tracker.plan is not None and tracker.plan.meals[0] == pytest.approx(BASE_MEAL)


def test_steroids_started_or_stopped_move_a_titrated_plan_by_a_fifth():
    tracker = tracked(profile(at(0, 0)), dose(at(0, 7), 6.0), reading(at(0, 12), 150.0, "pre_lunch"))
    assert tracker.plan is not None and tracker.plan.meals[0] == pytest.approx(6.0)
    ratio = tracker.plan.carb_ratio(0)
    tracker.add(profile(at(1, 0), steroids=True))
    assert tracker.plan.meals[0] == pytest.approx(7.2) and tracker.plan.carb_ratio(0) == pytest.approx(ratio / 1.2)
    tracker.add(profile(at(2, 0), weight_kg=80.0, steroids=True))  # the same course: no second step
    assert tracker.plan.meals[0] == pytest.approx(7.2)
    tracker.add(profile(at(6, 0), steroids=False))
    assert tracker.plan.meals[0] == pytest.approx(6.0)


def test_a_profile_event_updates_the_fields_it_carries():
    tracker = tracked(profile(at(0, 0), age_years=75, kidney="impaired", steroids=True))
    assert tracker.plan is not None and tracker.plan.per_kg == 0.3
    tracker.add(profile(at(1, 0), weight_kg=70.0, height_cm=170.0))
    assert tracker.profile == PatientProfile(70.0, 75, kidney="impaired", steroids=True, height_cm=170.0)
    assert tracker.plan.per_kg == 0.3 and tracker.plan.weight_kg == 70.0
    assert tracker.plan.meal_units(0) == pytest.approx(70 * 0.3 / 6 * 1.2), "steroids still raise the meals"
    tracker.add(profile(at(2, 0), kidney="normal", age_years=60.0))
    assert tracker.plan.per_kg == 0.5 and tracker.profile.steroids


def test_what_a_profile_changes_in_words():
    old = PatientProfile(80.0, steroids=True)
    assert old.updated(PatientProfile(80.0)).changes_from(old) == []
    new = old.updated(PatientProfile(72.5, steroids=False, height_cm=180.0))
    assert new.changes_from(old) == ["weight 80 → 72.5 kg", "steroids yes → no", "height not given → 180 cm"]
