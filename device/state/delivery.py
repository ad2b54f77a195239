"""Which suggestions the broker has acknowledged: PUBACKs in, ``delivered_at`` in SQLite out.

The MQTT network thread reports every QoS 1 publish and every PUBACK here (cheap, in memory);
the worker thread writes the acknowledged suggestion ids to SQLite in batches, so the network
thread never waits for the database. A suggestion whose acknowledgement was not written yet
when the process died is published again after the restart: a repeat under the same id,
never a loss.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta

from device.contract.messages import Suggestion
from device.state.store import Store, StoreError

log = logging.getLogger("advisor.device")
MAX_WAITING_IDS = 10_000  # acknowledged ids whose row is not in SQLite yet (held in memory); oldest go first
MAX_OUTSTANDING = 1000  # publishes the broker has not acknowledged yet before the device takes new events
# (paho keeps unacknowledged publishes in memory under 16-bit packet ids: past 65,535 outstanding it
# refuses new ones, which lost a third of 100,000 suggestions in a flood before this bound)


class DeliveryTracker:
    """Packet ids of publishes in flight, and the suggestion ids acknowledged but not yet recorded."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._drained = threading.Condition(self._lock)
        self._in_flight: dict[int, str | None] = {}  # packet id -> suggestion id (None: another message)
        self._early: set[int] = set()  # acknowledged before the publisher registered the packet id
        self._acknowledged: list[str] = []

    def published(self, mid: int, suggestion_id: str | None) -> None:
        """A QoS 1 message went to the client under packet id ``mid`` (``suggestion_id`` if it is one)."""
        with self._lock:
            if mid in self._early:  # the PUBACK overtook this call
                self._early.discard(mid)
                if suggestion_id is not None:
                    self._acknowledged.append(suggestion_id)
            else:
                self._in_flight[mid] = suggestion_id

    def acknowledged(self, mid: int) -> None:
        """The broker acknowledged packet ``mid`` (paho's ``on_publish``, on the network thread)."""
        with self._lock:
            if mid not in self._in_flight:
                self._early.add(mid)
                return
            suggestion_id = self._in_flight.pop(mid)
            if suggestion_id is not None:
                self._acknowledged.append(suggestion_id)
            if len(self._in_flight) < MAX_OUTSTANDING:
                self._drained.notify_all()

    def wait_for_room(self, timeout_s: float) -> bool:
        """Block while :data:`MAX_OUTSTANDING` publishes await the broker; False if still full at the timeout.

        The worker calls this before taking an event, so a flood slows to the pace the broker
        acknowledges instead of piling answers up in memory.
        """
        with self._drained:
            return self._drained.wait_for(lambda: len(self._in_flight) < MAX_OUTSTANDING, timeout_s)

    def flush(self) -> None:
        """Write the acknowledged suggestion ids to SQLite (on the worker thread).

        Ids whose suggestion is not stored yet (held in memory while SQLite refused writes) stay
        for the next flush; on a write error everything stays.
        """
        with self._lock:
            batch, self._acknowledged = self._acknowledged, []
        if not batch:
            return
        try:
            missing = self.store.mark_delivered(batch)
        except StoreError as exc:
            log.debug("acknowledgements not recorded yet: %s", exc)
            missing = batch
        if missing:
            with self._lock:
                self._acknowledged = (missing + self._acknowledged)[-MAX_WAITING_IDS:]

    def to_resend(self, expiry_s: int, now: datetime) -> list[tuple[Suggestion, int]]:
        """After a restart: the undelivered suggestions still fresh, with the seconds each has left.

        Older ones are marked dropped, never sent: a dose suggestion older than the expiry must
        not reach anyone.
        """
        cutoff = now - timedelta(seconds=expiry_s)
        dropped = self.store.drop_undelivered(cutoff)
        if dropped:
            log.warning("%d undelivered suggestion(s) older than %d s were not sent again", dropped, expiry_s)
        return [
            (suggestion, max(1, round(expiry_s - (now - sent).total_seconds())))
            for suggestion, sent in self.store.undelivered(cutoff)
        ]

    @property
    def pending(self) -> int:
        """Acknowledged suggestion ids not yet written to SQLite."""
        with self._lock:
            return len(self._acknowledged)
