"""The kernels layer's fast path: batched ZMQ reads on a real socket and reactor, strict JSON, raw parts."""

from __future__ import annotations

import json
import time

import pytest
import pytest_twisted
import zmq
from jupyter_client.session import Session
from twisted.internet import reactor
from twisted.internet.task import deferLater

from kernel_relay.fronts.socketio_forms import client_payload
from kernel_relay.jsontext import RawJSON
from kernel_relay.kernels._messages import MessageRejected, decode_frames
from kernel_relay.kernels._zmq import KERNEL_HWM, READ_BATCH, READ_BATCH_BYTES, ZmqSocketOpener
from kernel_relay.relay.payload import Outgoing


async def _until(condition: object, timeout: float = 30.0) -> None:
    waited = 0.0
    while not condition() and waited < timeout:  # type: ignore[operator]
        await deferLater(reactor, 0.02, lambda: None)
        waited += 0.02


class _Publisher:
    """A PUB socket with the relay's SUB adapter subscribed to it (the subscription confirmed)."""

    def __init__(self) -> None:
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.PUB)
        self.socket.linger = 0
        self.socket.sndhwm = 0
        port = self.socket.bind_to_random_port("tcp://127.0.0.1")
        self.opener = ZmqSocketOpener(reactor)
        self.received: list[list[bytes]] = []
        self.subscriber = self.opener.subscriber(f"tcp://127.0.0.1:{port}", self.received.append)

    async def subscribed(self) -> None:
        # A subscription takes effect some time after connecting: probe until one arrives.
        for _ in range(250):
            self.socket.send_multipart([b"probe"])
            await deferLater(reactor, 0.02, lambda: None)
            if self.received:
                break
        assert self.received, "the subscription never took effect"
        await deferLater(reactor, 0.1, lambda: None)
        self.received.clear()

    def close(self) -> None:
        self.subscriber.close()
        self.opener.close()
        self.socket.close()
        self.context.term()


@pytest_twisted.ensureDeferred
async def test_a_burst_larger_than_one_batch_arrives_whole_and_in_order() -> None:
    """A burst of several READ_BATCHes of messages is delivered completely and in order, though each reactor turn takes only one batch."""
    publisher = _Publisher()
    try:
        await publisher.subscribed()
        count = READ_BATCH * 5 + 7
        for index in range(count):
            publisher.socket.send_multipart([b"topic", str(index).encode(), b"x" * 10])
        await _until(lambda: len(publisher.received) >= count)
        assert [int(frames[1]) for frames in publisher.received] == list(range(count))
        assert all(len(frames) == 3 for frames in publisher.received)
    finally:
        publisher.close()


@pytest_twisted.ensureDeferred
async def test_one_reactor_turn_takes_at_most_a_batch_of_bytes() -> None:
    """
    Large messages queued at once are read READ_BATCH_BYTES a turn, not READ_BATCH messages: clients are
    judged slow between turns, so a turn's burst must stay small (200 x 1 MB went to every client at once).
    """
    publisher = _Publisher()
    turns: list[int] = []

    def received(frames: list[bytes]) -> None:
        if not turns or turns[-1] < 0:
            turns.append(0)
            reactor.callLater(0, lambda: turns.append(-1))
        turns[-1] += sum(len(frame) for frame in frames)

    try:
        await publisher.subscribed()
        publisher.subscriber.close()
        publisher.received.clear()
        port = publisher.socket.getsockopt(zmq.LAST_ENDPOINT).decode().rsplit(":", 1)[1]
        publisher.subscriber = publisher.opener.subscriber(f"tcp://127.0.0.1:{port}", received)
        await _until(lambda: False, timeout=0.5)  # connected and subscribed
        size, count = 1024 * 1024, 20
        for index in range(count):
            publisher.socket.send_multipart([str(index).encode(), b"x" * size])
        time.sleep(1)  # the reactor blocked: all of them wait in ZeroMQ's queue
        await _until(lambda: sum(t for t in turns if t > 0) >= count * size)
        sizes = [t for t in turns if t > 0]
        assert sum(sizes) >= count * size
        assert max(sizes) <= READ_BATCH_BYTES + 2 * size, sizes
        assert len(sizes) > 1
    finally:
        publisher.close()


def test_kernel_sockets_queue_a_bounded_number_of_messages() -> None:
    """txzmq's default high-water mark is 0, no limit: the relay's kernel sockets set libzmq's own."""
    opener = ZmqSocketOpener(reactor)
    sockets = [
        opener.subscriber("tcp://127.0.0.1:9", lambda frames: None),
        opener.dealer("tcp://127.0.0.1:9", b"id", lambda frames: None),
    ]
    try:
        for wrapped in sockets:
            raw = wrapped._connection.socket  # type: ignore[attr-defined]
            assert raw.get(zmq.RCVHWM) == raw.get(zmq.SNDHWM) == KERNEL_HWM > 0
    finally:
        for wrapped in sockets:
            wrapped.close()
        opener.close()


@pytest_twisted.ensureDeferred
async def test_lone_messages_and_pairs_each_wake_the_reader() -> None:
    """
    A read that ends after one message (on EVENTS, not on zmq.Again) leaves the descriptor armed: every
    later message is read without anything else happening, whether it comes alone or in a pair.
    """
    publisher = _Publisher()
    try:
        await publisher.subscribed()
        expected = 0
        for index in range(30):
            batch = 1 + index % 2
            for _ in range(batch):
                publisher.socket.send_multipart([b"topic", str(expected).encode()])
                expected += 1
            await _until(lambda n=expected: len(publisher.received) >= n, timeout=5.0)
            assert len(publisher.received) == expected, (
                f"message {expected - 1} never woke the reader"
            )
        assert [int(frames[1]) for frames in publisher.received] == list(range(expected))
    finally:
        publisher.close()


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity"])
def test_non_json_constants_are_rejected(constant: bytes) -> None:
    """A signed message holding NaN or Infinity is rejected: they are not JSON and clients could not parse them."""
    session = Session(key=b"k")
    parts = [b'{"msg_type":"stream"}', b"{}", b"{}", b'{"value":' + constant + b"}"]
    frames = [b"<IDS|MSG>", session.sign(parts), *parts]
    with pytest.raises(MessageRejected, match="content is not JSON"):
        decode_frames(frames, "iopub", session.sign)


def test_the_payload_of_a_message_with_buffers_holds_the_kernels_own_json_text() -> None:
    """A message with buffers is sent as the kernel's exact JSON text of each part, buffers and channel unchanged."""
    session = Session(key=b"k")
    parts = [b'{"msg_type": "stream"}', b"{}", b'{"x": 1}', b'{"text": "\\u00e9 caf\xc3\xa9"}']
    frames = [b"<IDS|MSG>", session.sign(parts), *parts, b"buffer"]
    _, message = decode_frames(frames, "iopub", session.sign)
    wrapped = client_payload(Outgoing.of_kernel(message))
    assert isinstance(wrapped, dict)
    assert wrapped["header"] == RawJSON('{"msg_type": "stream"}')
    assert wrapped["content"] == RawJSON('{"text": "\\u00e9 café"}')
    assert wrapped["buffers"] == [b"buffer"]
    assert wrapped["channel"] == "iopub"
    assert message.to_dict()["content"] == {"text": "é café"}


def test_a_message_built_without_raw_parts_is_sent_encoded_from_its_dicts() -> None:
    """A message built without raw_parts (in process) is encoded from its dicts."""
    from kernel_relay.kernels import KernelMessage

    message = KernelMessage({"msg_type": "status"}, {}, {}, {"execution_state": "dead"})
    sent = client_payload(Outgoing.of_kernel(message))
    assert json.loads(sent)["content"] == {"execution_state": "dead"}
