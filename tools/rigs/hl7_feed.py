"""Readings into a device through the HL7 bridge (``advisor load --via hl7``): each reading as an
``ORU^R01`` over MLLP to an :class:`interop.hl7.listener.Hl7Server` in this process, which publishes
it to the device's broker, as a hospital's glucometer middleware would."""

from __future__ import annotations

import socket
import threading
from collections import Counter

from device.config import BrokerConfig
from domain.events import Event
from interop.hl7.listener import Hl7Bridge, Hl7Server
from interop.hl7.messages import Hl7Config
from interop.hl7.mllp import MllpReader, frame


def oru_text(event: Event) -> str:
    """A glucose reading as a glucometer's ``ORU^R01`` (MSH-10 is the reading's id)."""
    at = event.ts.strftime("%Y%m%d%H%M%S%z")
    return "\r".join(
        [
            f"MSH|^~\\&|LOADRIG|WARD|ADVISOR|HOSP|{at}||ORU^R01^ORU_R01|{event.id}|P|2.5.1",
            f"PID|1||{event.patient}^^^HOSP^MR",
            f"OBX|1|NM|41653-7^Glucose^LN||{event.reading:g}|mg/dL|||||F|||{at}",
        ]
    )


class Hl7Feed:
    """An HL7 bridge on a free loopback port and ``connections`` MLLP clients sending to it."""

    def __init__(self, broker: BrokerConfig, device_id: str, connections: int = 4) -> None:
        self.bridge = Hl7Bridge(Hl7Config(source="hl7"), broker, device_id)
        self.server = Hl7Server(("127.0.0.1", 0), self.bridge)
        self.connections = connections
        self.acks: Counter[str] = Counter()
        self._lock = threading.Lock()
        threading.Thread(target=self.server.serve_forever, name="hl7-feed", daemon=True).start()

    @staticmethod
    def event_id(reading_id: str) -> str:
        """The id of the event the bridge makes of a reading sent with this id."""
        return f"hl7-{reading_id}-1"

    def send(self, events: list[Event]) -> None:
        """Send every reading, spread over the connections; each waits for its ACK before the next."""
        parts = [events[i :: self.connections] for i in range(self.connections)]
        threads = [threading.Thread(target=self._send, args=(part,)) for part in parts if part]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def _send(self, events: list[Event]) -> None:
        reader = MllpReader()
        with socket.create_connection(("127.0.0.1", self.server.port), timeout=60) as link:
            for event in events:
                link.sendall(frame(oru_text(event)))
                answers: list[bytes] = []
                while not answers:
                    data = link.recv(65536)
                    if not data:
                        raise ConnectionError("the HL7 bridge closed the connection")
                    answers = reader.feed(data)
                code = answers[0].split(b"\rMSA|", 1)[1][:2].decode()
                with self._lock:
                    self.acks[code] += 1

    def close(self) -> None:
        self.server.stop()
        self.bridge.close()
