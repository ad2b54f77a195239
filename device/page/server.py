"""The bedside page: one self-contained HTML file, a small JSON API and a server-sent event stream.

Standard library only. Binds to localhost unless configured otherwise. The page loads nothing
from elsewhere and its Content-Security-Policy forbids it to contact any other origin.

The routes and their payloads are in docs/contract.md ("HTTP endpoints"); each payload is a
schema of :mod:`device.contract.messages`. Who may record what: :mod:`device.page.auth`, :mod:`device.page.users`.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from datetime import UTC, date, datetime
from http import HTTPStatus
from http.server import ThreadingHTTPServer
from importlib.resources import files
from typing import Literal, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from device.config import HttpConfig
from device.contract.messages import (
    Acknowledge,
    ActionDone,
    ApiError,
    ConfirmDose,
    DaySummary,
    Decline,
    ErrorMessage,
    Health,
    Message,
    PageSession,
    PageStatus,
    PatientList,
    PatientView,
    Risk,
    SignedIn,
    SignIn,
    StreamNudge,
    WardAdherence,
)
from device.contract.schema import SchemaError
from device.page.actions import LinkDown, NotAllowed
from device.page.auth import ActionGuard, PageSessions, SignInGuard, host_problem, origin_problem
from device.page.http_server import MAX_CONNECTIONS, BoundedServer, SecureHandler
from device.page.users import SHARED_USER, Identity
from device.rules.dose_responses import ActionConflict
from device.state.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from device.state.store import StoreError
from domain.events import Event
from domain.validation import MAX_HISTORY_BYTES, ValidationError, event_from_mapping, is_identifier, parse_json_object

log = logging.getLogger("advisor.web")
MAX_BODY_BYTES = 4096
TOKEN_HEADER = "X-Advisor-Token"
SESSION_HEADER = "X-Advisor-Session"
HEARTBEAT_S = 10.0
MAX_STREAMS = 16  # live pages' event streams: a budget of their own, so a nurse's request always has room
PATIENT_PAGE = 200
MAX_OFFSET = 10**9
FIRST_DAY, LAST_DAY = date(2000, 1, 1), date(2099, 12, 31)  # a day outside is a typo, answered 400
MAX_PATIENT_PAGE = 500
FAVICON = (  # a drop on a dark square: the page asks for an icon on every load
    b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><rect width="16" height="16" rx="3" fill="#1f2937"/>'
    b'<path d="M8 2.5C8 2.5 3.5 8 3.5 10.5a4.5 4.5 0 0 0 9 0C12.5 8 8 2.5 8 2.5z" fill="#22c55e"/></svg>'
)
CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'"
)


class BedsideBackend(Protocol):
    """What the page needs from the running device (:class:`device.page.backend.PageBackend`)."""

    def status(self) -> PageStatus: ...

    def health(self) -> Health: ...

    def metrics(self) -> str: ...

    def patients(self, offset: int, limit: int, starting: str) -> PatientList: ...

    def has_patient(self, patient: str) -> bool: ...

    def storage_refused(self, reason: str) -> None: ...

    def patient_view(self, patient: str, who: Identity | None = None) -> PatientView: ...

    def confirm_dose(self, patient: str, request: ConfirmDose, who: Identity) -> tuple[Event, list[ErrorMessage]]: ...

    def decline(self, patient: str, request: Decline, who: Identity) -> None: ...

    def acknowledge(self, patient: str, suggestion_id: str, who: Identity) -> None: ...

    def enter(self, event: Event, who: Identity, reason: str | None = None) -> list[ErrorMessage]: ...

    def day_summary(self, patient: str, day: date | None = None) -> DaySummary: ...

    def assess_risk(self, raw: bytes, who: Identity) -> list[ErrorMessage | Risk]: ...

    def day_summary_pdf(self, patient: str, day: date | None = None) -> bytes: ...

    def adherence(self, day: date | None = None) -> WardAdherence: ...

    def users_configured(self) -> bool: ...

    def sign_in(self, user: str, pin: str) -> Identity | None: ...

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
        self.page = files("device.page").joinpath("bedside.html").read_bytes()
        self.guard = ActionGuard(config.action_token)
        self.sign_in_guard = SignInGuard()
        self.sessions = PageSessions()
        self.stream_slots = threading.BoundedSemaphore(MAX_STREAMS)

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
            self._server = BoundedServer((self.config.host, self.config.port), handler, MAX_CONNECTIONS)
        except OSError as exc:
            raise OSError(
                f"cannot serve the bedside page on {self.config.host}:{self.config.port}: {exc.strerror}"
            ) from None
        self._thread = threading.Thread(target=self._server.serve_forever, name="bedside-http", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is None:
            return
        self.streams.publish(None)  # ends open event streams
        self._server.shutdown()
        self._server.server_close()


class _Handler(SecureHandler):
    app: BedsideServer
    csp = CSP
    name = "advisor-bedside"

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    # ---------------------------------------------------------------- helpers
    def _json(self, message: Message, status: int = HTTPStatus.OK) -> None:
        self.answer(status, message.to_json(), "application/json")

    def _error(self, status: int, message: str) -> None:
        self._json(ApiError(message), status)

    def _patient_route(self, path: str) -> tuple[str | None, str]:
        """``/api/patients/<id>[/action]`` → (id, action)."""
        rest = path[len("/api/patients/") :]
        patient, _, action = rest.partition("/")
        patient = unquote(patient)
        return (patient if is_identifier(patient) else None), action

    def _refuse_foreign_host(self) -> bool:
        """Answer 421 to a request that names another host (DNS rebinding); True if refused."""
        port = self.app.address[1]
        problem = host_problem(self.headers.get("Host"), port, self.app.config.allowed_hosts)
        if problem is None:
            return False
        log.warning("refused a request from %s: %s", self.client_address[0], problem)
        self.close_connection = True
        self._error(HTTPStatus.MISDIRECTED_REQUEST, problem)
        return True

    # ------------------------------------------------------------------ verbs
    def handle_one_request(self) -> None:
        """One request; an unexpected failure is logged and answered 500 in one line, never a dropped connection."""
        try:
            super().handle_one_request()
        except StoreError as exc:  # the database cannot be read or written: said in one line, 503
            log.error("the bedside page could not use the database on %s: %s", getattr(self, "path", "?"), exc)
            self.app.backend.storage_refused(str(exc))
            self.close_connection = True
            with contextlib.suppress(OSError):
                self._error(HTTPStatus.SERVICE_UNAVAILABLE, f"{exc}; record on paper")
        except Exception:  # the page must get an answer whatever went wrong
            log.exception("the bedside page failed on %s", getattr(self, "path", "?"))
            self.close_connection = True
            with contextlib.suppress(OSError):
                self._error(HTTPStatus.INTERNAL_SERVER_ERROR, "the device failed on this request; see its log")

    def do_GET(self) -> None:
        if self._refuse_foreign_host():
            return
        parts = urlsplit(self.path)
        path = parts.path
        backend = self.app.backend
        if path in ("/", "/index.html"):
            self.answer(HTTPStatus.OK, self.app.page, "text/html; charset=utf-8")
        elif path in ("/favicon.svg", "/favicon.ico"):
            self.answer(HTTPStatus.OK, FAVICON, "image/svg+xml")
        elif path == "/api/status":
            self._json(backend.status())
        elif path == "/health":
            health = backend.health()
            self._json(health, HTTPStatus.OK if health.healthy else HTTPStatus.SERVICE_UNAVAILABLE)
        elif path == "/metrics":
            self.answer(HTTPStatus.OK, backend.metrics().encode(), METRICS_CONTENT_TYPE)
        elif path == "/api/session":
            self._json(PageSession(self.app.sessions.issue()))
        elif path == "/api/adherence":
            day = self._day(parts.query)
            if day is not False:
                self._json(backend.adherence(day))
        elif path == "/api/me":
            self._json(self._signed_in(self._viewer()))
        elif path == "/api/patients":
            self._patient_list(parts.query)
        elif path == "/api/stream":
            self._stream()
        elif path.startswith("/api/patients/"):
            patient, action = self._patient_route(path)
            if patient is None or action not in ("", "summary", "summary.pdf") or not backend.has_patient(patient):
                self._error(HTTPStatus.NOT_FOUND, "unknown patient")
                return
            if not action:
                self._json(backend.patient_view(patient, self._viewer()))
                return
            day = self._day(parts.query)
            if day is False:
                return
            if action == "summary":
                self._json(backend.day_summary(patient, day))
            else:
                self.answer(HTTPStatus.OK, backend.day_summary_pdf(patient, day), "application/pdf")
        else:
            self._error(HTTPStatus.NOT_FOUND, "not found")

    def _day(self, query: str) -> date | Literal[False] | None:
        """``?date=YYYY-MM-DD`` (None: today), or False after answering 400."""
        text = parse_qs(query).get("date", [""])[0]
        if not text:
            return None
        try:
            day = date.fromisoformat(text)
        except ValueError:
            day = None
        if day is None or not FIRST_DAY <= day <= LAST_DAY:
            self._error(HTTPStatus.BAD_REQUEST, f"date must be YYYY-MM-DD, {FIRST_DAY} to {LAST_DAY}")
            return False
        return day

    def _viewer(self) -> Identity | None:
        """The signed-in user of this request's page session (reading does not keep the session awake)."""
        return self.app.sessions.identity(self.headers.get(SESSION_HEADER), self.app.config.idle_lock_s, touch=False)

    def _signed_in(self, who: Identity | None) -> SignedIn:
        return SignedIn(
            user=None if who is None else who.user,
            role=None if who is None else who.role,
            users_configured=self.app.backend.users_configured(),
            idle_lock_s=self.app.config.idle_lock_s,
        )

    def do_HEAD(self) -> None:
        if urlsplit(self.path).path == "/api/stream":
            self.start_answer(HTTPStatus.OK, "text/event-stream", None)
            return
        self.do_GET()

    def do_OPTIONS(self) -> None:
        """No cross-origin use: say what the page allows and nothing more."""
        self.send_response(HTTPStatus.NO_CONTENT)
        self.send_header("Allow", "GET, HEAD, POST, OPTIONS")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _patient_list(self, query: str) -> None:
        params = parse_qs(query)
        try:
            offset = int(params.get("offset", ["0"])[0])
            limit = int(params.get("limit", [str(PATIENT_PAGE)])[0])
        except ValueError:
            self._error(HTTPStatus.BAD_REQUEST, "offset and limit must be whole numbers")
            return
        starting = params.get("starting", [""])[0]
        if not 0 <= offset <= MAX_OFFSET or not 1 <= limit <= MAX_PATIENT_PAGE or len(starting) > 64:
            self._error(HTTPStatus.BAD_REQUEST, f"offset must be 0–{MAX_OFFSET} and limit 1–{MAX_PATIENT_PAGE}")
            return
        self._json(self.app.backend.patients(offset, limit, starting))

    def do_POST(self) -> None:
        if self._refuse_foreign_host():
            return
        path = urlsplit(self.path).path
        patient, action = None, ""
        if path.startswith("/api/patients/"):
            patient, action = self._patient_route(path)
            if patient is None or action not in ("confirm", "decline", "acknowledge"):
                self._error(HTTPStatus.NOT_FOUND, "not found")
                return
        elif path not in ("/api/events", "/api/sign-in", "/api/sign-out", "/api/risk"):
            self._error(HTTPStatus.NOT_FOUND, "not found")
            return
        raw = self._body(MAX_HISTORY_BYTES if path == "/api/risk" else MAX_BODY_BYTES)
        if raw is None:
            return
        problem = origin_problem(self.headers.get("Origin"), self.headers.get("Host"))
        if problem is None and not self.app.sessions.valid(self.headers.get(SESSION_HEADER)):
            problem = "this page session is not valid (reload the page)"
        if problem is not None:
            log.warning("refused a page action from %s: %s", self.client_address[0], problem)
            self._error(HTTPStatus.FORBIDDEN, problem)
            return
        try:
            if path == "/api/sign-in":
                self._sign_in(raw)
            elif path == "/api/sign-out":
                self.app.sessions.sign_out(self.headers.get(SESSION_HEADER))
                self._json(self._signed_in(None))
            else:
                who = self._actor()
                if who is not None and path == "/api/risk":
                    self._risk(raw, who)
                elif who is not None:
                    self._act(patient, action, raw, who)
        except (ValueError, SchemaError) as exc:
            status = HTTPStatus.CONFLICT if isinstance(exc, ActionConflict) else HTTPStatus.BAD_REQUEST
            self._error(status, exc.reason if isinstance(exc, ValidationError) else str(exc))
        except NotAllowed as exc:
            self._error(HTTPStatus.FORBIDDEN, str(exc))
        except LinkDown as exc:
            self._error(HTTPStatus.SERVICE_UNAVAILABLE, str(exc))
        except StoreError as exc:  # a full or locked disk: nothing was recorded, and the page says so
            log.error("a page action was not recorded: %s", exc)
            self.app.backend.storage_refused(str(exc))
            self._error(HTTPStatus.SERVICE_UNAVAILABLE, f"not recorded: {exc}; record on paper")

    def _body(self, limit: int) -> bytes | None:
        """The JSON body of a POST (at most ``limit`` bytes), or None after answering why it is refused."""
        length_header = self.headers.get("Content-Length", "")
        if not length_header.isdigit() or not 0 < int(length_header) <= limit:
            self.close_connection = True
            self._error(HTTPStatus.BAD_REQUEST, f"send a Content-Length of 1–{limit} bytes")
            return None
        if self.headers.get("Content-Type", "").split(";")[0].strip() != "application/json":
            self.close_connection = True
            self._error(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send application/json")
            return None
        try:
            raw = self.rfile.read(int(length_header))
        except TimeoutError:
            self.close_connection = True
            return None  # the body never came; the thread is freed
        if len(raw) < int(length_header):
            self.close_connection = True
            return None
        return raw

    def _sign_in(self, raw: bytes) -> None:
        request = SignIn.from_json(raw)
        guard = self.app.sign_in_guard
        keys = (self.headers.get(SESSION_HEADER) or "", self.client_address[0], request.user[:64])
        locked = guard.locked(*keys)
        if locked is not None:
            self._error(locked.status, locked.reason)
            return
        who = self.app.backend.sign_in(request.user, request.pin)
        if who is None:
            decision = guard.failed(*keys, "unknown user or wrong PIN")
            log.warning("refused a sign-in from %s: %s", self.client_address[0], decision.reason)
            self._error(decision.status, decision.reason)
            return
        guard.succeeded(*keys)
        self.app.sessions.sign_in(self.headers.get(SESSION_HEADER), who)
        self._json(self._signed_in(who))

    def _actor(self) -> Identity | None:
        """Who records this action, or None after answering why nobody may.

        With users configured: the user signed in to this page session (locked after
        ``idle_lock_s`` unused). Without: the shared page PIN where one is set, acting as ``bedside``
        with the patient's rights.
        """
        if self.app.backend.users_configured():
            who = self.app.sessions.identity(self.headers.get(SESSION_HEADER), self.app.config.idle_lock_s)
            if who is None:
                self._error(HTTPStatus.UNAUTHORIZED, "sign in with your own PIN to record (the page locks when unused)")
                return None
        else:
            decision = self.app.guard.check(self.headers.get(TOKEN_HEADER), self.headers.get(SESSION_HEADER) or "")
            if not decision.allowed:
                log.warning("refused a page action from %s: %s", self.client_address[0], decision.reason)
                self._error(decision.status, decision.reason)
                return None
            who = Identity(SHARED_USER, "patient")
        if not who.may("record"):
            self._error(HTTPStatus.FORBIDDEN, f"{who.user} signed in as a {who.role}, who cannot record")
            return None
        return who

    def _risk(self, raw: bytes, who: Identity) -> None:
        """``POST /api/risk``: a nurse asks for the companion models' risk of a visit history."""
        if not who.may("see_risk"):
            self._error(HTTPStatus.FORBIDDEN, f"{who.user} acts as a {who.role}: a nurse signs in to see risk")
            return
        answer = self.app.backend.assess_risk(raw, who)[-1]
        if isinstance(answer, Risk):
            self._json(answer)
        else:
            self._error(HTTPStatus.BAD_REQUEST, answer.reason)

    def _act(self, patient: str | None, action: str, raw: bytes, who: Identity) -> None:
        backend = self.app.backend
        if patient is None:  # /api/events: an entry at the bedside, the same schema a sensor sends
            data = parse_json_object(raw)
            reason = data.pop("reason", None)  # the page's own field: why a nurse records something unusual
            if reason is not None and not isinstance(reason, str):
                raise ValueError("reason must be a string")
            event = event_from_mapping(data, datetime.now(UTC))
            warnings = backend.enter(event, who, reason)
            self._json(ActionDone(ok=True, event=event.to_payload(), warnings=[w.reason for w in warnings]))
        elif action == "confirm":
            given, warnings = backend.confirm_dose(patient, ConfirmDose.from_json(raw), who)
            self._json(ActionDone(ok=True, event=given.to_payload(), warnings=[w.reason for w in warnings]))
        elif action == "decline":
            backend.decline(patient, Decline.from_json(raw), who)
            self._json(ActionDone(ok=True))
        else:
            backend.acknowledge(patient, Acknowledge.from_json(raw).suggestion_id, who)
            self._json(ActionDone(ok=True))

    def _stream(self) -> None:
        if not self.app.stream_slots.acquire(blocking=False):
            self.close_connection = True
            self._error(HTTPStatus.SERVICE_UNAVAILABLE, f"{MAX_STREAMS} live pages are open; this one refreshes itself")
            return
        try:
            self._serve_stream()
        finally:
            self.app.stream_slots.release()

    def _serve_stream(self) -> None:
        self.start_answer(HTTPStatus.OK, "text/event-stream", None)
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
        except OSError:  # the browser went away or stopped reading
            pass
        finally:
            self.app.streams.remove(q)
            self.close_connection = True
