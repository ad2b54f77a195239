"""The companion report's fairness table: pure figures, checked against fairlearn's MetricFrame,
and the groups read from the real MIMIC-III demo."""

from __future__ import annotations

import numpy as np
import pytest

from model import classification_metrics, fairness
from preprocessing import demographics


def _scores(seed: int = 3, n: int = 600):
    rng = np.random.default_rng(seed)
    group = rng.choice(["A", "B", "C"], size=n, p=[0.6, 0.37, 0.03])
    y = rng.binomial(1, np.where(group == "A", 0.3, 0.2))
    # the model separates A well and B barely: the table must show the difference
    signal = np.where(group == "A", 2.0, 0.3)
    p = 1.0 / (1.0 + np.exp(-(signal * (y - 0.5) + rng.normal(0, 1, n))))
    return y, p, group


def test_group_figures_match_fairlearn_metricframe():
    from fairlearn.metrics import MetricFrame
    from sklearn.metrics import average_precision_score, roc_auc_score

    y, p, group = _scores()
    threshold = classification_metrics.threshold_for_sensitivity(y, p, 0.8)
    rows = fairness.fairness_table(y, p, threshold, {"site": list(group)}, resamples=100)
    frame = MetricFrame(
        metrics={
            "auroc": roc_auc_score,
            "auprc": average_precision_score,
            "recall": lambda t, s: fairness.recall_at(t, s, threshold),
            "observed": lambda t, s: float(np.mean(t)),
            "predicted": lambda t, s: float(np.mean(s)),
        },
        y_true=y,
        y_pred=p,
        sensitive_features=group,
    )
    by_group = frame.by_group
    read = {row.group: row for row in rows if row.attribute == "site"}
    for name in ("A", "B"):
        row = read[name]
        assert row.readable
        assert row.auroc == pytest.approx(by_group.loc[name, "auroc"])
        assert row.auprc == pytest.approx(by_group.loc[name, "auprc"])
        assert row.recall == pytest.approx(by_group.loc[name, "recall"])
        assert row.observed_rate == pytest.approx(by_group.loc[name, "observed"])
        assert row.mean_predicted == pytest.approx(by_group.loc[name, "predicted"])
        assert row.auroc_ci95[0] <= row.auroc <= row.auroc_ci95[1]
        assert row.recall_ci95[0] <= row.recall <= row.recall_ci95[1]
    assert read["A"].auroc > read["B"].auroc + 0.15  # the weaker group shows


def test_a_small_group_is_sized_but_not_read():
    y, p, group = _scores()
    rows = fairness.fairness_table(y, p, 0.5, {"site": list(group)}, resamples=50)
    small = next(row for row in rows if row.group == "C")
    assert small.n == int((group == "C").sum()) and not small.readable
    assert small.auroc is None and small.recall is None
    whole = rows[0]
    assert (whole.attribute, whole.n, whole.positives) == ("all", len(y), int(y.sum()))
    assert [row.group for row in rows[1:]] == ["A", "B", "C"]  # largest first


def test_mismatched_group_labels_are_refused():
    with pytest.raises(ValueError, match="site: 2 group labels for 3 samples"):
        fairness.fairness_table(np.array([0, 1, 0]), np.array([0.1, 0.9, 0.2]), 0.5, {"site": ["a", "b"]})


def test_wilson_interval_known_values():
    low, high = fairness.wilson_interval(8, 10)
    assert (round(low, 3), round(high, 3)) == (0.490, 0.943)  # the textbook 8/10 interval
    assert fairness.wilson_interval(0, 0) is None
    assert fairness.wilson_interval(0, 5)[0] == 0.0


@pytest.mark.parametrize(
    ("text", "group"),
    [
        ("WHITE", "White"),
        ("WHITE - RUSSIAN", "White"),
        ("HISPANIC/LATINO - PUERTO RICAN", "Hispanic/Latino"),
        ("HISPANIC OR LATINO", "Hispanic/Latino"),
        ("SOUTH AMERICAN", "Hispanic/Latino"),
        ("BLACK/AFRICAN AMERICAN", "Black"),
        ("ASIAN - CHINESE", "Asian"),
        ("AMERICAN INDIAN/ALASKA NATIVE", "Other"),
        ("UNKNOWN/NOT SPECIFIED", "Unknown or declined"),
        ("UNABLE TO OBTAIN", "Unknown or declined"),
        ("PATIENT DECLINED TO ANSWER", "Unknown or declined"),
        ("", "Unknown or declined"),
    ],
)
def test_race_groups(text, group):
    assert demographics.race_group(text) == group


def test_age_bands_and_sex():
    assert [demographics.age_band(a) for a in (18, 44.9, 45, 64.9, 65, 79.9, 80, 300)] == [
        "18–44",
        "18–44",
        "45–64",
        "45–64",
        "65–79",
        "65–79",
        "80+",
        "80+",
    ]
    assert [demographics.sex_group(g) for g in ("F", "M", " m ", "")] == ["female", "male", "male", "not recorded"]
    assert demographics.insurance_group("  self  pay ") == "Self pay"


def test_demo_cohort_groups_come_from_the_tables(mimic_dir):
    from preprocessing.cohorts import mortality_cohort
    from preprocessing.mimic import read_mimic

    data = read_mimic(mimic_dir)
    cohort = mortality_cohort(data)
    groups = demographics.sample_groups(data, cohort.samples)
    assert set(groups) == set(demographics.ATTRIBUTES)
    assert all(len(labels) == len(cohort.samples) for labels in groups.values())
    first = cohort.samples[0]
    admission = data.admission(first.index_hadm)
    assert admission is not None and admission.insurance and admission.race
    assert groups["insurance"][0] == admission.insurance
    assert groups["race_ethnicity"][0] == demographics.race_group(admission.race)
    assert groups["sex"][0] == demographics.sex_group(data.patients[first.subject_id].gender)
    assert {"Medicare", "Private"} <= set(groups["insurance"])


def test_mimic_iv_race_column_is_read(mimic_dir, tmp_path):
    from preprocessing.mimic import read_mimic

    from .mimic_iv_fixture import build_mimic_iv

    iii = read_mimic(mimic_dir)
    iv = read_mimic(build_mimic_iv(mimic_dir, tmp_path / "mimic-iv-2.2"))
    for subject, admissions in iii.admissions.items():
        for old, new in zip(admissions, iv.admissions[subject], strict=True):
            assert (new.race, new.insurance) == (old.race, old.insurance)
