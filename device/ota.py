"""Over-the-air bundle transfer on ``advisor/<id>/model``: framing and reassembly (pure logic).

A transfer is a ``begin`` message, ``count`` ``chunk`` messages and an ``end`` message, each a
JSON object with the transfer id. ``begin`` carries the total size and sha256 of the bundle
archive; each chunk carries its index, its own sha256 and base64 data. The device answers
on ``model/ack`` with ``{"transfer", "accepted": true, "name", "version"}`` or
``{"transfer", "accepted": false, "reason"}``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import uuid
from dataclasses import dataclass, field

from preprocessing.validation import ValidationError, parse_json_object

CHUNK_BYTES = 32 * 1024
MAX_ARCHIVE_BYTES = 64 * 1024 * 1024
MAX_MESSAGE_BYTES = 64 * 1024  # a base64 chunk plus its framing fits


class TransferError(ValueError):
    """A transfer cannot complete; ``reason`` is the rejection, ``transfer`` its id when known."""

    def __init__(self, reason: str, transfer: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.transfer = transfer


def encode_transfer(archive: bytes, transfer: str | None = None, chunk_bytes: int = CHUNK_BYTES) -> list[dict]:
    """The messages that deliver ``archive`` (a bundle ``.tar.gz``), in order."""
    transfer = transfer or uuid.uuid4().hex
    chunks = [archive[i:i + chunk_bytes] for i in range(0, len(archive), chunk_bytes)]
    messages: list[dict] = [{"transfer": transfer, "type": "begin", "size": len(archive),
                             "sha256": hashlib.sha256(archive).hexdigest(), "chunks": len(chunks)}]
    for index, chunk in enumerate(chunks):
        messages.append({"transfer": transfer, "type": "chunk", "index": index,
                         "sha256": hashlib.sha256(chunk).hexdigest(),
                         "data": base64.b64encode(chunk).decode("ascii")})
    messages.append({"transfer": transfer, "type": "end"})
    return messages


@dataclass
class Transfer:
    """One transfer being received."""

    transfer: str
    size: int
    sha256: str
    count: int
    chunks: dict[int, bytes] = field(default_factory=dict)

    def assemble(self) -> bytes:
        missing = [i for i in range(self.count) if i not in self.chunks]
        if missing:
            shown = ", ".join(str(i) for i in missing[:5])
            raise TransferError(f"missing chunk(s) {shown} of {self.count}")
        archive = b"".join(self.chunks[i] for i in range(self.count))
        if len(archive) != self.size:
            raise TransferError(f"received {len(archive)} bytes, the transfer announced {self.size}")
        if hashlib.sha256(archive).hexdigest() != self.sha256:
            raise TransferError("the reassembled bundle does not match its announced sha256")
        return archive


class Receiver:
    """Reassembles one transfer at a time; a new ``begin`` abandons an unfinished one."""

    def __init__(self) -> None:
        self.current: Transfer | None = None
        self.failed: set[str] = set()

    def feed(self, raw: bytes) -> tuple[str | None, bytes | None]:
        """Take one message; returns ``(transfer id, archive)`` when a transfer is complete.

        Raises :class:`TransferError` on a message that breaks the transfer.
        """
        try:
            message = parse_json_object(raw, MAX_MESSAGE_BYTES)
        except ValidationError as exc:
            raise TransferError(exc.reason, None) from None
        transfer = message.get("transfer")
        if not isinstance(transfer, str) or not 0 < len(transfer) <= 64:
            raise TransferError("message has no valid 'transfer' id", None)
        if transfer in self.failed:
            return transfer, None  # already rejected once; the rest of it is ignored
        try:
            return transfer, self._step(transfer, message)
        except TransferError as exc:
            self.failed.add(transfer)
            self.current = None
            exc.transfer = transfer
            raise

    def _step(self, transfer: str, message: dict) -> bytes | None:
        kind = message.get("type")
        if kind == "begin":
            return self._begin(transfer, message)
        current = self.current
        if current is None or current.transfer != transfer:
            raise TransferError("no such transfer in progress (was 'begin' lost?)", transfer)
        if kind == "chunk":
            self._chunk(current, message)
            return None
        if kind == "end":
            self.current = None
            return current.assemble()
        raise TransferError(f"unknown message type {str(kind)[:20]!r}", transfer)

    def _begin(self, transfer: str, message: dict) -> None:
        size, count, sha = message.get("size"), message.get("chunks"), message.get("sha256")
        if not isinstance(size, int) or isinstance(size, bool) or not 0 < size <= MAX_ARCHIVE_BYTES:
            raise TransferError(f"bundle size must be 1–{MAX_ARCHIVE_BYTES} bytes", transfer)
        if not isinstance(count, int) or isinstance(count, bool) or not 0 < count <= size:
            raise TransferError("'chunks' must be a positive count", transfer)
        if not isinstance(sha, str) or len(sha) != 64:
            raise TransferError("'sha256' must be 64 hex digits", transfer)
        self.current = Transfer(transfer, size, sha.lower(), count)
        return None

    @staticmethod
    def _chunk(current: Transfer, message: dict) -> None:
        index = message.get("index")
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < current.count:
            raise TransferError(f"chunk index must be 0–{current.count - 1}", current.transfer)
        try:
            data = base64.b64decode(message.get("data", ""), validate=True)
        except (binascii.Error, TypeError, ValueError):
            raise TransferError(f"chunk {index} is not valid base64", current.transfer) from None
        if hashlib.sha256(data).hexdigest() != message.get("sha256"):
            raise TransferError(f"chunk {index} is corrupted (sha256 mismatch)", current.transfer)
        current.chunks[index] = data
