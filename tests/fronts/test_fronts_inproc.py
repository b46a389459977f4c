"""
Both fronts in process, through the site ``tap`` builds (:mod:`tests.inproc`): routing, admission, limits,
resume and kernel events, each scenario written once and run over socket.io, the Jupyter kernel WebSocket's
v1 subprotocol and its legacy JSON protocol, with fake kernels and a memory clock.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from twisted.logger import LogEvent, formatEvent, globalLogPublisher

from kernel_relay.fronts.jupyter import CLOSE_TRY_AGAIN_LATER
from kernel_relay.kernels import SocketsExhausted
from tests.fakes import kernel_message
from tests.inproc import (
    FRONTS,
    InProcessRelay,
    JupyterPeer,
    Peer,
    PeerFactory,
    SocketIOPeer,
    relay_seq,
)
from tests.inproc_clients import jupyter_message

ADMIN = "admin-token-for-the-inproc-tests"

fronts = pytest.mark.parametrize("front", list(FRONTS.values()), ids=list(FRONTS))


@pytest.fixture
def log_lines() -> Iterator[list[str]]:
    """The relay's log, as lines, while the test runs."""
    lines: list[str] = []

    def observe(event: LogEvent) -> None:
        lines.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    yield lines
    globalLogPublisher.removeObserver(observe)


def stream(text: str) -> object:
    return kernel_message("stream", "iopub", content={"name": "stdout", "text": text})


def texts(messages: list[dict[str, object]]) -> list[object]:
    return [m["content"]["text"] for m in messages if m["header"]["msg_type"] == "stream"]  # type: ignore[index]


def other_front(relay: InProcessRelay, peer: Peer) -> Peer:
    """A client of the same kernel by the other front than ``peer``'s."""
    return SocketIOPeer(relay) if isinstance(peer, JupyterPeer) else JupyterPeer(relay)


# -- routing ----------------------------------------------------------------------------------------------


@fronts
def test_iopub_reaches_every_client(front: PeerFactory) -> None:
    """An iopub message reaches every client of the kernel, numbered, whichever front the others came by."""
    relay = InProcessRelay()
    first, second = front(relay), front(relay)
    other = other_front(relay, first)
    relay.kernel().publish(stream("hello"))
    relay.flush()
    for peer in (first, second, other):
        assert texts(peer.got("iopub")) == ["hello"]
        assert relay_seq(peer.got("iopub")[-1]) == 1


@fronts
def test_a_reply_reaches_only_its_requester(front: PeerFactory) -> None:
    """The kernel's reply to one client's request goes to that client alone, not to another of the kernel."""
    relay = InProcessRelay()
    asker, other = front(relay), front(relay)
    third = other_front(relay, asker)
    request = jupyter_message("execute_request", {"code": "1"})
    asker.send("shell", request)
    relay.kernel().answer(request["header"]["msg_id"], "execute_reply", "shell")
    relay.flush()
    replies = asker.got("shell")
    assert [m["parent_header"]["msg_id"] for m in replies] == [request["header"]["msg_id"]]
    assert other.got("shell") == third.got("shell") == []


@fronts
def test_an_input_request_reaches_only_its_requester(front: PeerFactory) -> None:
    """A kernel's input_request goes on stdin to the client whose request asked for input, no other."""
    relay = InProcessRelay()
    asker, other = front(relay), front(relay)
    request = jupyter_message("execute_request", {"code": "input()", "allow_stdin": True})
    asker.send("shell", request)
    relay.kernel().answer(request["header"]["msg_id"], "input_request", "stdin", {"prompt": "?"})
    relay.flush()
    assert [m["header"]["msg_type"] for m in asker.got("stdin")] == ["input_request"]
    assert other.got("stdin") == []


# -- admission --------------------------------------------------------------------------------------------


@fronts
@pytest.mark.parametrize("token", [None, "not-the-token"], ids=["missing", "wrong"])
def test_a_missing_or_wrong_token_is_refused(front: PeerFactory, token: str | None) -> None:
    """Without the relay's token a client is refused with a reason, and the kernel is sent nothing."""
    relay = InProcessRelay("--token", ADMIN)
    peer = front(relay, token=token)
    assert peer.refusal is not None and "token" in peer.refusal.lower()
    assert relay.kernel().clients == []


@fronts
def test_a_read_only_token_cannot_send_on_shell(front: PeerFactory) -> None:
    """A read-only kernel token sees iopub, but its message for shell never reaches the kernel."""
    relay = InProcessRelay("--token", ADMIN)
    token = relay.kernel_token(ADMIN, "read-only")
    peer = front(relay, channels=("iopub", "shell"), token=token)
    relay.kernel().publish(stream("seen"))
    relay.flush()
    assert texts(peer.got("iopub")) == ["seen"]
    peer.send("shell", jupyter_message("execute_request", {"code": "1"}))
    assert all(line.sent == [] for line in relay.kernel().clients)
    if isinstance(peer, SocketIOPeer):  # its shell namespace is refused
        assert peer.refusal is not None and "read-only" in peer.refusal
    else:  # one connection for every channel: the message is refused
        (error,) = peer.told("error")
        assert "iopub only" in str(error["message"])


@fronts
def test_one_client_too_many_for_a_kernel_is_refused(front: PeerFactory) -> None:
    """With --max-clients-per-kernel 1 a second client is refused with the limit named; the first goes on."""
    relay = InProcessRelay("--max-clients-per-kernel", "1")
    first, second = front(relay), front(relay)
    assert first.refusal is None
    assert second.refusal is not None and "1" in second.refusal
    relay.kernel().publish(stream("still here"))
    relay.flush()
    assert texts(first.got("iopub")) == ["still here"]


@fronts
def test_a_client_the_relay_has_no_socket_for_is_refused_and_others_go_on(
    front: PeerFactory,
) -> None:
    """With no ZeroMQ socket left, a new client is refused saying so (not left hanging); the first goes on."""
    relay = InProcessRelay()
    first = front(relay, channels=("iopub", "shell"))
    kernel = relay.kernel()

    def exhausted(identity: bytes, deliver: object) -> None:
        raise SocketsExhausted("no ZeroMQ socket left (test)")

    kernel.open_client = exhausted  # type: ignore[method-assign,assignment]
    second = front(relay, channels=("iopub", "shell"))
    if isinstance(second, JupyterPeer):  # refused after its upgrade: closed "try again later"
        assert second.client.close_code == CLOSE_TRY_AGAIN_LATER
        assert "no ZeroMQ socket left" in str(second.client.close_reason)
    else:
        assert second.refusal is not None and "no ZeroMQ socket left" in second.refusal
    kernel.publish(stream("still here"))
    relay.flush()
    assert texts(first.got("iopub")) == ["still here"]
    assert relay.metric('kernel_relay_errors_total{kind="sockets_exhausted"}') >= 1


# -- limits -----------------------------------------------------------------------------------------------


@fronts
def test_an_oversized_message_is_refused_with_a_clear_error(front: PeerFactory) -> None:
    """A client's frame over --max-message-size reaches no kernel: the WebSocket closes 1009, saying why."""
    relay = InProcessRelay("--max-message-size", "20000")
    peer = front(relay)
    peer.send("shell", jupyter_message("execute_request", {"code": "x" * 30_000}))
    assert all(line.sent == [] for line in relay.kernel().clients)
    assert peer.client.close_code == 1009
    assert "exceeds payload limit of 20000" in peer.client.close_reason


@fronts
def test_an_oversized_kernel_message_is_told_not_sent(front: PeerFactory) -> None:
    """An iopub message over --max-message-size is not forwarded: every client is told its size instead."""
    relay = InProcessRelay("--max-message-size", "20000")
    peers = [front(relay), front(relay)]
    relay.kernel().publish(stream("z" * 30_000))
    relay.kernel().publish(stream("small"))
    relay.flush()
    for peer in peers:
        assert texts(peer.got("iopub")) == ["small"]
        (error,) = peer.told("error")
        assert "20000" in str(error["message"]), error
        assert not peer.gone


@fronts
def test_a_slow_client_is_disconnected_and_others_are_not(
    front: PeerFactory, log_lines: list[str]
) -> None:
    """A client that stops reading is disconnected as a slow client, saying so; one that reads gets all."""
    relay = InProcessRelay("--max-buffered-bytes", "300000")
    slow, fast = front(relay), front(relay)
    slow.client.reading = False
    for index in range(60):
        relay.kernel().publish(stream(f"{index:04d}" + "y" * 20_000))
        relay.flush()
    relay.advance(1)
    assert len(texts(fast.got("iopub"))) == 60
    assert not fast.gone
    slow.client.reading = True
    relay.flush()
    assert slow.gone
    assert len(texts(slow.got("iopub"))) < 60
    # Counted once per client on the Jupyter front, once per namespace on socket.io's (noted in issue #31).
    assert relay.metric('kernel_relay_errors_total{kind="slow_client"}') >= 1
    # The reason is logged with the bytes waiting: the client itself is cut off, as it reads nothing.
    assert any(
        "over the limit of 300000" in line or "bytes wait for it" in line for line in log_lines
    )


# -- resume -----------------------------------------------------------------------------------------------


@fronts
def test_a_client_back_gets_what_it_missed_in_order(front: PeerFactory) -> None:
    """A client back with the last number it saw gets the iopub messages it missed, in order, once."""
    relay = InProcessRelay()
    peer = front(relay)
    relay.kernel().publish(stream("one"))
    relay.flush()
    relay.advance(
        1
    )  # a Jupyter client confirms nothing: what it was just handed would count as unread
    peer.leave()
    for text in ("two", "three"):
        relay.kernel().publish(stream(text))
    relay.flush()
    back = peer.resume()
    assert texts(back.got("iopub")) == ["two", "three"]
    assert [relay_seq(m) for m in back.got("iopub")] == [2, 3]
    assert back.told("replay_gap") == []


@fronts
def test_a_client_back_too_late_is_told_the_gap(front: PeerFactory) -> None:
    """A client back after its messages were dropped from the journal is told replay_gap, with what it lost."""
    relay = InProcessRelay("--iopub-replay-age", "5")
    peer = front(relay)
    relay.kernel().publish(stream("one"))
    relay.flush()
    peer.leave()
    relay.kernel().publish(stream("two"))
    relay.advance(10)
    relay.kernel().publish(stream("three"))
    relay.flush()
    back = peer.resume()
    gaps = back.told("replay_gap")
    assert len(gaps) == 1, back.client.messages
    assert "two" not in texts(back.got("iopub"))


# -- kernel events ----------------------------------------------------------------------------------------


@fronts
def test_a_kernel_death_is_told(front: PeerFactory) -> None:
    """A kernel that dies is announced dead on iopub, and its clients are let go with the reason."""
    relay = InProcessRelay()
    peer = front(relay)
    relay.registry.stop("k1", "died (exit code 9)")
    relay.flush()
    states = [m["content"].get("execution_state") for m in peer.got("iopub")]
    assert states[-1:] == ["dead"]
    assert peer.gone
    if isinstance(peer, JupyterPeer):
        assert peer.client.close_code == 1000 and "died" in peer.client.close_reason


@fronts
def test_a_restart_is_told(front: PeerFactory) -> None:
    """A restart is told on iopub: the kernel starting again (and, on socket.io, restarting first)."""
    relay = InProcessRelay()
    peer = front(relay)
    kernel = relay.kernel()
    for observer in list(relay.registry.observers):
        observer.kernel_restarting(kernel)
    for observer in list(relay.registry.observers):
        observer.kernel_restarted(kernel)
    relay.flush()
    states = [m["content"].get("execution_state") for m in peer.got("iopub")]
    expected = ["starting"] if isinstance(peer, JupyterPeer) else ["restarting", "starting"]
    assert states == expected
    assert not peer.gone


@fronts
def test_a_kernel_that_stops_answering_is_told(front: PeerFactory) -> None:
    """A kernel silent on its heartbeat is told to its clients as an error naming it; they stay connected."""
    relay = InProcessRelay()
    peer = front(relay)
    relay.core.kernel_unreachable(relay.kernel(), 30.0)  # what the heartbeat monitor calls
    relay.flush()
    errors = peer.told("error")
    assert errors and all(error["code"] == "kernel_unreachable" for error in errors), errors
    assert "has not answered its heartbeat for 30s" in str(errors[0]["message"])
    assert not peer.gone


@fronts
def test_a_client_joining_a_busy_kernel_is_told_busy_first(front: PeerFactory) -> None:
    """The kernel's state is the first iopub message a joining client gets, on either front (no "Unknown")."""
    relay = InProcessRelay()
    relay.kernel().execution_state = "busy"
    peer = front(relay)
    relay.kernel().publish(stream("after"))
    relay.flush()
    [state] = peer.states_told()
    assert state["content"] == {"execution_state": "busy"} or json.loads(state["content"]) == {
        "execution_state": "busy"
    }
    assert texts(peer.got("iopub")) == ["after"]
