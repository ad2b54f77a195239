"""The typed event model shared by training, the device and the tools (docs/contract.md, "Event")."""

from __future__ import annotations

import enum
from dataclasses import dataclass
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


class Insulin(str, enum.Enum):
    """Insulin preparations recorded in AIM-94."""

    REGULAR = "regular"
    NPH = "nph"
    ULTRALENTE = "ultralente"

    @property
    def label(self) -> str:
        """The name a nurse reads: "regular", "NPH", "ultralente"."""
        return "NPH" if self is Insulin.NPH else self.value


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
        return self.kind is Kind.INSULIN and self.insulin is Insulin.REGULAR

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
