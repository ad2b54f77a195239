"""The in-silico trial: our integration of simglucose's patients, the metrics, the protocol, a smoke run."""

from __future__ import annotations

import json
import types

import numpy as np
import pytest
from click.testing import CliRunner

from insilico.cgm import CgmStreams
from insilico.metrics import glucose_metrics, level2_events, risk_indices
from insilico.patient import PatientBatch, patient_names
from insilico.population import cohort_of
from insilico.protocol import EXERCISE_UPTAKE, Protocol, day_plan, metered, uptake_by_minute
from insilico.report import write_report
from insilico.trial import ArmResult
from tools.cli.main import main

simglucose = pytest.importorskip("simglucose.patient.t1dpatient", reason="the sim extra is not installed")


def simglucose_trace(name: str, meals: dict[int, float], boluses: dict[int, float], minutes: int) -> np.ndarray:
    """simglucose's own T1DPatient, stepped minute by minute (plain-float parameters, same equations)."""
    cohort = cohort_of([name])
    row = {k: float(v[0]) for k, v in cohort.params.items()}
    params = types.SimpleNamespace(Name=name, **row)
    patient = simglucose.T1DPatient(params, init_state=cohort.initial[0].copy())
    trace = []
    for minute in range(minutes):
        trace.append(patient.observation.Gsub)
        insulin = float(cohort.basal_rate[0]) + boluses.get(minute, 0.0)
        patient.step(simglucose.Action(CHO=meals.get(minute, 0.0), insulin=insulin))
    return np.array(trace)


@pytest.mark.parametrize("name", ["adolescent#003", "adult#007", "child#002"])
def test_our_integration_equals_simglucose(name):
    """Meals, boluses and a low: the true glucose agrees with simglucose's within 0.05 mg/dL."""
    minutes = 1440
    meals = {420: 50.0, 720: 75.0, 1080: 90.0, 1300: 15.0}
    boluses = {420: 4.0, 720: 9.0, 1080: 12.0}  # generous: the children go low
    reference = simglucose_trace(name, meals, boluses, minutes)
    batch = PatientBatch(cohort_of([name]))
    ours = []
    for minute in range(minutes):
        ours.append(float(batch.glucose[0]))
        batch.step(np.array([meals.get(minute, 0.0)]), batch.cohort.basal_rate + boluses.get(minute, 0.0))
    assert np.max(np.abs(np.array(ours) - reference)) < 0.05  # a meter reads whole mg/dL
    assert reference.max() - reference.min() > 50  # the day was not flat


def test_a_batch_steps_each_patient_as_if_alone():
    names = ["adult#001", "child#004", "adult#001"]
    together = PatientBatch(cohort_of(names))
    alone = PatientBatch(cohort_of(["child#004"]))
    for minute in range(600):
        carbs = np.array([0.0, 40.0 if minute == 100 else 0.0, 60.0 if minute == 50 else 0.0])
        together.step(carbs, together.cohort.basal_rate)
        alone.step(carbs[1:2], alone.cohort.basal_rate)
    assert together.glucose[1] == pytest.approx(alone.glucose[0], abs=1e-9)
    copies = together.repeat(2)
    assert copies.state.shape == (6, 13) and np.array_equal(copies.glucose[3:], together.glucose)


def test_metrics_of_known_traces():
    minute_of_day = np.arange(1440)
    flat = glucose_metrics(np.full(1440, 120.0), minute_of_day)
    assert flat.tir_70_180 == 100 and flat.tbr_70 == 0 and flat.cv == 0 and flat.gmi == pytest.approx(3.31 + 2.8704)
    trace = np.full(1440, 120.0)
    trace[60:80] = 50.0  # 20 min below 54 at night: one level-2 event
    trace[600:700] = 260.0
    m = glucose_metrics(trace, minute_of_day)
    assert m.tbr_54 == pytest.approx(100 * 20 / 1440) and m.tar_250 == pytest.approx(100 * 100 / 1440)
    assert m.night_tbr_70 == pytest.approx(100 * 20 / 360) and m.level2_events == 1
    assert level2_events(np.array([50.0] * 14 + [60.0] + [50.0] * 14)) == 0  # two runs of 14 min: none
    lbgi, hbgi = risk_indices(np.array([112.5]))
    assert lbgi == pytest.approx(0.0, abs=1e-3) and hbgi == pytest.approx(0.0, abs=1e-3)  # the risk scale's zero
    assert flat.meets()["tir_70_180"] is not False


def test_the_protocol_is_the_same_for_every_arm_and_differs_by_seed():
    protocol = Protocol()
    a = day_plan(protocol, seed=3, patient=7, day=2, body_weight=60.0)
    assert a == day_plan(protocol, seed=3, patient=7, day=2, body_weight=60.0)  # common random numbers
    assert a != day_plan(protocol, seed=4, patient=7, day=2, body_weight=60.0)
    assert [m.slot for m in a.meals] == ["breakfast", "lunch", "supper"]
    assert [c for _, c in a.readings][-1] == "unspecified" and len(a.readings) == 4
    skipped = day_plan(protocol.with_scenario("skipped_meal"), 3, 7, 2, 60.0)
    assert len(skipped.meals) == 2 and len(skipped.readings) == 4  # the reading of the skipped meal stays
    child = day_plan(protocol, 3, 7, 2, 30.0)
    assert sum(m.carbs for m in child.meals) < sum(m.carbs for m in a.meals)
    assert metered(100.0, 1.04) == 104.0 and metered(5.0, 1.0) == 20.0
    with pytest.raises(ValueError, match="unknown scenario"):
        Protocol(scenario="zombies")


def test_patient_names_and_cohort():
    names = patient_names()
    assert len(names) == 30 and names[0] == "adolescent#001" and names[-1] == "child#010"
    cohort = cohort_of(["adult#001"])
    assert cohort.carb_ratio[0] > 0 and cohort.basal_rate[0] > 0
    with pytest.raises(ValueError, match="unknown virtual patient"):
        cohort_of(["martian#001"])


def test_simulate_smoke_run(tmp_path):
    """Two patients, two days, every arm, through the command: the report and its numbers exist."""
    out = tmp_path / "sim"
    result = CliRunner().invoke(
        main, ["simulate", "--patients", "adult#001,child#001", "--days", "2", "--warmup-days", "2", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    data = json.loads((out / "trial.json").read_text())
    assert {r["arm"] for r in data["results"]} == {
        "oracle",
        "carb_error",
        "habit",
        "advisor",
        "plan",
        "model_only",
        "supervised_habit",
    }
    assert len(data["results"]) == 14 and all(r["minutes"] == 2 * 1440 for r in data["results"])
    report = (out / "report.md").read_text()
    assert "## adult" in report and "## Bars" in report and (out / "agp.png").stat().st_size > 10_000
    assert data["summary"]["statuses"]["advisor"]  # the real advisor answered
    assert data["summary"]["statuses"]["plan"]  # and the same device with no dose model
    bad = CliRunner().invoke(main, ["simulate", "--patients", "martian#001"])
    assert bad.exit_code == 2 and "--patients" in bad.output


def test_a_patient_whose_glucose_collapses_stays_collapsed_and_is_flagged():
    """simglucose freezes plasma glucose once it goes below zero; the batch says so, per patient."""
    batch = PatientBatch(cohort_of(["adult#009", "adult#009"]))
    overdose = batch.cohort.basal_rate * np.array([1.0, 1.0])
    overdose[0] += 2.0  # 2 U/min for an hour to the first copy only
    for _ in range(60):
        batch.step(np.zeros(2), overdose)
    for _ in range(12 * 60):
        batch.step(np.zeros(2), batch.cohort.basal_rate)
    assert batch.collapsed.tolist() == [True, False]
    before = batch.glucose.copy()
    batch.step(np.array([50.0, 0.0]), batch.cohort.basal_rate)
    for _ in range(120):
        batch.step(np.zeros(2), batch.cohort.basal_rate)
    assert batch.collapsed[0] and batch.glucose[0] <= max(before[0], 1.0)  # 50 g cannot lift it
    assert 100 < batch.glucose[1] < 200


def test_report_leaves_out_patients_collapsed_in_the_warm_up(tmp_path):
    minutes = np.arange(1440) % 1440
    fine, dead = np.full(1440, 120.0), np.zeros(1440)
    results = [
        ArmResult(
            arm,
            patient,
            "adult",
            1,
            glucose_metrics(dead if patient == "adult#009" else fine, minutes),
            collapsed="warm-up" if patient == "adult#009" else "",
        )
        for arm in ("oracle", "carb_error", "advisor")
        for patient in ("adult#001", "adult#009")
    ]
    write_report(results, Protocol(days=1), 1.0, tmp_path, plots=False)
    data = json.loads((tmp_path / "trial.json").read_text())
    assert data["summary"]["by_arm_and_group"]["advisor"]["adult"]["n"] == 1
    assert data["summary"]["by_arm_and_group"]["advisor"]["adult"]["tbr_54"] == 0.0
    assert data["summary"]["excluded_collapsed_in_warmup"] == [{"patient": "adult#009", "seed": 1}]
    assert len(data["results"]) == 6  # still listed, flagged
    assert "Left out of every table: adult#009 (seed 1)" in (tmp_path / "report.md").read_text()


def test_exercise_raises_glucose_uptake_and_is_planned_on_some_days():
    batch = PatientBatch(cohort_of(["adult#004", "adult#004"]))
    for minute in range(240):
        batch.uptake[:] = [1.0, EXERCISE_UPTAKE if 60 <= minute < 105 else 1.0]
        batch.step(np.zeros(2), batch.cohort.basal_rate)
    assert batch.glucose[1] < batch.glucose[0] - 5, "exercise lowers glucose"
    protocol = Protocol(scenario="exercise")
    plans = [day_plan(protocol, 1, 0, day, 70.0) for day in range(10)]
    days = [p for p in plans if p.exercise is not None]
    assert 0 < len(days) < 10 and all(15 * 60 <= p.exercise < 17 * 60 for p in days)
    uptake = uptake_by_minute(days[0])
    assert uptake is not None and uptake.max() == EXERCISE_UPTAKE and uptake[0] == 1.0
    assert day_plan(Protocol(), 1, 0, 0, 70.0).exercise is None


def test_cgm_streams_are_simglucose_noise_shared_by_the_arms():
    streams = CgmStreams("GuardianRT", seed=1, patients=[0, 1])
    noise = streams.next_day()
    assert noise.shape == (2, 288) and 0 < np.abs(noise).mean() < 30
    assert not np.allclose(noise[0], noise[1])
    again = CgmStreams("GuardianRT", seed=1, patients=[0, 1]).next_day()
    assert np.array_equal(noise, again)  # the same errors for every arm and every run
    assert streams.reading(30.0, -10.0) == 39.0  # the sensor's floor
    with pytest.raises(ValueError, match="unknown CGM sensor"):
        CgmStreams("Tricorder", seed=1, patients=[0])


def test_cgm_variant_answers_every_reading_without_doses_between_meals(tmp_path):
    """With a reading every 5 min the advisor answers each one; only meal readings carry meal doses."""
    from device.config import SafetyConfig
    from device.models.bundle import default_bundle_path, open_bundle, trusted_keys
    from device.models.inference import DoseModel
    from insilico.trial import run_trial

    model = DoseModel(open_bundle(default_bundle_path("dose"), trusted_keys()))
    protocol = Protocol(warmup_days=2, days=1, cgm=True)
    results, _ = run_trial(protocol, ["adult#003"], ["advisor", "oracle"], [1], model, SafetyConfig())
    advisor = next(r for r in results if r.arm == "advisor")
    answers = sum(advisor.statuses.values())
    assert answers >= 288, "every CGM value and finger-stick is answered"
    assert advisor.statuses.get("no_dose_due", 0) >= 270
    assert advisor.doses <= 3 + advisor.rules.get("correction_only", 0)
    assert advisor.metrics.tbr_54 == 0


@pytest.mark.e2e
def test_via_mqtt_the_device_decides_exactly_as_in_process(tmp_path):
    """The advisor arm through Mosquitto and a real `advisor device run --clock event` gives the same trial."""
    args = ["simulate", "--patients", "adolescent#003", "--days", "1", "--warmup-days", "2", "--no-plots"]
    args += ["--arms", "advisor,oracle"]
    local = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "local")])
    remote = CliRunner().invoke(main, [*args, "--via-mqtt", "--out", str(tmp_path / "mqtt")])
    assert local.exit_code == 0 and remote.exit_code == 0, remote.output
    by_arm = {}
    for name in ("local", "mqtt"):
        data = json.loads((tmp_path / name / "trial.json").read_text())
        by_arm[name] = {r["arm"]: r for r in data["results"]}
    assert by_arm["mqtt"]["advisor"]["statuses"] == by_arm["local"]["advisor"]["statuses"]
    assert by_arm["mqtt"]["advisor"]["tir_70_180"] == by_arm["local"]["advisor"]["tir_70_180"]
    assert sum(by_arm["mqtt"]["advisor"]["statuses"].values()) >= 4  # each of the day's 4 readings answered by it
    assert (tmp_path / "mqtt" / "mqtt" / "seed1" / "state" / "advisor.sqlite3").exists()


def test_a_patient_s_trial_does_not_depend_on_who_else_is_in_the_run():
    """Meals, meter error and sensor noise follow the patient, not its place in the chosen list."""
    from device.config import SafetyConfig
    from insilico.trial import run_trial

    protocol = Protocol(warmup_days=1, days=1, cgm=True)
    alone, _ = run_trial(protocol, ["adult#001"], ["oracle"], [1], None, SafetyConfig())
    together, _ = run_trial(protocol, ["child#004", "adult#001"], ["oracle"], [1], None, SafetyConfig())
    mine = next(r for r in together if r.patient == "adult#001")
    assert mine.metrics == alone[0].metrics
    assert np.array_equal(mine.trace, alone[0].trace)


def test_a_one_arm_report_says_how_doses_were_given_and_why_there_are_no_bars(tmp_path):
    """doses/day counts the doses given: the advisor arm's include the physician's plan where it had too little data."""
    minutes = np.arange(1440) % 1440
    advisor = ArmResult(
        "advisor",
        "adult#001",
        "adult",
        1,
        glucose_metrics(np.full(1440, 120.0), minutes),
        doses=3,
        statuses={"insufficient_data": 3, "no_dose_due": 1},
        rules={"no_sensitivity": 3, "no_dose_due": 1},
        plan_doses=3,
    )
    write_report([advisor], Protocol(days=1), 1.0, tmp_path, plots=False)
    report = (tmp_path / "report.md").read_text()
    row = next(line for line in report.splitlines() if line.startswith("| advisor | 1 |"))
    assert row.endswith("| 3.0 (3.0 by plan) |") and "| doses given/day |" in report
    answers = next(line for line in report.splitlines() if line.startswith("| advisor | insufficient_data 3"))
    assert "3: 0 suggested, 3 by the physician's plan (insufficient data at a meal)" in answers
    bars = report.split("## Bars", 1)[1]
    assert "| group | bar |" not in bars
    assert "No bars: they compare the advisor arm with carb_error" in bars and "this run has advisor only" in bars
    data = json.loads((tmp_path / "trial.json").read_text())["summary"]
    assert data["by_arm_and_group"]["advisor"]["all"]["plan_doses_per_day"] == 3.0


def test_not_eating_skips_meals_after_their_reading_and_leaves_other_scenarios_draws_alone():
    """One meal in five skipped after its reading, about one npo day in five; the other scenarios' meals unchanged."""
    plans = [day_plan(Protocol(scenario="not_eating"), 1, 3, day, 70.0) for day in range(60)]
    standard = [day_plan(Protocol(), 1, 3, day, 70.0) for day in range(60)]
    for plan, usual in zip(plans, standard, strict=True):
        assert plan.ask and plan.readings == usual.readings, "every pre-meal reading is still taken, as pre-meal"
        assert [m for m in usual.meals if m.minute not in plan.skipped] == list(plan.meals)
        assert not plan.npo or len(plan.skipped) == 3, "nil by mouth: every meal skipped"
    skipped = sum(len(p.skipped) for p in plans)
    assert 0.2 * 180 < skipped < 0.5 * 180 and 4 <= sum(p.npo for p in plans) <= 20


def test_no_meal_insulin_is_given_for_a_meal_the_patient_does_not_eat(tmp_path):
    """The advisor's pre-meal answer asks; a patient who does not eat gets no meal insulin, one who eats does."""
    out = tmp_path / "sim"
    args = ["simulate", "--patients", "adult#002", "--days", "4", "--warmup-days", "1", "--seeds", "1"]
    result = CliRunner().invoke(
        main, [*args, "--arms", "oracle,carb_error,advisor", "--scenario", "not_eating", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    data = json.loads((out / "trial.json").read_text())
    advisor = next(r for r in data["results"] if r["arm"] == "advisor")
    assert advisor["skipped_meals"] > 0 and advisor["skipped_meal_doses"] == 0
    assert advisor["statuses"]["meal_first"] > 0 and advisor["doses"] > 0, "eaten meals were dosed after asking"
    assert "no meal insulin given for a meal the patient did not eat" in (out / "report.md").read_text()


def test_a_long_acting_dose_is_absorbed_over_a_day_and_the_rule_arms_keep_their_infusion():
    from insilico.basal import PROFILE, RAMP_MIN, BasalSupply

    assert PROFILE.sum() == pytest.approx(1.0) and PROFILE[0] < PROFILE[RAMP_MIN] == PROFILE[720]
    supply = BasalSupply(np.array([0.01, 0.01]), np.array([False, True]))
    supply.give(1, 12.0, 10, 10)
    absorbed = np.array([supply.at(m) for m in range(10, 10 + 1440 + RAMP_MIN + 20)])
    assert absorbed[:, 0] == pytest.approx(0.01), "the infusion row is untouched"
    assert absorbed[:, 1].sum() == pytest.approx(12.0) and absorbed[-20:, 1].sum() == 0, "all of it, within the span"
    assert absorbed[720, 1] == pytest.approx(12.0 * PROFILE[720])
    late = BasalSupply(np.array([0.0]), np.array([True]))  # a dose given yesterday: only what is left is to come
    late.give(0, 12.0, -600, 0)
    assert sum(late.at(m)[0] for m in range(1440)) == pytest.approx(12.0 * PROFILE[600:].sum())


def test_the_advisor_arms_take_the_basal_the_device_advises():
    from device.config import SafetyConfig
    from device.models.bundle import default_bundle_path, open_bundle
    from device.models.inference import DoseModel
    from insilico.trial import run_seed

    model = DoseModel(open_bundle(default_bundle_path("dose")))
    results = run_seed(Protocol(days=2, warmup_days=1), ["adult#002"], ["oracle", "advisor"], 1, model, SafetyConfig())
    oracle, advisor = results
    need = float(cohort_of(["adult#002"]).basal_rate[0]) * 1440
    assert oracle.basal_per_day == pytest.approx(need, abs=0.01), "the oracle: the exact infusion"
    assert 0.7 * need <= advisor.basal_per_day <= 1.3 * need, (advisor.basal_per_day, need)


def test_steroids_lower_insulin_sensitivity_for_five_days_then_taper_back():
    steroids, standard = Protocol(scenario="steroids"), Protocol()
    at = [steroids.sensitivity(day * 1440) for day in (0, 1, 2, 6, 7, 8.5, 10, 13)]
    assert at == pytest.approx([1.0, 1.0, 0.6, 0.6, 0.6, 0.8, 1.0, 1.0])
    assert standard.sensitivity(3 * 1440) == 1.0 and Protocol(scenario="underdosed_habit").habit_scale == 0.6
    batch = PatientBatch(cohort_of(["adult#001", "adult#001"]))
    batch.sensitivity[1] = 0.6
    for _ in range(180):
        batch.step(np.zeros(2), batch.cohort.basal_rate * 3)  # three times the basal: glucose falls
    assert batch.glucose[1] > batch.glucose[0] + 5, "the resistant copy falls less"


def test_with_a_cgm_all_arms_are_the_ones_that_mean_something_there(tmp_path):
    """--cgm: all is oracle, carb_error, habit, advisor and plan; model_only (a dose every 5 min) is refused."""
    args = ["simulate", "--patients", "adult#001", "--days", "1", "--warmup-days", "0", "--cgm", "--no-plots"]
    result = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "cgm")])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "cgm" / "trial.json").read_text())
    assert [r["arm"] for r in data["results"]] == ["oracle", "carb_error", "habit", "advisor", "plan"]
    refused = CliRunner().invoke(main, [*args, "--arms", "advisor,model_only", "--out", str(tmp_path / "no")])
    assert refused.exit_code == 2 and "model_only" in refused.output and "every 5 minutes" in refused.output
    assert not (tmp_path / "no").exists()
