"""The dose data set: every AIM-94 decision point with its window, target and split."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from domain.features import FeatureSpec
from preprocessing import aim94
from preprocessing.decisions import chronological_split, decision_points

N_PATIENT_FOLDS = 5


@dataclass(frozen=True)
class DoseDataset:
    """Arrays over all decision points, in patient then time order.

    ``split`` is ``train``/``val``/``test``: the chronological split of docs/evaluation.md, with
    validation carved from the tail of each patient's training part (never from test).
    """

    spec: FeatureSpec
    windows: np.ndarray  # (n, window, features) float32, unscaled
    targets: np.ndarray  # (n,) float32 units
    patients: np.ndarray  # (n,) int file number
    timestamps: list[datetime]
    seqs: np.ndarray
    split: np.ndarray  # (n,) str
    fingerprint: str
    check: aim94.CheckReport

    def __len__(self) -> int:
        return len(self.targets)

    def mask(self, *names: str) -> np.ndarray:
        return np.isin(self.split, names)

    @property
    def current(self) -> np.ndarray:
        """The decision point's own step (last window row): the tabular view."""
        return self.windows[:, -1, :]

    def patient_fold(self) -> np.ndarray:
        """Leave-patients-out fold (0..4) of every row, by patient id."""
        return (self.patients - 1) % N_PATIENT_FOLDS


def data_fingerprint(logs: list[aim94.PatientLog]) -> str:
    """sha256 over the kept events, so a bundle names exactly the data it was trained on."""
    digest = hashlib.sha256()
    for log in logs:
        for e in log.events:
            digest.update(
                f"{log.number}|{e.ts.isoformat()}|{e.kind.value}|{e.mg_dl}|{e.insulin}|{e.units}|"
                f"{e.size}|{e.intensity}\n".encode()
            )
    return digest.hexdigest()


def carve_validation(split: list[str], share: float) -> list[str]:
    """Mark the last ``share`` of one patient's train rows as ``val`` (chronological)."""
    n_train = split.count("train")
    n_val = round(share * n_train)
    return ["val" if n_train - n_val <= i < n_train else s for i, s in enumerate(split)]


def build(folder: Path, spec: FeatureSpec, val_share: float = 0.15, patients: list[int] | None = None) -> DoseDataset:
    """Read an AIM-94 folder and build every decision point's window."""
    logs = aim94.read_folder(Path(folder), patients)
    windows, targets, pats, stamps, seqs, split = [], [], [], [], [], []
    for log in logs:
        points = decision_points(log, spec)
        if not points:
            continue
        split.extend(carve_validation(chronological_split(points), val_share))
        for p in points:
            windows.append(p.window)
            targets.append(p.target_units)
            pats.append(p.patient)
            stamps.append(p.ts)
            seqs.append(p.seq)
    if not targets:
        raise aim94.Aim94Error(f"{folder}: no regular-insulin decision points in the data")
    return DoseDataset(
        spec=spec,
        windows=np.stack(windows).astype(np.float32),
        targets=np.asarray(targets, dtype=np.float32),
        patients=np.asarray(pats, dtype=np.int64),
        timestamps=stamps,
        seqs=np.asarray(seqs, dtype=np.int64),
        split=np.asarray(split),
        fingerprint=data_fingerprint(logs),
        check=aim94.check(logs),
    )
