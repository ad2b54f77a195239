"""``advisor bridge hl7``: an MLLP listener that publishes HL7 results as device events.

Every message gets an ``ACK``: ``AA`` only after the broker confirmed every event of the message
(QoS 1 PUBACK), ``AE``/``AR`` with the reason in MSA-3 and ERR otherwise, and nothing is published
for a refused message. A resend of a control id (MSH-10) already acknowledged ``AA`` gets the same
answer without a second publish; a control id reused for different content is refused. Event ids
derive from the control id, so even a resend after a restart of the bridge is one event on the
device (it keeps the first copy of an id and does not answer it twice).
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import socketserver
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

from device.config import BrokerConfig
from device.contract.topics import Topics
from device.mqtt.client import PersistentPublisher
from interop.hl7.messages import Hl7Config, Inbound, Refusal, acknowledgement, parse, read_message, sender_key
from interop.hl7.mllp import MllpError, MllpReader, frame

log = logging.getLogger("advisor.hl7")

REMEMBERED = 100_000  # control ids kept for resends (a ward's results of several weeks)


@dataclass
class Hl7Stats:
    """What the bridge did since it started, by outcome."""

    accepted: int = 0
    events: int = 0
    resends: int = 0
    refused: dict[str, int] = field(default_factory=dict)


class Hl7Bridge:
    """Turns message text into an ACK text, publishing the events on the way (thread-safe)."""

    def __init__(
        self, config: Hl7Config, broker: BrokerConfig, device_id: str, publish_timeout_s: float = 10.0
    ) -> None:
        self.config = config
        self.topics = Topics(device_id)
        self.publish_timeout_s = publish_timeout_s
        self.stats = Hl7Stats()
        self.mqtt = PersistentPublisher(broker, f"advisor-hl7-{device_id}-{config.source}")
        self._seen: OrderedDict[str, tuple[str, str]] = OrderedDict()  # sender^control id -> (digest, ACK)
        self._lock = threading.RLock()  # _refuse counts under it, also from inside handle

    def close(self) -> None:
        self.mqtt.close()

    def handle(self, text: str) -> str:
        """The ACK to one message (its events published and confirmed when the code is AA)."""
        message = None
        try:
            message = parse(text)
            inbound = read_message(message, self.config)
            key = f"{sender_key(message.segment('MSH'))}^{inbound.control_id}"
        except Refusal as refusal:
            return self._refuse(message, refusal)
        except Exception as exc:  # the parser's own errors on broken segments: answered, never a dead connection
            log.exception("HL7 message could not be read")
            return self._refuse(message, Refusal(f"the message could not be read: {exc}"[:200], code="AR"))
        with self._lock:  # one message at a time: resends and their originals never race
            seen = self._seen.get(key)
            if seen is not None:
                if seen[0] != inbound.digest:
                    reused = Refusal(
                        f"control id {inbound.control_id!r} was already used for a different message",
                        error=207,
                        where="MSH^1^10",
                    )
                    return self._refuse(message, reused)
                self.stats.resends += 1
                return seen[1]
            try:
                self._publish(inbound)
            except Refusal as refusal:
                return self._refuse(message, refusal)
            ack = acknowledgement(message, "AA", inbound.note or self._summary(inbound))
            self._seen[key] = (inbound.digest, ack)
            while len(self._seen) > REMEMBERED:
                self._seen.popitem(last=False)
            self.stats.accepted += 1
            self.stats.events += len(inbound.events)
        return ack

    def _summary(self, inbound: Inbound) -> str:
        return f"{len(inbound.events)} event(s) sent to device {self.topics.device_id}"

    def _publish(self, inbound: Inbound) -> None:
        tracker = self.mqtt.tracker
        mids = {tracker.publish(self.topics.events, json.dumps(e.to_payload())) for e in inbound.events}
        if not tracker.wait(mids, self.publish_timeout_s):
            tracker.abandon(mids)  # the engine sends again: new packets, and these ids may come round again
            raise Refusal(
                f"the broker did not confirm the event(s) within {self.publish_timeout_s:g} s; send the message again",
                code="AR",
            )
        refused = [tracker.refused.pop(mid) for mid in mids if mid in tracker.refused]
        if refused:
            raise Refusal(f"the broker refused the event(s): {refused[0]} (check its ACL)", code="AR")

    def _refuse(self, message, refusal: Refusal) -> str:
        with self._lock:
            self.stats.refused[refusal.code] = self.stats.refused.get(refusal.code, 0) + 1
        log.warning("HL7 message refused (%s): %s", refusal.code, refusal.reason)
        try:
            return acknowledgement(message, refusal.code, refusal.reason, refusal)
        except Exception:  # a header too broken to answer in kind: an ACK without the sender's fields
            return acknowledgement(None, refusal.code, refusal.reason, refusal)


class _Connection(socketserver.BaseRequestHandler):
    server: Hl7Server

    def setup(self) -> None:
        self.request.settimeout(self.server.idle_timeout_s)
        self.server.opened(self.request)

    def finish(self) -> None:
        self.server.closed(self.request)

    def handle(self) -> None:
        reader = MllpReader()
        while not self.server.stopping.is_set():
            try:
                data = self.request.recv(65536)
            except (TimeoutError, OSError):
                return
            if not data:
                return
            try:
                messages = reader.feed(data)
            except MllpError as exc:
                self.request.sendall(frame(acknowledgement(None, "AR", str(exc), Refusal(str(exc), "AR", 102))))
                self._drain()
                return
            for raw in messages:
                text = raw.decode(self.server.encoding, errors="replace")
                self.request.sendall(frame(self.server.bridge.handle(text), self.server.encoding))

    def _drain(self, limit: int = 16 * 1024 * 1024) -> None:
        """Close our side and read what the client still sends, so the refusal is not lost to a reset."""
        try:
            self.request.shutdown(socket.SHUT_WR)
            self.request.settimeout(2.0)
            while limit > 0:
                data = self.request.recv(65536)
                if not data:
                    return
                limit -= len(data)
        except OSError:
            return


class Hl7Server(socketserver.ThreadingTCPServer):
    """The MLLP listener: a thread per connection, at most ``max_connections`` at once, and a
    connection idle for ``idle_timeout_s`` is closed. Port 0 binds a free port (``port``)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        bridge: Hl7Bridge,
        max_connections: int = 32,
        idle_timeout_s: float = 300.0,
        encoding: str = "utf-8",
    ) -> None:
        self.bridge = bridge
        self.idle_timeout_s = idle_timeout_s
        self.encoding = encoding
        self.stopping = threading.Event()
        self._slots = threading.BoundedSemaphore(max_connections)
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, _Connection)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def verify_request(self, request, client_address) -> bool:
        if self._slots.acquire(blocking=False):
            return True
        log.warning("HL7 connection from %s refused: %s", client_address[0], "too many connections")
        return False

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def opened(self, connection: socket.socket) -> None:
        with self._open_lock:
            self._open.add(connection)

    def closed(self, connection: socket.socket) -> None:
        with self._open_lock:
            self._open.discard(connection)

    def stop(self) -> None:
        """Stop taking connections and end the open ones (a connection waiting in ``recv`` wakes at once)."""
        self.stopping.set()
        self.shutdown()
        with self._open_lock:
            for connection in self._open:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
        self.server_close()


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (IPv4 or a name; port 0: any free port) as a bind address, or ValueError."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{value!r} is not HOST:PORT (e.g. 0.0.0.0:2575)")
    host = host or "0.0.0.0"
    try:
        socket.getaddrinfo(host, None, socket.AF_INET)
    except socket.gaierror:
        raise ValueError(f"{host!r} is not an address of this machine") from None
    return host, int(port)
