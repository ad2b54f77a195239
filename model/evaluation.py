"""Run a bundle through the device inference path on every AIM-94 decision point.

Writes the predictions file of docs/evaluation.md ("Dose model on AIM-94"). Uses the same feature code, inference
wrapper and safety supervisor as the live device; no pandas.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from device.models.bundle import Bundle, open_bundle
from device.models.inference import DoseModel
from device.rules.decision import decide
from device.rules.safety import SafetyProfile
from domain.visits import EncodedHistories
from preprocessing import aim94
from preprocessing.decisions import chronological_split, decision_points

PREDICTION_COLUMNS = ("patient", "ts", "seq", "split", "actual_units", "model_units", "suggested_units", "status")


@dataclass(frozen=True, slots=True)
class PredictionRow:
    patient: int
    ts: str
    seq: int
    split: str
    actual_units: float
    model_units: float
    suggested_units: float
    status: str

    def as_csv(self) -> list:
        return [
            self.patient,
            self.ts,
            self.seq,
            self.split,
            f"{self.actual_units:g}",
            f"{self.model_units:.4f}",
            f"{self.suggested_units:g}",
            self.status,
        ]


def predict_unsigned_dir(path: Path, role: str, windows: np.ndarray) -> np.ndarray:
    """Device-path predictions of a freshly written, not yet signed bundle (training use)."""
    bundle = open_bundle(Path(path), trusted=[], require_signature=False)
    return DoseModel(bundle, role).predict_many(windows)


def predict_unsigned_companion_dir(path: Path, role: str, encoded: EncodedHistories) -> np.ndarray:
    """Device-path probabilities of a freshly written companion bundle on encoded histories."""
    from device.models.companion import RiskModel

    bundle = open_bundle(Path(path), trusted=[], require_signature=False)
    return RiskModel(bundle, role).predict_many(encoded)


def evaluate(
    bundle: Bundle,
    logs: Iterable[aim94.PatientLog],
    profile: SafetyProfile | None = None,
    role: str = "int8",
    on_patient: Callable[[int], None] | None = None,
) -> list[PredictionRow]:
    """One row per decision point: the raw model output and the supervised suggestion."""
    model = DoseModel(bundle, role)
    profile = profile or SafetyProfile()
    rows: list[PredictionRow] = []
    for log in logs:
        points = decision_points(log, model.spec)
        for point, split in zip(points, chronological_split(points), strict=False):
            units = model.predict(point.window)
            verdict = decide(point.window, units, point.context, profile).verdict
            rows.append(
                PredictionRow(
                    point.patient,
                    point.ts.isoformat(),
                    point.seq,
                    split,
                    point.target_units,
                    units,
                    verdict.units,
                    verdict.status,
                )
            )
        if on_patient is not None:
            on_patient(log.number)
    return rows


def write_predictions(rows: list[PredictionRow], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(PREDICTION_COLUMNS)
        for row in rows:
            writer.writerow(row.as_csv())
