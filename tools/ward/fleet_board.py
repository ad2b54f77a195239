"""A ward of devices at a glance, from their retained ``status`` messages (pure logic).

One :class:`FleetRow` per device: its models, whether it is online and since when, what is wrong,
overdue checks, what it answered and refused in the last hour, drift and outcome alerts. A device
whose last status is online but older than :data:`SILENT_AFTER_S` is ``silent``: it stopped
publishing its heartbeat without the broker announcing its last will.

Drift is also read per ward (:func:`ward_drift`): a device per bed sees one or two patients, too few
to judge on its own, so the watched features' bin counts of every device of a ward running the same
model are summed and read as one population.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from device.contract.messages import DeviceStatus, DriftStatus, Message
from domain.drift import DeviceCounts, PooledDrift, pooled_drift

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


@dataclass(frozen=True, slots=True)
class WardDrift(Message):
    """The dose model's inputs over every reporting device of one ward that runs the same model."""

    ward: str | None
    dose_model: str | None
    devices: list[str]
    decisions: int
    patients: int
    alert_psi: float
    min_patients: int
    psi: dict[str, float]
    drifted: list[str]
    note: str


def ward_drift(statuses: Mapping[str, DeviceStatus], ward: str | None = None) -> list[WardDrift]:
    """One pooled reading per ward and model, from the devices that are not offline and report counts."""
    groups: dict[tuple, list[DeviceStatus]] = {}
    for _, status in sorted(statuses.items()):
        drift = status.drift
        if status.state == "offline" or drift is None or not drift.counts or not drift.expected:
            continue
        if ward is not None and status.ward != ward:
            continue
        model = status.models[0].version if status.models else None
        reference = tuple(sorted((name, tuple(shares)) for name, shares in drift.expected.items()))
        groups.setdefault((status.ward, model, reference), []).append(status)
    readings = []
    for (ward_name, model, _), members in groups.items():
        first = members[0].drift
        assert first is not None
        pooled = pooled_drift(
            [DeviceCounts(s.drift.decisions, s.drift.patients, s.drift.counts) for s in members if s.drift],
            first.expected,
            first.alert_psi,
            first.min_patients,
            first.min_decisions,
        )
        readings.append(
            WardDrift(
                ward=ward_name,
                dose_model=model,
                devices=[s.device_id for s in members],
                decisions=pooled.decisions,
                patients=pooled.patients,
                alert_psi=first.alert_psi,
                min_patients=first.min_patients,
                psi=pooled.psi,
                drifted=pooled.drifted,
                note=_ward_note(pooled, first),
            )
        )
    return readings


def _ward_note(pooled: PooledDrift, first: DriftStatus) -> str:
    patients, devices, psi, drifted = pooled.patients, pooled.devices, pooled.psi, pooled.drifted
    largest = max(psi, key=lambda name: psi[name]) if psi else None
    if largest is None:
        return "no watched feature reported"
    if pooled.decisions < first.min_decisions:
        counted = f"{pooled.decisions} of the first {first.min_decisions} decisions"
        return f"measuring: {counted} counted on {devices} device(s)"
    if patients < first.min_patients:
        return (
            f"decisions of {patients} patient(s) on {devices} device(s): drift is judged on {first.min_patients} "
            f"or more (largest watched PSI {psi[largest]:.2f})"
        )
    if drifted:
        worst = drifted[0]
        return (
            f"the ward's model inputs no longer look like its training data ({worst}: PSI {psi[worst]:.2f}, alert "
            f"at {first.alert_psi:g}, {patients} patients on {devices} device(s)); tell the diabetes team so the "
            "model is reviewed"
        )
    return (
        f"the ward's model inputs look like its training data (largest watched PSI {psi[largest]:.2f}, alert at "
        f"{first.alert_psi:g}; {patients} patients on {devices} device(s))"
    )


def ward_drift_lines(readings: list[WardDrift]) -> str:
    """The pooled readings, one line each, for a terminal."""
    return "\n".join(
        f"ward {r.ward or '—'}, dose model {r.dose_model or 'none'}: {'DRIFT' if r.drifted else 'ok'} — {r.note}"
        for r in readings
    )
