"""The txzmq adapters' batched reads on a real ZMQ socket and the real reactor (pytest-twisted)."""

from __future__ import annotations

import pytest
import pytest_twisted
import zmq
from jupyter_client.session import Session
from twisted.internet import reactor
from twisted.internet.task import deferLater

from kernel_relay.kernels._messages import MessageRejected, decode_frames
from kernel_relay.kernels._zmq import READ_BATCH, ZmqSocketOpener


async def _until(condition: object, timeout: float = 30.0) -> None:
    waited = 0.0
    while not condition() and waited < timeout:  # type: ignore[operator]
        await deferLater(reactor, 0.02, lambda: None)
        waited += 0.02


@pytest_twisted.ensureDeferred
async def test_a_burst_larger_than_one_batch_arrives_whole_and_in_order() -> None:
    """A burst of several READ_BATCHes of messages is delivered completely and in order, though each reactor turn takes only one batch."""
    context = zmq.Context()
    publisher = context.socket(zmq.PUB)
    publisher.linger = 0
    publisher.sndhwm = 0
    port = publisher.bind_to_random_port("tcp://127.0.0.1")
    opener = ZmqSocketOpener(reactor)
    received: list[list[bytes]] = []
    subscriber = opener.subscriber(f"tcp://127.0.0.1:{port}", received.append)
    try:
        # A subscription takes effect some time after connecting: probe until one arrives.
        for _ in range(250):
            publisher.send_multipart([b"probe"])
            await deferLater(reactor, 0.02, lambda: None)
            if received:
                break
        assert received, "the subscription never took effect"
        await deferLater(reactor, 0.1, lambda: None)
        received.clear()
        count = READ_BATCH * 5 + 7
        for index in range(count):
            publisher.send_multipart([b"topic", str(index).encode(), b"x" * 10])
        await _until(lambda: len(received) >= count)
        assert [int(frames[1]) for frames in received] == list(range(count))
        assert all(len(frames) == 3 for frames in received)
    finally:
        subscriber.close()
        opener.close()
        publisher.close()
        context.term()


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity"])
def test_non_json_constants_are_rejected(constant: bytes) -> None:
    """A signed message holding NaN or Infinity is rejected: they are not JSON and clients could not parse them."""
    session = Session(key=b"k")
    parts = [b'{"msg_type":"stream"}', b"{}", b"{}", b'{"value":' + constant + b"}"]
    frames = [b"<IDS|MSG>", session.sign(parts), *parts]
    with pytest.raises(MessageRejected, match="content is not JSON"):
        decode_frames(frames, "iopub", session.sign)
