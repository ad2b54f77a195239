"""The bounded HTTP server under the bedside page and the nurses' station (standard library):
a cap on connections at once, a socket timeout and the same security headers on every answer."""

from __future__ import annotations

import contextlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SOCKET_TIMEOUT_S = 15.0  # above the page's stream heartbeat: a healthy event stream always writes in time
MAX_CONNECTIONS = 64  # open pages, streams and requests at once; more are answered 503
BUSY_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: 52\r\n"
    b"Connection: close\r\n\r\n"
    b'{"error": "too many connections; try again shortly"}'
)


class BoundedServer(ThreadingHTTPServer):
    """A threaded server that serves at most ``max_connections`` at once and answers the rest 503."""

    daemon_threads = True
    request_queue_size = 128  # the default listen backlog of 5 let idle sockets slow new ones to ~7 per second

    def __init__(
        self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], max_connections: int = MAX_CONNECTIONS
    ) -> None:
        super().__init__(address, handler)
        self._slots = threading.BoundedSemaphore(max_connections)

    def process_request(self, request, client_address) -> None:
        if not self._slots.acquire(blocking=False):
            with contextlib.suppress(OSError):
                request.sendall(BUSY_RESPONSE)
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class SecureHandler(BaseHTTPRequestHandler):
    """A request handler whose every answer carries the same security headers; ``csp`` is the page's
    Content-Security-Policy. A client that stops sending or reading is dropped, not waited for."""

    csp = "default-src 'none'"
    name = "advisor"  # the Server header: no software versions for a scanner to read
    protocol_version = "HTTP/1.1"
    timeout = SOCKET_TIMEOUT_S

    def version_string(self) -> str:
        return self.name

    def start_answer(self, status: int, content_type: str, length: int | None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Security-Policy", self.csp)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("X-Frame-Options", "DENY")
        self.end_headers()

    def answer(self, status: int, body: bytes, content_type: str) -> None:
        self.start_answer(status, content_type, len(body))
        if self.command != "HEAD":
            self.wfile.write(body)
