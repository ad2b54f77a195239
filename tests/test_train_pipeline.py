"""``advisor train dose`` end to end on the real AIM-94 data: whole runs (slow) and a small one for the fast loop."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from click.testing import CliRunner

from device.models import bundle as bundle_mod
from device.models import signing
from device.models.inference import DoseModel
from model.pipeline import MODEL_LABELS
from tools.cli.main import main


@pytest.mark.slow
def test_train_dose_on_all_patients_signs_reports_and_keeps_int8_parity(aim94_dir, tmp_path, artifacts):
    keys = tmp_path / "keys"
    signing.generate(keys)
    out = tmp_path / "dose"
    result = CliRunner().invoke(
        main,
        [
            "train",
            "dose",
            "--data",
            str(aim94_dir),
            "--out",
            str(out),
            "--key",
            str(keys / "advisor.key"),
            "--no-patient-folds",
            "--max-epochs",
            "40",
            "--ensemble",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    b = bundle_mod.open_bundle(out, [signing.load_public(keys / "advisor.pub")])
    assert b.manifest.training["network"]["ensemble"] == 2
    assert DoseModel(b, "int8").self_test() <= 0.05
    parity = b.manifest.metrics["parity"]
    assert parity["int8_vs_keras_mean_abs_units"] <= 0.05
    assert parity["float_vs_keras_mean_abs_units"] <= 1e-3
    chrono = b.manifest.metrics["test"]["chronological"]
    assert set(chrono) == set(MODEL_LABELS)
    assert all(m["n"] == chrono["median5_same_slot"]["n"] for m in chrono.values())
    report = out.with_name("dose-report")
    text = (report / "report.md").read_text()
    for label in MODEL_LABELS.values():
        assert label in text
    for plot in ("actual_vs_predicted.png", "error_by_slot.png", "residuals.png"):
        assert (report / plot).stat().st_size > 10_000
    shutil.copytree(report, artifacts / "train-dose-report", dirs_exist_ok=True)


def test_small_training_run_writes_a_bundle_the_device_path_reproduces(aim94_dir, tmp_path):
    """The fast loop's variant of the whole run above: two patients, one epoch, one network.

    It runs every stage the whole run does (validation, windows, Keras, TFLite float and int8,
    baselines, bundle, report) so a broken stage fails here in seconds, not only in CI.
    """
    out = tmp_path / "tiny"
    args = ["--patients", "1,2", "--max-epochs", "1", "--ensemble", "1", "--no-patient-folds"]
    result = CliRunner().invoke(main, ["train", "dose", "--data", str(aim94_dir), "--out", str(out), *args])
    assert result.exit_code == 0, result.output
    assert "NOT signed" in result.output
    b = bundle_mod.open_bundle(out, trusted=[], require_signature=False)
    assert b.manifest.training["network"]["max_epochs"] == 1
    assert b.manifest.data["decision_points"] > 100
    reference = b.manifest.reference
    assert reference is not None and 0 < reference["rows"] < b.manifest.data["decision_points"], "the training split"
    assert set(reference["features"]) == set(b.feature_spec.names)
    parity = b.manifest.metrics["parity"]
    assert parity["float_vs_keras_mean_abs_units"] <= 1e-3
    assert parity["int8_vs_keras_mean_abs_units"] <= 0.05
    assert DoseModel(b, "int8").self_test() <= 0.05
    chrono = b.manifest.metrics["test"]["chronological"]
    assert set(chrono) == set(MODEL_LABELS)
    assert "leave_patients_out" not in b.manifest.metrics["test"]
    text = out.with_name("tiny-report").joinpath("report.md").read_text()
    assert all(label in text for label in MODEL_LABELS.values())
    from mlflow.tracking import MlflowClient

    run = MlflowClient(os.environ["MLFLOW_TRACKING_URI"]).get_run(b.manifest.training["mlflow_run_id"])
    assert run.data.metrics["test.chronological.lstm_gru_tflite_int8.mae"] == pytest.approx(
        chrono["lstm_gru_tflite_int8"]["mae"]
    )
    assert run.data.params["network.max_epochs"] == "1" and run.data.params["patients"] == "1,2"


@pytest.mark.slow
def test_leave_patients_out_view_covers_every_row(aim94_dir, tmp_path):
    out = tmp_path / "small"
    result = CliRunner().invoke(
        main,
        [
            "train",
            "dose",
            "--data",
            str(aim94_dir),
            "--out",
            str(out),
            "--patients",
            "1,2,3,4,5",
            "--max-epochs",
            "1",
            "--ensemble",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "NOT signed" in result.output
    manifest = json.loads((out / "manifest.json").read_text())
    lpo = manifest["metrics"]["test"]["leave_patients_out"]
    assert set(lpo) == set(MODEL_LABELS)
    assert lpo["lstm_gru_tflite_int8"]["n"] == manifest["data"]["decision_points"]
    assert len(manifest["metrics"]["epochs"]["leave_patients_out"]) == 5


@pytest.mark.parametrize(
    "args, message",
    [
        (["--patients", "a,b"], "comma-separated patient numbers"),
        (["--patients", "99"], "no data file for patient"),
        (["--window", "0"], "0 is not in the range"),
    ],
)
def test_train_dose_rejects_bad_options(aim94_dir, tmp_path, args, message):
    result = CliRunner().invoke(main, ["train", "dose", "--data", str(aim94_dir), "--out", str(tmp_path / "b"), *args])
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output
