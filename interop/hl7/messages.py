"""One HL7 v2 message in, events or a refusal out, and the ``ACK`` that answers it (pure).

``ORU^R01``: every ``OBX`` is a glucose result whose code (OBX-3) is in the code map, with a
number (OBX-5), a unit (OBX-6: mg/dL or mmol/L; none is refused, never guessed), a final status
(OBX-11 ``F``) and a time (OBX-14, else OBR-7). ``ADT^A01``/``A04``/``A08`` (admission,
registration, update): the body weight of an ``OBX`` (LOINC 29463-7 or 3141-9), the height (8302-2,
3137-7) and the age from PID-7 update the patient's profile (the fields it does not carry keep their
values). The patient is PID-3's identifier of the configured type (CX-5, default ``MR``), matched
exactly, optionally through a map that is then also the allow-list (docs/deployment.md,
"HL7 v2 in"). Each event passes the device's own validation; a message is used whole or not at
all. The parser is python-hl7 (``hl7``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone, tzinfo

import hl7

from domain.events import Event
from domain.validation import ValidationError, event_from_mapping, is_identifier
from interop.codes import GLUCOSE_UNITS, LOINC_GLUCOSE

LOINC_WEIGHT = ("29463-7", "3141-9")
WEIGHT_UNITS = {"kg": 1.0, "g": 0.001, "[lb_av]": 0.45359237, "lb": 0.45359237}
HEIGHT_UNITS = {"cm": 1.0, "m": 100.0, "[in_i]": 2.54, "in": 2.54}
LOINC_HEIGHT = ("8302-2", "3137-7")
BODY_MEASURES = (  # (codes, units to kg or cm, field, what it is, the units in words)
    (LOINC_WEIGHT, WEIGHT_UNITS, "weight_kg", "weight", "kg, g or [lb_av]"),
    (LOINC_HEIGHT, HEIGHT_UNITS, "height_cm", "height", "cm, m or [in_i]"),
)
PATIENT_UPDATES = ("A01", "A04", "A08")  # admit, register, update patient information
DTM = re.compile(r"(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2}(?:\.\d{1,4})?)?([+-]\d{4})?")
DATE = re.compile(r"(\d{4})(\d{2})(\d{2})")
ERROR_CODES = {  # HL7 table 0357
    101: "Required field missing",
    102: "Data type error",
    103: "Table value not found",
    200: "Unsupported message type",
    204: "Unknown key identifier",
    207: "Application internal error",
}


class Refusal(Exception):
    """Why a message is not used: ``code`` AE (its content) or AR (the message or the link),
    ``error`` the HL7 error code (table 0357), ``where`` the field (``OBX^1^6``)."""

    def __init__(self, reason: str, code: str = "AE", error: int = 207, where: str = "") -> None:
        super().__init__(reason)
        self.reason, self.code, self.error, self.where = reason, code, error, where


@dataclass(frozen=True)
class Hl7Config:
    """How messages map to the device (defaults documented in docs/deployment.md, "HL7 v2 in").

    ``codes``: the OBX-3 codes taken as glucose; ``id_type``: the CX-5 type of PID-3 that names
    the patient (``authority``: and its CX-4, when set); ``patients``: hospital identifier ->
    device patient id, and only those (None: the identifier is the device's patient id);
    ``timezone``: for times sent without an offset (None: such times are refused);
    ``source``: the prefix of the event ids.
    """

    codes: Mapping[str, str] = field(default_factory=lambda: dict(LOINC_GLUCOSE))
    id_type: str = "MR"
    authority: str | None = None
    patients: Mapping[str, str] | None = None
    timezone: tzinfo | None = None
    source: str = "hl7"


@dataclass(frozen=True)
class Inbound:
    """A usable message: its control id (MSH-10), type, the events it carries and a digest of its
    content (a resend with the same control id must carry the same content); ``note``: what was
    not recorded and why (an admission without a weight)."""

    control_id: str
    message_type: str
    events: list[Event]
    digest: str
    note: str = ""


def _text(value: object) -> str:
    return str(value).strip() if value is not None else ""


def _field(segment: hl7.Segment, index: int) -> hl7.Field | None:
    return segment[index] if len(segment) > index else None


def _component(segment: hl7.Segment, index: int, component: int = 0, repetition: int = 0) -> str:
    """One component of a field (0-based component, first repetition), '' when absent."""
    value = _field(segment, index)
    if value is None or _text(value) == "":
        return ""
    if isinstance(value, hl7.Repetition) or (isinstance(value, hl7.Field) and value and isinstance(value[0], list)):
        value = value[repetition] if len(value) > repetition else None
    if value is None:
        return ""
    if isinstance(value, list) and not isinstance(value, str):
        return _text(value[component]) if len(value) > component else ""
    return _text(value) if component == 0 else ""


def _repetitions(segment: hl7.Segment, index: int) -> list[list[str]]:
    """Every repetition of a field as its list of components."""
    value = _field(segment, index)
    if value is None or _text(value) == "":
        return []
    reps = value if value and isinstance(value[0], list) else [value]
    found = []
    for rep in reps:
        found.append([_text(c) for c in rep] if isinstance(rep, list) else [_text(rep)])
    return found


def parse_time(value: str, words: str, zone: tzinfo | None, where: str = "") -> datetime:
    """An HL7 DTM (``YYYYMMDDHHMM[SS[.S]][+/-ZZZZ]``) as an aware datetime, or a :class:`Refusal`
    naming the field in ``words`` (and at ``where`` for ERR-2)."""
    match = DTM.fullmatch(value)
    if not match:
        raise Refusal(f"{words}: time {value[:30]!r} is not YYYYMMDDHHMM[SS][+ZZZZ]", error=102, where=where)
    year, month, day, hour, minute, seconds, offset = match.groups()
    try:
        sec = float(seconds or 0)
        naive = datetime(int(year), int(month), int(day), int(hour), int(minute), int(sec))
    except ValueError:
        raise Refusal(f"{words}: time {value!r} is not a real date and time", error=102, where=where) from None
    if offset:
        hours, minutes = int(offset[1:3]), int(offset[3:5])
        if hours > 14 or minutes > 59:
            raise Refusal(f"{words}: UTC offset {offset!r} is not a real offset", error=102, where=where)
        sign = 1 if offset[0] == "+" else -1
        return naive.replace(tzinfo=timezone(sign * timedelta(hours=hours, minutes=minutes)))
    if zone is None:
        raise Refusal(
            f"{words}: time {value!r} has no UTC offset (+hhmm): send it, or start the bridge with --timezone",
            error=102,
            where=where,
        )
    early, late = naive.replace(tzinfo=zone, fold=0), naive.replace(tzinfo=zone, fold=1)
    if early.utcoffset() != late.utcoffset():
        raise Refusal(
            f"{words}: local time {value!r} falls in a clock change in {zone} (it happens twice or never): "
            "send it with its UTC offset",
            error=102,
            where=where,
        )
    return early


def sender_key(msh: hl7.Segment) -> str:
    """Who sent the message: MSH-3 and MSH-4 (a control id is unique only per sender)."""
    return f"{_component(msh, 3)}^{_component(msh, 4)}"


def _event_id(config: Hl7Config, sender: str, control_id: str, part: int) -> str:
    """``<source>-<sender tag>-<control id>-<part>``: the sender tag is 6 hex digits of SHA-256 of
    MSH-3^MSH-4; a control id that cannot be part of an id is hashed."""
    cid = control_id if re.fullmatch(r"[A-Za-z0-9_.:-]{1,36}", control_id) else _digest(control_id)[:16]
    return f"{config.source}-{_digest(sender)[:6]}-{cid}-{part}"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _patient(message: hl7.Message, config: Hl7Config) -> str:
    try:
        pid = message.segment("PID")
    except KeyError:
        raise Refusal("no PID segment: the message names no patient", error=101, where="PID") from None
    candidates = [
        rep[0]
        for rep in _repetitions(pid, 3)
        if rep
        and rep[0]
        and (len(rep) > 4 and rep[4] == config.id_type)
        and (config.authority is None or (len(rep) > 3 and rep[3] == config.authority))
    ]
    wanted = f"type {config.id_type}" + (f" from {config.authority}" if config.authority else "")
    if not candidates:
        raise Refusal(f"PID-3 has no patient identifier of {wanted}", error=101, where="PID^1^3")
    if len(set(candidates)) > 1:
        raise Refusal(f"PID-3 has {len(set(candidates))} different identifiers of {wanted}", where="PID^1^3")
    identifier = candidates[0]
    if config.patients is not None:
        if identifier not in config.patients:
            raise Refusal(f"patient {identifier!r} is not on this bridge's patient list", error=204, where="PID^1^3")
        return config.patients[identifier]
    if not is_identifier(identifier):
        raise Refusal(
            f"patient identifier {identifier[:40]!r} is not a device patient id (1–64 letters, digits, _ . : -)",
            error=102,
            where="PID^1^3",
        )
    return identifier


def _in(position: int, index: int) -> tuple[str, str]:
    """The words and the ERR location of field ``index`` of the ``position``-th OBX."""
    return f"OBX-{index} of result {position}", f"OBX^{position}^{index}"


def _number(obx: hl7.Segment, position: int) -> float:
    kind, raw = _component(obx, 2), _component(obx, 5)
    if kind and kind not in ("NM", "SN"):
        words, where = _in(position, 2)
        raise Refusal(f"{words}: value type {kind!r} is not numeric (NM)", error=102, where=where)
    try:
        return float(raw)
    except ValueError:
        words, where = _in(position, 5)
        raise Refusal(f"{words}: {raw[:30]!r} is not a number", error=102, where=where) from None


def _unit(obx: hl7.Segment, position: int) -> str:
    unit = _component(obx, 6) or _component(obx, 6, 1)
    if not unit:
        words, where = _in(position, 6)
        raise Refusal(f"{words} is empty: a result without a unit is not used", error=101, where=where)
    return unit


def _final(obx: hl7.Segment, position: int) -> None:
    status = _component(obx, 11)
    if status != "F":
        what = {"C": "a correction", "P": "preliminary", "X": "not obtained", "D": "a deletion"}.get(status, "")
        words, where = _in(position, 11)
        raise Refusal(
            f"{words}: result status {status or 'missing'!r}{f' ({what})' if what else ''}: only final (F) "
            "results are used; enter corrections on the bedside page",
            error=103,
            where=where,
        )


def _observed_at(obx: hl7.Segment, obr_time: str, position: int, config: Hl7Config) -> datetime:
    value = _component(obx, 14)
    words, where = _in(position, 14)
    if value:
        return parse_time(value, words, config.timezone, where)
    if obr_time:
        return parse_time(obr_time, "OBR-7", config.timezone, "OBR^1^7")
    raise Refusal(f"result {position} has no observation time (OBX-14 or OBR-7)", error=101, where=where)


def _results(message: hl7.Message, config: Hl7Config, patient: str, control_id: str, now: datetime) -> list[Event]:
    obr_time = _component(message.segment("OBR"), 7) if _has(message, "OBR") else ""
    segments = list(message.segments("OBX")) if _has(message, "OBX") else []
    if not segments:
        raise Refusal("an ORU^R01 without an OBX carries no result", error=101, where="OBX")
    events = []
    for position, obx in enumerate(segments, start=1):
        code = _component(obx, 3)
        if code not in config.codes:
            system = _component(obx, 3, 2)
            words, where = _in(position, 3)
            raise Refusal(
                f"{words}: code {code[:20]!r}{f' ({system})' if system else ''} is not a glucose code this bridge "
                "takes (see --code-map)",
                error=103,
                where=where,
            )
        value = _number(obx, position)
        unit = _unit(obx, position)
        if unit.lower() not in GLUCOSE_UNITS:
            words, where = _in(position, 6)
            raise Refusal(f"{words}: unit {unit[:20]!r} is not mg/dL or mmol/L", error=103, where=where)
        _final(obx, position)
        ts = _observed_at(obx, obr_time, position, config)
        payload = {
            "id": _event_id(config, sender_key(message.segment("MSH")), control_id, position),
            "patient": patient,
            "ts": ts.isoformat(),
            "kind": "glucose",
            "value": value,
            "unit": GLUCOSE_UNITS[unit.lower()],
        }
        events.append(_validated(payload, now, f"result {position}", f"OBX^{position}"))
    return events


def _validated(payload: dict, now: datetime, words: str, where: str) -> Event:
    try:
        return event_from_mapping(payload, now)
    except ValidationError as exc:
        raise Refusal(f"{words}: {exc.reason}", error=102, where=where) from None


def _has(message: hl7.Message, name: str) -> bool:
    return any(_text(segment[0]) == name for segment in message)


def _age_years(pid: hl7.Segment, at: datetime) -> float | None:
    """PID-7's birth date as an age at ``at``; None when absent or not a date (age is optional)."""
    match = DATE.match(_component(pid, 7))
    if not match:
        return None
    try:
        year, month, day = (int(g) for g in match.groups())
        born = datetime(year, month, day, tzinfo=at.tzinfo)
    except ValueError:
        return None
    return round((at - born).days / 365.25, 1)


def _body_measures(message: hl7.Message) -> dict[str, float]:
    """The last weight (kg) and height (cm) among the message's OBX segments, by LOINC code."""
    found: dict[str, float] = {}
    for position, obx in enumerate(message.segments("OBX") if _has(message, "OBX") else [], start=1):
        for codes, units, name, what, accepted in BODY_MEASURES:
            if _component(obx, 3) not in codes:
                continue
            unit = _unit(obx, position)
            if unit.lower() not in units:
                words, where = _in(position, 6)
                raise Refusal(f"{words}: {what} unit {unit[:20]!r} is not {accepted}", error=103, where=where)
            found[name] = round(_number(obx, position) * units[unit.lower()], 1)
    return found


def _patient_update(message: hl7.Message, config: Hl7Config, patient: str, control_id: str, now: datetime) -> Inbound:
    msh = message.segment("MSH")
    at = parse_time(_component(msh, 7), "MSH-7", config.timezone, "MSH^1^7") if _component(msh, 7) else now
    measures = _body_measures(message)
    message_type = "ADT^" + _component(msh, 9, 1)
    digest = _digest(str(message))
    if "weight_kg" not in measures:
        note = "nothing recorded: no body weight (LOINC 29463-7) in this message; a profile needs one"
        return Inbound(control_id, message_type, [], digest, note)
    payload: dict = {
        "id": _event_id(config, sender_key(msh), control_id, 1),
        "patient": patient,
        "ts": at.isoformat(),
        "kind": "profile",
        **measures,
    }
    age = _age_years(message.segment("PID"), at)
    if age is not None:
        payload["age_years"] = age
    return Inbound(control_id, message_type, [_validated(payload, now, "the patient's measures", "OBX")], digest)


def parse(text: str) -> hl7.Message:
    """python-hl7's reading of ``text`` (CR, LF or CRLF between segments), or an AR refusal."""
    normalised = text.replace("\r\n", "\r").replace("\n", "\r").strip("\r")
    if not normalised.startswith("MSH"):
        raise Refusal("not an HL7 v2 message: it does not start with MSH", code="AR", error=102, where="MSH")
    try:
        return hl7.parse(normalised)
    except Exception as exc:  # python-hl7 raises several kinds for broken encoding characters
        raise Refusal(f"not an HL7 v2 message: {exc}", code="AR", error=102, where="MSH") from None


def read_message(message: hl7.Message, config: Hl7Config, now: datetime | None = None) -> Inbound:
    """The events of one parsed message, or a :class:`Refusal` saying why none are used."""
    now = now or datetime.now(UTC)
    msh = message.segment("MSH")
    control_id = _component(msh, 10)
    if not control_id:
        raise Refusal("MSH-10 (message control id) is empty", code="AR", error=101, where="MSH^1^10")
    kind, trigger = _component(msh, 9), _component(msh, 9, 1)
    if _component(msh, 11) != "P":
        raise Refusal(
            f"MSH-11 processing id {_component(msh, 11)!r} is not P (production): training and test messages "
            "never reach a patient's record",
            code="AR",
            where="MSH^1^11",
        )
    for name in ("MSH", "PID"):
        if sum(1 for segment in message if _text(segment[0]) == name) > 1:
            raise Refusal(
                f"more than one {name} segment: send one patient's results per message", code="AR", where=name
            )
    if (kind, trigger) == ("ORU", "R01"):
        patient = _patient(message, config)
        events = _results(message, config, patient, control_id, now)
        return Inbound(control_id, "ORU^R01", events, _digest(str(message)))
    if kind == "ADT" and trigger in PATIENT_UPDATES:
        return _patient_update(message, config, _patient(message, config), control_id, now)
    if kind == "ADT":
        note = f"nothing recorded: ADT^{trigger} is not used (weights come from ADT^A01, A04 and A08)"
        return Inbound(control_id, f"ADT^{trigger}", [], _digest(str(message)), note)
    raise Refusal(
        f"message type {kind}^{trigger} is not taken (ORU^R01, ADT^A01/A04/A08)", code="AR", error=200, where="MSH^1^9"
    )


def escape(text: str) -> str:
    """Text safe inside one HL7 field (the default encoding characters ``|^~\\&``; no line breaks)."""
    text = text.replace("\\", "\\E\\").replace("|", "\\F\\").replace("^", "\\S\\").replace("&", "\\T\\")
    return re.sub(r"[\r\n]+", " ", text.replace("~", "\\R\\"))


def acknowledgement(
    message: hl7.Message | None, code: str, text: str = "", refusal: Refusal | None = None, now: datetime | None = None
) -> str:
    """The ``ACK`` to ``message`` (None: one that could not be read): MSH with sender and receiver
    swapped, MSA with the code, the control id and ``text``, and an ERR for a refusal."""
    now = now or datetime.now(UTC)
    if message is not None:
        msh = message.segment("MSH")
        sender = (_component(msh, 3), _component(msh, 4), _component(msh, 5), _component(msh, 6))
        trigger, control_id, version = _component(msh, 9, 1), _component(msh, 10), _component(msh, 12) or "2.5.1"
        processing = _component(msh, 11) or "P"
    else:
        sender, trigger, control_id, version, processing = ("", "", "", ""), "", "", "2.5.1", "P"
    receiving_app = sender[2] or "ADVISOR"
    stamp = now.strftime("%Y%m%d%H%M%S%z")
    ack_id = f"ACK{_digest(control_id + stamp)[:12]}"
    msh_out = "|".join(
        [
            "MSH",
            "^~\\&",
            escape(receiving_app),
            escape(sender[3]),
            escape(sender[0]),
            escape(sender[1]),
            stamp,
            "",
            f"ACK^{escape(trigger)}^ACK" if trigger else "ACK",
            ack_id,
            processing,
            version,
        ]
    )
    lines = [msh_out, "|".join(["MSA", code, escape(control_id), escape(text[:200])])]
    if refusal is not None:
        where = "^".join(escape(p) for p in refusal.where.split("^")) if refusal.where else ""
        error = f"{refusal.error}^{ERROR_CODES.get(refusal.error, 'Application error')}^HL70357"
        lines.append("|".join(["ERR", "", where, error, "E", "", "", "", escape(refusal.reason)]))
    return "\r".join(lines) + "\r"
