"""Insulin on board from the exponential activity curve shared by OpenAPS, AndroidAPS and Loop.

The curve is parameterised by the insulin's duration of action ``td`` and its peak time
``tp`` (minutes). For regular insulin the AIM-94 domain description gives onset 15–45 min,
peak 1–3 h and duration 4–6 h; the defaults below sit inside those ranges. Rapid-acting
analogues act sooner and shorter (oref0's rapid-acting curve). Long-acting insulin is basal:
it is not counted as insulin on board against a meal or a correction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ActivityCurve:
    """Exponential insulin activity curve with duration and peak in minutes."""

    duration_min: float = 360.0
    peak_min: float = 120.0

    def __post_init__(self) -> None:
        if not 0 < self.peak_min < self.duration_min / 2:
            raise ValueError("insulin peak must be positive and under half the duration of action")

    def fraction_remaining(self, minutes_since_dose: float) -> float:
        """Share of a dose still on board ``minutes_since_dose`` after it was given (1 → 0)."""
        t = minutes_since_dose
        if t <= 0:
            return 1.0
        td, tp = self.duration_min, self.peak_min
        if t >= td:
            return 0.0
        tau = tp * (1 - tp / td) / (1 - 2 * tp / td)
        a = 2 * tau / td
        s = 1 / (1 - a + (1 + a) * math.exp(-td / tau))
        remaining = 1 - s * (1 - a) * ((t * t / (tau * td * (1 - a)) - t / tau - 1) * math.exp(-t / tau) + 1)
        return min(1.0, max(0.0, remaining))


REGULAR_INSULIN = ActivityCurve()
# Rapid-acting analogues (lispro, aspart, glulisine): oref0's "rapid-acting" curve, peak 75 min, 5 h.
RAPID_ANALOGUE = ActivityCurve(duration_min=300.0, peak_min=75.0)
