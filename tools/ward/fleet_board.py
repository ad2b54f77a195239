"""A ward of devices at a glance, from their retained ``status`` messages (pure logic).

One :class:`FleetRow` per device: its models, whether it is online and since when, what is wrong,
overdue checks, what it answered and refused in the last hour, drift and outcome alerts. A device
whose last status is online but older than :data:`SILENT_AFTER_S` is ``silent``: it stopped
publishing its heartbeat without the broker announcing its last will.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from device.contract.messages import DeviceStatus, Message

SILENT_AFTER_S = 180.0  # three missed heartbeats (the device publishes its status every 60 s)


@dataclass(frozen=True, slots=True)
class FleetRow(Message):
    """One device in ``advisor fleet`` and on the station page."""

    device_id: str
    ward: str | None
    state: str  # online, starting, offline, silent
    since: str | None  # online: when the process started; offline: when it last connected
    last_heard: str | None  # the status's own time
    dose_model: str | None
    companion_models: dict[str, str]
    problems: list[str]
    checks_overdue: int
    answers_1h: int
    lowered_1h: int
    errors_1h: int
    drifted: list[str]
    outcome_alerts: list[str]


def fleet_row(status: DeviceStatus, now: datetime) -> FleetRow:
    """The row of one device's latest status, read at ``now``."""
    heard = datetime.fromisoformat(status.published_at) if status.published_at else None
    state: str = status.state
    if state != "offline" and heard is not None and (now - heard).total_seconds() > SILENT_AFTER_S:
        state = "silent"
    since = status.started_at if status.state != "offline" else status.published_at
    problems = [p for p in (status.model_problem, status.storage_problem, status.clock_problem) if p]
    activity = status.activity
    return FleetRow(
        device_id=status.device_id,
        ward=status.ward,
        state=state,
        since=since,
        last_heard=status.published_at,
        dose_model=status.models[0].version if status.models else None,
        companion_models={name: m.version for name, m in sorted(status.risk_models.items())},
        problems=problems,
        checks_overdue=len(status.checks_overdue),
        answers_1h=sum(activity.answers.values()) if activity else 0,
        lowered_1h=activity.lowered if activity else 0,
        errors_1h=activity.errors if activity else 0,
        drifted=list(status.drift.drifted) if status.drift else [],
        outcome_alerts=list(status.outcomes.alerts) if status.outcomes else [],
    )


def fleet_rows(statuses: Mapping[str, DeviceStatus], now: datetime, ward: str | None = None) -> list[FleetRow]:
    """Every device's row (of ``ward`` only, when given), by device id."""
    rows = [fleet_row(s, now) for _, s in sorted(statuses.items())]
    return [r for r in rows if ward is None or r.ward == ward]


def fleet_table(rows: list[FleetRow]) -> str:
    """The rows as a plain-text table for a terminal."""
    head = ("device", "ward", "state", "since", "dose model", "answers 1h", "lowered", "errors", "overdue", "flags")
    lines = [head]
    for r in rows:
        flags = [*r.problems]
        flags += [f"drift: {', '.join(r.drifted)}"] if r.drifted else []
        flags += [f"lows: {len(r.outcome_alerts)} alert(s)"] if r.outcome_alerts else []
        lines.append(
            (
                r.device_id,
                r.ward or "—",
                r.state,
                (r.since or "—")[:16].replace("T", " "),
                r.dose_model or "none",
                str(r.answers_1h),
                str(r.lowered_1h),
                str(r.errors_1h),
                str(r.checks_overdue),
                "; ".join(flags) or "—",
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() for line in lines)
