"""How a companion model's out-of-fold scores hold up in each group of patients (pure numpy).

For every attribute (sex, age band, race/ethnicity, insurance) and every group in it: the
group's size and positives, AUROC and AUPRC with bootstrap intervals, the recall at the
cohort's 80 %-recall threshold (Wilson interval), and calibration in the large — the observed
rate beside the mean predicted probability. A group with fewer than ``min_class`` positives or
negatives is reported as too small to read: its size is shown, its ranking metrics are not.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from model import classification_metrics

MIN_CLASS = 10  # positives and negatives a group needs before its figures are read
WILSON_Z = 1.959963984540054  # 95 %


@dataclass(frozen=True)
class GroupFigures:
    """One group's row of the fairness table (ranking figures None when the group is too small)."""

    attribute: str
    group: str
    n: int
    positives: int
    observed_rate: float
    mean_predicted: float
    readable: bool
    auroc: float | None = None
    auroc_ci95: tuple[float, float] | None = None
    auprc: float | None = None
    auprc_ci95: tuple[float, float] | None = None
    recall: float | None = None
    recall_ci95: tuple[float, float] | None = None

    def to_json(self) -> dict:
        return asdict(self)


def wilson_interval(successes: int, trials: int, z: float = WILSON_Z) -> tuple[float, float] | None:
    """Wilson score interval of a proportion (None without trials)."""
    if trials == 0:
        return None
    share = successes / trials
    denominator = 1.0 + z * z / trials
    centre = (share + z * z / (2 * trials)) / denominator
    half = z * np.sqrt(share * (1 - share) / trials + z * z / (4 * trials * trials)) / denominator
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def recall_at(y: np.ndarray, p: np.ndarray, threshold: float) -> float:
    """Share of positives scored at or above ``threshold`` (NaN without positives)."""
    positives = np.asarray(p)[np.asarray(y) == 1]
    return float((positives >= threshold).mean()) if len(positives) else float("nan")


def group_figures(
    attribute: str,
    group: str,
    y: np.ndarray,
    p: np.ndarray,
    threshold: float,
    resamples: int,
    min_class: int = MIN_CLASS,
) -> GroupFigures:
    positives = int(y.sum())
    readable = min(positives, len(y) - positives) >= min_class
    base = GroupFigures(attribute, group, len(y), positives, float(y.mean()), float(p.mean()), readable)
    if not readable:
        return base
    caught = int((p[y == 1] >= threshold).sum())
    return GroupFigures(
        **{
            **asdict(base),
            "auroc": classification_metrics.auroc(y, p),
            "auroc_ci95": classification_metrics.bootstrap_ci(y, p, classification_metrics.auroc, resamples),
            "auprc": classification_metrics.auprc(y, p),
            "auprc_ci95": classification_metrics.bootstrap_ci(y, p, classification_metrics.auprc, resamples),
            "recall": caught / positives,
            "recall_ci95": wilson_interval(caught, positives),
        }
    )


def fairness_table(
    y: np.ndarray,
    p: np.ndarray,
    threshold: float,
    groups: Mapping[str, Sequence[str]],
    resamples: int = 200,
    min_class: int = MIN_CLASS,
) -> list[GroupFigures]:
    """The whole cohort's row, then every attribute's groups, largest first, each with its figures."""
    y, p = np.asarray(y, dtype=int), np.asarray(p, dtype=float)
    rows = [group_figures("all", "all patients", y, p, threshold, resamples, min_class)]
    for attribute, labels in groups.items():
        labels_array = np.asarray(labels, dtype=object)
        if len(labels_array) != len(y):
            raise ValueError(f"{attribute}: {len(labels_array)} group labels for {len(y)} samples")
        names, counts = np.unique(labels_array.astype(str), return_counts=True)
        for name in names[np.argsort(-counts, kind="stable")]:
            member = labels_array == name
            rows.append(group_figures(attribute, str(name), y[member], p[member], threshold, resamples, min_class))
    return rows
