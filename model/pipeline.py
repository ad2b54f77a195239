"""``advisor train dose``: data -> network and baselines -> TFLite -> bundle + report.

The int8 model is evaluated through the device inference path, which ``model/`` does not
import: the caller passes it in as ``device_predict(bundle_dir, role, raw_windows)``.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from device.contract.manifest import Manifest
from device.models.bundle import BundleError
from domain.drift import Reference
from domain.features import FeatureSpec, feature, slot_of
from domain.scaling import Scaling
from model import baselines, bundle_writer, dataset, export, network
from model.metrics import regression_metrics

DevicePredict = Callable[[Path, str, np.ndarray], np.ndarray]
Progress = Callable[[str], None]

MODEL_LABELS = {
    "last_same_slot": "last same-slot",
    "median5_same_slot": "median-5 same-slot",
    "gradient_boosting": "gradient boosting",
    "lstm_gru_keras": "hybrid LSTM-GRU (Keras float)",
    "lstm_gru_tflite_float": "hybrid LSTM-GRU (TFLite float, device path)",
    "lstm_gru_tflite_int8": "hybrid LSTM-GRU (TFLite int8, device path)",
}
RESIDUAL_OF = "reg_usual_units"
MODEL_FILES = {"int8": "dose_int8.tflite", "float": "dose_float.tflite"}


@dataclass(frozen=True)
class DoseTrainingConfig:
    """Everything ``train dose`` can vary; defaults in one place."""

    spec: FeatureSpec = field(default_factory=FeatureSpec)
    network: network.NetworkConfig = field(default_factory=network.NetworkConfig)
    val_share: float = 0.15
    patient_folds: bool = True
    golden_pairs: int = 6
    patients: tuple[int, ...] | None = None
    run_id: str | None = None  # the MLflow run that records this training (model/tracking.py)


@dataclass
class ViewResult:
    """Predictions of every model on one view's test rows."""

    rows: np.ndarray  # indices into the data set
    predictions: dict[str, np.ndarray]
    epochs: list[int]


@dataclass
class DoseTrainingResult:
    bundle_dir: Path
    manifest: Manifest
    data: dataset.DoseDataset
    views: dict[str, ViewResult]
    metrics: dict[str, dict[str, dict]]
    parity: dict[str, float]
    seconds: float


def _base(ds: dataset.DoseDataset) -> np.ndarray:
    return ds.current[:, feature(RESIDUAL_OF)].astype(np.float64)


def _manifest_core(spec: FeatureSpec, scaling: Scaling, quant: dict) -> dict:
    return {
        "name": "dose",
        "version": "unreleased",
        "features": spec.to_json(),
        "scaling": scaling.to_json(),
        "models": {role: {"file": MODEL_FILES[role], **quant[role]} for role in MODEL_FILES},
        "output": {
            "units": "U",
            "meaning": "next regular-insulin dose",
            "residual_of": RESIDUAL_OF,
            "formula": f"units = model_output + {RESIDUAL_OF}",
        },
    }


def _fit_view(
    ds: dataset.DoseDataset,
    train: np.ndarray,
    val: np.ndarray,
    test: np.ndarray,
    config: DoseTrainingConfig,
    device_predict: DevicePredict,
    progress: Progress,
    label: str,
) -> tuple[ViewResult, dict]:
    """Train every model on ``train`` (+``val``) and predict ``test``; also return artefacts."""
    scaling = Scaling.fit(ds.windows[train], feature("present"))
    x = scaling.apply(ds.windows)
    base = _base(ds)
    y_resid = (ds.targets - base).astype(np.float32)

    def on_epoch(epoch: int, logs: dict) -> None:
        if epoch % 10 == 0:
            progress(
                f"  [{label}] epoch {epoch + 1}: train MAE {logs['loss']:.3f}, validation MAE {logs['val_loss']:.3f}"
            )

    progress(
        f"[{label}] training hybrid LSTM-GRU on {int(train.sum())} windows "
        f"(validation {int(val.sum())}, test {int(test.sum())})"
    )
    keras_model, history = network.train(x[train], y_resid[train], x[val], y_resid[val], config.network, on_epoch)
    epochs = len(history["loss"])
    progress(f"[{label}] stopped after {epochs} epochs; exporting TFLite float and int8")
    tflite = export.to_tflite(keras_model, x[train], seed=config.network.seed)
    quant = {role: export.tensor_quantization(tflite[role]) for role in tflite}
    preds = {"lstm_gru_keras": network.predict(keras_model, x[test]) + base[test]}
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / "bundle"
        bundle_writer.write_bundle(
            staged, _manifest_core(ds.spec, scaling, quant), {MODEL_FILES[r]: tflite[r] for r in MODEL_FILES}
        )
        for role in ("float", "int8"):
            progress(f"[{label}] running TFLite {role} through the device inference path")
            preds[f"lstm_gru_tflite_{role}"] = device_predict(staged, role, ds.windows[test])
    current = ds.current
    preds["last_same_slot"] = baselines.last_same_slot(current[test])
    preds["median5_same_slot"] = baselines.median5_same_slot(current[test])
    progress(f"[{label}] fitting gradient boosting baseline")
    gbm = baselines.fit_gradient_boosting(current[train | val], ds.targets[train | val], config.network.seed)
    preds["gradient_boosting"] = gbm.predict(current[test])
    artefacts = {"scaling": scaling, "tflite": tflite, "quant": quant, "history": history}
    return ViewResult(np.flatnonzero(test), preds, [epochs]), artefacts


def _patient_validation(ds: dataset.DoseDataset, rows: np.ndarray, share: float, seed: int) -> np.ndarray:
    """Every row of a random ``share`` of the patients among ``rows``.

    Early stopping then measures what the leave-patients-out view tests: unseen patients,
    not the later days of patients already in training.
    """
    patients = np.unique(ds.patients[rows])
    chosen = np.random.default_rng(seed).choice(patients, size=max(1, round(share * len(patients))), replace=False)
    return rows & np.isin(ds.patients, chosen)


def _leave_patients_out(ds, config, device_predict, progress) -> ViewResult:
    folds = ds.patient_fold()
    rows: list[np.ndarray] = []
    preds: dict[str, list[np.ndarray]] = {}
    epochs: list[int] = []
    for k in range(dataset.N_PATIENT_FOLDS):
        test = folds == k
        if not test.any() or test.all():
            continue
        val = _patient_validation(ds, ~test, config.val_share, config.network.seed + k)
        train = ~test & ~val
        view, _ = _fit_view(
            ds, train, val, test, config, device_predict, progress, f"patients fold {k + 1}/{dataset.N_PATIENT_FOLDS}"
        )
        rows.append(view.rows)
        epochs += view.epochs
        for name, p in view.predictions.items():
            preds.setdefault(name, []).append(p)
    return ViewResult(np.concatenate(rows), {n: np.concatenate(p) for n, p in preds.items()}, epochs)


def _golden(ds, test_rows: np.ndarray, n: int, staged: Path, device_predict) -> list[dict]:
    picks = test_rows[np.linspace(0, len(test_rows) - 1, num=min(n, len(test_rows))).astype(int)]
    windows = ds.windows[picks]
    outputs = {role: device_predict(staged, role, windows) for role in MODEL_FILES}
    return [
        {
            "input": windows[i].tolist(),
            "outputs": {role: float(outputs[role][i]) for role in outputs},
            "patient": int(ds.patients[r]),
            "ts": ds.timestamps[r].isoformat(),
        }
        for i, r in enumerate(picks)
    ]


def train_dose(
    data_dir: Path, out_dir: Path, config: DoseTrainingConfig, device_predict: DevicePredict, progress: Progress = print
) -> DoseTrainingResult:
    """Train, compare with baselines, export, and write the (unsigned) bundle."""
    started = time.monotonic()
    progress(f"reading AIM-94 logs from {data_dir}")
    ds = dataset.build(
        Path(data_dir), config.spec, config.val_share, list(config.patients) if config.patients else None
    )
    progress(
        f"{ds.check.kept} records kept, {sum(ds.check.rejected.values())} rejected; "
        f"{len(ds)} decision points from {len(np.unique(ds.patients))} patients"
    )
    chrono, art = _fit_view(
        ds, ds.mask("train"), ds.mask("val"), ds.mask("test"), config, device_predict, progress, "chronological"
    )
    views = {"chronological": chrono}
    if config.patient_folds:
        views["leave_patients_out"] = _leave_patients_out(ds, config, device_predict, progress)
    metrics = {
        view: {name: regression_metrics(ds.targets[v.rows], p) for name, p in v.predictions.items()}
        for view, v in views.items()
    }
    keras_p = chrono.predictions["lstm_gru_keras"]
    parity = {
        f"{role}_vs_keras_mean_abs_units": float(
            np.mean(np.abs(chrono.predictions[f"lstm_gru_tflite_{role}"] - keras_p))
        )
        for role in MODEL_FILES
    }
    parity["int8_vs_keras_max_abs_units"] = float(np.max(np.abs(chrono.predictions["lstm_gru_tflite_int8"] - keras_p)))
    manifest = _manifest_core(ds.spec, art["scaling"], art["quant"])
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / "bundle"
        bundle_writer.write_bundle(staged, manifest, {MODEL_FILES[r]: art["tflite"][r] for r in MODEL_FILES})
        golden = _golden(ds, chrono.rows, config.golden_pairs, staged, device_predict)
    manifest.update(
        {
            "version": bundle_writer.new_version(),
            "created": bundle_writer.created_now(),
            "golden": golden,
            "metrics": {"test": metrics, "parity": parity, "epochs": {v: r.epochs for v, r in views.items()}},
            "data": {
                "source": "AIM-94",
                "fingerprint_sha256": ds.fingerprint,
                "records_kept": ds.check.kept,
                "records_rejected": ds.check.rejected,
                "decision_points": len(ds),
                "patients": len(np.unique(ds.patients)),
                "split": "per patient chronological, first floor(0.8 n) train (validation carved from its tail)",
            },
            "training": {
                "network": config.network.to_json(),
                "val_share": config.val_share,
                **({"mlflow_run_id": config.run_id} if config.run_id else {}),
            },
            "versions": bundle_writer.library_versions(),
            "reference": Reference.fit(ds.current[ds.mask("train")], ds.spec.names).to_json(),
        }
    )
    written = bundle_writer.write_bundle(
        Path(out_dir), manifest, {MODEL_FILES[r]: art["tflite"][r] for r in MODEL_FILES}
    )
    progress(f"bundle written to {out_dir}")
    return DoseTrainingResult(Path(out_dir), written, ds, views, metrics, parity, time.monotonic() - started)


def slot_labels(ds: dataset.DoseDataset, rows: np.ndarray) -> np.ndarray:
    """Slot index of each row's decision time (for the error-by-slot plot)."""
    return np.array([slot_of(ds.timestamps[r]) for r in rows])


def add_reference(bundle_dir: Path, data_dir: Path) -> int:
    """Write the drift reference into a dose bundle trained before bundles carried one: the same
    training split of the same data (its fingerprint must match the manifest's). The bundle's
    signature no longer fits and is removed: sign it again. Returns the rows the reference counts."""
    bundle_dir = Path(bundle_dir)
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    spec = FeatureSpec.from_json(manifest["features"])
    val_share = float(manifest.get("training", {}).get("val_share", DoseTrainingConfig().val_share))
    ds = dataset.build(Path(data_dir), spec, val_share)
    recorded = manifest.get("data", {}).get("fingerprint_sha256")
    if ds.fingerprint != recorded:
        raise BundleError(
            f"{data_dir} is not the data this bundle was trained on (fingerprint {ds.fingerprint[:12]}…, "
            f"the bundle's {str(recorded)[:12]}…)"
        )
    rows = ds.current[ds.mask("train")]
    files = {name: (bundle_dir / name).read_bytes() for name in manifest["files"]}
    body = {k: v for k, v in manifest.items() if k not in ("files", "format")}
    body["reference"] = Reference.fit(rows, spec.names).to_json()
    bundle_writer.write_bundle(bundle_dir, body, files)
    return len(rows)
