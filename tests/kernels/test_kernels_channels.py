"""Unit tests of Kernel and KernelClient over in-memory sockets and a fake clock (no ZMQ)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from jupyter_client.session import Session
from twisted.internet.defer import CancelledError
from twisted.internet.task import Clock

from kernel_relay.kernels import InvalidMessage, Kernel, KernelMessage, UnknownKernel
from kernel_relay.kernels._messages import DELIMITER, decode_frames
from kernel_relay.kernels._zmq import CurveKeys, FrameHandler

INFO = {
    "transport": "tcp",
    "ip": "127.0.0.1",
    "shell_port": 5001,
    "iopub_port": 5002,
    "stdin_port": 5003,
    "control_port": 5004,
    "hb_port": 5005,
}


class FakeSocket:
    def __init__(self, kind: str, url: str, identity: bytes, on_frames: FrameHandler) -> None:
        self.kind, self.url, self.identity, self.on_frames = kind, url, identity, on_frames
        self.sent: list[list[bytes]] = []
        self.closed = False

    def send(self, frames: Sequence[bytes]) -> None:
        assert not self.closed
        self.sent.append(list(frames))

    def close(self, linger: float = 0.0) -> None:
        self.closed = True
        self.linger = linger


class FakeOpener:
    def __init__(self) -> None:
        self.sockets: list[FakeSocket] = []
        self.curves: list[Any] = []

    def subscriber(self, url: str, on_frames: FrameHandler, curve: Any = None) -> FakeSocket:
        self.curves.append(curve)
        self.sockets.append(FakeSocket("sub", url, b"", on_frames))
        return self.sockets[-1]

    def dealer(
        self,
        url: str,
        identity: bytes,
        on_frames: FrameHandler,
        curve: Any = None,
        watch: bool = False,
    ) -> FakeSocket:
        self.curves.append(curve)
        self.sockets.append(FakeSocket("dealer", url, identity, on_frames))
        return self.sockets[-1]

    def find(self, port: int, identity: bytes = b"") -> FakeSocket:
        url = f"tcp://127.0.0.1:{port}"
        return [s for s in self.sockets if s.url == url and s.identity == identity][-1]


@pytest.fixture
def session() -> Session:
    return Session(key=b"unit-secret", signature_scheme="hmac-sha256")


@pytest.fixture
def clock() -> Clock:
    clock = Clock()
    clock.advance(1000)
    return clock


@pytest.fixture
def opener() -> FakeOpener:
    return FakeOpener()


@pytest.fixture
def kernel(session: Session, clock: Clock, opener: FakeOpener) -> Kernel:
    return Kernel(
        kernel_id="k1",
        spec_name="python3",
        connection_info=INFO,
        session=session,
        clock=clock,
        opener=opener,
    )


def frames_from_kernel(
    session: Session,
    msg_type: str,
    content: dict[str, Any] | None = None,
    parent: dict[str, Any] | None = None,
    buffers: Sequence[bytes] = (),
) -> list[bytes]:
    """What a kernel would send: a message signed with the kernel's key."""
    message = session.msg(msg_type, content=content or {}, parent=parent or {})
    message["header"]["date"] = "2024-01-01T00:00:00.000001Z"
    return [*session.serialize(message), *buffers]


def test_iopub_messages_reach_listeners_in_order_and_track_state(
    kernel: Kernel, session: Session, opener: FakeOpener, clock: Clock
) -> None:
    """Verified iopub messages reach every listener in order; status updates execution_state."""
    seen: list[str] = []
    kernel.add_iopub_listener(lambda m: seen.append("a:" + m.msg_type))
    kernel.add_iopub_listener(lambda m: seen.append("b:" + m.msg_type))
    iopub = opener.find(5002)
    assert kernel.execution_state == "starting"
    clock.advance(5)
    iopub.on_frames(
        [b"kernel.topic", *frames_from_kernel(session, "status", {"execution_state": "busy"})]
    )
    iopub.on_frames(frames_from_kernel(session, "stream", {"name": "stdout", "text": "hi"}))
    assert seen == ["a:status", "b:status", "a:stream", "b:stream"]
    assert kernel.execution_state == "busy"
    assert kernel.last_activity == 1005


def test_bad_signature_is_dropped_and_counted(
    kernel: Kernel, session: Session, opener: FakeOpener
) -> None:
    """A message signed with another key (or tampered with) is not delivered but is counted."""
    seen: list[KernelMessage] = []
    kernel.add_iopub_listener(seen.append)
    iopub = opener.find(5002)
    forged = frames_from_kernel(Session(key=b"wrong"), "status", {"execution_state": "idle"})
    tampered = frames_from_kernel(session, "stream", {"text": "a"})
    tampered[-1] = b'{"text": "b"}'
    iopub.on_frames(forged)
    iopub.on_frames(tampered)
    iopub.on_frames([b"junk"])
    iopub.on_frames(frames_from_kernel(session, "stream", {"text": "ok"}))
    assert [m.content for m in seen] == [{"text": "ok"}]
    assert kernel.rejected_messages == 3
    assert kernel.execution_state == "starting"


def test_client_reply_with_buffers_is_parsed(
    kernel: Kernel, session: Session, opener: FakeOpener
) -> None:
    """A kernel-to-client message with buffers arrives parsed, with channel and string dates."""
    got: list[KernelMessage] = []
    kernel.open_client(b"client-1", got.append)
    stdin = opener.find(5003, b"client-1")
    stdin.on_frames(
        frames_from_kernel(session, "input_request", {"prompt": "?"}, buffers=[b"\x00", b"xy"])
    )
    (message,) = got
    assert message.channel == "stdin"
    assert message.buffers == [b"\x00", b"xy"]
    assert message.header["date"] == "2024-01-01T00:00:00.000001Z"
    assert message.to_dict()["buffers"] == [b"\x00", b"xy"]
    assert message.raw_parts[3] == b'{"prompt": "?"}'  # the kernel's bytes, not re-encoded


def test_send_signs_and_fills_defaults(
    kernel: Kernel, session: Session, opener: FakeOpener
) -> None:
    """send() puts a correctly signed, completed message with buffers on the chosen channel."""
    client = kernel.open_client(b"client-1", lambda m: None)
    msg_id = client.send(
        "control", {"header": {"msg_type": "interrupt_request"}}, buffers=[b"blob"]
    )
    (frames,) = opener.find(5004, b"client-1").sent
    _, sent = decode_frames(frames, "control", lambda parts: session.sign(list(parts)))
    assert sent.msg_id == msg_id
    assert sent.header["session"] == client.session_id
    assert sent.header["username"] == "kernel-relay"
    assert sent.header["date"] == "1970-01-01T00:16:40.000000Z"
    assert sent.header["version"] == "5.3"
    assert sent.buffers == [b"blob"]
    assert opener.find(5001, b"client-1").sent == []


def test_replies_go_to_the_client_whose_socket_received_them(
    kernel: Kernel, session: Session, opener: FakeOpener
) -> None:
    """Each client's callback sees only what arrives on its own sockets."""
    first: list[str] = []
    second: list[str] = []
    kernel.open_client(b"one", lambda m: first.append(m.msg_type))
    kernel.open_client(b"two", lambda m: second.append(m.msg_type))
    opener.find(5001, b"two").on_frames(frames_from_kernel(session, "kernel_info_reply"))
    assert (first, second) == ([], ["kernel_info_reply"])


def test_failing_listener_does_not_stop_others(
    kernel: Kernel, session: Session, opener: FakeOpener
) -> None:
    """An exception in one iopub listener is logged and later listeners still run."""
    seen: list[str] = []

    def broken(message: KernelMessage) -> None:
        raise RuntimeError("listener bug")

    kernel.add_iopub_listener(broken)
    kernel.add_iopub_listener(lambda m: seen.append(m.msg_type))
    opener.find(5002).on_frames(frames_from_kernel(session, "stream"))
    assert seen == ["stream"]
    kernel.remove_iopub_listener(broken)
    kernel.remove_iopub_listener(broken)


def test_invalid_and_closed_sends_raise_invalid_message(kernel: Kernel) -> None:
    """Bad messages and sends on a closed client raise InvalidMessage and send nothing."""
    client = kernel.open_client(b"client-1", lambda m: None)
    with pytest.raises(InvalidMessage):
        client.send("shell", {"content": {}})
    with pytest.raises(InvalidMessage):
        client.send("iopub", {"header": {"msg_type": "x"}})
    client.close()
    client.close()
    with pytest.raises(InvalidMessage, match="closed"):
        client.send("shell", {"header": {"msg_type": "x"}})


def test_client_identities_are_checked(kernel: Kernel) -> None:
    """Empty, oversized, zero-prefixed and duplicate identities are refused; a closed kernel too."""
    kernel.open_client(b"taken", lambda m: None)
    for identity in [b"", b"x" * 256, b"\x00abc", b"taken"]:
        with pytest.raises(ValueError):
            kernel.open_client(identity, lambda m: None)
    kernel.close()
    with pytest.raises(UnknownKernel):
        kernel.open_client(b"later", lambda m: None)


def test_close_closes_every_socket(kernel: Kernel, opener: FakeOpener) -> None:
    """Kernel.close closes the iopub socket and all clients' sockets, and is idempotent."""
    kernel.open_client(b"a", lambda m: None)
    kernel.open_client(b"b", lambda m: None)
    kernel.close()
    kernel.close()
    assert len(opener.sockets) == 7
    assert all(socket.closed for socket in opener.sockets)
    assert kernel.clients() == []


def probe_socket(opener: FakeOpener) -> FakeSocket:
    return next(
        s
        for s in opener.sockets
        if s.identity.startswith(b"kernel-relay-probe") and "5001" in s.url
    )


def test_wait_ready_needs_reply_and_iopub(
    kernel: Kernel, session: Session, opener: FakeOpener, clock: Clock
) -> None:
    """Readiness needs a kernel_info_reply and iopub traffic; requests repeat until both arrived."""
    fired: list[None] = []
    kernel.wait_ready(interval=0.5).addCallback(fired.append)
    probe = probe_socket(opener)
    assert len(probe.sent) == 1
    clock.advance(0.5)
    assert len(probe.sent) == 2
    probe.on_frames(frames_from_kernel(session, "kernel_info_reply"))
    assert fired == []
    opener.find(5002).on_frames(frames_from_kernel(session, "status", {"execution_state": "idle"}))
    assert fired == [None]
    assert probe.closed
    clock.advance(5)
    assert len(probe.sent) == 2


def test_wait_ready_can_be_cancelled(kernel: Kernel, opener: FakeOpener, clock: Clock) -> None:
    """Cancelling readiness closes the probe and stops the repeated requests."""
    d = kernel.wait_ready(interval=0.5)
    failures: list[Any] = []
    d.addErrback(failures.append)
    d.cancel()
    assert failures[0].check(CancelledError)
    probe = probe_socket(opener)
    assert probe.closed
    assert not clock.getDelayedCalls()


def test_unsigned_kernel_accepts_messages(clock: Clock, opener: FakeOpener) -> None:
    """A kernel running without a key (signing disabled) still delivers its messages."""
    unsigned = Session(key=b"")
    kernel = Kernel(
        kernel_id="k2",
        spec_name="x",
        connection_info=INFO,
        session=unsigned,
        clock=clock,
        opener=opener,
    )
    seen: list[str] = []
    kernel.add_iopub_listener(lambda m: seen.append(m.msg_type))
    opener.find(5002).on_frames([DELIMITER, b"", b'{"msg_type":"status"}', b"{}", b"{}", b"{}"])
    assert seen == ["status"]


def test_every_socket_of_an_encrypted_kernel_is_a_curve_client(
    session: Session, clock: Clock, opener: FakeOpener
) -> None:
    """iopub, each client's shell/control/stdin and the heartbeat all get the connection file's keys."""
    info = {**INFO, "curve_publickey": "P" * 40, "curve_secretkey": "S" * 40}
    kernel = Kernel(
        kernel_id="k3",
        spec_name="x",
        connection_info=info,
        session=session,
        clock=clock,
        opener=opener,
    )
    kernel.open_client(b"client", lambda message: None)
    kernel.open_heartbeat(lambda frames: None)
    keys = CurveKeys(b"P" * 40, b"S" * 40)
    assert kernel.curve == keys
    assert opener.curves == [keys] * 5


def test_a_kernel_without_keys_is_not_encrypted(kernel: Kernel, opener: FakeOpener) -> None:
    kernel.open_client(b"client", lambda message: None)
    assert kernel.curve is None and opener.curves == [None] * 4


class ConnectingSocket(FakeSocket):
    """A fake socket that tells when its handshake succeeded, as the relay's ZMQ dealers do."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.waiting: list[Any] = []

    def when_connected(self, callback: Any) -> None:
        self.waiting.append(callback)

    def connect(self) -> None:
        waiting, self.waiting = self.waiting, []
        for callback in waiting:
            callback()


def test_a_clients_messages_wait_until_all_its_sockets_are_connected(
    kernel: Kernel, opener: FakeOpener
) -> None:
    """Requests sent before the client's stdin socket is connected reach the kernel only after, in order."""
    sockets: list[ConnectingSocket] = []

    def dealer(
        url: str, identity: bytes, on_frames: FrameHandler, curve: Any = None, watch: bool = False
    ) -> Any:
        assert watch == url.endswith("5003"), "only the stdin socket is watched"
        sockets.append(ConnectingSocket("dealer", url, identity, on_frames))
        return sockets[-1]

    opener.dealer = dealer  # type: ignore[method-assign]
    client = kernel.open_client(b"early", lambda m: None)
    first = client.send("shell", {"header": {"msg_type": "execute_request"}})
    client.send("control", {"header": {"msg_type": "kernel_info_request"}})
    shell, control, stdin = (
        next(s for s in sockets if s.url.endswith(p)) for p in ("5001", "5004", "5003")
    )
    shell.connect()
    control.connect()
    assert shell.sent == [] and control.sent == []
    stdin.connect()
    assert len(shell.sent) == 1 and len(control.sent) == 1
    assert first.encode() in shell.sent[0][2]
    client.send("shell", {"header": {"msg_type": "kernel_info_request"}})
    assert len(shell.sent) == 2


def test_a_client_that_leaves_before_its_stdin_connected_still_sends_its_requests(
    kernel: Kernel, opener: FakeOpener
) -> None:
    """Requests held for the stdin socket go out when the client closes, with time to reach the kernel."""
    sockets: list[ConnectingSocket] = []

    def dealer(
        url: str, identity: bytes, on_frames: FrameHandler, curve: Any = None, watch: bool = False
    ) -> Any:
        sockets.append(ConnectingSocket("dealer", url, identity, on_frames))
        return sockets[-1]

    opener.dealer = dealer  # type: ignore[method-assign]
    client = kernel.open_client(b"leaving", lambda m: None)
    client.send("shell", {"header": {"msg_type": "execute_request"}})
    client.close()
    shell = next(s for s in sockets if s.url.endswith("5001"))
    assert len(shell.sent) == 1 and shell.closed and shell.linger > 0
