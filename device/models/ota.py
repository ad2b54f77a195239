"""Over-the-air bundle transfer on ``advisor/<id>/model``: framing and reassembly (pure logic).

A transfer is a :class:`~device.contract.messages.TransferBegin` message, ``chunks``
:class:`~device.contract.messages.TransferChunk` messages and a :class:`~device.contract.messages.TransferEnd`
(docs/contract.md). ``begin`` carries the total size and sha256 of the bundle archive; each
chunk carries its index, its own sha256 and base64 data. The device answers on ``model/ack``
with one :class:`~device.contract.messages.ModelAck`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from device.contract.messages import TRANSFER_TYPES, TransferBegin, TransferChunk, TransferEnd
from device.contract.schema import SchemaError
from domain.validation import ValidationError, parse_json_object

CHUNK_BYTES = 32 * 1024
MAX_CHUNK_BYTES = 45 * 1024  # the most raw bytes whose base64 and framing fit in one message
MAX_ARCHIVE_BYTES = 32 * 1024 * 1024  # a dose bundle is about 0.5 MB; a transfer holds at most this in memory
MAX_MESSAGE_BYTES = 64 * 1024
IDLE_S = 60.0  # a transfer that hears nothing this long is abandoned
STALE_S = 5.0  # a new begin takes over from a transfer silent this long (a sender that died, a restart)
MAX_REMEMBERED = 256  # answered transfer ids kept to ignore the rest of them


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
    """One transfer being received; it holds at most ``size`` bytes."""

    transfer: str
    size: int
    sha256: str
    count: int
    last_heard: float
    chunks: dict[int, bytes] = field(default_factory=dict)
    received: int = 0  # bytes held, a repeated chunk counted once

    def add(self, index: int, data: bytes) -> None:
        received = self.received - len(self.chunks.get(index, b"")) + len(data)
        if received > self.size:
            raise TransferError(f"more data than the {self.size} bytes the transfer announced")
        self.chunks[index] = data
        self.received = received

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
    """Reassembles one transfer at a time, within bounds an untrusted sender cannot stretch.

    * a transfer holds at most the size it announced (at most :data:`MAX_ARCHIVE_BYTES`);
    * a ``begin`` while another transfer is in progress is refused, not obeyed; one that has been
      silent for :data:`STALE_S` (its sender died, the device restarted mid-transfer) gives way,
      and is answered as abandoned;
    * a transfer that hears nothing for :data:`IDLE_S` is abandoned (:meth:`expire`);
    * each transfer is answered once: after a refusal the rest of it is ignored, and the
      ids remembered for that are bounded (:data:`MAX_REMEMBERED`).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic, idle_s: float = IDLE_S) -> None:
        self.current: Transfer | None = None
        self.finished: OrderedDict[str, None] = OrderedDict()  # answered transfers, oldest first
        self.abandoned: list[TransferError] = []  # refusals of transfers that gave way; the caller answers them
        self._clock = clock
        self._idle_s = idle_s

    def feed(self, raw: bytes) -> tuple[str | None, bytes | None]:
        """Take one message; returns ``(transfer id, archive)`` when a transfer is complete.

        Raises :class:`TransferError` on a message that breaks its transfer (answer it once).
        """
        try:
            message = parse_json_object(raw, MAX_MESSAGE_BYTES)
        except ValidationError as exc:
            raise TransferError(exc.reason, None) from None
        transfer = message.get("transfer")
        if not isinstance(transfer, str) or not 0 < len(transfer) <= 64:
            raise TransferError("message has no valid 'transfer' id", None)
        if transfer in self.finished:
            return transfer, None  # answered already; the rest of it is ignored
        ours = self.current is not None and self.current.transfer == transfer
        try:
            archive = self._step(transfer, message)
        except TransferError as exc:
            exc.transfer = transfer
            if ours:
                self.current = None
            self._finish(transfer)
            raise
        if archive is not None:
            self._finish(transfer)
        return transfer, archive

    def expire(self) -> TransferError | None:
        """Abandon a transfer that has been silent too long; returns its refusal, if any."""
        current = self.current
        if current is None or self._clock() - current.last_heard < self._idle_s:
            return None
        self.current = None
        self._finish(current.transfer)
        return TransferError(
            f"abandoned: nothing heard for {self._idle_s:g} s ({current.received} of {current.size} bytes received)",
            current.transfer,
        )

    def _finish(self, transfer: str) -> None:
        self.finished[transfer] = None
        while len(self.finished) > MAX_REMEMBERED:
            self.finished.popitem(last=False)

    def _step(self, transfer: str, message: dict) -> bytes | None:
        kind = message.get("type")
        schema_cls = TRANSFER_TYPES.get(kind) if isinstance(kind, str) else None
        if schema_cls is None:
            raise TransferError(f"unknown message type {str(kind)[:20]!r}", transfer)
        try:
            parsed = schema_cls.from_payload(message)
        except SchemaError as exc:
            raise TransferError(str(exc), transfer) from None
        current = self.current
        if isinstance(parsed, TransferBegin):
            if current is not None and current.transfer != transfer:
                silent = self._clock() - current.last_heard
                if silent < STALE_S:
                    raise TransferError(
                        f"another transfer ({current.transfer[:64]}) is in progress; send again when it has been "
                        f"answered or has been silent for {STALE_S:g} s",
                        transfer,
                    )
                self._finish(current.transfer)
                self.abandoned.append(
                    TransferError(
                        f"abandoned: silent for {silent:.0f} s when transfer {transfer[:64]} began "
                        f"({current.received} of {current.size} bytes received)",
                        current.transfer,
                    )
                )
            self.current = self._begin(parsed)
            return None
        if current is None or current.transfer != transfer:
            raise TransferError("no such transfer in progress (was 'begin' lost?)", transfer)
        current.last_heard = self._clock()
        if isinstance(parsed, TransferChunk):
            self._chunk(current, parsed)
            return None
        self.current = None
        return current.assemble()

    def _begin(self, begin: TransferBegin) -> Transfer:
        if not 0 < begin.size <= MAX_ARCHIVE_BYTES:
            raise TransferError(f"bundle size must be 1–{MAX_ARCHIVE_BYTES} bytes", begin.transfer)
        if not math.ceil(begin.size / MAX_CHUNK_BYTES) <= begin.chunks <= begin.size:
            raise TransferError(
                f"'chunks' must be between {math.ceil(begin.size / MAX_CHUNK_BYTES)} and {begin.size} "
                f"for {begin.size} bytes",
                begin.transfer,
            )
        if len(begin.sha256) != 64:
            raise TransferError("'sha256' must be 64 hex digits", begin.transfer)
        return Transfer(begin.transfer, begin.size, begin.sha256.lower(), begin.chunks, self._clock())

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
        current.add(chunk.index, data)
