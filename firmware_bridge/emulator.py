"""A small firmware emulator: sends events as frames over a link, stop-and-wait, with line noise.

Used by the tests and by ``advisor replay --via-serial``. It behaves as the microcontroller
should: one frame at a time, wait for ``A``/``N`` with the same seq, resend on silence.
Optional noise — garbage bytes, a truncated copy, a copy with a bad checksum before the real
frame — exercises the bridge's resynchronisation.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

from domain.events import Event
from firmware_bridge.links import Link
from firmware_bridge.protocol import ACK, NAK, RESEND, SEQ_MODULO, Frame, FrameParser, event_frame

RESEND_GRACE_S = 0.3  # after a D, how long an A for a good copy sent right behind may take


@dataclass(frozen=True)
class Noise:
    """Probabilities of each kind of trouble before a frame."""

    garbage: float = 0.0
    truncated: float = 0.0
    bad_checksum: float = 0.0
    seed: int = 0


class FirmwareEmulator:
    def __init__(
        self, link: Link, noise: Noise = Noise(), answer_timeout_s: float = 5.0, retries: int = 3, first_seq: int = 0
    ) -> None:
        self.link = link
        self.noise = noise
        self.rng = random.Random(noise.seed)
        self.answer_timeout_s = answer_timeout_s
        self.retries = retries
        self.seq = first_seq % SEQ_MODULO
        self.parser = FrameParser()
        self.naks: list[tuple[int, str]] = []
        self.last_answer: Frame | None = None

    def _noise_before(self, frame: bytes) -> bytes:
        out = b""
        if self.rng.random() < self.noise.garbage:
            out += bytes(self.rng.randrange(256) for _ in range(self.rng.randint(1, 40))).replace(b"$", b"#")
        if self.rng.random() < self.noise.truncated:
            out += frame[: self.rng.randint(2, len(frame) - 2)]
        if self.rng.random() < self.noise.bad_checksum:
            out += frame[:-3] + (b"00" if frame[-3:-1] != b"00" else b"11") + b"\n"
        return out

    def send_frame(self, frame: bytes, seq: int) -> bool:
        """Send one frame until answered; True on ``A``, False on ``N`` or no answer."""
        for _attempt in range(self.retries + 1):
            self.link.write(self._noise_before(frame) + frame)
            answer = self._await(seq)
            if answer is None or answer.type == RESEND:
                continue
            self.last_answer = answer
            if answer.type == NAK:
                self.naks.append((seq, answer.fields[0] if answer.fields else ""))
            return answer.type == ACK
        return False

    def send_event(self, event: Event) -> str | None:
        """Send one event; returns the event id the bridge assigned, or None if it was not delivered."""
        seq = self.seq
        self.seq = (self.seq + 1) % SEQ_MODULO
        if not self.send_frame(event_frame(event, seq), seq):
            return None
        answer = self.last_answer
        return answer.fields[0] if answer is not None and answer.fields else ""

    def _await(self, seq: int) -> Frame | None:
        """The answer for ``seq``: ``A``/``N`` win; a ``D`` counts only if nothing better follows soon."""
        deadline = time.monotonic() + self.answer_timeout_s
        resend: Frame | None = None
        while time.monotonic() < deadline:
            for item in self.parser.feed(self.link.read(0.05)):
                if not isinstance(item, Frame) or item.seq != seq:
                    continue
                if item.type in (ACK, NAK):
                    return item
                if item.type == RESEND and resend is None:
                    resend = item
                    deadline = min(deadline, time.monotonic() + RESEND_GRACE_S)
        return resend

    def close(self) -> None:
        self.link.close()
