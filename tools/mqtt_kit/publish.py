"""``advisor publish``: validate events as the device would and send them as a sensor does, then
print each answer in one line (the suggestion, or the device's reason for refusing it), with the
device's warnings about the event on extra lines.

After the events it sends an end marker: an event every device refuses at validation (dated
2999, so nothing is stored). The device handles its events in order, so once the marker's
refusal is back every event before it has been handled and its answer sent. A reading or request
(or meal, or symptoms) handled without an answer is one the device already holds: a repeat, which
it never answers twice.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from device.config import BrokerConfig
from device.contract.messages import DeviceStatus, ErrorMessage, Suggestion
from device.rules.retirement import ALWAYS_ANSWERED
from domain.events import Event
from domain.validation import ValidationError, event_from_mapping, parse_json_object
from tools.mqtt_kit.client import DeviceWatcher, EndMarker, EventPublisher

ANSWERED = ALWAYS_ANSWERED  # readings, requests, meals, symptoms; exercise only when it retires an answer
STATUS_WAIT_S = 2.0  # how long to wait for the retained status when an event's time is stamped here


class PublishError(Exception):
    """An event could not be read or sent; the message says which and why."""


@dataclass(frozen=True)
class Outgoing:
    """One validated event to send; ``stamped``: it had no "ts", so it is sent with the time of sending."""

    event: Event
    stamped: bool = False


@dataclass(frozen=True)
class Answer:
    """What the device said about one event.

    ``reply`` is its suggestion or its refusal; ``warnings`` what it published about an event it
    accepted (a time zone offset, a look-alike patient id); ``handled`` whether the end marker came
    back, so the device has handled this event and sent whatever it will send about it.
    """

    event: Event
    reply: Suggestion | ErrorMessage | None = None
    warnings: list[ErrorMessage] = field(default_factory=list)
    handled: bool = False

    @property
    def trouble(self) -> str | None:
        """Why this event counts against the run: refused, repeat or unanswered (None: fine)."""
        if isinstance(self.reply, ErrorMessage):
            return "refused"
        if self.reply is None and self.event.kind in ANSWERED:
            if self.handled and self.warnings:
                return None  # stored with a warning that says why it was not answered (a late reading)
            return "repeat" if self.handled else "unanswered"
        return None


def read_events(text: str, where: str, now: datetime | None = None) -> list[Outgoing]:
    """One event (a JSON object) or JSONL; a line that fails validation is named by its number.

    An object without "ts" is checked as if sent ``now`` and stamped with the time of sending.
    """
    now = now or datetime.now(UTC)
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise PublishError(f"{where}: no event")
    events = []
    for number, line in enumerate(lines, start=1):
        try:
            data = parse_json_object(line.encode())
            stamped = "ts" not in data
            events.append(
                Outgoing(event_from_mapping({**data, "ts": now.isoformat()} if stamped else data, now), stamped)
            )
        except ValidationError as exc:
            at = f"{where}:{number}" if len(lines) > 1 else where
            raise PublishError(f"{at}: {exc.reason}") from None
    return events


def key_reason(suggestion: Suggestion) -> str | None:
    """The reason that decided the status.

    The first reason, except for a withhold after the safety limits took a due dose to nothing
    (first rule ``nothing_left``): the reasons are then the dose-due line, one line per limit in
    the order they acted, and the conclusion; no limit acts once nothing is left, so the line
    before the conclusion is the one that left nothing.
    """
    reasons = suggestion.reasons
    if not reasons:
        return None
    if suggestion.status == "withhold" and suggestion.rules[:1] == ["nothing_left"] and len(reasons) >= 2:
        return reasons[-2]
    return reasons[0]


def describe(answer: Answer, reader: str | None = None) -> str:
    """Lines for an event: the device's answer, then its warnings; ``reader`` is the user that read them."""
    event = answer.event
    lines = [_answer_line(answer, reader)]
    lines += [f"{event.id}: warning: {w.reason}" for w in answer.warnings]
    return "\n".join(lines)


def _answer_line(answer: Answer, reader: str | None) -> str:
    event, reply = answer.event, answer.reply
    if isinstance(reply, ErrorMessage):
        return f"{event.id}: {reply.level}: {reply.reason}"
    if reply is None:
        if event.kind not in ANSWERED:
            return f"{event.id}: sent ({event.kind.value}; no answer expected)"
        if answer.handled and answer.warnings:
            return f"{event.id}: stored, not answered (the warning below says why)"
        if answer.handled:
            return (
                f"{event.id}: a repeat: the device already holds event {event.id} and answers an event once, "
                "so it sent nothing new (send a new id for a new answer)"
            )
        who = (
            f", or {reader} may not read the answers (a sensor may not: use --credentials credentials.txt)"
            if reader
            else ""
        )
        return f"{event.id}: no answer seen: the device may be offline{who}"
    dose = f" {reply.units:g} U" if reply.is_dose else ""
    check = f", next check {reply.next_check_at[11:16]}" if reply.next_check_at else ""
    why = key_reason(reply)
    return f"{event.id}: {reply.status}{dose}{check}" + (f": {why}" if why else "")


def summary(answers: list[Answer]) -> str | None:
    """One line for the events refused, repeated or not answered; None when there are none."""
    counts = Counter(a.trouble for a in answers if a.trouble)
    if not counts:
        return None
    head = f"{sum(counts.values())} of {len(answers)} events"
    repeats = "the device already holds (it answers an event once)"
    if len(counts) == 1:
        alone = {
            "refused": "were refused",
            "repeat": f"were repeats of events {repeats}",
            "unanswered": "were not answered",
        }
        return f"{head} {alone[next(iter(counts))]}"
    part = {"refused": "refused", "repeat": f"a repeat of an event {repeats}", "unanswered": "not answered"}
    return f"{head} were refused or not answered: " + ", ".join(f"{n} {part[k]}" for k, n in counts.items())


def publish(
    outgoing: list[Outgoing], broker: BrokerConfig, device_id: str, wait_s: float, reader: BrokerConfig | None = None
) -> list[Answer]:
    """Send the events at QoS 1, then the end marker, and collect what the device says for up to ``wait_s``.

    ``reader`` is the login that reads the answers (default: the sender's).
    """
    marker = EndMarker.new("publish")
    watcher = DeviceWatcher(reader or broker, device_id)
    publisher = EventPublisher(broker, device_id, client_id=f"advisor-publish-{device_id}-{marker.nonce}")
    try:
        publisher.wait_connected()
        watcher.wait_subscribed()
        events = _stamped(outgoing, watcher)
        for event in events:
            publisher.publish(event)
        publisher.flush(wait_s)  # a refusal by the broker's ACL names the events, not the marker
        publisher.publish(marker.payload)
        publisher.flush(wait_s)
        handled = watcher.wait_for(marker.seen, wait_s)
    finally:
        publisher.close()
        watcher.close()
    return [_answer(event, watcher, handled) for event in events]


def _answer(event: Event, watcher: DeviceWatcher, handled: bool) -> Answer:
    about = [e for e in watcher.errors if e.event_id == event.id]
    refusal = next((e for e in about if e.level != "warning"), None)
    warnings = [e for e in about if e.level == "warning"]
    return Answer(event, watcher.suggestion_for(event.id) or refusal, warnings, handled)


def _stamped(outgoing: list[Outgoing], watcher: DeviceWatcher) -> list[Event]:
    """The events to send, those without a time stamped now in the device's time zone (from its status)."""
    if not any(o.stamped for o in outgoing):
        return [o.event for o in outgoing]
    watcher.wait_for(lambda w: bool(w.status), STATUS_WAIT_S)
    zone = device_zone(watcher.status[-1] if watcher.status else None)
    now = datetime.now(zone)
    return [replace(o.event, ts=now) if o.stamped else o.event for o in outgoing]


def device_zone(status: DeviceStatus | None) -> tzinfo:
    """The ward's time zone from the device's status; this computer's when unknown."""
    local = datetime.now().astimezone().tzinfo or UTC
    if status is None:
        return local
    try:
        return ZoneInfo(status.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        return local


def as_json(answers: list[Answer]) -> str:
    """One JSON line per event: its answer, the warnings, and whether it was a repeat."""
    return "\n".join(
        json.dumps(
            {
                "event_id": a.event.id,
                "answer": None if a.reply is None else a.reply.to_payload(),
                "warnings": [w.to_payload() for w in a.warnings],
                "repeat": a.trouble == "repeat",
            }
        )
        for a in answers
    )


def read_source(source: str | None, file: Path | None) -> tuple[str, str]:
    """The text to publish and where it came from."""
    if (source is None) == (file is None):
        raise PublishError("give one event as JSON, or --file with a JSON or JSONL file")
    if file is not None:
        return file.read_text(), str(file)
    return str(source), "the event"
