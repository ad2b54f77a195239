"""Coverage-guided fuzzing (atheris) of everything that decodes untrusted bytes on the device.

Not part of the pytest run. Install the fuzzer and run, e.g. for five minutes:

    pip install -e ".[fuzz]"
    python -m tests.fuzz_decoders -max_total_time=300 -print_final_stats=1

Each input goes to the MQTT event decoder, the ``patients`` visit-history decoder, the
serial frame parser and the over-the-air transfer receiver. A rejection must be the
decoder's own error with a reason; any other exception is a crash and stops the run with
the input saved by libFuzzer.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime

import atheris

with atheris.instrument_imports():
    from device.models.ota import Receiver, TransferError
    from domain.validation import ValidationError, decode_event, decode_visit_history_bytes
    from firmware_bridge.protocol import FrameError, FrameParser

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def one_input(data: bytes) -> None:
    for decode in (lambda raw: decode_event(raw, NOW), decode_visit_history_bytes):
        try:
            decode(data)
        except ValidationError as exc:
            if not exc.reason:
                raise AssertionError("a rejection without a reason") from exc
    parser = FrameParser()
    for item in parser.feed(data):
        if isinstance(item, FrameError) and not item.reason:
            raise AssertionError("a frame rejection without a reason")
    receiver = Receiver()
    try:
        receiver.feed(data)
    except TransferError as exc:
        if not exc.reason:
            raise AssertionError("a transfer rejection without a reason") from exc


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
