"""``advisor monitor``: follow one or many devices' outbound topics as readable lines (or JSON)."""

from __future__ import annotations

import json
import queue
import time
from collections.abc import Callable, Iterator

from device.config import BrokerConfig
from device.contract.messages import Alert, DeviceStatus, ErrorMessage, Message, ModelAck, Risk, Suggestion
from device.contract.schema import SchemaError
from device.contract.topics import Topics
from device.mqtt.client import Subscriber

SCHEMAS: dict[str, type[Message]] = {
    "suggestions": Suggestion,
    "errors": ErrorMessage,
    "status": DeviceStatus,
    "alerts": Alert,
    "risk": Risk,
    "model/ack": ModelAck,
}


def line(device_id: str, leaf: str, message: Message) -> str:
    """One readable line per message."""
    if isinstance(message, Suggestion):
        dose = f" {message.units:g} U" if message.is_dose else ""
        return f"{device_id} {message.patient} answer to {message.event_id}: {message.status}{dose}"
    if isinstance(message, ErrorMessage):
        return f"{device_id} {message.level} {message.event_id or '-'}: {message.reason}"
    if isinstance(message, DeviceStatus):
        models = ", ".join(f"{m.name} {m.version}" for m in message.models)
        problems = "; ".join(p for p in (message.model_problem, message.storage_problem) if p)
        return f"{device_id} status {message.state} ({models})" + (f": {problems}" if problems else "")
    if isinstance(message, Alert):
        return f"{device_id} ALERT {message.message}"
    if isinstance(message, Risk):
        figures = f"mortality {message.mortality_1y}, readmission {message.readmission_30d}"
        return f"{device_id} {message.patient} risk (does not change the dose): {figures}"
    if isinstance(message, ModelAck):
        verdict = f"installed {message.name} {message.version}" if message.accepted else f"refused: {message.reason}"
        return f"{device_id} model transfer {message.transfer}: {verdict}"
    return f"{device_id} {leaf}"


def follow(
    broker: BrokerConfig,
    devices: list[str],
    seconds: float | None,
    count: int | None,
    on_ready: Callable[[], None] = lambda: None,
) -> Iterator[tuple[str, str, bytes, Message | None]]:
    """Yield (device, leaf, raw payload, decoded message or None) until ``seconds`` or ``count``."""
    topics = {Topics(d).of(leaf): (d, leaf) for d in devices for leaf in SCHEMAS}
    inbox: queue.Queue = queue.Queue()
    subscriber = Subscriber(broker, f"advisor-monitor-{time.monotonic_ns():x}", list(topics), inbox.put)
    try:
        subscriber.wait_connected()
        subscriber.wait_subscribed()
        on_ready()
        deadline = None if seconds is None else time.monotonic() + seconds
        seen = 0
        while count is None or seen < count:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return
            try:
                message = inbox.get(timeout=min(left, 1.0) if left is not None else 1.0)
            except queue.Empty:
                continue
            device_id, leaf = topics[message.topic]
            try:
                decoded: Message | None = SCHEMAS[leaf].from_json(message.payload)
            except SchemaError:
                decoded = None
            seen += 1
            yield device_id, leaf, message.payload, decoded
    finally:
        subscriber.close()


def render(device_id: str, leaf: str, payload: bytes, decoded: Message | None, as_json: bool) -> str:
    if as_json:
        try:
            body = json.loads(payload)
        except ValueError:
            body = payload.decode("utf-8", "replace")
        return json.dumps({"device": device_id, "topic": leaf, "payload": body})
    if decoded is None:
        return f"{device_id} {leaf}: a message that does not fit its schema ({len(payload)} bytes)"
    return line(device_id, leaf, decoded)
