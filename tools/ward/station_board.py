"""What a nurses' station shows for several devices, built from their MQTT topics (pure logic).

Each device's ``suggestions``, ``status`` and ``events`` (for doses recorded) update
one :class:`~device.contract.messages.PatientRow` per patient. A station sees a patient from the first
answer it receives; it records nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from device.contract.messages import DeviceStatus, Message, PatientRow, Suggestion
from device.contract.schema import SchemaError
from device.rules.check_schedule import is_overdue
from device.rules.dose_responses import expires_at
from device.rules.safety import SafetyProfile
from domain.validation import ValidationError, decode_event
from tools.ward.fleet_board import FleetRow, fleet_row

LOW_MG_DL = 70.0
LEAVES = ("suggestions", "status", "events")
_NO_FUTURE_CHECK = datetime(9000, 1, 1, tzinfo=UTC)  # the device judged the event's time; the station only reads it


@dataclass(frozen=True, slots=True)
class DeviceOverview(Message):
    """One device on the station: its state and its patients."""

    device_id: str
    state: str
    rows: list[PatientRow]
    timezone: str | None = None  # the device's ward zone (from its status): every time is shown in it
    fleet: FleetRow | None = None  # the device itself, from its latest status (tools/ward/fleet_board.py)


@dataclass(frozen=True, slots=True)
class StationOverview(Message):
    """``GET /api/overview`` of ``advisor station``."""

    now: str
    devices: list[DeviceOverview]
    undecodable: int
    timezone: str | None = None  # the ward's zone: the first one a device told, for the station's own times
    lows_since: str | None = None  # lows are counted from here when the station has run less than 24 h


@dataclass
class _Patient:
    suggestion: Suggestion
    dose_recorded: bool = False
    lows: list[datetime] = field(default_factory=list)


class StationBoard:
    """The latest answer per patient per device, and each device's state."""

    def __init__(
        self,
        devices: list[str],
        expiry_s: float = 900,
        profile: SafetyProfile | None = None,
        started: datetime | None = None,
    ) -> None:
        """``started``: when the station began listening; it knows no lows before."""
        self.started = started or datetime.now(UTC)
        self.devices = list(devices)
        self.expiry_s = expiry_s
        self.profile = profile or SafetyProfile()
        self.states: dict[str, str] = dict.fromkeys(devices, "unknown")
        self.zones: dict[str, str] = {}
        self.statuses: dict[str, DeviceStatus] = {}
        self.patients: dict[str, dict[str, _Patient]] = {d: {} for d in devices}
        self.undecodable = 0

    def update(self, device_id: str, leaf: str, payload: bytes) -> None:
        """One message from ``advisor/<device_id>/<leaf>``; a payload that does not fit is counted, not fatal."""
        try:
            if leaf == "suggestions":
                self._suggestion(device_id, Suggestion.from_json(payload))
            elif leaf == "status":
                status = DeviceStatus.from_json(payload)
                self.states[device_id] = status.state
                self.zones[device_id] = status.timezone
                self.statuses[device_id] = status
            elif leaf == "events":
                self._event(device_id, payload)
        except (SchemaError, ValidationError, ValueError):
            self.undecodable += 1

    def _suggestion(self, device_id: str, suggestion: Suggestion) -> None:
        known = self.patients[device_id].get(suggestion.patient)
        lows = [] if known is None else known.lows
        if known is not None and known.suggestion.id == suggestion.id:
            return  # a repeat (delivery is at least once)
        at = datetime.fromisoformat(suggestion.ts)
        if suggestion.glucose_mg_dl is not None and suggestion.glucose_mg_dl < LOW_MG_DL:
            lows = [*lows, at]
        self.patients[device_id][suggestion.patient] = _Patient(suggestion, lows=lows)

    def _event(self, device_id: str, payload: bytes) -> None:
        data = json.loads(payload)
        if data.get("kind") != "insulin":
            return
        event = decode_event(payload, _NO_FUTURE_CHECK)
        known = self.patients[device_id].get(event.patient)
        if known is not None and event.ts >= datetime.fromisoformat(known.suggestion.ts):
            known.dose_recorded = True

    def overview(self, now: datetime, linked: bool = True) -> StationOverview:
        """Every device and its patients as of ``now``, overdue checks first (``linked``: the station's broker link)."""
        devices = []
        for device_id in self.devices:
            rows = [self._row(p, now) for p in self.patients[device_id].values()]
            rows.sort(key=lambda r: (not r.check_overdue, not r.dose_pending, r.patient))
            state = self.states[device_id] if linked else "unknown: the station is not connected to the broker"
            status = self.statuses.get(device_id)
            fleet = None if status is None else fleet_row(status, now)
            devices.append(DeviceOverview(device_id, state, rows, self.zones.get(device_id), fleet))
        zone = next((self.zones[d] for d in self.devices if d in self.zones), None)
        since = self.started.isoformat(timespec="seconds") if now - self.started < timedelta(hours=24) else None
        return StationOverview(now.isoformat(timespec="seconds"), devices, self.undecodable, zone, since)

    def _row(self, patient: _Patient, now: datetime) -> PatientRow:
        s = patient.suggestion
        check = None if s.next_check_at is None else datetime.fromisoformat(s.next_check_at)
        made = datetime.fromisoformat(s.ts)
        age = None if s.glucose_age_min is None else round(s.glucose_age_min + (now - made).total_seconds() / 60, 1)
        live = now < expires_at(s, self.expiry_s, self.profile)
        patient.lows = [t for t in patient.lows if t >= now - timedelta(hours=24)]
        return PatientRow(
            patient=s.patient,
            glucose_mg_dl=s.glucose_mg_dl,
            glucose_age_min=age,
            status=s.status,
            units=s.units if s.is_dose else None,
            dose_pending=s.is_dose and live and not patient.dose_recorded,
            live=live and not patient.dose_recorded,
            response="given" if patient.dose_recorded else None,
            next_check_at=s.next_check_at,
            check_overdue=is_overdue(check, now),
            lows_24h=len(patient.lows),
        )
