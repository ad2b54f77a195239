"""Plausibility limits for event values (docs/contract.md, "Event"), shared by every reader and validator."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Range:
    """A closed interval of accepted values with its unit, for messages."""

    low: float
    high: float
    unit: str

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high

    def describe(self) -> str:
        return f"{self.low:g}–{self.high:g} {self.unit}"


GLUCOSE_MG_DL = Range(10.0, 1000.0, "mg/dL")
INSULIN_UNITS = Range(0.0, 100.0, "U")
CARBS_G = Range(0.0, 500.0, "g")
WEIGHT_KG = Range(20.0, 300.0, "kg")
AGE_YEARS = Range(0.0, 120.0, "years")
HEIGHT_CM = Range(50.0, 250.0, "cm")
EATEN_SHARE = Range(0.0, 1.0, "of the meal")
FUTURE_TOLERANCE_S = 300.0
