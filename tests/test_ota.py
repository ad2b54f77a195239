"""Reassembly of over-the-air transfers (pure logic): every broken transfer is named, none crashes."""

from __future__ import annotations

import os
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device.messages import Message
from device.ota import Receiver, TransferError, encode_transfer

ARCHIVE = os.urandom(100_000)


def feed_all(receiver: Receiver, messages: list[Message]):
    result = None
    for message in messages:
        result = receiver.feed(message.to_json())
    return result


def test_round_trip_in_any_chunk_order():
    messages = encode_transfer(ARCHIVE, "t1", chunk_bytes=7_000)
    chunks = messages[1:-1]
    receiver = Receiver()
    assert feed_all(receiver, [messages[0], *reversed(chunks), messages[-1]]) == ("t1", ARCHIVE)


@pytest.mark.parametrize(
    "tamper, reason",
    [
        (lambda m: m[:2] + m[3:], "missing chunk(s) 1"),
        (lambda m: [replace(m[0], size=5)] + m[1:], "announced"),
        (lambda m: [replace(m[0], size=10**12)] + m[1:], "bundle size"),
        (lambda m: [m[0]] + [replace(m[1], data="!!!")] + m[2:], "not valid base64"),
        (lambda m: [m[0]] + [replace(m[1], index=99)] + m[2:], "chunk index"),
        (lambda m: [m[0]] + [replace(m[1], type="jump")] + m[2:], "unknown message type"),
        (lambda m: [m[0]] + [replace(m[1], index="1")] + m[2:], "index must be an integer"),
        (lambda m: m[1:], "no such transfer"),
    ],
)
def test_broken_transfers_are_named(tamper, reason):
    receiver = Receiver()
    with pytest.raises(TransferError) as caught:
        feed_all(receiver, tamper(encode_transfer(ARCHIVE, "t2", chunk_bytes=30_000)))
    assert reason in caught.value.reason and caught.value.transfer == "t2"


def test_rest_of_a_failed_transfer_is_ignored_and_a_new_one_works():
    receiver = Receiver()
    messages = encode_transfer(ARCHIVE, "t3", chunk_bytes=30_000)
    receiver.feed(messages[0].to_json())
    with pytest.raises(TransferError):
        receiver.feed(replace(messages[1], sha256="0" * 64).to_json())
    assert receiver.feed(messages[-1].to_json()) == ("t3", None)
    assert feed_all(receiver, encode_transfer(ARCHIVE, "t4")) == ("t4", ARCHIVE)


def test_a_new_begin_abandons_an_unfinished_transfer():
    receiver = Receiver()
    first = encode_transfer(ARCHIVE, "old", chunk_bytes=30_000)
    feed_all(receiver, first[:2])
    assert feed_all(receiver, encode_transfer(ARCHIVE, "new")) == ("new", ARCHIVE)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_crash(data):
    try:
        Receiver().feed(data)
    except TransferError as exc:
        assert exc.reason
