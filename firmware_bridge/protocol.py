"""The UART line protocol between a glucose meter / keypad microcontroller and the bridge.

Pure encoding and parsing, no I/O. One frame per line, ASCII, in the style of NMEA::

    $<seq>,<type>[,<field>...]*<crc>\\n

* ``seq``: decimal 0–65535, one per frame sent by the firmware, wrapping to 0;
* ``type``: one letter (below);
* fields: no ``$ * , \\r \\n``; timestamps are ISO 8601 with a UTC offset;
* ``crc``: CRC-16/CCITT-FALSE of every byte between ``$`` and ``*``, four upper-case hex digits;
* at most :data:`MAX_FRAME` bytes from ``$`` to the newline.

Firmware → bridge (event frames), fields after the type::

    G  ts, patient, mg_dl[, context]        glucose
    I  ts, patient, insulin(r|n|u), units   insulin (regular / NPH / UltraLente)
    M  ts, patient, size[, carbs_g]         meal (typical / more / less)
    E  ts, patient, intensity               exercise
    H  ts, patient                          hypoglycaemia symptoms
    S  ts, patient[, note]                  special event
    R  ts, patient                          request a suggestion now

Bridge → firmware::

    A  event_id                             the frame with this seq was delivered to the broker as this event
    N  reason                               the frame with this seq was refused; do not resend
    D  reason                               the frame with this seq arrived damaged; resend it

The firmware sends one frame and waits for its ``A`` or ``N`` (stop and wait); with no answer
it resends the same frame with the same seq, so the bridge must treat a repeat as a duplicate.
Bytes outside frames (line noise) are skipped: the parser resynchronises on the next ``$``.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from datetime import datetime

from domain.events import Event, Insulin, Kind
from domain.validation import ValidationError, event_from_mapping, parse_timestamp

MAX_FRAME = 256
SEQ_MODULO = 65536
_FIELD_FORBIDDEN = re.compile(r"[$*,\r\n]")

EVENT_TYPES = {
    "G": Kind.GLUCOSE,
    "I": Kind.INSULIN,
    "M": Kind.MEAL,
    "E": Kind.EXERCISE,
    "H": Kind.HYPO_SYMPTOMS,
    "S": Kind.SPECIAL,
    "R": Kind.REQUEST,
}
TYPE_OF_KIND = {kind: letter for letter, kind in EVENT_TYPES.items()}
INSULIN_CODES = {"r": Insulin.REGULAR, "n": Insulin.NPH, "u": Insulin.ULTRALENTE}
CODE_OF_INSULIN = {v: k for k, v in INSULIN_CODES.items()}
ACK, NAK, RESEND = "A", "N", "D"


class FrameError(ValueError):
    """Bytes that are not a valid frame; ``reason`` is a short code, ``seq`` when readable."""

    def __init__(self, reason: str, seq: int | None = None, raw: bytes = b"") -> None:
        super().__init__(reason)
        self.reason = reason
        self.seq = seq
        self.raw = raw


@dataclass(frozen=True, slots=True)
class Frame:
    seq: int
    type: str
    fields: tuple[str, ...]


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF), as cheap microcontrollers compute it."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


def encode_frame(seq: int, type_: str, fields: tuple[str, ...] = ()) -> bytes:
    """One frame, newline included; raises ValueError for fields the protocol cannot carry."""
    if not 0 <= seq < SEQ_MODULO:
        raise ValueError("seq must be 0–65535")
    for value in fields:
        if _FIELD_FORBIDDEN.search(value) or not value.isascii():
            raise ValueError(f"field {value[:20]!r} holds characters a frame cannot carry")
    body = ",".join((str(seq), type_, *fields)).encode("ascii")
    frame = b"$" + body + b"*" + f"{crc16(body):04X}".encode() + b"\n"
    if len(frame) > MAX_FRAME:
        raise ValueError(f"frame is {len(frame)} bytes, more than {MAX_FRAME}")
    return frame


def decode_body(line: bytes) -> Frame:
    """Check one candidate frame (from ``$`` to before the newline)."""
    if not line.startswith(b"$") or b"*" not in line:
        raise FrameError("malformed", raw=line)
    body, _, checksum = line[1:].rpartition(b"*")
    seq_text = body.split(b",", 1)[0]
    seq = int(seq_text) if seq_text.isdigit() and len(seq_text) <= 5 else None
    if len(checksum) != 4 or not re.fullmatch(rb"[0-9A-F]{4}", checksum):
        raise FrameError("malformed", seq, line)
    if int(checksum, 16) != crc16(body):
        raise FrameError("bad_checksum", seq, line)
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        raise FrameError("not_ascii", seq, line) from None
    parts = text.split(",")
    if seq is None or seq >= SEQ_MODULO or len(parts) < 2 or len(parts[1]) != 1:
        raise FrameError("malformed", seq if seq is not None and seq < SEQ_MODULO else None, line)
    return Frame(seq, parts[1], tuple(parts[2:]))


class FrameParser:
    """Streaming parser: feed raw serial bytes, get frames and errors in order."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._in_frame = False

    def feed(self, data: bytes) -> list[Frame | FrameError]:
        out: list[Frame | FrameError] = []
        for byte in data:
            if byte == 0x24:  # '$' starts a frame, even inside a broken one (resynchronise)
                if self._in_frame and self._buffer:
                    out.append(FrameError("truncated", raw=bytes(self._buffer)))
                self._buffer = bytearray(b"$")
                self._in_frame = True
            elif not self._in_frame:
                continue  # line noise between frames
            elif byte == 0x0A:
                line = bytes(self._buffer).rstrip(b"\r")
                self._buffer.clear()
                self._in_frame = False
                try:
                    out.append(decode_body(line))
                except FrameError as exc:
                    out.append(exc)
            else:
                self._buffer.append(byte)
                if len(self._buffer) > MAX_FRAME:
                    out.append(FrameError("too_long", raw=bytes(self._buffer[:40])))
                    self._buffer.clear()
                    self._in_frame = False
        return out


def frame_event(frame: Frame, source: str, now: datetime) -> Event:
    """The validated event of an event frame; raises :class:`FrameError` or ``ValidationError``.

    The event id is ``<source>-<timestamp digits>-<seq>``: a resent frame maps to the same id,
    so a repeat is idempotent at the device even when the bridge restarted in between. The
    frame's fields fill an :class:`Event`, which then passes the device's own validation.
    """
    kind = EVENT_TYPES.get(frame.type)
    if kind is None:
        raise FrameError("unknown_type", frame.seq)
    if len(frame.fields) < 2:
        raise FrameError("missing_field", frame.seq)
    ts, patient, rest = frame.fields[0], frame.fields[1], frame.fields[2:]
    stamp = re.sub(r"\D", "", ts)[:14]
    event_id = f"{source}-{stamp}-{frame.seq}"
    try:
        candidate = _event(event_id, patient, parse_timestamp(ts, event_id, now), kind, list(rest), frame.seq)
    except IndexError:
        raise FrameError("missing_field", frame.seq) from None
    except (FrameError, ValidationError):
        raise
    except ValueError:
        raise FrameError("bad_number", frame.seq) from None
    return event_from_mapping(candidate.to_payload(), now)


def _event(event_id: str, patient: str, ts: datetime, kind: Kind, rest: list[str], seq: int) -> Event:
    """The event a frame's fields describe, typed (validated afterwards)."""
    if kind is Kind.GLUCOSE:
        return Event(event_id, patient, ts, kind, mg_dl=float(rest[0]), context=rest[1] if len(rest) > 1 else None)
    if kind is Kind.INSULIN:
        if rest[0] not in INSULIN_CODES:
            raise FrameError("bad_field", seq)
        return Event(event_id, patient, ts, kind, insulin=INSULIN_CODES[rest[0]], units=float(rest[1]))
    if kind is Kind.MEAL:
        return Event(event_id, patient, ts, kind, size=rest[0], carbs_g=float(rest[1]) if len(rest) > 1 else None)
    if kind is Kind.EXERCISE:
        return Event(event_id, patient, ts, kind, intensity=rest[0])
    if kind is Kind.SPECIAL and rest:
        return Event(event_id, patient, ts, kind, note=rest[0])
    return Event(event_id, patient, ts, kind)


def event_frame(event: Event, seq: int) -> bytes:
    """The frame a firmware sends for ``event`` (used by the emulator and serial replay)."""
    fields = [event.ts.isoformat(), event.patient]
    if event.kind is Kind.GLUCOSE:
        fields += [f"{event.reading:g}"] + ([event.context] if event.context else [])
    elif event.kind is Kind.INSULIN and event.insulin is not None:
        fields += [CODE_OF_INSULIN[event.insulin], f"{event.dose:g}"]
    elif event.kind is Kind.MEAL and event.size is not None:
        fields += [event.size] + ([f"{event.carbs_g:g}"] if event.carbs_g is not None else [])
    elif event.kind is Kind.EXERCISE and event.intensity is not None:
        fields += [event.intensity]
    elif event.kind is Kind.SPECIAL and event.note:
        fields += [_FIELD_FORBIDDEN.sub(" ", event.note)[:120]]
    return encode_frame(seq, TYPE_OF_KIND[event.kind], tuple(fields))


class Delivery(enum.Enum):
    NEW = "new"
    DUPLICATE = "duplicate"


@dataclass
class SequenceTracker:
    """Duplicate and gap detection on the firmware's sequence numbers."""

    last: int | None = None
    duplicates: int = 0
    gaps: int = 0
    missing: int = 0

    def observe(self, seq: int) -> tuple[Delivery, int]:
        """Classify a valid frame's seq; returns (delivery, frames missing before it)."""
        if self.last is not None and seq == self.last:
            self.duplicates += 1
            return Delivery.DUPLICATE, 0
        skipped = 0
        if self.last is not None:
            skipped = (seq - self.last - 1) % SEQ_MODULO
            if skipped:
                self.gaps += 1
                self.missing += skipped
        self.last = seq
        return Delivery.NEW, skipped
