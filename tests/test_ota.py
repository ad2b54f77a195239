"""Reassembly of over-the-air transfers (pure logic): every broken transfer is named, none crashes."""

from __future__ import annotations

import os
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device.contract.messages import Message, TransferBegin
from device.models.ota import MAX_REMEMBERED, Receiver, TransferError, encode_transfer

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


def test_a_second_begin_is_refused_while_a_transfer_is_in_progress():
    receiver = Receiver()
    first = encode_transfer(ARCHIVE, "old", chunk_bytes=30_000)
    feed_all(receiver, first[:2])
    with pytest.raises(TransferError, match="another transfer \\(old\\) is in progress") as caught:
        feed_all(receiver, encode_transfer(ARCHIVE, "new")[:1])
    assert caught.value.transfer == "new"
    assert feed_all(receiver, first[2:]) == ("old", ARCHIVE)  # the first one was not disturbed
    assert feed_all(receiver, encode_transfer(ARCHIVE, "newer")) == ("newer", ARCHIVE)


def test_a_stray_message_does_not_break_the_transfer_in_progress():
    receiver = Receiver()
    first = encode_transfer(ARCHIVE, "mine", chunk_bytes=30_000)
    feed_all(receiver, first[:2])
    with pytest.raises(TransferError, match="no such transfer"):
        feed_all(receiver, encode_transfer(ARCHIVE, "stray", chunk_bytes=30_000)[1:2])
    assert feed_all(receiver, first[2:]) == ("mine", ARCHIVE)


def test_a_transfer_holds_no_more_than_it_announced():
    """The attack: a 64 MiB begin with 67 million chunks, then thousands of 40 KiB chunks: RSS +100 MB."""
    receiver = Receiver()
    with pytest.raises(TransferError, match="'chunks' must be between"):
        feed_all(receiver, [TransferBegin("huge", 32 * 1024 * 1024, "0" * 64, 67_108_864)])
    with pytest.raises(TransferError, match="bundle size must be"):
        feed_all(receiver, [TransferBegin("2gb", 2 * 1024**3, "0" * 64, 50_000)])
    messages = encode_transfer(os.urandom(60_000), "small", chunk_bytes=30_000)
    extra = encode_transfer(os.urandom(40_000), "small", chunk_bytes=40_000)[1]
    feed_all(receiver, messages[:3])
    with pytest.raises(TransferError, match="more data than the 60000 bytes"):
        feed_all(receiver, [replace(extra, index=1)])  # a repeated index counts once, a bigger one does not fit
    assert receiver.current is None


def test_a_quiet_transfer_is_abandoned_and_each_transfer_is_answered_once():
    now = [0.0]
    receiver = Receiver(clock=lambda: now[0], idle_s=60)
    messages = encode_transfer(ARCHIVE, "quiet", chunk_bytes=30_000)
    feed_all(receiver, messages[:2])
    now[0] = 59.0
    assert receiver.expire() is None
    now[0] = 121.0
    refusal = receiver.expire()
    assert refusal is not None and refusal.transfer == "quiet" and "nothing heard for 60 s" in refusal.reason
    assert receiver.expire() is None
    assert feed_all(receiver, messages[2:]) == ("quiet", None)  # answered: the rest is ignored
    for i in range(MAX_REMEMBERED + 50):
        with pytest.raises(TransferError):
            feed_all(receiver, [TransferBegin(f"bad-{i}", 0, "0" * 64, 1)])
    assert len(receiver.finished) == MAX_REMEMBERED


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_crash(data):
    try:
        Receiver().feed(data)
    except TransferError as exc:
        assert exc.reason


def test_a_transfer_silent_for_a_few_seconds_gives_way_to_a_new_one():
    """After a restart the broker redelivers half a transfer that will never finish; a new one must not wait 60 s."""
    now = [0.0]
    receiver = Receiver(clock=lambda: now[0])
    feed_all(receiver, encode_transfer(ARCHIVE, "cut-off", chunk_bytes=30_000)[:2])
    now[0] = 1.0
    with pytest.raises(TransferError, match="in progress"):
        feed_all(receiver, encode_transfer(ARCHIVE, "too-soon")[:1])
    now[0] = 7.0
    assert feed_all(receiver, encode_transfer(ARCHIVE, "fresh")) == ("fresh", ARCHIVE)
    [abandoned] = receiver.abandoned
    assert abandoned.transfer == "cut-off" and "silent for 7 s when transfer fresh began" in abandoned.reason
