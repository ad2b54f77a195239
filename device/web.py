"""The bedside page: one self-contained HTML file, a small JSON API and a server-sent event stream.

Standard library only. Binds to localhost unless configured otherwise. The page loads nothing
from elsewhere and its Content-Security-Policy forbids it to contact any other origin.

The routes and their payloads are in docs/contract.md ("HTTP endpoints"); each payload is a
schema of :mod:`device.messages`.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.resources import files
from typing import Protocol
from urllib.parse import unquote, urlsplit

from preprocessing.events import Event
from preprocessing.limits import INSULIN_UNITS
from preprocessing.validation import IDENTIFIER

from .config import HttpConfig
from .messages import (
    Acknowledge,
    ActionDone,
    ApiError,
    ConfirmDose,
    Message,
    PageStatus,
    PatientList,
    PatientView,
    StreamNudge,
)
from .page_auth import ActionGuard

log = logging.getLogger("advisor.web")
MAX_BODY_BYTES = 4096
TOKEN_HEADER = "X-Advisor-Token"
HEARTBEAT_S = 10.0
CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'"
)


class BedsideBackend(Protocol):
    """What the page needs from the running device (:class:`device.service.DeviceService`)."""

    def status(self) -> PageStatus: ...

    def patients(self) -> list[str]: ...

    def patient_view(self, patient: str) -> PatientView: ...

    def confirm_dose(self, patient: str, suggestion_id: str, units: float) -> Event: ...

    def acknowledge(self, patient: str, suggestion_id: str) -> None: ...

    def subscribe(self, listener: Callable[[str], None]) -> None: ...


class _Broadcaster:
    """Fans change notifications out to every open event stream."""

    def __init__(self) -> None:
        self._queues: set[queue.Queue] = set()
        self._lock = threading.Lock()

    def add(self) -> queue.Queue:
        q: queue.Queue = queue.Queue(maxsize=256)
        with self._lock:
            self._queues.add(q)
        return q

    def remove(self, q: queue.Queue) -> None:
        with self._lock:
            self._queues.discard(q)

    def publish(self, item: str | None) -> None:
        with self._lock:
            targets = list(self._queues)
        for q in targets:
            with contextlib.suppress(queue.Full):  # a stalled browser misses a nudge; its next fetch catches up
                q.put_nowait(item)


class BedsideServer:
    """A threaded HTTP server for the page; ``start`` returns at once."""

    def __init__(self, config: HttpConfig, backend: BedsideBackend) -> None:
        self.config = config
        self.backend = backend
        self.streams = _Broadcaster()
        backend.subscribe(self.streams.publish)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.page = files("device").joinpath("web_assets/bedside.html").read_bytes()
        self.guard = ActionGuard(config.action_token)

    @property
    def url(self) -> str:
        host, port = self.address
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
        return f"http://{shown}:{port}/"

    @property
    def address(self) -> tuple[str, int]:
        if self._server is None:
            return self.config.host, self.config.port
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        handler = type("BoundHandler", (_Handler,), {"app": self})
        try:
            self._server = ThreadingHTTPServer((self.config.host, self.config.port), handler)
        except OSError as exc:
            raise OSError(
                f"cannot serve the bedside page on {self.config.host}:{self.config.port}: {exc.strerror}"
            ) from None
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="bedside-http", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is None:
            return
        self.streams.publish(None)  # ends open event streams
        self._server.shutdown()
        self._server.server_close()


class _Handler(BaseHTTPRequestHandler):
    app: BedsideServer
    server_version = "advisor-bedside"
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt: str, *args) -> None:
        log.debug("%s %s", self.address_string(), fmt % args)

    # ---------------------------------------------------------------- helpers
    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, message: Message, status: int = HTTPStatus.OK) -> None:
        self._send(status, message.to_json(), "application/json")

    def _error(self, status: int, message: str) -> None:
        self._json(ApiError(message), status)

    def _patient_route(self, path: str) -> tuple[str | None, str]:
        """``/api/patients/<id>[/action]`` → (id, action)."""
        rest = path[len("/api/patients/") :]
        patient, _, action = rest.partition("/")
        patient = unquote(patient)
        return (patient if IDENTIFIER.match(patient) else None), action

    # ------------------------------------------------------------------ verbs
    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        backend = self.app.backend
        if path in ("/", "/index.html"):
            self._send(HTTPStatus.OK, self.app.page, "text/html; charset=utf-8")
        elif path == "/api/status":
            self._json(backend.status())
        elif path == "/api/patients":
            self._json(PatientList(backend.patients()))
        elif path == "/api/stream":
            self._stream()
        elif path.startswith("/api/patients/"):
            patient, action = self._patient_route(path)
            if patient is None or action or patient not in backend.patients():
                self._error(HTTPStatus.NOT_FOUND, "unknown patient")
                return
            self._json(backend.patient_view(patient))
        else:
            self._error(HTTPStatus.NOT_FOUND, "not found")

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        if not path.startswith("/api/patients/"):
            self._error(HTTPStatus.NOT_FOUND, "not found")
            return
        patient, action = self._patient_route(path)
        if patient is None or action not in ("confirm", "acknowledge"):
            self._error(HTTPStatus.NOT_FOUND, "not found")
            return
        if self.headers.get("Content-Type", "").split(";")[0].strip() != "application/json":
            self._error(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send application/json")
            return
        length = int(self.headers.get("Content-Length") or 0)
        if not 0 < length <= MAX_BODY_BYTES:
            self.close_connection = True
            self._error(HTTPStatus.BAD_REQUEST, "missing or oversized body")
            return
        raw = self.rfile.read(length)
        decision = self.app.guard.check(self.headers.get(TOKEN_HEADER))
        if not decision.allowed:
            log.warning("refused a page action from %s: %s", self.client_address[0], decision.reason)
            self._error(decision.status, decision.reason)
            return
        try:
            if action == "confirm":
                confirm = ConfirmDose.from_json(raw)
                if not INSULIN_UNITS.low < confirm.units <= INSULIN_UNITS.high:
                    raise ValueError(f"units must be a number in (0, {INSULIN_UNITS.high:g}]")
                event = self.app.backend.confirm_dose(patient, confirm.suggestion_id, confirm.units)
                self._json(ActionDone(ok=True, event=event.to_payload()))
            else:
                self.app.backend.acknowledge(patient, Acknowledge.from_json(raw).suggestion_id)
                self._json(ActionDone(ok=True))
        except ValueError as exc:
            self._error(HTTPStatus.BAD_REQUEST, str(exc))

    def _stream(self) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Security-Policy", CSP)
        self.end_headers()
        q = self.app.streams.add()
        try:
            self.wfile.write(b"retry: 2000\ndata: " + StreamNudge("").to_json() + b"\n\n")
            self.wfile.flush()
            while True:
                try:
                    item = q.get(timeout=HEARTBEAT_S)
                except queue.Empty:
                    self.wfile.write(b": heartbeat\n\n")
                    self.wfile.flush()
                    continue
                if item is None:
                    break
                self.wfile.write(b"data: " + StreamNudge(item).to_json() + b"\n\n")
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            self.app.streams.remove(q)
            self.close_connection = True
