"""One decision path: ``advisor evaluate`` (windows read in bulk) and the device (a history read at a time)."""

from __future__ import annotations

from device.models.bundle import default_bundle_path, open_bundle
from device.models.inference import DoseModel
from device.rules.decision import decide, decide_at
from device.rules.safety import SafetyProfile
from domain.features import PatientHistory
from preprocessing.decisions import decision_points


def test_the_evaluation_and_the_device_reach_the_same_verdict_at_every_decision_point(aim94_logs):
    model = DoseModel(open_bundle(default_bundle_path("dose")), "int8")
    profile = SafetyProfile()
    compared = 0
    for log in aim94_logs[:6]:
        history = PatientHistory(model.spec)
        history.extend(log.events)
        for point in decision_points(log, model.spec):
            bulk = decide(point.window, model.predict(point.window), point.context, profile)
            live = decide_at(history, point.ts, model.predict, profile, request=True)
            assert live.model_units == bulk.model_units
            assert (live.verdict, live.inputs) == (bulk.verdict, bulk.inputs), (log.number, point.ts)
            compared += 1
    assert compared > 500
