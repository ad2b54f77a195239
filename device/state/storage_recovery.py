"""What the device does while SQLite refuses writes (locked, disk full, read-only).

The advisor goes on suggesting while the write-behind store (device/state/write_behind.py) keeps
accepted events and sent suggestions in memory. The
broker keeps each such event unacknowledged, so nothing is lost if the device dies meanwhile.
Every retry tries to store what is held; once it succeeds the held events are acknowledged
and the device says it has recovered. Memory is bounded: with ``max_held_events`` held, the
device takes nothing new (the broker keeps the rest) until the database recovers.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import paho.mqtt.client as mqtt

from device.contract.messages import ErrorMessage
from device.state.store import StoreError
from device.state.write_behind import WriteBehind

log = logging.getLogger("advisor.device")
RETRY_S = 2.0  # while SQLite refuses writes, try again this often


class StorageRecovery:
    """The storage-problem state: held acknowledgements, retries, and what to tell the world."""

    def __init__(
        self,
        writes: WriteBehind,
        max_held_events: int,
        ack: Callable[[mqtt.MQTTMessage], None],
        report: Callable[[ErrorMessage], object],
        on_change: Callable[[], None],
    ) -> None:
        self.writes = writes
        self.max_held_events = max_held_events
        self.problem: str | None = None
        self._ack = ack
        self._report = report
        self._on_change = on_change
        self._unacked: list[mqtt.MQTTMessage] = []  # events held in memory, acknowledged once stored
        self._lock = threading.Lock()

    @property
    def full(self) -> bool:
        """Memory holds as much as allowed: take nothing new until the database recovers."""
        return self.problem is not None and self.writes.held_events >= self.max_held_events

    def hold(self, reason: str, event_id: str | None, message: mqtt.MQTTMessage) -> None:
        """SQLite refused a write for this event: acknowledge it later; say so the first time."""
        with self._lock:
            self._unacked.append(message)
            first = self.problem is None
            self.problem = self.problem or reason
        if first:
            log.error("state database unavailable: %s; suggesting from memory until it recovers", reason)
            self._report(
                ErrorMessage(
                    event_id,
                    f"{reason}; suggesting from memory, the event is kept at the "
                    "broker and stored when the database recovers",
                )
            )
            self._on_change()

    def refused(self, reason: str) -> None:
        """A page action or sign-in found the database refusing writes: say so until a write succeeds."""
        with self._lock:
            first = self.problem is None
            self.problem = self.problem or reason
        if first:
            log.error("state database unavailable: %s; page actions are refused until it recovers", reason)
            self._report(ErrorMessage(None, f"{reason}; page actions are refused until the database recovers"))
            self._on_change()

    def retry(self) -> None:
        """Store what was held in memory; then acknowledge the events the broker kept for us."""
        if self.problem is None or self.writes.flush() is not None:
            return
        try:
            self.writes.store.probe()  # nothing held (a page's refusal): recovered only once a write succeeds
        except StoreError:
            return
        with self._lock:
            unacked, self._unacked = self._unacked, []
            self.problem = None
        for message in unacked:
            self._ack(message)
        log.warning("state database recovered: %d held event(s) stored", len(unacked))
        self._on_change()
