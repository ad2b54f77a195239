"""The dose bundle that ships in the package: verified, self-tested, accurate, and honest."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from click.testing import CliRunner

from device.models import bundle as bundle_mod
from device.models.inference import DoseModel
from model.dataset import data_fingerprint
from tools.cli.main import main

BASELINES = ("last_same_slot", "median5_same_slot", "gradient_boosting")


@pytest.fixture(scope="module")
def packaged():
    return bundle_mod.open_bundle(bundle_mod.default_bundle_path("dose"))


def test_packaged_bundle_is_signed_by_the_release_key(packaged):
    release = {k.key_id for k in bundle_mod.packaged_trusted_keys()}
    assert packaged.signed_by in release


def test_manifest_records_what_spec_requires(packaged):
    m = json.loads(packaged.files["manifest.json"])  # the file as signed
    for key in (
        "name",
        "version",
        "created",
        "features",
        "scaling",
        "models",
        "output",
        "golden",
        "metrics",
        "data",
        "versions",
        "files",
    ):
        assert key in m, key
    assert m["features"]["window"] == packaged.feature_spec.window
    assert len(m["scaling"]["mean"]) == len(m["features"]["features"])
    int8 = m["models"]["int8"]
    assert int8["input"]["dtype"] == "int8" and int8["output"]["dtype"] == "int8"
    assert int8["input"]["scale"] > 0 and int8["output"]["scale"] > 0
    assert len(m["golden"]) >= 3
    assert all(len(entry["sha256"]) == 64 for entry in m["files"].values())


@pytest.mark.parametrize("role", ["int8", "float"])
def test_golden_self_test_passes_on_litert(packaged, role):
    assert DoseModel(packaged, role, backend="ai-edge-litert").self_test() <= 0.05


def test_trained_on_this_data(packaged, aim94_logs):
    assert packaged.manifest.data["fingerprint_sha256"] == data_fingerprint(aim94_logs)


def test_recorded_int8_beats_every_baseline_and_matches_keras(packaged):
    test = packaged.manifest.metrics["test"]["chronological"]
    ours = test["lstm_gru_tflite_int8"]["mae"]
    for name in BASELINES:
        assert ours < test[name]["mae"], f"int8 {ours:.3f} U does not beat {name} {test[name]['mae']:.3f} U"
    assert packaged.manifest.metrics["parity"]["int8_vs_keras_mean_abs_units"] <= 0.05


@pytest.fixture(scope="module")
def predictions(aim94_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("pred") / "pred.csv"
    result = CliRunner().invoke(main, ["evaluate", "dose", "--data", str(aim94_dir), "--out", str(out)])
    assert result.exit_code == 0, result.output
    with open(out, newline="") as handle:
        return list(csv.DictReader(handle))


def test_evaluate_writes_every_decision_point(predictions, packaged):
    assert list(predictions[0]) == [
        "patient",
        "ts",
        "seq",
        "split",
        "actual_units",
        "model_units",
        "suggested_units",
        "status",
    ]
    assert len(predictions) == packaged.manifest.data["decision_points"]
    assert {r["split"] for r in predictions} == {"train", "test"}
    assert {r["status"] for r in predictions} <= {"suggest", "withhold", "insufficient_data"}
    assert all(r["patient"].isdigit() and "T" in r["ts"] for r in predictions)


def test_device_path_reproduces_the_recorded_int8_metric(predictions, packaged):
    test = [r for r in predictions if r["split"] == "test"]
    mae = np.mean([abs(float(r["model_units"]) - float(r["actual_units"])) for r in test])
    recorded = packaged.manifest.metrics["test"]["chronological"]["lstm_gru_tflite_int8"]["mae"]
    assert mae == pytest.approx(recorded, abs=1e-3)


def test_suggestions_never_exceed_the_model_or_go_negative(predictions):
    """Only an announced bigger meal may raise the model's number (× 1.25; AIM-94 has no carb counts),
    and the pen's rounding to the nearest step (half a 0.5 U step at most)."""
    for r in predictions:
        suggested, model_units = float(r["suggested_units"]), float(r["model_units"])
        assert 0.0 <= suggested <= 1.25 * max(0.0, model_units) + 0.25 + 1e-9
        if r["status"] != "suggest":
            assert suggested == 0.0


def test_int8_and_float_agree_on_the_test_split(packaged, aim94_logs):
    from preprocessing.decisions import chronological_split, decision_points

    int8, flt = DoseModel(packaged, "int8"), DoseModel(packaged, "float")
    windows = []
    for log in aim94_logs:
        points = decision_points(log, int8.spec)
        windows += [p.window for p, s in zip(points, chronological_split(points), strict=False) if s == "test"]
    diff = np.abs(int8.predict_many(np.stack(windows)) - flt.predict_many(np.stack(windows)))
    assert diff.mean() <= 0.05
