"""``advisor publish``: validate events as the device would and send them as a sensor does, then
print each answer in one line (the suggestion, or the device's reason for refusing it)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from device.config import BrokerConfig
from device.messages import ErrorMessage, Suggestion
from preprocessing.events import Event, Kind
from preprocessing.validation import ValidationError, decode_event

from .replay import DeviceWatcher, EventPublisher

ANSWERED = (Kind.GLUCOSE, Kind.REQUEST)


class PublishError(Exception):
    """An event could not be read or sent; the message says which and why."""


def read_events(text: str, where: str) -> list[Event]:
    """One event (a JSON object) or JSONL; a line that fails validation is named by its number."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise PublishError(f"{where}: no event")
    events = []
    for number, line in enumerate(lines, start=1):
        try:
            events.append(decode_event(line.encode(), datetime.now(UTC)))
        except ValidationError as exc:
            at = f"{where}:{number}" if len(lines) > 1 else where
            raise PublishError(f"{at}: {exc.reason}") from None
    return events


def describe(event: Event, answer: Suggestion | ErrorMessage | None, reader: str | None = None) -> str:
    """One line for an event and the device's answer; ``reader`` is the user that read the answers."""
    if isinstance(answer, ErrorMessage):
        return f"{event.id}: {answer.level}: {answer.reason}"
    if answer is None:
        if event.kind not in ANSWERED:
            return f"{event.id}: sent ({event.kind.value}; no answer expected)"
        who = (
            f", or {reader} may not read the answers (a sensor may not: use --credentials credentials.txt)"
            if reader
            else ""
        )
        return f"{event.id}: no answer seen: the device may be offline{who}"
    dose = f" {answer.units:g} U" if answer.is_dose else ""
    check = f", next check {answer.next_check_at[11:16]}" if answer.next_check_at else ""
    why = f": {answer.reasons[0]}" if answer.reasons else ""
    return f"{event.id}: {answer.status}{dose}{check}{why}"


def publish(
    events: list[Event], broker: BrokerConfig, device_id: str, wait_s: float, reader: BrokerConfig | None = None
) -> list[tuple[Event, Suggestion | ErrorMessage | None]]:
    """Send the events at QoS 1 and collect each one's answer (or refusal) for up to ``wait_s``.

    ``reader`` is the login that reads the answers (default: the sender's).
    """
    watcher = DeviceWatcher(reader or broker, device_id)
    publisher = EventPublisher(broker, device_id, client_id=f"advisor-publish-{device_id}-{id(events):x}")
    try:
        publisher.wait_connected()
        watcher.wait_subscribed()
        for event in events:
            publisher.publish(event)
        publisher.flush(wait_s)
        expected = {e.id for e in events if e.kind in ANSWERED}

        def answered(w: DeviceWatcher) -> bool:
            seen = {s.event_id for s in w.suggestions} | {e.event_id for e in w.errors if e.level == "refused"}
            return expected <= seen

        watcher.wait_for(answered, wait_s)
    finally:
        publisher.close()
        watcher.close()
    results = []
    for event in events:
        error = next((e for e in watcher.errors if e.event_id == event.id), None)
        results.append((event, watcher.suggestion_for(event.id) or error))
    return results


def as_json(results: list[tuple[Event, Suggestion | ErrorMessage | None]]) -> str:
    return "\n".join(
        json.dumps({"event_id": e.id, "answer": None if a is None else a.to_payload()}) for e, a in results
    )


def read_source(source: str | None, file: Path | None) -> tuple[str, str]:
    """The text to publish and where it came from."""
    if (source is None) == (file is None):
        raise PublishError("give one event as JSON, or --file with a JSON or JSONL file")
    if file is not None:
        return file.read_text(), str(file)
    return str(source), "the event"
