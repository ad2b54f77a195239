"""Companion-model training end to end on the real MIMIC-III demo and its MIMIC-IV-shaped copy.

The demo is too small for meaningful AUROC; these tests check cohort counts, that training,
export and bundle writing run, and that TFLite on the device path agrees with Keras.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from device.models import bundle as bundle_mod
from device.models.companion import RiskModel
from model import classification_metrics, companion
from preprocessing.cohorts import mortality_cohort, readmission_cohort
from preprocessing.mimic import read_mimic

from .conftest import ROOT
from .mimic_iv_fixture import build_mimic_iv

pytestmark = pytest.mark.slow
QUICK = ("--folds", "3", "--epochs", "4", "--shap-patients", "6")


@pytest.fixture(scope="module")
def mortality(mimic_dir, tmp_path_factory):
    from dataclasses import replace

    from model.evaluation import predict_unsigned_companion_dir

    config = companion.CompanionTrainingConfig(task="mortality", folds=3, bootstrap=200, skipgram=True)
    config = replace(config, network=replace(config.network, epochs=4), shap=replace(config.shap, network_samples=8))
    out = tmp_path_factory.mktemp("mortality") / "bundle"
    return companion.train_companion(mimic_dir, out, config, predict_unsigned_companion_dir, progress=lambda m: None)


def test_mortality_manifest_cohort_matches_the_definition(mortality, mimic_dir):
    expected = mortality_cohort(read_mimic(mimic_dir)).to_json()
    cohort = mortality.manifest.cohort
    assert (cohort["size"], cohort["positives"], cohort["steps"]) == (65, 40, expected["steps"])
    assert cohort["size"] == expected["size"] and cohort["positives"] == expected["positives"]
    assert mortality.manifest.data["demo_trained"] is True
    assert mortality.manifest.training["code_embedding_init"] == "skip-gram vectors"
    assert "too small" in mortality.manifest.metrics["note"]
    assert any("hadm 168674" in n for n in mortality.manifest.data["notes"])  # the missing admission row


def test_mortality_tflite_agrees_with_keras_on_the_device_path(mortality):
    """The model the device runs matches Keras on a held-out fold and on the shipped model."""
    role = mortality.manifest.output.device_role
    assert role in ("int8", "float") and mortality.manifest.output.device_role_reason
    held_out = mortality.parity["held_out_fold"]
    assert held_out["n"] < 65
    assert held_out[f"{role}_vs_keras_max_abs"] <= 0.02 and held_out[f"{role}_vs_keras_auroc_diff"] <= 0.01
    bundle = bundle_mod.open_bundle(mortality.bundle_dir, trusted=[], require_signature=False)
    keras_auroc = classification_metrics.auroc(mortality.labels, mortality.keras_probabilities)
    model = RiskModel(bundle)
    assert model.role == role
    probabilities = model.predict_many(mortality.encoded)
    assert np.max(np.abs(probabilities - mortality.keras_probabilities)) <= 0.02
    assert abs(classification_metrics.auroc(mortality.labels, probabilities) - keras_auroc) <= 0.01
    for other in ("float", "int8"):
        assert RiskModel(bundle, other).self_test() <= 0.02


def test_the_device_runs_int8_only_when_it_matches_keras():
    close = {
        "int8_vs_keras_max_abs": 0.004,
        "int8_vs_keras_auroc_diff": 0.0,
        "float_vs_keras_max_abs": 1e-7,
        "float_vs_keras_auroc_diff": 0.0,
    }
    assert companion.device_role({"held_out_fold": close, "whole_cohort": close})["device_role"] == "int8"
    drifted = {**close, "int8_vs_keras_max_abs": 0.028, "int8_vs_keras_auroc_diff": 0.025}
    chosen = companion.device_role({"held_out_fold": drifted, "whole_cohort": close})
    assert chosen["device_role"] == "float" and "0.0280" in chosen["device_role_reason"]
    with pytest.raises(companion.CompanionError):
        companion.device_role({"held_out_fold": {**drifted, "float_vs_keras_max_abs": 0.5}})


def test_mortality_compares_every_model_and_imbalance_method(mortality):
    assert set(mortality.metrics) == {"lstm", "gru", "bilstm", "talstm", "logistic_l1"}
    for m in mortality.metrics.values():
        assert 0.0 <= m["auroc"] <= 1.0 and m["parameters"] > 0 and m["train_seconds"] > 0
        assert m["n"] == 65
    assert mortality.best in ("lstm", "gru", "bilstm", "talstm")
    assert set(mortality.imbalance["gru"]) == {"class_weights", "random_oversampling", "smote"}
    assert "an average of two codes is not a code" in mortality.imbalance["gru"]["smote"]["error"]
    assert 0.0 <= mortality.imbalance["logistic_l1"]["smote"]["auroc"] <= 1.0  # SMOTE on the sparse summary
    kept = mortality.manifest.training["coverage"]
    assert kept["admissions"] >= 65 and 0.0 <= kept["out_of_vocabulary_share"] < 1.0
    c = mortality.confusion
    assert c["tp"] + c["fn"] == 40 and c["fp"] + c["tn"] == 25 and c["sensitivity"] >= 0.8
    assert mortality.importance["logistic_l1"] and mortality.importance[mortality.best]


def test_report_has_tables_plots_and_says_the_demo_is_too_small(mortality, tmp_path):
    from model import companion_report

    path = companion_report.write_report(mortality, tmp_path)
    text = path.read_text()
    assert "too small for a meaningful AUROC" in text and "Leakage fix" in text
    assert "| bidirectional LSTM" in text and "random oversampling" in text and "flagged" in text
    assert (tmp_path / "roc.png").stat().st_size > 1000 and (tmp_path / "pr.png").stat().st_size > 1000
    assert "| time-aware LSTM with attention" in text  # compared in the same folds
    assert "## Fairness" in text and "| insurance | Medicare |" in text and "too small to read" in text
    assert "## SHAP explanations" in text and "One patient, the riskiest" in text
    for plot in ("shap_logistic.png", "shap_network.png"):
        assert (tmp_path / plot).stat().st_size > 1000


def test_fairness_rows_are_the_out_of_fold_figures_of_each_group(mortality, mimic_dir):
    from model import fairness
    from preprocessing.demographics import sample_groups

    data = read_mimic(mimic_dir)
    groups = sample_groups(data, mortality_cohort(data).samples)
    rows = {(r.attribute, r.group): r for r in mortality.fairness}
    whole = rows[("all", "all patients")]
    assert (whole.n, whole.positives) == (65, 40)
    for attribute, labels in groups.items():
        assert sum(r.n for (a, _), r in rows.items() if a == attribute) == 65
        for name in set(labels):
            member = np.array(labels) == name
            row = rows[(attribute, name)]
            assert (row.n, row.positives) == (int(member.sum()), int(mortality.labels[member].sum()))
            assert row.readable == (min(row.positives, row.n - row.positives) >= fairness.MIN_CLASS)
            if row.readable:
                scores = mortality.out_of_fold[mortality.best][member]
                assert row.auroc == pytest.approx(classification_metrics.auroc(mortality.labels[member], scores))
    assert mortality.manifest.metrics["fairness"][0]["group"] == "all patients"


def test_shap_explains_both_models_and_adds_up(mortality):
    shown = mortality.explanations
    linear, deep = shown.logistic, shown.network
    assert linear.values.shape == linear.data.shape and linear.values.shape[0] == 65
    assert deep.values.shape == (len(deep.rows), len(deep.names)) and len(deep.names) == 20
    assert np.abs(deep.values).sum() > 0 and np.abs(linear.values).sum() > 0
    top = mortality.manifest.metrics["shap"]["patient"]["top"]
    assert top and all(r["feature"] in deep.names for r in top)


def test_the_time_aware_network_reports_its_attention(mortality):
    attention = mortality.attention
    assert attention is not None and attention.weights.shape == (65, 10)
    assert np.allclose(attention.weights.sum(axis=1), 1.0, atol=1e-3)
    real = attention.weights[:, -1]  # the demo's mortality histories are one visit each
    assert (attention.visits == 1).all() and (real > 0.99).all()
    assert len(attention.decay_per_year) == 3 and all(d >= 0 for d in attention.decay_per_year)


@pytest.mark.e2e
def test_readmission_command_on_the_mimic_iv_layout(mimic_dir, tmp_path):
    root = build_mimic_iv(mimic_dir, tmp_path / "mimic-iv-2.2")
    out = tmp_path / "readmission"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tools.cli.main",
            "train",
            "readmission",
            "--mimic",
            str(root),
            "--out",
            str(out),
            *QUICK,
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "too small for a meaningful AUROC" in proc.stdout and "CNN-Wide" in proc.stdout
    assert "all-admissions variant instead" in proc.stderr  # few heart-failure stays in the demo
    manifest = json.loads((out / "manifest.json").read_text())
    expected = readmission_cohort(read_mimic(root), "all").to_json()
    assert manifest["data"]["source"] == "MIMIC-IV"
    assert {k: manifest["cohort"][k] for k in ("size", "positives", "steps")} == {
        k: expected[k] for k in ("size", "positives", "steps")
    }
    role = manifest["output"]["device_role"]
    for evaluated_on in ("held_out_fold", "whole_cohort"):
        parity = manifest["metrics"]["parity"][evaluated_on]
        assert parity[f"{role}_vs_keras_max_abs"] <= 0.02 and parity[f"{role}_vs_keras_auroc_diff"] <= 0.01
    report = (tmp_path / "readmission-report" / "report.md").read_text()
    assert "Feature importance" in report and "L1 logistic regression" in report
    assert "## Time-aware LSTM with attention: where it looks" in report and "| 1 before |" in report
    assert manifest["metrics"]["attention"]["by_position"][0]["visits_before_index"] == 0


@pytest.mark.e2e
def test_mortality_refuses_mimic_iv_v1_and_bad_folds_are_clear(mimic_dir, tmp_path):
    root = build_mimic_iv(mimic_dir, tmp_path / "mimic-iv-1.0")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tools.cli.main",
            "train",
            "mortality",
            "--mimic",
            str(root),
            "--out",
            str(tmp_path / "m"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert proc.returncode != 0 and "1-year mortality cannot be labelled" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tools.cli.main",
            "train",
            "readmission",
            "--mimic",
            str(mimic_dir),
            "--index",
            "hf",
            "--out",
            str(tmp_path / "r"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert proc.returncode != 0 and "needs at least 5 of each" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_packaged_companion_bundles_are_signed_demo_trained_and_pass_their_self_test(mimic_dir):
    data = read_mimic(mimic_dir)
    expected = {"mortality": mortality_cohort(data).to_json(), "readmission": readmission_cohort(data, "all").to_json()}
    for name in ("mortality", "readmission"):
        bundle = bundle_mod.open_bundle(bundle_mod.default_bundle_path(name))
        assert bundle.signed_by and bundle.is_companion and bundle.name == name
        assert bundle.manifest.data["demo_trained"] is True
        assert "demo-trained" in bundle.manifest.data["label"]
        cohort = bundle.manifest.cohort
        assert (cohort["size"], cohort["positives"]) == (expected[name]["size"], expected[name]["positives"])
        assert cohort["steps"] == expected[name]["steps"]
        for role in ("int8", "float"):
            assert RiskModel(bundle, role).self_test() <= 0.02
        metrics = bundle.manifest.metrics
        assert metrics["fairness"][0]["group"] == "all patients" and metrics["shap"]["patient"]["top"]
        assert "talstm" in metrics["cross_validation"], "the time-aware network was compared"
        role = bundle.manifest.output.device_role
        for parity in bundle.manifest.metrics["parity"].values():
            assert parity[f"{role}_vs_keras_max_abs"] <= 0.02 and parity[f"{role}_vs_keras_auroc_diff"] <= 0.01


@pytest.mark.e2e
def test_a_quick_run_on_a_sample_says_so_and_estimates_the_time_left(mimic_dir, tmp_path):
    out = tmp_path / "mortality"
    store = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    (tmp_path / "mlruns").mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "tools.cli.main", "train", "mortality", "--mimic", str(mimic_dir), "--out", str(out)]
        + ["--sample", "40", "--folds", "3", "--epochs", "2", "--shap-patients", "4", "--tracking-uri", store],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    steps = manifest["cohort"]["steps"]
    assert steps[-2]["step"] == "random sample of whole patients (--sample 40)" and 40 <= steps[-2]["count"] < 65
    assert manifest["cohort"]["size"] == steps[-2]["count"]
    assert any("random sample" in note for note in manifest["data"]["notes"])
    progress = [line for line in proc.stderr.splitlines() if "fold 3/3" in line]
    assert progress and all("fits, about" in line and "[" in line for line in progress)
    # the run is recorded: the report's AUROC, the report and the bundle, named in the manifest
    from mlflow.tracking import MlflowClient

    run_id = manifest["training"]["mlflow_run_id"]
    assert f"run: {run_id}" in proc.stdout
    client = MlflowClient(store)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    for network, figures in manifest["metrics"]["cross_validation"].items():
        assert run.data.metrics[f"cross_validation.{network}.auroc"] == pytest.approx(figures["auroc"])
    assert run.data.tags["data_fingerprint_sha256"] == manifest["data"]["fingerprint_sha256"]
    logged = {a.path for a in client.list_artifacts(run_id)}
    assert logged == {"bundle", "report"}
    assert "report.md" in {Path(a.path).name for a in client.list_artifacts(run_id, "report")}
    promote = [sys.executable, "-m", "tools.cli.main", "bundle", "promote", str(out), "--tracking-uri", store]
    done = subprocess.run(promote, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0 and "is now 'production'" in done.stdout, done.stderr
    ask = [sys.executable, "-m", "tools.cli.main", "bundle", "promoted", "mortality", "--tracking-uri", store]
    found = subprocess.run(ask, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert found.returncode == 0 and found.stdout.strip() == str(out.resolve()), found.stderr
