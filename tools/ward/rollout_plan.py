"""A staged rollout's decisions (pure): the waves, whether a device degraded during its soak, and
the rollout log folded back into where a killed rollout stands.

A device degraded when, at the end of its soak, it does not run the rolled-out version, reports a
model, database or clock problem, or its last hour's share of refused inputs or of answers the
supervisor withheld or lowered rose by more than its line against the last hour before the flash.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from device.contract.messages import DeviceStatus


@dataclass(frozen=True)
class Health:
    """What a rollout compares: the model a device runs and its last hour."""

    version: str | None
    sha256: str | None
    answers: int
    held_back: int  # answers withheld, or dose answers the supervisor lowered
    errors: int  # inputs refused
    problems: tuple[str, ...] = ()

    def to_json(self) -> dict:
        return {**self.__dict__, "problems": list(self.problems)}

    @classmethod
    def from_json(cls, data: dict) -> Health:
        return cls(**{**data, "problems": tuple(data.get("problems", ()))})


def health_of(status: DeviceStatus) -> Health:
    activity = status.activity
    answers = sum(activity.answers.values()) if activity else 0
    held_back = (activity.answers.get("withhold", 0) + activity.lowered) if activity else 0
    model = status.models[0] if status.models else None
    problems = tuple(p for p in (status.model_problem, status.storage_problem, status.clock_problem) if p)
    return Health(
        model.version if model else None,
        model.sha256 if model else None,
        answers,
        held_back,
        activity.errors if activity else 0,
        problems,
    )


@dataclass(frozen=True)
class Lines:
    """How much worse a canary may get during its soak."""

    max_error_rise: float = 0.05  # share of inputs refused, absolute
    max_held_back_rise: float = 0.10  # share of answers withheld or lowered, absolute
    min_answers: int = 20  # the shares are compared only with this many answers in each hour


def _share(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def degradation(before: Health, after: Health, version: str, lines: Lines) -> str | None:
    """Why ``after`` is worse than ``before`` (one line naming the figure and by how much), or None."""
    if after.version != version:
        return f"runs {after.version or 'no model'}, not the rolled-out {version}"
    if after.problems:
        return "reports a problem: " + "; ".join(after.problems)
    if min(before.answers, after.answers) >= lines.min_answers:
        held = (_share(before.held_back, before.answers), _share(after.held_back, after.answers))
        if held[1] - held[0] > lines.max_held_back_rise:
            return (
                f"withheld or lowered {held[1]:.0%} of its answers in the last hour, {held[0]:.0%} before "
                f"(+{held[1] - held[0]:.0%}, line +{lines.max_held_back_rise:.0%})"
            )
    inputs = (before.answers + before.errors, after.answers + after.errors)
    errors = (_share(before.errors, inputs[0]), _share(after.errors, inputs[1]))
    if inputs[1] >= lines.min_answers and errors[1] - errors[0] > lines.max_error_rise:
        return (
            f"refused {errors[1]:.0%} of its inputs in the last hour, {errors[0]:.0%} before "
            f"(+{errors[1] - errors[0]:.0%}, line +{lines.max_error_rise:.0%})"
        )
    return None


def waves(devices: list[str], canary: int, wave: int | None) -> list[list[str]]:
    """The canaries first, then the rest in waves of ``wave`` (all at once when None)."""
    rest = devices[canary:]
    size = wave or max(1, len(rest))
    return [devices[:canary], *[rest[i : i + size] for i in range(0, len(rest), size)]]


@dataclass
class RolloutState:
    """A rollout as its log tells it (one JSON object per line, appended as each step is done)."""

    bundle_sha256: str
    version: str
    devices: list[str]
    canary: int
    before: dict[str, Health]
    flashed: list[str] = field(default_factory=list)
    soaked: list[str] = field(default_factory=list)
    rolled_back: list[str] = field(default_factory=list)
    halted: str | None = None
    done: bool = False

    @classmethod
    def from_log(cls, text: str) -> RolloutState:
        """Fold the log's steps; the first must be ``start``."""
        steps = [json.loads(line) for line in text.splitlines() if line.strip()]
        if not steps or steps[0].get("step") != "start":
            raise ValueError("the rollout log does not begin with a start step")
        first = steps[0]
        state = cls(
            first["bundle_sha256"],
            first["version"],
            list(first["devices"]),
            int(first["canary"]),
            {d: Health.from_json(h) for d, h in first["before"].items()},
        )
        for step in steps[1:]:
            state.apply(step)
        return state

    def apply(self, step: dict) -> None:
        """Fold one step of the log (after ``start``) into the state."""
        kind = step.get("step")
        if kind == "flashed":
            self.flashed.append(step["device"])
        elif kind == "soaked":
            self.soaked += step["devices"]
        elif kind == "rolled_back":
            self.rolled_back.append(step["device"])
        elif kind == "halted":
            self.halted = step["why"]
        elif kind == "done":
            self.done = True
