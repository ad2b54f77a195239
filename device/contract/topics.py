"""Every MQTT topic of one device, built in one place (docs/contract.md, "MQTT topics")."""

from __future__ import annotations

import re
from dataclasses import dataclass

PREFIX = "advisor"
DEVICE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


def check_device_id(device_id: str) -> str:
    """A device id usable as one topic level: letters, digits, '_' and '-', at most 64."""
    if not isinstance(device_id, str) or not DEVICE_ID.fullmatch(device_id):
        raise ValueError(f"device id {device_id!r} must be 1–64 letters, digits, '_' or '-' (no '/', '+', '#')")
    return device_id


@dataclass(frozen=True, slots=True)
class Topics:
    """The topic names of ``advisor/<device_id>/…``."""

    device_id: str

    def __post_init__(self) -> None:
        check_device_id(self.device_id)

    def of(self, leaf: str) -> str:
        """The full topic of one leaf (docs/contract.md lists them)."""
        return f"{PREFIX}/{self.device_id}/{leaf}"

    @property
    def events(self) -> str:
        return self.of("events")

    @property
    def errors(self) -> str:
        return self.of("errors")

    @property
    def suggestions(self) -> str:
        return self.of("suggestions")

    @property
    def status(self) -> str:
        return self.of("status")

    @property
    def model(self) -> str:
        return self.of("model")

    @property
    def model_ack(self) -> str:
        return self.of("model/ack")

    @property
    def patients(self) -> str:
        return self.of("patients")

    @property
    def shadow(self) -> str:
        return self.of("shadow")

    @property
    def risk(self) -> str:
        return self.of("risk")

    @property
    def alerts(self) -> str:
        return self.of("alerts")
