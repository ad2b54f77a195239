"""Inbound messages → their handlers, on one worker thread behind a bounded queue.

The routing is a table, topic → handler. Each handler returns what to do with the broker's
copy: acknowledge it now, keep it until the database has stored it, or leave it to be
delivered again. The queue is bounded: when the worker falls behind, :meth:`Dispatcher.submit`
blocks the network thread, paho stops reading and TCP pushes back on the broker, which keeps
the rest in the session. (Mosquitto 2.0.11 was measured to ignore the MQTT 5 receive maximum
once acknowledgements start flowing: it pushed 9,500 of 10,000 events unacknowledged.)
"""

from __future__ import annotations

import contextlib
import enum
import logging
import queue
import threading
import time
from collections.abc import Callable

import paho.mqtt.client as mqtt

from device.state.storage_recovery import RETRY_S, StorageRecovery

log = logging.getLogger("advisor.device")
WORK_QUEUE_MAX = 64
HOUSEKEEPING_S = 0.5
ROOM_STEP_S = 0.25
ROOM_WAIT_S = 5.0


class Handled(enum.Enum):
    """What a handler did with a message, and so what becomes of the broker's copy."""

    DONE = "done"  # acknowledge now
    HELD = "held"  # kept in memory; StorageRecovery acknowledges it once stored
    RETRY = "retry"  # not acknowledged: the broker delivers it again


Handler = Callable[[mqtt.MQTTMessage, float], Handled]
Task = Callable[[], None]


class Dispatcher:
    """Routes each message by topic; unknown topics are acknowledged and dropped.

    The same thread runs ``housekeeping`` (writing the broker's acknowledgements to SQLite)
    at most every :data:`HOUSEKEEPING_S`, and one-off tasks handed to :meth:`run_soon`, so
    everything that writes the database happens on one thread.
    """

    def __init__(
        self,
        routes: dict[str, Handler],
        ack: Callable[[mqtt.MQTTMessage], None],
        recovery: StorageRecovery,
        housekeeping: Task,
        room: Callable[[float], bool],
    ) -> None:
        """``room(timeout_s)`` blocks while the outbound side is full (see DeliveryTracker.wait_for_room)."""
        self.routes = routes
        self._ack = ack
        self._recovery = recovery
        self._housekeeping = housekeeping
        self._room = room
        self._last_housekeeping = time.monotonic()
        self._work: queue.Queue[tuple[float, mqtt.MQTTMessage] | Task | None] = queue.Queue(maxsize=WORK_QUEUE_MAX)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="advisor-worker", daemon=True)

    def submit(self, message: mqtt.MQTTMessage) -> None:
        """Queue a message with its arrival time; blocks while the queue is full (backpressure)."""
        self._work.put((time.perf_counter(), message))

    def run_soon(self, task: Task) -> None:
        """Run ``task`` on the worker thread after the messages already queued."""
        self._work.put(task)

    def _run(self) -> None:
        while True:
            while self._recovery.full:
                if self._stopping.wait(RETRY_S):
                    return
                self._recovery.retry()
            try:
                item = self._work.get(timeout=RETRY_S if self._recovery.problem else HOUSEKEEPING_S)
            except queue.Empty:
                self._recovery.retry()
                self._tidy(force=True)
                continue
            if item is None:
                self._tidy(force=True)
                return
            if self._recovery.problem:
                self._recovery.retry()
            if callable(item):
                item()
            else:
                self._wait_for_room()
                self._handle(*item)
            self._tidy()

    def _wait_for_room(self) -> None:
        """Hold the next event while the broker has not acknowledged enough of the answers sent.

        Bounded waits: the network thread may itself be waiting for this queue, and then it
        cannot read the acknowledgements; after :data:`ROOM_WAIT_S` the event is handled anyway.
        """
        waited = 0.0
        while not self._room(ROOM_STEP_S):
            self._tidy(force=True)
            waited += ROOM_STEP_S
            if waited >= ROOM_WAIT_S or self._stopping.is_set():
                log.warning("the broker is slow to acknowledge the device's answers; going on")
                return

    def _tidy(self, force: bool = False) -> None:
        if force or time.monotonic() - self._last_housekeeping >= HOUSEKEEPING_S:
            self._last_housekeeping = time.monotonic()
            self._housekeeping()

    def _handle(self, received: float, message: mqtt.MQTTMessage) -> None:
        handler = self.routes.get(message.topic)
        outcome = Handled.DONE if handler is None else handler(message, received)
        if outcome is Handled.DONE:
            self._ack(message)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            with contextlib.suppress(queue.Full):  # a worker waiting for the database sees the stop flag
                self._work.put(None, timeout=1.0)
            self._thread.join(10)
