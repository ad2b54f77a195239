"""``advisor station``: the ward at a glance for several devices, from their MQTT topics (read-only).

One subscriber follows ``advisor/<id>/{suggestions,status,events}`` of every device named; a
small page on its own port shows them (:class:`tools.ward.station_board.StationBoard`). It offers no
action: doses are recorded at the bedside.
"""

from __future__ import annotations

import contextlib
import threading
from datetime import UTC, datetime
from http import HTTPStatus
from importlib.resources import files

from device.config import BrokerConfig
from device.contract.topics import Topics
from device.mqtt.client import Subscriber
from device.page.auth import host_problem
from device.page.http_server import BoundedServer, SecureHandler
from tools.ward.station_board import LEAVES, StationBoard

CSP = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'"


class Station:
    """The subscriber, the board and the page server of one nurses' station."""

    def __init__(self, broker: BrokerConfig, devices: list[str], host: str, port: int) -> None:
        self.board = StationBoard(devices)
        self._lock = threading.Lock()
        topics = {Topics(d).of(leaf): (d, leaf) for d in devices for leaf in LEAVES}
        self._topics = topics
        self.subscriber = Subscriber(broker, f"advisor-station-{id(self):x}", list(topics), self._on_message)
        handler = type("StationHandler", (_Handler,), {"station": self})
        self.server = BoundedServer((host, port), handler)
        self.page = files("tools.ward").joinpath("station.html").read_bytes()
        self._thread = threading.Thread(target=self.server.serve_forever, name="station-http", daemon=True)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def url(self) -> str:
        host = str(self.server.server_address[0])
        return f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{self.port}/"

    def _on_message(self, message) -> None:
        device_id, leaf = self._topics[message.topic]
        with self._lock:
            self.board.update(device_id, leaf, message.payload)

    def overview_json(self) -> bytes:
        with self._lock:
            return self.board.overview(datetime.now(UTC), self.subscriber.connected.is_set()).to_json()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.subscriber.close()


class _Handler(SecureHandler):
    station: Station
    csp = CSP
    name = "advisor-station"

    def log_message(self, format: str, *args: object) -> None:  # quiet; the station is a screen
        return

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        with contextlib.suppress(OSError):  # a browser that went away
            self.answer(status, body, content_type)

    def do_GET(self) -> None:
        problem = host_problem(self.headers.get("Host"), self.station.port, ())
        if problem is not None:
            self._send(HTTPStatus.MISDIRECTED_REQUEST, b'{"error": "wrong host"}', "application/json")
        elif self.path in ("/", "/index.html"):
            self._send(HTTPStatus.OK, self.station.page, "text/html; charset=utf-8")
        elif self.path == "/api/overview":
            self._send(HTTPStatus.OK, self.station.overview_json(), "application/json")
        else:
            self._send(HTTPStatus.NOT_FOUND, b'{"error": "not found"}', "application/json")

    def do_POST(self) -> None:
        self._send(HTTPStatus.METHOD_NOT_ALLOWED, b'{"error": "the station is read-only"}', "application/json")
