"""Decode and validate one event payload (docs/contract.md, "Event"): bytes in, :class:`Event` or a reason.

Pure logic, no I/O. Every rejection is a :class:`ValidationError` carrying the event id when
one could be read, so the device can answer on its errors topic and keep serving. Hostile
input is expected: oversized payloads, deep nesting, NaN/Infinity, wrong types, absurd values
and timestamps, path-like identifiers.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from domain.events import (
    AMOUNTS,
    DIABETES_TYPES,
    GLUCOSE_CONTEXTS,
    KIDNEY_STATES,
    MG_DL_PER_MMOL_L,
    NUTRITION_STATES,
    Event,
    Insulin,
    Kind,
    PatientProfile,
)
from domain.limits import (
    AGE_YEARS,
    CARBS_G,
    EATEN_SHARE,
    FUTURE_TOLERANCE_S,
    GLUCOSE_MG_DL,
    HEIGHT_CM,
    INSULIN_UNITS,
    WEIGHT_KG,
    Range,
)
from domain.visits import Visit

MAX_PAYLOAD_BYTES = 64 * 1024
MAX_NESTING = 8
MAX_NOTE_CHARS = 500
EARLIEST_TS = datetime(1900, 1, 1, tzinfo=UTC)
MIN_UTC_OFFSET, MAX_UTC_OFFSET = timedelta(hours=-12), timedelta(hours=14)  # every time zone in use lies between
IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")  # the whole string: see is_identifier

COMMON_FIELDS = ("id", "patient", "ts", "kind")
PROFILE_FIELDS = ("weight_kg", "age_years", "diabetes_type", "kidney", "insulin_naive", "steroids", "height_cm")
KIND_FIELDS: dict[Kind, tuple[str, ...]] = {
    Kind.GLUCOSE: ("mg_dl", "value", "unit", "context"),
    Kind.INSULIN: ("insulin", "units"),
    Kind.MEAL: ("size", "carbs_g", "eaten_share"),
    Kind.EXERCISE: ("intensity",),
    Kind.HYPO_SYMPTOMS: (),
    Kind.SPECIAL: ("note",),
    Kind.REQUEST: ("insulin",),
    Kind.PROFILE: PROFILE_FIELDS,
    Kind.NUTRITION: ("state",),
}


class ValidationError(ValueError):
    """An event payload was rejected; ``reason`` is one plain line, ``event_id`` if known."""

    def __init__(self, reason: str, event_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.event_id = event_id


def _nesting_depth(raw: bytes) -> int:
    """Deepest bracket nesting outside strings; a linear scan that cannot recurse."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return deepest


class DuplicateKey(ValueError):
    """A JSON object names one key twice (``{"units": 6, "units": 99}``): which value was meant is unknown."""

    def __init__(self, key: str) -> None:
        super().__init__(f"the key {key!r} appears twice")
        self.key = key


def unique_keys(pairs: list[tuple[str, object]]) -> dict:
    """``json.loads`` object hook: a dict, or :class:`DuplicateKey` when a key repeats."""
    found: dict = {}
    for key, value in pairs:
        if key in found:
            raise DuplicateKey(key)
        found[key] = value
    return found


def parse_json_object(raw: bytes, max_bytes: int = MAX_PAYLOAD_BYTES) -> dict:
    """Strict JSON object from untrusted bytes: size, nesting, UTF-8 and constants checked."""
    if len(raw) > max_bytes:
        raise ValidationError(f"payload is {len(raw)} bytes, more than the limit of {max_bytes}")
    if (raw.count(b"[") + raw.count(b"{")) > MAX_NESTING and _nesting_depth(raw) > MAX_NESTING:
        raise ValidationError(f"JSON is nested deeper than {MAX_NESTING} levels")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValidationError("payload is not UTF-8") from None
    try:
        data = json.loads(text, object_pairs_hook=unique_keys)  # NaN/Infinity: floats the field checks reject
    except DuplicateKey as exc:
        raise ValidationError(f"payload has the key '{exc.key}' twice; send each field once") from None
    except ValueError as exc:
        raise ValidationError(f"payload is not valid JSON: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ValidationError("payload must be a JSON object")
    return data


def is_identifier(value: object) -> bool:
    """An event or patient id: 1–64 letters, digits, ``_ . : -``, starting with a letter or digit.

    The whole string must match (``"p1\\n"`` is not ``p1``): a lookalike id must never pass.
    """
    return isinstance(value, str) and IDENTIFIER.fullmatch(value) is not None


def _identifier(data: dict, key: str, event_id: str | None) -> str:
    value = data.get(key)
    if value is None:
        raise ValidationError(f"missing field '{key}'", event_id)
    if not is_identifier(value):
        raise ValidationError(
            f"'{key}' must be 1–64 characters of letters, digits, '_', '.', ':' or '-', "
            "starting with a letter or digit",
            event_id,
        )
    return value


def _number(data: dict, key: str, event_id: str | None) -> float:
    value = _optional_number(data, key, event_id)
    if value is None:
        raise ValidationError(f"missing field '{key}'", event_id)
    return value


def _optional_number(data: dict, key: str, event_id: str | None) -> float | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValidationError(f"'{key}' must be a number", event_id)
    value = float(value)
    if not math.isfinite(value):
        raise ValidationError(f"'{key}' must be a finite number", event_id)
    return value


def _choice(data: dict, key: str, allowed: tuple[str, ...], event_id: str | None) -> str:
    value = _optional_choice(data, key, allowed, event_id)
    if value is None:
        raise ValidationError(f"missing field '{key}'", event_id)
    return value


def _optional_choice(data: dict, key: str, allowed: tuple[str, ...], event_id: str | None) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or value not in allowed:
        raise ValidationError(f"'{key}' must be one of: {', '.join(allowed)}", event_id)
    return value


def _optional_flag(data: dict, key: str, event_id: str | None) -> bool | None:
    value = data.get(key)
    if value is None or isinstance(value, bool):
        return value
    raise ValidationError(f"'{key}' must be true or false", event_id)


def _in_range(value: float | None, key: str, allowed: Range, event_id: str | None) -> float | None:
    if value is not None and not allowed.contains(value):
        raise ValidationError(f"'{key}' {value:g} is outside {allowed.describe()}", event_id)
    return value


def profile_from_mapping(data: dict, where: str | None = None) -> PatientProfile:
    """A patient profile from a mapping (an event's fields, or a config table): unknown keys refused."""
    unknown = sorted(str(k)[:40] for k in set(data) - set(PROFILE_FIELDS))
    if unknown:
        raise ValidationError(f"unknown profile field(s): {', '.join(unknown[:5])}", where)
    return _profile(data, where)


def _profile(data: dict, event_id: str | None) -> PatientProfile:
    """A patient profile: the weight (required) and what lowers or raises a weight-based plan."""
    weight = _in_range(_number(data, "weight_kg", event_id), "weight_kg", WEIGHT_KG, event_id)
    assert weight is not None
    return PatientProfile(
        weight_kg=weight,
        age_years=_in_range(_optional_number(data, "age_years", event_id), "age_years", AGE_YEARS, event_id),
        diabetes_type=_optional_choice(data, "diabetes_type", DIABETES_TYPES, event_id),
        kidney=_optional_choice(data, "kidney", KIDNEY_STATES, event_id),
        insulin_naive=_optional_flag(data, "insulin_naive", event_id),
        steroids=_optional_flag(data, "steroids", event_id),
        height_cm=_in_range(_optional_number(data, "height_cm", event_id), "height_cm", HEIGHT_CM, event_id),
    )


def parse_timestamp(value: object, event_id: str | None, now: datetime) -> datetime:
    """ISO 8601 with an explicit UTC offset, not before 1900 and not in the future."""
    if not isinstance(value, str) or len(value) > 40:
        raise ValidationError("'ts' must be an ISO 8601 string with a UTC offset", event_id)
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        raise ValidationError(f"'ts' is not an ISO 8601 timestamp: {value[:40]!r}", event_id) from None
    offset = ts.utcoffset()
    if offset is None:
        raise ValidationError("'ts' must carry a UTC offset, e.g. +00:00", event_id)
    if not MIN_UTC_OFFSET <= offset <= MAX_UTC_OFFSET or offset.total_seconds() % 60:
        raise ValidationError("'ts' has a UTC offset no time zone uses (they run from -12:00 to +14:00)", event_id)
    if ts < EARLIEST_TS:
        raise ValidationError("'ts' is before 1900", event_id)
    if ts > now + timedelta(seconds=FUTURE_TOLERANCE_S):
        raise ValidationError(f"'ts' is more than {FUTURE_TOLERANCE_S / 60:g} minutes in the future", event_id)
    return ts


def _glucose_mg_dl(data: dict, event_id: str) -> float:
    if "mg_dl" in data:
        if "value" in data or "unit" in data:
            raise ValidationError("give either 'mg_dl' or 'value' with 'unit', not both", event_id)
        mg_dl = _number(data, "mg_dl", event_id)
    else:
        value = _number(data, "value", event_id)
        unit = data.get("unit")
        if unit == "mmol/L":
            mg_dl = value * MG_DL_PER_MMOL_L
        elif unit == "mg/dL":
            mg_dl = value
        else:
            raise ValidationError("'unit' must be 'mmol/L' or 'mg/dL' when 'value' is given", event_id)
    if not GLUCOSE_MG_DL.contains(mg_dl):
        raise ValidationError(
            f"glucose {mg_dl:g} mg/dL is outside the plausible range {GLUCOSE_MG_DL.describe()}", event_id
        )
    return mg_dl


def event_from_mapping(data: dict, now: datetime) -> Event:
    """Validate a decoded JSON object as one event; ``now`` is the wall clock for the future check."""
    raw_id = data.get("id")
    event_id = raw_id if is_identifier(raw_id) else None
    event_id = _identifier(data, "id", event_id)
    patient = _identifier(data, "patient", event_id)
    if "ts" not in data:
        raise ValidationError("missing field 'ts'", event_id)
    ts = parse_timestamp(data["ts"], event_id, now)
    kind_value = data.get("kind")
    try:
        kind = Kind(kind_value)
    except ValueError:
        raise ValidationError(
            f"unknown kind {str(kind_value)[:40]!r}; expected one of: {', '.join(k.value for k in Kind)}", event_id
        ) from None
    unknown = set(data) - set(COMMON_FIELDS) - set(KIND_FIELDS[kind])
    if unknown:
        names = ", ".join(sorted(str(k)[:40] for k in unknown)[:5])
        raise ValidationError(f"unexpected field(s) for a {kind.value} event: {names}", event_id)

    if kind is Kind.GLUCOSE:
        context = _optional_choice(data, "context", GLUCOSE_CONTEXTS, event_id)
        return Event(
            event_id, patient, ts, kind, mg_dl=_glucose_mg_dl(data, event_id), context=context or "unspecified"
        )
    if kind is Kind.INSULIN:
        insulin_value = _choice(data, "insulin", tuple(i.value for i in Insulin), event_id)
        units = _number(data, "units", event_id)
        if not INSULIN_UNITS.contains(units):
            raise ValidationError(
                f"insulin {units:g} U is outside the plausible range {INSULIN_UNITS.describe()}", event_id
            )
        return Event(event_id, patient, ts, kind, insulin=Insulin(insulin_value), units=units)
    if kind is Kind.MEAL:
        size = _choice(data, "size", AMOUNTS, event_id)
        carbs = _optional_number(data, "carbs_g", event_id)
        if carbs is not None and not CARBS_G.contains(carbs):
            raise ValidationError(f"carbs_g {carbs:g} is outside {CARBS_G.describe()}", event_id)
        share = _in_range(_optional_number(data, "eaten_share", event_id), "eaten_share", EATEN_SHARE, event_id)
        return Event(event_id, patient, ts, kind, size=size, carbs_g=carbs, eaten_share=share)
    if kind is Kind.EXERCISE:
        return Event(event_id, patient, ts, kind, intensity=_choice(data, "intensity", AMOUNTS, event_id))
    if kind is Kind.SPECIAL:
        note = data.get("note")
        if note is not None and (not isinstance(note, str) or len(note) > MAX_NOTE_CHARS):
            raise ValidationError(f"'note' must be a string of at most {MAX_NOTE_CHARS} characters", event_id)
        return Event(event_id, patient, ts, kind, note=note)
    if kind is Kind.REQUEST:
        asked = _optional_choice(data, "insulin", tuple(i.value for i in Insulin), event_id)
        return Event(event_id, patient, ts, kind, insulin=None if asked is None else Insulin(asked))
    if kind is Kind.PROFILE:
        return Event(event_id, patient, ts, kind, profile=_profile(data, event_id))
    if kind is Kind.NUTRITION:
        return Event(event_id, patient, ts, kind, nutrition=_choice(data, "state", NUTRITION_STATES, event_id))
    return Event(event_id, patient, ts, kind)


def decode_event(raw: bytes, now: datetime | None = None) -> Event:
    """Decode one MQTT payload into a validated :class:`Event` or raise :class:`ValidationError`."""
    now = now or datetime.now(UTC)
    return event_from_mapping(parse_json_object(raw), now)


MAX_HISTORY_BYTES = 256 * 1024
MAX_VISITS = 500
MAX_CODES_PER_VISIT = 2000
MAX_CODE_CHARS = 128
LATEST_VISIT_TS = datetime(2300, 1, 1, tzinfo=UTC)  # MIMIC dates are shifted into 2100–2200
HISTORY_FIELDS = ("patient", "visits")
VISIT_FIELDS = ("admit", "discharge", "codes")


@dataclass(frozen=True, slots=True)
class VisitHistory:
    """A validated ``patients`` payload: the patient and their visits, oldest first (naive UTC)."""

    patient: str
    visits: tuple[Visit, ...]

    def to_payload(self) -> dict:
        """The ``patients`` JSON payload of this history (inverse of :func:`decode_visit_history`)."""

        def iso(ts: datetime) -> str:
            return ts.replace(tzinfo=UTC).isoformat(timespec="seconds")

        return {
            "patient": self.patient,
            "visits": [
                {"admit": iso(v.admit), "discharge": iso(v.discharge), "codes": sorted(v.codes)} for v in self.visits
            ],
        }


def _visit_time(value: object, field: str, position: int) -> datetime:
    where = f"visit {position} '{field}'"
    if not isinstance(value, str) or len(value) > 40:
        raise ValidationError(f"{where} must be an ISO 8601 string with a UTC offset")
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        raise ValidationError(f"{where} is not an ISO 8601 timestamp: {value[:40]!r}") from None
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise ValidationError(f"{where} must carry a UTC offset, e.g. +00:00")
    if not EARLIEST_TS <= ts < LATEST_VISIT_TS:
        raise ValidationError(f"{where} is outside the years 1900–2299")
    return ts.astimezone(UTC).replace(tzinfo=None)


def _visit(item: object, position: int) -> Visit:
    if not isinstance(item, dict):
        raise ValidationError(f"visit {position} must be an object with admit, discharge and codes")
    unknown = sorted(set(item) - set(VISIT_FIELDS))
    if unknown:
        raise ValidationError(f"visit {position} has unknown field(s): {', '.join(unknown)}")
    admit = _visit_time(item.get("admit"), "admit", position)
    discharge = _visit_time(item.get("discharge"), "discharge", position)
    if discharge < admit:
        raise ValidationError(f"visit {position} is discharged before it is admitted")
    codes = item.get("codes")
    if not isinstance(codes, list) or len(codes) > MAX_CODES_PER_VISIT:
        raise ValidationError(f"visit {position} 'codes' must be a list of at most {MAX_CODES_PER_VISIT} strings")
    for code in codes:
        if not isinstance(code, str) or not 0 < len(code) <= MAX_CODE_CHARS or not code.isprintable():
            raise ValidationError(f"visit {position} has a code that is not 1–{MAX_CODE_CHARS} printable characters")
    return Visit(admit, discharge, frozenset(codes))


def decode_visit_history(data: dict) -> VisitHistory:
    """Validate a ``patients`` payload mapping (already parsed) into a :class:`VisitHistory`."""
    unknown = sorted(set(data) - set(HISTORY_FIELDS))
    if unknown:
        raise ValidationError(f"visit history has unknown field(s): {', '.join(unknown)}")
    patient = _identifier(data, "patient", None)
    visits = data.get("visits")
    if not isinstance(visits, list) or not 0 < len(visits) <= MAX_VISITS:
        raise ValidationError(f"'visits' must be a list of 1–{MAX_VISITS} visits")
    parsed = [_visit(item, i) for i, item in enumerate(visits, start=1)]
    return VisitHistory(patient, tuple(sorted(parsed, key=lambda v: (v.admit, v.discharge))))


def decode_visit_history_bytes(raw: bytes) -> VisitHistory:
    """Decode one ``patients`` MQTT payload or raise :class:`ValidationError`."""
    return decode_visit_history(parse_json_object(raw, MAX_HISTORY_BYTES))
