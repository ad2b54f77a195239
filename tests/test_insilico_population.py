"""The held-out virtual population, the within-day sensitivity scenario and the bars judged from a day."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from insilico.metrics import glucose_metrics
from insilico.patient import PARAMETERS, PatientBatch, parameter_table, patient_names
from insilico.population import (
    MEAL_TEST,
    cohort_of,
    held_out_names,
    initial_state,
    key_of,
    meal_test,
    steady_state,
    virtual_patient,
)
from insilico.protocol import DAWN, DAWN_DEPTH, Protocol, day_plan, within_day_sensitivity
from insilico.report import bars
from insilico.trial import ArmResult
from tools.cli.main import main


def test_the_steady_state_derivation_reproduces_simglucose_s_own_table():
    """Every derived column of the 30 follows from the free ones; adult#004's CL is rounded in the table (6 %)."""
    rows = parameter_table("vpatient_params.csv")
    columns = {k for k in rows[0] if k not in ("Name", "patient_history", "i") and not k.startswith("x0_")}
    free = {k: np.array([float(r[k]) for r in rows]) for k in columns}
    derived = steady_state(free)
    for name, value in derived.items():
        table = np.array([float(r[name]) for r in rows])
        error = np.abs(value / table - 1.0)
        exact = [r["Name"] for r, e in zip(rows, error, strict=True) if e > 1e-9]
        assert exact in ([], ["adult#004"]), name
        assert error.max() < 0.06, name
    state = initial_state(free | derived)
    table_state = np.array([[float(v) for v in list(r.values())[2:15]] for r in rows])
    ok = [i for i, r in enumerate(rows) if r["Name"] != "adult#004"]
    np.testing.assert_allclose(state[ok], table_state[ok], rtol=1e-9)


def test_simglucose_s_30_pass_the_meal_test_that_rejects_implausible_draws():
    cohort = cohort_of(patient_names())
    low, high = meal_test(cohort.params, cohort.initial, cohort.carb_ratio)
    assert low.min() >= MEAL_TEST[0] and high.max() <= MEAL_TEST[1]


def test_a_held_out_patient_is_the_same_whoever_else_is_drawn_and_starts_at_rest():
    names = held_out_names(3)
    assert names[:3] == ["adolescent#h001", "adolescent#h002", "adolescent#h003"] and len(names) == 9
    alone = cohort_of(["child#h003"])
    among = cohort_of(["adult#001", "child#h001", "child#h003"])
    assert alone.params["BW"][0] == among.params["BW"][2] and alone.carb_ratio[0] == among.carb_ratio[2]
    assert among.keys == (10, key_of("child#h001"), key_of("child#h003")) and len(set(cohort_of(names).keys)) == 9
    batch = PatientBatch(cohort_of(names))
    start = batch.glucose.copy()
    for _ in range(720):  # 12 h fasting on the basal infusion alone: the steady state holds
        batch.step(np.zeros(len(names)), batch.cohort.basal_rate)
    np.testing.assert_allclose(batch.glucose, start, atol=1e-6)


def test_the_held_out_patients_are_new_and_of_their_group():
    """Drawn, not copied: every patient differs from each of the 30; ages and weights lie in the group's range."""
    originals = cohort_of(patient_names())
    for group, ages in (("child", (7, 12)), ("adolescent", (14, 19)), ("adult", (26, 68))):
        drawn = cohort_of(held_out_names(20, (group,)))
        assert ((drawn.age >= ages[0]) & (drawn.age <= ages[1])).all()
        mine = np.array([n.startswith(group) for n in originals.names])
        weights = originals.params["BW"][mine]
        assert (drawn.params["BW"] > 0.5 * weights.min()).all() and (drawn.params["BW"] < 2 * weights.max()).all()
        for i in range(20):
            vector = np.array([drawn.params[p][i] for p in PARAMETERS])
            closest = min(
                np.abs(np.log(vector) - np.log([originals.params[p][j] for p in PARAMETERS])).max() for j in range(30)
            )
            assert closest > 0.05
        assert len(set(drawn.carb_ratio.round(3))) == 20
    with pytest.raises(ValueError, match="held-out patients are named like child#h001"):
        virtual_patient("child#hx")


def test_simulate_takes_held_out_patients_and_says_so(tmp_path):
    out = tmp_path / "sim"
    args = ["simulate", "--patients", "adult#h002", "--days", "1", "--warmup-days", "1", "--arms", "oracle,advisor"]
    result = CliRunner().invoke(main, [*args, "--out", str(out), "--no-plots"])
    assert result.exit_code == 0, result.output
    report = (out / "report.md").read_text()
    assert "held-out virtual patients (1) drawn from the distribution of simglucose's parameters" in report
    data = json.loads((out / "trial.json").read_text())
    assert {r["patient"] for r in data["results"]} == {"adult#h002"}
    assert all(len(r["daily_tir"]) == 1 for r in data["results"])
    bad = CliRunner().invoke(main, ["simulate", "--patients", "held-out:martians"])
    assert bad.exit_code == 2 and "held-out:GROUP" in bad.output


def test_within_day_sensitivity_has_a_dawn_and_the_patient_s_own_levels():
    days = np.array([within_day_sensitivity(1, patient, day) for patient in range(30) for day in range(5)])
    start, deepest, end = DAWN
    dawn = days[:, deepest] / days[:, end + 30]  # the same morning level, with and without the dawn phenomenon
    assert ((dawn >= 1 - DAWN_DEPTH[1] - 1e-9) & (dawn <= 1 - DAWN_DEPTH[0] + 1e-9)).all() and start < deepest
    assert 0.75 < np.exp(np.log(days).mean()) < 1.05, "around the patient's own average"
    assert not np.allclose(days[0], days[5]), "patients differ"
    assert not np.allclose(days[0], days[1]) and np.corrcoef(days[0], days[1])[0, 1] > 0.5, "days vary, alike"
    assert np.array_equal(within_day_sensitivity(1, 3, 2), within_day_sensitivity(1, 3, 2))
    plan = day_plan(Protocol(scenario="dawn"), 1, 3, 2, 70.0)
    assert plan.sensitivity is not None and np.array_equal(plan.sensitivity, within_day_sensitivity(1, 3, 2))
    standard = day_plan(Protocol(), 1, 3, 2, 70.0)
    assert standard.sensitivity is None and standard.meals == plan.meals, "the other draws are unchanged"


def _result(arm: str, group: str, daily_tir: list[float], daily_low: list[float]) -> ArmResult:
    trace = np.full(1440 * len(daily_tir), 120.0)
    return ArmResult(
        arm,
        f"{group}#001",
        group,
        1,
        glucose_metrics(trace, np.arange(len(trace)) % 1440),
        daily_tir=tuple(daily_tir),
        daily_tbr_70=tuple(daily_low),
    )


def test_new_patient_and_underdosed_bars_are_judged_from_their_day():
    """new_patient from day 3 (days 1–2 do not count); underdosed_habit from day 7 against the oracle."""
    slow_start = [30.0, 50.0] + [75.0] * 5
    results = [
        _result("advisor", "adult", slow_start, [0.0] * 7),
        _result("carb_error", "adult", [80.0] * 7, [1.0] * 7),
        _result("oracle", "adult", [95.0] * 7, [0.0] * 7),
    ]
    new = {b.bar: b for b in bars(results, "new_patient")}
    assert new["from day 3: median time in range at least 70 %"].met
    assert new["from day 3: median time in range at least 70 %"].measured == "75.0 %"
    assert new["from day 3: median time <70 no higher than carb_error"].met
    late = {b.bar: b for b in bars(results, "underdosed_habit")}
    assert not late["from day 7: median time in range within 5 points of the oracle"].met
    assert late["from day 7: median time in range within 5 points of the oracle"].measured == "75.0 % vs 95.0 %"
    assert not [b for b in bars(results, "standard") if b.bar.startswith("from day")]
