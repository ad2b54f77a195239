"""Drift of a model's inputs: a training reference per feature and the population stability index (pure).

Training writes a :class:`Reference` into the bundle: for each feature, the cut points of its
training deciles (repeated cuts merged, so a yes/no feature has two bins) and the share of the
training decision points in each bin. The device bins the feature rows it decides on the same way
(:class:`DriftMonitor`, the last ``window`` decisions) and reports, per feature, the population
stability index

    PSI = Σ over bins (observed share − training share) · ln(observed share / training share)

with every share floored at :data:`FLOOR`. The usual reading: under 0.1 stable, 0.1–0.25 a
moderate shift, over 0.25 a major one (the default alert).
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

BINS = 10
FLOOR = 1e-4


class DriftReferenceError(ValueError):
    """A bundle's drift reference does not fit its features."""


@dataclass(frozen=True, slots=True)
class FeatureReference:
    """One feature's training distribution: interior cut points and the share in each bin."""

    cuts: tuple[float, ...]
    shares: tuple[float, ...]  # len(cuts) + 1 bins: below the first cut, …, from the last cut up

    def bin_of(self, value: float) -> int:
        return bisect_right(self.cuts, value)


@dataclass(frozen=True, slots=True)
class Reference:
    """Every monitored feature's training distribution, fitted on ``rows`` decision points."""

    features: dict[str, FeatureReference]
    rows: int

    @classmethod
    def fit(cls, rows: np.ndarray, names: Sequence[str], bins: int = BINS) -> Reference:
        """The reference of the decision-time feature rows of a training split (``rows``: n × features)."""
        if rows.ndim != 2 or rows.shape[1] != len(names) or len(rows) == 0:
            raise DriftReferenceError("the reference needs a non-empty rows × features array matching the names")
        features = {}
        for i, name in enumerate(names):
            column = rows[:, i].astype(np.float64)
            cuts = sorted({float(c) for c in np.quantile(column, np.linspace(0, 1, bins + 1)[1:-1])})
            counts = np.bincount(np.searchsorted(cuts, column, side="right"), minlength=len(cuts) + 1)
            features[name] = FeatureReference(tuple(cuts), tuple(float(c) for c in counts / len(column)))
        return cls(features, len(rows))

    def to_json(self) -> dict:
        return {
            "method": f"training deciles; PSI with shares floored at {FLOOR:g}",
            "rows": self.rows,
            "features": {
                name: {"cuts": [round(c, 6) for c in f.cuts], "shares": [round(s, 6) for s in f.shares]}
                for name, f in self.features.items()
            },
        }

    @classmethod
    def from_json(cls, data: object, names: Sequence[str]) -> Reference:
        """The reference of a bundle's manifest, checked against its feature names."""
        if not isinstance(data, dict) or not isinstance(data.get("features"), dict):
            raise DriftReferenceError("reference: 'features' must be a table")
        features = {}
        for name, entry in data["features"].items():
            if name not in names:
                raise DriftReferenceError(f"reference: {name!r} is not a feature of this bundle")
            try:
                cuts = tuple(float(c) for c in entry["cuts"])
                shares = tuple(float(s) for s in entry["shares"])
            except (KeyError, TypeError, ValueError):
                raise DriftReferenceError(f"reference: {name!r} needs numeric 'cuts' and 'shares'") from None
            if len(shares) != len(cuts) + 1 or list(cuts) != sorted(cuts):
                raise DriftReferenceError(f"reference: {name!r} needs sorted cuts and one share more than cuts")
            if not all(math.isfinite(v) for v in (*cuts, *shares)) or abs(sum(shares) - 1.0) > 1e-3:
                raise DriftReferenceError(f"reference: {name!r} shares must be finite and add up to 1")
            features[name] = FeatureReference(cuts, shares)
        rows = data.get("rows")
        if not isinstance(rows, int) or rows <= 0:
            raise DriftReferenceError("reference: 'rows' must be a positive integer")
        return cls(features, rows)


def psi(expected: Sequence[float], counts: Sequence[int]) -> float:
    """The population stability index of observed bin ``counts`` against ``expected`` shares."""
    total = sum(counts)
    if total == 0:
        return 0.0
    value = 0.0
    for e, n in zip(expected, counts, strict=True):
        e, a = max(e, FLOOR), max(n / total, FLOOR)
        value += (a - e) * math.log(a / e)
    return value


@dataclass(frozen=True, slots=True)
class DriftReport:
    """The monitor's reading: decisions counted and of how many patients, PSI per feature (None
    until ``min_rows``), and the watched features over the alert line, the largest shift first
    (none while fewer than ``min_patients`` patients are counted: drift is a ward's measure, and
    one patient's own glucose is no population)."""

    rows: int
    patients: int
    psi: dict[str, float] | None
    drifted: list[str]
    counts: dict[str, list[int]]  # the watched features' bin counts over the window, to pool across devices


def alerts(values: dict[str, float], watch: Sequence[str], alert_psi: float) -> list[str]:
    """The watched features over the alert line, the largest shift first."""
    return sorted((n for n in watch if values[n] > alert_psi), key=lambda n: -values[n])


@dataclass(frozen=True, slots=True)
class DeviceCounts:
    """One device's contribution to a pooled reading: its decisions, patients and watched bin counts."""

    decisions: int
    patients: int
    counts: dict[str, list[int]]


@dataclass(frozen=True, slots=True)
class PooledDrift:
    """Several devices' windows read as one population (devices of one ward, one model, one reference)."""

    devices: int
    decisions: int
    patients: int
    psi: dict[str, float]
    drifted: list[str]


def pooled_drift(
    devices: Sequence[DeviceCounts],
    expected: Mapping[str, Sequence[float]],
    alert_psi: float,
    min_patients: int,
    min_decisions: int = 1,
) -> PooledDrift:
    """PSI of the devices' summed bin counts against the training shares ``expected``.

    Patients add up because each device sees its own beds; the alert needs ``min_patients`` of
    them and ``min_decisions`` decisions in all, as on one device. A device without counts for a
    feature adds nothing to it.
    """
    psi_values = {}
    for name, shares in expected.items():
        summed = [0] * len(shares)
        for device in devices:
            for i, n in enumerate(device.counts.get(name, [])[: len(shares)]):
                summed[i] += n
        psi_values[name] = round(psi(shares, summed), 4)
    patients, decisions = sum(d.patients for d in devices), sum(d.decisions for d in devices)
    enough = patients >= min_patients and decisions >= min_decisions
    drifted = alerts(psi_values, list(expected), alert_psi) if enough else []
    return PooledDrift(len(devices), decisions, patients, psi_values, drifted)


class DriftMonitor:
    """PSI per feature over the last ``window`` decision rows the device saw; the alert on the
    ``watch`` features (not thread-safe: the caller serialises, as the advisor's lock does)."""

    def __init__(
        self,
        reference: Reference,
        names: Sequence[str],
        window: int,
        min_rows: int,
        alert_psi: float,
        watch: Sequence[str],
        min_patients: int = 1,
    ) -> None:
        self.reference = reference
        self.window, self.min_rows, self.alert_psi = window, min_rows, alert_psi
        self.min_patients = min_patients
        self.watch = [name for name in watch if name in reference.features]
        self._columns = [
            (i, name, reference.features[name]) for i, name in enumerate(names) if name in reference.features
        ]
        self._counts = {name: [0] * len(ref.shares) for _, name, ref in self._columns}
        self._recent: deque[tuple[str, tuple[int, ...]]] = deque()  # (patient, bins)
        self._patients: Counter[str] = Counter()

    def observe(self, row: np.ndarray, patient: str = "") -> None:
        """Count one decision's feature row (the current step of its window) of ``patient``."""
        bins = tuple(ref.bin_of(float(row[i])) for i, _, ref in self._columns)
        for (_, name, _), b in zip(self._columns, bins, strict=True):
            self._counts[name][b] += 1
        self._recent.append((patient, bins))
        self._patients[patient] += 1
        if len(self._recent) > self.window:
            gone, old = self._recent.popleft()
            self._patients[gone] -= 1
            if not self._patients[gone]:
                del self._patients[gone]
            for (_, name, _), b in zip(self._columns, old, strict=True):
                self._counts[name][b] -= 1

    def report(self) -> DriftReport:
        rows, patients = len(self._recent), len(self._patients)
        counts = {name: list(self._counts[name]) for name in self.watch}
        if rows < self.min_rows:
            return DriftReport(rows, patients, None, [], counts)
        values = {name: round(psi(ref.shares, self._counts[name]), 4) for _, name, ref in self._columns}
        drifted = alerts(values, self.watch, self.alert_psi) if patients >= self.min_patients else []
        return DriftReport(rows, patients, values, drifted, counts)
