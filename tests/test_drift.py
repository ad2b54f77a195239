"""Drift of the dose model's inputs (domain/drift.py, device/models/drift_watch.py): the PSI case by
case, then AIM-94 patients replayed through the real decision path with the packaged bundle's
training reference — as recorded, and with every reading 80 mg/dL higher."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from device.advisor import Advisor
from device.config import DriftConfig, SafetyConfig
from device.models.bundle import default_bundle_path, open_bundle
from device.models.choice import ModelSlot
from device.models.drift_watch import DriftWatch
from device.models.inference import DoseModel
from device.state.store import Store
from domain.drift import DeviceCounts, DriftMonitor, DriftReferenceError, Reference, pooled_drift, psi
from domain.events import Kind, within_timestamp_rank

from .event_factory import raw

REPLAYED = (3, 8, 12, 21, 33, 47)  # AIM-94 patients, chosen before any PSI was looked at
WINDOW = 2000  # replayed one patient after another, the window holds all six (on a ward they interleave)


def test_psi_is_zero_for_the_training_shares_and_grows_with_the_shift():
    rng = np.random.default_rng(1)
    rows = np.column_stack([rng.normal(150, 40, 5000), rng.integers(0, 2, 5000)])
    reference = Reference.fit(rows, ["glucose", "flag"])
    glucose, flag = reference.features["glucose"], reference.features["flag"]
    assert len(glucose.shares) == 10 and sum(glucose.shares) == pytest.approx(1.0)
    assert len(flag.cuts) <= 2, "a yes/no feature has at most three bins, not ten"
    counts = [round(s * 1000) for s in glucose.shares]
    assert psi(glucose.shares, counts) == pytest.approx(0.0, abs=1e-3)
    shifted = np.bincount([glucose.bin_of(v + 80) for v in rng.normal(150, 40, 1000)], minlength=10)
    assert psi(glucose.shares, list(shifted)) > 1.0
    assert psi(glucose.shares, [0] * 10) == 0.0


def test_the_monitor_counts_the_last_window_and_alerts_only_on_watched_features():
    rows = np.column_stack([np.arange(1000.0), np.arange(1000.0)])
    reference = Reference.fit(rows, ["a", "b"])
    monitor = DriftMonitor(reference, ["a", "b"], window=100, min_rows=50, alert_psi=0.25, watch=["a"])
    for value in range(49):
        monitor.observe(np.array([value * 20.0, value * 20.0]))
    assert monitor.report().psi is None and monitor.report().rows == 49
    for _ in range(200):
        monitor.observe(np.array([5000.0, 5000.0]))  # everything above the training range
    report = monitor.report()
    assert report.rows == 100, "only the last window counts"
    assert report.psi is not None and report.psi["a"] == report.psi["b"] > 5
    assert report.drifted == ["a"], "b drifted too, but only watched features raise the alert"


def test_one_patient_s_own_glucose_is_no_population_and_raises_no_alert():
    rows = np.arange(1000.0).reshape(-1, 1)
    reference = Reference.fit(rows, ["a"])
    alone = DriftMonitor(reference, ["a"], window=100, min_rows=50, alert_psi=0.25, watch=["a"], min_patients=5)
    ward = DriftMonitor(reference, ["a"], window=100, min_rows=50, alert_psi=0.25, watch=["a"], min_patients=5)
    for i in range(100):
        alone.observe(np.array([5000.0]), "bed-7-patient")
        ward.observe(np.array([5000.0]), f"p{i % 6}")
    assert alone.report().psi is not None and alone.report().psi["a"] > 5
    assert (alone.report().patients, alone.report().drifted) == (1, [])
    assert (ward.report().patients, ward.report().drifted) == (6, ["a"])


def test_a_reference_that_does_not_fit_its_features_is_refused():
    good = Reference.fit(np.arange(100.0).reshape(-1, 1), ["a"]).to_json()
    assert Reference.from_json(good, ["a"]).rows == 100
    with pytest.raises(DriftReferenceError, match="'x' is not a feature"):
        Reference.from_json({**good, "features": {"x": good["features"]["a"]}}, ["a"])
    broken = json.loads(json.dumps(good))
    broken["features"]["a"]["shares"][0] += 0.5
    with pytest.raises(DriftReferenceError, match="add up to 1"):
        Reference.from_json(broken, ["a"])
    broken["features"]["a"]["shares"] = [math.nan]
    with pytest.raises(DriftReferenceError, match="one share more than cuts"):
        Reference.from_json(broken, ["a"])


@pytest.fixture(scope="module")
def dose_model() -> DoseModel:
    return DoseModel(open_bundle(default_bundle_path("dose")))


def replayed_drift(
    aim94_logs, dose_model: DoseModel, shift_mg_dl: float, numbers: tuple[int, ...] = REPLAYED, window: int = WINDOW
):
    """Replay the chosen patients' logs through the device's decision path; the drift reading."""
    watch = DriftWatch(DriftConfig(window=window))
    advisor = Advisor(Store(Path(":memory:")), ModelSlot(dose_model), SafetyConfig(), "event", drift=watch)
    for log in (lg for lg in aim94_logs if lg.number in numbers):
        for event in sorted(log.events, key=lambda e: (e.ts, within_timestamp_rank(e))):
            if event.kind is Kind.GLUCOSE and shift_mg_dl:
                event = replace(event, mg_dl=min(1000.0, event.reading + shift_mg_dl))
            advisor.handle(raw(event))
    return watch.status(dose_model)


def test_the_packaged_bundle_carries_its_training_reference(dose_model):
    assert dose_model.reference is not None and dose_model.reference.rows > 5000
    assert set(dose_model.reference.features) == set(dose_model.spec.names)


@pytest.mark.slow
def test_a_replay_as_recorded_raises_no_drift_and_readings_80_higher_do(aim94_logs, dose_model):
    recorded = replayed_drift(aim94_logs, dose_model, 0.0)
    assert recorded is not None and recorded.patients == len(REPLAYED) and recorded.psi is not None
    assert recorded.drifted == [], recorded.note
    assert "look like its training data" in recorded.note
    shifted = replayed_drift(aim94_logs, dose_model, 80.0)
    assert shifted is not None and shifted.psi is not None
    assert "glucose_last_mg_dl" in shifted.drifted and "no longer look like" in shifted.note
    alone = replayed_drift(aim94_logs, dose_model, 80.0, numbers=(3,))  # one bed, one patient
    assert alone is not None and alone.patients == 1 and alone.drifted == [] and "1 patient(s)" in alone.note
    for name in DriftConfig().watch:  # recorded in the note of the test run: the figures the alert rests on
        print(f"{name}: PSI {recorded.psi[name]:.3f} as recorded, {shifted.psi[name]:.3f} with +80 mg/dL")


@pytest.mark.slow
def test_beds_that_cannot_judge_alone_raise_the_ward_alert_together(aim94_logs, dose_model):
    """A device per bed: each sees one patient and never alerts; the ward's summed counts do, when shifted."""
    for shift, alerted in ((0.0, False), (80.0, True)):
        beds = [replayed_drift(aim94_logs, dose_model, shift, numbers=(n,), window=500) for n in REPLAYED]
        assert all(b is not None and b.patients == 1 and b.drifted == [] for b in beds)
        first = beds[0]
        assert first is not None and set(first.counts) == set(first.expected) == set(DriftConfig().watch)
        pooled = pooled_drift(
            [DeviceCounts(b.decisions, b.patients, b.counts) for b in beds if b],
            first.expected,
            first.alert_psi,
            first.min_patients,
        )
        assert (pooled.devices, pooled.patients) == (6, 6)
        assert bool(pooled.drifted) is alerted, pooled
        print(f"shift +{shift:g}: pooled PSI {pooled.psi}")


def test_pooled_counts_are_read_as_one_population():
    expected = {"a": [0.5, 0.5]}
    one = DeviceCounts(100, 2, {"a": [100, 0]})
    other = DeviceCounts(100, 3, {"a": [0, 100]})
    together = pooled_drift([one, other], expected, alert_psi=0.25, min_patients=5)
    assert together.psi["a"] == 0.0 and together.drifted == [] and together.patients == 5
    skewed = pooled_drift([one, one, DeviceCounts(50, 1, {})], expected, alert_psi=0.25, min_patients=5)
    assert skewed.drifted == ["a"] and skewed.decisions == 250
    assert pooled_drift([one], expected, 0.25, 5).drifted == [], "two patients are not a ward"
    few = [DeviceCounts(3, 1, {"a": [3, 0]}) for _ in range(6)]
    assert pooled_drift(few, expected, 0.25, 5, min_decisions=100).drifted == [], "18 decisions are noise"
    assert pooled_drift(few, expected, 0.25, 5, min_decisions=10).drifted == ["a"]
