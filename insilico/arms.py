"""Who decides the regular insulin in each arm of the trial.

Every arm sees the same patients, meals, readings and meter errors; they differ only in the
dose given at a reading:

* ``oracle`` — simglucose's basal-bolus rule with the exact carbohydrate (carbs / CR, plus
  (glucose − 140) / CF above 150 mg/dL), at meals only;
* ``carb_error`` — the same rule with the person's carbohydrate estimate (±25 %);
* ``habit`` — the median of the patient's last five doses at that meal;
* ``advisor`` — the real device decision path (:class:`device.advisor.Advisor`: validation,
  SQLite store, features, LiteRT model, supervisor), **followed as a person would**: every
  suggested dose given, every advised snack eaten, at every reading; where the answer is
  "insufficient data — dose by the physician's plan" at a meal, the plan's dose is given (the
  basal-bolus rule with the person's carb estimate, as in ``carb_error``) and recorded;
* ``plan`` — the same device without a dose model: the dosing plan (by weight, titrated) and the
  supervisor alone, followed the same way — whether the network earns its place;
* ``model_only`` — the model's own number at every reading, without the supervisor;
* ``supervised_habit`` — the habit dose passed through the supervisor's rules.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol

from device.advisor import Advisor
from device.config import SafetyConfig
from device.contract.messages import Suggestion
from device.models.choice import ModelSlot
from device.models.inference import DoseModel
from device.rules.decision import decide_at
from device.state.store import Store
from domain.events import Event, Insulin, Kind
from insilico.protocol import Meal

ARMS = ("oracle", "carb_error", "habit", "advisor", "plan", "model_only", "supervised_habit")
ADVISOR_ARMS = ("advisor", "plan", "model_only", "supervised_habit")
FOLLOWED_ARMS = ("advisor", "plan")  # the answers are followed as a person would
# With a CGM reading every 5 min: model_only would give the model's own number at every value (a dose every
# 5 minutes), and supervised_habit is never followed; "all" means these.
CGM_ARMS = ("oracle", "carb_error", "habit", "advisor", "plan")
HABIT_DOSES = 5
BB_TARGET, BB_THRESHOLD = 140.0, 150.0  # simglucose's basal-bolus controller


@dataclass(frozen=True)
class Reading:
    """A glucose reading at which the arm decides the regular dose given now."""

    at: datetime
    mg_dl: float
    context: str
    meal: Meal | None  # announced at this reading
    carb_estimate: float | None  # the person's count of the meal's carbohydrate
    source: str = "meter"  # a finger-stick, or "cgm": a value of the sensor's stream
    ask: bool = False  # the meal is not announced with the reading: the person asks whether the patient eats
    skipped: bool = False  # a pre-meal reading whose meal the patient does not eat


@dataclass
class Decision:
    units: float
    status: str = "dose"
    rules: list[str] = field(default_factory=list)
    carbs_g: float = 0.0  # carbohydrate advised now beside a reading that is not low (a bedtime snack)


@dataclass
class PatientTerms:
    """What the basal-bolus rule knows about a patient (simglucose's Quest.csv)."""

    carb_ratio: float  # g/U
    correction_factor: float  # mg/dL per U


def basal_bolus(carbs: float, glucose: float, terms: PatientTerms) -> float:
    """simglucose's basal-bolus meal dose, U."""
    correction = (glucose - BB_TARGET) / terms.correction_factor if glucose > BB_THRESHOLD else 0.0
    return max(0.0, carbs / terms.carb_ratio + correction)


class Arm:
    """One arm for one patient: its history and its decision at each reading."""

    name = "arm"

    def __init__(self, patient: str, terms: PatientTerms) -> None:
        self.patient = patient.replace("#", "-")  # a device patient id: adolescent-001
        self.terms = terms
        self.doses: dict[str, list[float]] = defaultdict(list)  # meal slot -> regular doses, oldest first

    def observe(self, event: Event) -> None:
        """Something happened (warm-up or trial): an event of this patient's log."""

    def given(self, slot: str | None, units: float) -> None:
        """A regular dose was given at a meal of ``slot`` (or at no meal)."""
        if slot is not None and units > 0:
            self.doses[slot].append(units)

    def habit_dose(self, slot: str) -> float:
        recent = self.doses[slot][-HABIT_DOSES:]
        return float(statistics.median(recent)) if recent else 0.0

    def decide(self, reading: Reading) -> Decision:
        raise NotImplementedError


class OracleArm(Arm):
    name = "oracle"

    def decide(self, reading: Reading) -> Decision:
        if reading.meal is None:
            return Decision(0.0, "no_meal")
        return Decision(basal_bolus(reading.meal.carbs, reading.mg_dl, self.terms))


class CarbErrorArm(Arm):
    name = "carb_error"

    def decide(self, reading: Reading) -> Decision:
        if reading.meal is None or reading.carb_estimate is None:
            return Decision(0.0, "no_meal")
        return Decision(basal_bolus(reading.carb_estimate, reading.mg_dl, self.terms))


class HabitArm(Arm):
    name = "habit"

    def decide(self, reading: Reading) -> Decision:
        if reading.meal is None:
            return Decision(0.0, "no_meal")
        return Decision(self.habit_dose(reading.meal.slot))


class DecisionDevice(Protocol):
    """Where an advisor arm's events go: the in-process advisor, or a real device over MQTT."""

    def handle(self, event: Event) -> Suggestion | None:
        """Deliver one event; the device's answer to a reading or request, None for other events."""
        ...


class LocalDevice:
    """The device core in this process, with an in-memory SQLite store of its own."""

    def __init__(self, model: DoseModel | None, safety: SafetyConfig, clock: list[datetime]) -> None:
        slot = ModelSlot(model) if model is not None else ModelSlot(None, "the plan alone: no dose model")
        self.advisor = Advisor(Store(Path(":memory:")), slot, safety, "wall", wall_clock=lambda: clock[0])

    def handle(self, event: Event) -> Suggestion | None:
        outcome = self.advisor.handle(json.dumps(event.to_payload()).encode())
        if outcome.event is None:
            raise RuntimeError(f"the advisor refused a simulated event: {outcome.errors}")
        return outcome.suggestion


class AdvisorArm(Arm):
    """The real device decision path: in this process, or (``advisor`` arm only) a device over MQTT."""

    def __init__(
        self,
        name: str,
        patient: str,
        terms: PatientTerms,
        model: DoseModel | None,
        safety: SafetyConfig,
        clock: list[datetime],
        device: DecisionDevice | None = None,
    ) -> None:
        super().__init__(patient, terms)
        self.name = name
        self._clock = clock
        self.local = LocalDevice(model, safety, clock) if device is None else None
        self.device: DecisionDevice = device or self.local  # type: ignore[assignment]
        self.safety = safety
        self._count = 0
        self.rules: Counter[str] = Counter()
        self.statuses: Counter[str] = Counter()
        self.basal_statuses: Counter[str] = Counter()  # the answers to basal requests
        self.plan_doses = 0  # meal doses given by the physician's plan after an insufficient-data answer

    def _id(self) -> str:
        self._count += 1
        return f"{self.patient}-{self.name}-{self._count}"

    def observe(self, event: Event) -> None:
        self._feed(event)

    def _feed(self, event: Event) -> Suggestion | None:
        return self.device.handle(event)

    def reading_events(self, reading: Reading) -> list[Event]:
        """The events a reading sends: the meal announced with it (if any), then the glucose."""
        events = []
        if reading.meal is not None:
            carbs = None if reading.carb_estimate is None else round(reading.carb_estimate, 1)
            events.append(Event(self._id(), self.patient, reading.at, Kind.MEAL, size=reading.meal.size, carbs_g=carbs))
        glucose = Event(
            self._id(), self.patient, reading.at, Kind.GLUCOSE, mg_dl=reading.mg_dl, context=reading.context
        )
        return [*events, glucose]

    def decide(self, reading: Reading) -> Decision:
        answer = None
        events = self.reading_events(reading)
        for event in events[-1:] if reading.ask else events:
            answer = self._feed(event)
        if answer is None:
            raise RuntimeError(f"no answer to a reading of {self.patient} at {reading.at}")
        if answer.meal_first and reading.ask and reading.meal is not None and self.name in FOLLOWED_ARMS:
            self.statuses["meal_first"] += 1  # the person asked: the patient eats; the meal is recorded
            answer = self._feed(events[0]) or answer
        self.statuses[answer.status] += 1  # the answer to the reading; a meal sent with it is answered too
        self.rules.update(answer.rules)
        if self.name in FOLLOWED_ARMS:
            if answer.status == "insufficient_data" and reading.meal is not None and reading.carb_estimate is not None:
                plan = round(basal_bolus(reading.carb_estimate, reading.mg_dl, self.terms) * 2) / 2
                self.plan_doses += 1
                return Decision(plan, "physician_plan", list(answer.rules))
            units = answer.units if answer.status == "suggest" and not answer.meal_first else 0.0
            return Decision(units, answer.status, list(answer.rules), answer.carbs_g or 0.0)
        if self.local is None:
            raise RuntimeError(f"the {self.name} arm runs only in this process")
        if self.name == "model_only":
            raw = answer.model_units
            units = 0.0 if raw is None or not math.isfinite(raw) else max(0.0, math.floor(raw * 2) / 2)
            return Decision(units, "model")
        proposal = self.habit_dose(reading.meal.slot) if reading.meal is not None else 0.0
        history = self.local.advisor.history(self.patient)
        profile = self.safety.for_patient(self.patient)
        verdict = decide_at(history, reading.at, lambda _window: proposal, profile).verdict
        units = verdict.units if verdict.status == "suggest" else 0.0
        return Decision(units, verdict.status, list(verdict.rules), verdict.carbs_g or 0.0)

    def basal(self) -> float:
        """Ask the device for the basal dose now (a request for long-acting insulin): the units given.

        A suggested dose is given and recorded as a long-acting dose; any other answer gives none.
        """
        ask = Event(self._id(), self.patient, self._clock[0], Kind.REQUEST, insulin=Insulin.LONG)
        answer = self._feed(ask)
        if answer is None:
            raise RuntimeError(f"no answer to a basal request of {self.patient} at {self._clock[0]}")
        self.basal_statuses[answer.status] += 1
        if answer.status != "suggest":
            return 0.0
        self._feed(
            Event(self._id(), self.patient, self._clock[0], Kind.INSULIN, insulin=Insulin.LONG, units=answer.units)
        )
        return answer.units

    def given(self, slot: str | None, units: float) -> None:
        super().given(slot, units)
        if units > 0:
            self._feed(
                Event(self._id(), self.patient, self._clock[0], Kind.INSULIN, insulin=Insulin.REGULAR, units=units)
            )


def make_arm(
    name: str,
    patient: str,
    terms: PatientTerms,
    model: DoseModel | None,
    safety: SafetyConfig,
    clock: list[datetime],
    device: DecisionDevice | None = None,
) -> Arm:
    """One arm for one patient; ``device``: where the ``advisor`` arm's events go (default: this process)."""
    if name in ADVISOR_ARMS:
        if model is None and name != "plan":
            raise ValueError(f"the {name} arm needs a dose model")
        return AdvisorArm(
            name,
            patient,
            terms,
            model if name != "plan" else None,
            safety,
            clock,
            device if name == "advisor" else None,
        )
    arm_class = {"oracle": OracleArm, "carb_error": CarbErrorArm, "habit": HabitArm}.get(name)
    if arm_class is None:
        raise ValueError(f"unknown arm {name!r}; choose from {', '.join(ARMS)}")
    return arm_class(patient, terms)
