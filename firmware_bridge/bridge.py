"""``advisor bridge serial``: firmware frames in, events (docs/contract.md) out on MQTT, acks back.

A frame is acknowledged only after the broker confirmed the event's publish (QoS 1 PUBACK),
so an ``A`` (with the event id) means the event is safe at the broker. A damaged frame whose
seq is readable gets a ``D`` (damaged: resend); invalid event content gets an ``N`` (refused)
with a short reason; a resent frame (same seq) gets the same answer again without a second
publish; a jump in seq is counted and logged as a gap.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime

from device.config import BrokerConfig
from device.contract.topics import Topics
from device.mqtt.client import PersistentPublisher
from domain.validation import ValidationError
from firmware_bridge.links import Link
from firmware_bridge.protocol import (
    ACK,
    NAK,
    RESEND,
    Delivery,
    Frame,
    FrameError,
    FrameParser,
    SequenceTracker,
    encode_frame,
    frame_event,
)

log = logging.getLogger("advisor.bridge")


@dataclass
class BridgeStats:
    delivered: int = 0
    refused: int = 0
    duplicates: int = 0
    gaps: int = 0
    missing: int = 0
    frame_errors: dict[str, int] = field(default_factory=dict)


def _reason_field(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9 _.:'-]", " ", text)[:100]


class SerialBridge:
    """Runs until ``stop`` is set; one link, one device's events topic."""

    def __init__(
        self, link: Link, broker: BrokerConfig, device_id: str, source: str, publish_timeout_s: float = 5.0
    ) -> None:
        self.link = link
        self.topics = Topics(device_id)
        self.source = source
        self.publish_timeout_s = publish_timeout_s
        self.stats = BridgeStats()
        self.parser = FrameParser()
        self.tracker = SequenceTracker()
        self._last_answer: bytes | None = None
        self._pending: int | None = None  # packet id of the last frame's publish, until confirmed
        self._pending_id = ""
        self.mqtt = PersistentPublisher(broker, f"advisor-bridge-{source}")
        self.connected = self.mqtt.connected
        self.publishes = self.mqtt.tracker

    def run(self, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                data = self.link.read(0.2)
                for item in self.parser.feed(data):
                    self.handle(item)
        finally:
            self.mqtt.close()

    def handle(self, item: Frame | FrameError) -> None:
        if isinstance(item, FrameError):
            self.stats.frame_errors[item.reason] = self.stats.frame_errors.get(item.reason, 0) + 1
            if item.seq is not None:
                self.link.write(encode_frame(item.seq, RESEND, (item.reason,)))
            return
        if item.type in (ACK, NAK, RESEND):
            return  # our own answers echoed back by a loop-back cable
        delivery, skipped = self.tracker.observe(item.seq)
        if skipped:
            self.stats.gaps += 1
            self.stats.missing += skipped
            log.warning("firmware sequence gap: %d frame(s) missing before seq %d", skipped, item.seq)
        if delivery is Delivery.DUPLICATE:
            self.stats.duplicates += 1
            if self._last_answer is None and self._pending is not None and self._confirmed():
                self._last_answer = encode_frame(item.seq, ACK, (self._pending_id,))
                self.stats.delivered += 1
            if self._last_answer is not None:
                self.link.write(self._last_answer)
            return
        self._last_answer, self._pending = None, None
        try:
            event = frame_event(item, self.source, datetime.now(UTC))
        except FrameError as exc:
            self._refuse(item.seq, exc.reason)
            return
        except ValidationError as exc:
            self._refuse(item.seq, f"invalid {exc.reason}")
            return
        self._pending = self.publishes.publish(self.topics.events, json.dumps(event.to_payload()))
        self._pending_id = event.id
        if self._confirmed():
            self.stats.delivered += 1
            self._answer(encode_frame(item.seq, ACK, (event.id,)))
        else:
            log.warning(
                "broker did not confirm seq %d within %.0f s; the firmware will resend",
                item.seq,
                self.publish_timeout_s,
            )

    def _confirmed(self) -> bool:
        """Whether the broker confirmed the last publish (waiting up to the timeout)."""
        if self._pending is None or not self.publishes.wait({self._pending}, self.publish_timeout_s):
            return False
        self._pending = None
        return True

    def _refuse(self, seq: int, reason: str) -> None:
        self.stats.refused += 1
        self._answer(encode_frame(seq, NAK, (_reason_field(reason),)))

    def _answer(self, frame: bytes) -> None:
        self._last_answer = frame
        self.link.write(frame)
