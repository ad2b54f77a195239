"""Decision points of an AIM-94 log and their windows, in bulk (docs/evaluation.md, "Dose model on AIM-94")."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np

from domain.dose_context import DoseContext, dose_context
from domain.features import FeatureSpec, PatientHistory, window_at
from preprocessing.aim94 import PatientLog


@dataclass(frozen=True, slots=True)
class DecisionPoint:
    """One kept regular-insulin record: its identity, its target, its model input and dose context.

    The context is read as if a person asked for a dose at that time (the dose was given).
    """

    patient: int
    ts: datetime
    seq: int
    target_units: float
    window: np.ndarray
    context: DoseContext

    @property
    def key(self) -> tuple[int, datetime, int]:
        return (self.patient, self.ts, self.seq)


def decision_points(log: PatientLog, spec: FeatureSpec) -> list[DecisionPoint]:
    """Every decision point of one patient, with the window known at its time."""
    history = PatientHistory(spec)
    history.extend(log.events)
    points: list[DecisionPoint] = []
    seq = 0
    previous_ts: datetime | None = None
    for event in log.events:
        if not event.is_regular_dose:
            continue
        seq = seq + 1 if event.ts == previous_ts else 0
        previous_ts = event.ts
        points.append(
            DecisionPoint(
                log.number,
                event.ts,
                seq,
                event.dose,
                window_at(history, event.ts),
                dose_context(history, event.ts, request=True),
            )
        )
    return points


def chronological_split(points: list[DecisionPoint], train_share: float = 0.8) -> list[str]:
    """``train``/``test`` per point of one patient: the first ``floor(0.8 n)`` are train."""
    n_train = int(np.floor(train_share * len(points)))
    return ["train" if i < n_train else "test" for i in range(len(points))]
