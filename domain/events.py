"""The typed event model shared by training, the device and the tools (docs/contract.md, "Event")."""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from datetime import datetime


class Kind(str, enum.Enum):
    """Event kinds (docs/contract.md, "Event")."""

    GLUCOSE = "glucose"
    INSULIN = "insulin"
    MEAL = "meal"
    EXERCISE = "exercise"
    HYPO_SYMPTOMS = "hypo_symptoms"
    SPECIAL = "special"
    REQUEST = "request"
    PROFILE = "profile"
    NUTRITION = "nutrition"


class Insulin(str, enum.Enum):
    """Insulin preparations: the three of AIM-94 and today's analogues (rapid- and long-acting)."""

    REGULAR = "regular"
    NPH = "nph"
    ULTRALENTE = "ultralente"
    RAPID = "rapid"  # lispro, aspart, glulisine
    LONG = "long"  # glargine, detemir, degludec

    @property
    def label(self) -> str:
        """The name a nurse reads: "regular", "NPH", "ultralente", "rapid-acting", "long-acting"."""
        return {"nph": "NPH", "rapid": "rapid-acting", "long": "long-acting"}.get(self.value, self.value)

    @property
    def for_meals(self) -> bool:
        """Meal and correction insulin (regular, rapid-acting); the others are basal."""
        return self in (Insulin.REGULAR, Insulin.RAPID)


NUTRITION_STATES = ("eating", "npo", "uncertain")  # npo: nothing by mouth
DIABETES_TYPES = ("type1", "type2", "other")
KIDNEY_STATES = ("normal", "impaired")


@dataclass(frozen=True, slots=True)
class PatientProfile:
    """What a weight-based dosing plan starts from (a ``profile`` event; docs/safety.md, "The dosing plan").

    A profile event updates the fields it carries; the ones it leaves out keep their earlier values
    (:meth:`updated`). Height is recorded, not dosed on.
    """

    weight_kg: float
    age_years: float | None = None
    diabetes_type: str | None = None
    kidney: str | None = None
    insulin_naive: bool | None = None
    steroids: bool | None = None
    height_cm: float | None = None

    def to_payload(self) -> dict:
        """The profile's fields that are set, as in an event payload."""
        return {name: getattr(self, name) for name in self.__slots__ if getattr(self, name) is not None}

    def updated(self, newer: PatientProfile) -> PatientProfile:
        """This profile with every field ``newer`` sets taken from it (a later ``profile`` event)."""
        return replace(self, **newer.to_payload())

    def changes_from(self, older: PatientProfile) -> list[str]:
        """What differs from ``older``, in words ("weight 80 → 72 kg"); empty when nothing does."""
        words = []
        for name in self.__slots__:
            before, after = getattr(older, name), getattr(self, name)
            if before != after:
                label, unit = PROFILE_WORDS[name]
                words.append(f"{label} {_word(before)} → {_word(after)}{unit}")
        return words


PROFILE_WORDS = {  # field -> (what a nurse reads, unit)
    "weight_kg": ("weight", " kg"),
    "age_years": ("age", " years"),
    "diabetes_type": ("diabetes type", ""),
    "kidney": ("kidneys", ""),
    "insulin_naive": ("insulin-naive", ""),
    "steroids": ("steroids", ""),
    "height_cm": ("height", " cm"),
}


def _word(value: object) -> str:
    if value is None:
        return "not given"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


GLUCOSE_CONTEXTS = (
    "pre_breakfast",
    "post_breakfast",
    "pre_lunch",
    "post_lunch",
    "pre_supper",
    "post_supper",
    "pre_snack",
    "unspecified",
)
AMOUNTS = ("typical", "more", "less")

MG_DL_PER_MMOL_L = 18.0182


@dataclass(frozen=True, slots=True)
class Event:
    """One validated event of one patient.

    ``ts`` is timezone-aware; its wall-clock time (as sent, in the sender's offset) is what
    the time-of-day features read. Only the fields of the event's ``kind`` are set.
    """

    id: str
    patient: str
    ts: datetime
    kind: Kind
    mg_dl: float | None = None
    context: str | None = None
    insulin: Insulin | None = None
    units: float | None = None
    size: str | None = None
    carbs_g: float | None = None
    intensity: str | None = None
    note: str | None = None
    eaten_share: float | None = None  # meal: the share of it eaten (0–1), when not all of it
    nutrition: str | None = None  # nutrition: eating, npo or uncertain
    profile: PatientProfile | None = None

    @property
    def reading(self) -> float:
        """The mg/dL of a glucose event (validation guarantees it is there)."""
        if self.mg_dl is None:
            raise ValueError(f"event {self.id} is not a glucose reading")
        return self.mg_dl

    @property
    def dose(self) -> float:
        """The units of an insulin event (validation guarantees they are there)."""
        if self.units is None:
            raise ValueError(f"event {self.id} is not an insulin dose")
        return self.units

    @property
    def is_insulin(self) -> bool:
        return self.kind is Kind.INSULIN

    @property
    def is_regular_dose(self) -> bool:
        """A dose of regular insulin (AIM-94's meal insulin, the dose model's target)."""
        return self.kind is Kind.INSULIN and self.insulin is Insulin.REGULAR

    @property
    def is_meal_dose(self) -> bool:
        """A dose of meal or correction insulin: regular or rapid-acting."""
        return self.kind is Kind.INSULIN and self.insulin is not None and self.insulin.for_meals

    def to_payload(self) -> dict:
        """The JSON payload of this event (docs/contract.md) (inverse of validation)."""
        payload: dict = {"id": self.id, "patient": self.patient, "ts": self.ts.isoformat(), "kind": self.kind.value}
        if self.kind is Kind.GLUCOSE:
            payload["mg_dl"] = self.mg_dl
            if self.context is not None:
                payload["context"] = self.context
        elif self.kind is Kind.INSULIN:
            payload["insulin"] = self.insulin.value if self.insulin else None
            payload["units"] = self.units
        elif self.kind is Kind.MEAL:
            payload["size"] = self.size
            if self.carbs_g is not None:
                payload["carbs_g"] = self.carbs_g
            if self.eaten_share is not None:
                payload["eaten_share"] = self.eaten_share
        elif self.kind is Kind.REQUEST and self.insulin is not None:
            payload["insulin"] = self.insulin.value
        elif self.kind is Kind.NUTRITION:
            payload["state"] = self.nutrition
        elif self.kind is Kind.PROFILE and self.profile is not None:
            payload.update(self.profile.to_payload())
        elif self.kind is Kind.EXERCISE:
            payload["intensity"] = self.intensity
        elif self.kind is Kind.SPECIAL and self.note is not None:
            payload["note"] = self.note
        return payload


def within_timestamp_rank(event: Event) -> int:
    """Order of kinds inside one timestamp when replaying: what is known first comes first.

    At a decision point the non-insulin records of the same timestamp are known and the
    insulin records are not (docs/evaluation.md, "Dose model on AIM-94"), so a replay sends insulin last.
    """
    return 1 if event.is_insulin else 0
