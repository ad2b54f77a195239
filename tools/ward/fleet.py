"""``advisor fleet``: read every device's retained ``status`` from the broker (the I/O half).

The broker hands a new subscriber each device's retained status right after granting the
subscription; the reader takes what arrives until the topic has been quiet for ``quiet_s``.
Rows and table: :mod:`tools.ward.fleet_board`.
"""

from __future__ import annotations

import time

from device.config import BrokerConfig
from device.contract.messages import DeviceStatus
from device.contract.schema import SchemaError
from device.mqtt.client import Subscriber

STATUS_TOPIC = "advisor/+/status"


def read_statuses(
    broker: BrokerConfig, quiet_s: float = 1.0, timeout_s: float = 10.0
) -> tuple[dict[str, DeviceStatus], list[str]]:
    """Every device's latest status by device id, and the topics whose status could not be read."""
    statuses: dict[str, DeviceStatus] = {}
    unreadable: list[str] = []
    last = [time.monotonic()]

    def keep(message) -> None:
        last[0] = time.monotonic()
        try:
            status = DeviceStatus.from_json(message.payload)
        except (SchemaError, ValueError):
            unreadable.append(message.topic)
            return
        statuses[status.device_id] = status

    reader = Subscriber(broker, f"advisor-fleet-{time.time_ns():x}", [STATUS_TOPIC], keep)
    try:
        reader.wait_subscribed(timeout_s)
        last[0] = time.monotonic()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            remaining = quiet_s - (time.monotonic() - last[0])
            if remaining <= 0:
                break
            reader.wait_until(lambda: False, remaining)
    finally:
        reader.close()
    return statuses, unreadable
