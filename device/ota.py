"""Over-the-air bundle transfer on ``advisor/<id>/model``: framing and reassembly (pure logic).

A transfer is a :class:`~device.messages.TransferBegin` message, ``chunks``
:class:`~device.messages.TransferChunk` messages and a :class:`~device.messages.TransferEnd`
(docs/contract.md). ``begin`` carries the total size and sha256 of the bundle archive; each
chunk carries its index, its own sha256 and base64 data. The device answers on ``model/ack``
with one :class:`~device.messages.ModelAck`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import uuid
from dataclasses import dataclass, field

from preprocessing.validation import ValidationError, parse_json_object

from .messages import TRANSFER_TYPES, TransferBegin, TransferChunk, TransferEnd
from .schema import SchemaError

CHUNK_BYTES = 32 * 1024
MAX_ARCHIVE_BYTES = 64 * 1024 * 1024
MAX_MESSAGE_BYTES = 64 * 1024  # a base64 chunk plus its framing fits


class TransferError(ValueError):
    """A transfer cannot complete; ``reason`` is the rejection, ``transfer`` its id when known."""

    def __init__(self, reason: str, transfer: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.transfer = transfer


TransferMessage = TransferBegin | TransferChunk | TransferEnd


def encode_transfer(
    archive: bytes, transfer: str | None = None, chunk_bytes: int = CHUNK_BYTES
) -> list[TransferMessage]:
    """The messages that deliver ``archive`` (a bundle ``.tar.gz``), in order."""
    transfer = transfer or uuid.uuid4().hex
    chunks = [archive[i : i + chunk_bytes] for i in range(0, len(archive), chunk_bytes)]
    messages: list[TransferMessage] = [
        TransferBegin(transfer, len(archive), hashlib.sha256(archive).hexdigest(), len(chunks))
    ]
    for index, chunk in enumerate(chunks):
        messages.append(
            TransferChunk(transfer, index, hashlib.sha256(chunk).hexdigest(), base64.b64encode(chunk).decode("ascii"))
        )
    messages.append(TransferEnd(transfer))
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
        schema_cls = TRANSFER_TYPES.get(kind) if isinstance(kind, str) else None
        if schema_cls is None:
            raise TransferError(f"unknown message type {str(kind)[:20]!r}", transfer)
        try:
            parsed = schema_cls.from_payload(message)
        except SchemaError as exc:
            raise TransferError(str(exc), transfer) from None
        if isinstance(parsed, TransferBegin):
            self.current = self._begin(parsed)
            return None
        current = self.current
        if current is None or current.transfer != transfer:
            raise TransferError("no such transfer in progress (was 'begin' lost?)", transfer)
        if isinstance(parsed, TransferChunk):
            self._chunk(current, parsed)
            return None
        self.current = None
        return current.assemble()

    @staticmethod
    def _begin(begin: TransferBegin) -> Transfer:
        if not 0 < begin.size <= MAX_ARCHIVE_BYTES:
            raise TransferError(f"bundle size must be 1–{MAX_ARCHIVE_BYTES} bytes", begin.transfer)
        if not 0 < begin.chunks <= begin.size:
            raise TransferError("'chunks' must be a positive count", begin.transfer)
        if len(begin.sha256) != 64:
            raise TransferError("'sha256' must be 64 hex digits", begin.transfer)
        return Transfer(begin.transfer, begin.size, begin.sha256.lower(), begin.chunks)

    @staticmethod
    def _chunk(current: Transfer, chunk: TransferChunk) -> None:
        if not 0 <= chunk.index < current.count:
            raise TransferError(f"chunk index must be 0–{current.count - 1}", current.transfer)
        try:
            data = base64.b64decode(chunk.data, validate=True)
        except (binascii.Error, ValueError):
            raise TransferError(f"chunk {chunk.index} is not valid base64", current.transfer) from None
        if hashlib.sha256(data).hexdigest() != chunk.sha256:
            raise TransferError(f"chunk {chunk.index} is corrupted (sha256 mismatch)", current.transfer)
        current.chunks[chunk.index] = data
