"""MLLP framing (HL7's Minimal Lower Layer Protocol): ``<VT> message <FS><CR>`` on a TCP stream.

Pure byte functions: :func:`frame` wraps one message, :class:`MllpReader` cuts a stream into
messages, however the bytes arrive, and says what it had to throw away.
"""

from __future__ import annotations

from dataclasses import dataclass, field

START = b"\x0b"
END = b"\x1c\r"
MAX_MESSAGE_BYTES = 1024 * 1024  # a glucose result is a few hundred bytes; a megabyte is not a result


class MllpError(ValueError):
    """The stream broke the framing in a way the connection cannot recover from."""


def frame(message: str | bytes, encoding: str = "utf-8") -> bytes:
    """One message as it goes on the wire."""
    body = message.encode(encoding) if isinstance(message, str) else message
    return START + body + END


@dataclass
class MllpReader:
    """Feeds on received bytes and yields each complete message's bytes, in order.

    Bytes outside a frame (line noise, a client that forgot the start byte) and a frame broken off
    by a new start byte are dropped and counted in ``discarded``, never joined to the next message;
    a frame longer than ``max_bytes`` raises :class:`MllpError`.
    """

    max_bytes: int = MAX_MESSAGE_BYTES
    discarded: int = 0
    _buffer: bytearray = field(default_factory=bytearray)
    _inside: bool = False

    def feed(self, data: bytes) -> list[bytes]:
        """The messages completed by ``data``."""
        self._buffer += data
        found: list[bytes] = []
        while True:
            if not self._inside:
                start = self._buffer.find(START)
                if start < 0:
                    self.discarded += len(self._buffer)
                    self._buffer.clear()
                    return found
                self.discarded += start
                del self._buffer[: start + 1]
                self._inside = True
            restart = self._buffer.find(START)
            end = self._buffer.find(END)
            if restart >= 0 and (end < 0 or restart < end):  # a frame broken off: its start is lost, not merged
                self.discarded += restart + 1
                del self._buffer[: restart + 1]
                continue
            if end < 0:
                if len(self._buffer) > self.max_bytes:
                    raise MllpError(f"a message longer than {self.max_bytes} bytes without its end (FS CR)")
                return found
            if end > self.max_bytes:
                raise MllpError(f"a message of {end} bytes is longer than the {self.max_bytes} allowed")
            found.append(bytes(self._buffer[:end]))
            del self._buffer[: end + len(END)]
            self._inside = False
