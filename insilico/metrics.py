"""Glucose outcome metrics of a trace (pure logic, numpy only).

The consensus metrics of continuous glucose monitoring (Battelino et al., Diabetes Care 2019):
time in range 70–180 mg/dL, below 70 and 54, above 180 and 250, mean, coefficient of
variation, the glucose management indicator, and Kovatchev's low and high blood glucose
indices. Level-2 hypoglycaemia events are runs of at least 15 minutes below 54 mg/dL.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

# Battelino 2019 targets for most adults with type 1 diabetes: (metric, comparison, limit)
CONSENSUS_TARGETS: tuple[tuple[str, str, float], ...] = (
    ("tir_70_180", ">", 70.0),
    ("tbr_70", "<", 4.0),
    ("tbr_54", "<", 1.0),
    ("tar_180", "<", 25.0),
    ("tar_250", "<", 5.0),
    ("cv", "<=", 36.0),
)
LEVEL2_MIN = 15  # minutes below 54 mg/dL that make a level-2 event
NIGHT = (0, 6)  # hours


@dataclass(frozen=True)
class GlucoseMetrics:
    """Outcomes of one trace (percentages of time, mg/dL, %, indices, counts)."""

    tir_70_180: float
    tbr_70: float
    tbr_54: float
    tar_180: float
    tar_250: float
    mean: float
    cv: float
    gmi: float
    lbgi: float
    hbgi: float
    night_tbr_70: float
    level2_events: int
    minutes: int

    def to_json(self) -> dict[str, float | int]:
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in asdict(self).items()}

    def meets(self) -> dict[str, bool]:
        """Which consensus targets this trace meets."""
        values = asdict(self)
        return {name: _compare(values[name], op, limit) for name, op, limit in CONSENSUS_TARGETS}


def _compare(value: float, op: str, limit: float) -> bool:
    return {"<": value < limit, "<=": value <= limit, ">": value > limit}[op]


def risk_indices(glucose: np.ndarray) -> tuple[float, float]:
    """Kovatchev's LBGI and HBGI of mg/dL values."""
    g = np.clip(np.asarray(glucose, dtype=np.float64), 1.0, None)
    f = 1.509 * (np.log(g) ** 1.084 - 5.381)
    risk = 10.0 * f * f
    return float(np.mean(np.where(f < 0, risk, 0.0))), float(np.mean(np.where(f > 0, risk, 0.0)))


def level2_events(glucose: np.ndarray, minutes_per_sample: float = 1.0) -> int:
    """Runs of at least :data:`LEVEL2_MIN` minutes below 54 mg/dL."""
    below = np.asarray(glucose) < 54.0
    events, run = 0, 0
    needed = int(np.ceil(LEVEL2_MIN / minutes_per_sample))
    for flag in below:
        run = run + 1 if flag else 0
        if run == needed:
            events += 1
    return events


def glucose_metrics(glucose: np.ndarray, minute_of_day: np.ndarray) -> GlucoseMetrics:
    """The metrics of a per-minute trace; ``minute_of_day`` (0–1439) places each sample in the day."""
    g = np.asarray(glucose, dtype=np.float64)
    if g.size == 0:
        raise ValueError("an empty glucose trace has no metrics")

    def pct(mask: np.ndarray) -> float:
        return float(100.0 * np.mean(mask))

    mean = float(np.mean(g))
    lbgi, hbgi = risk_indices(g)
    night = (minute_of_day >= NIGHT[0] * 60) & (minute_of_day < NIGHT[1] * 60)
    return GlucoseMetrics(
        tir_70_180=pct((g >= 70) & (g <= 180)),
        tbr_70=pct(g < 70),
        tbr_54=pct(g < 54),
        tar_180=pct(g > 180),
        tar_250=pct(g > 250),
        mean=mean,
        cv=float(100.0 * np.std(g) / mean) if mean > 0 else 0.0,  # a collapsed trace has no CV
        gmi=3.31 + 0.02392 * mean,
        lbgi=lbgi,
        hbgi=hbgi,
        night_tbr_70=pct(g[night] < 70) if night.any() else 0.0,
        level2_events=level2_events(g),
        minutes=int(g.size),
    )
