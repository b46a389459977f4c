"""The iopub journal and the sequence splice, as pure functions on a Clock."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock

from kernel_relay.fronts.socketio_forms import json_text
from kernel_relay.relay.events import ReplayAhead, ReplayExpired
from kernel_relay.relay.journal import ENTRY_OVERHEAD, IopubJournal
from kernel_relay.relay.payload import Outgoing, splice_seq
from tests.fakes import kernel_message


def decoded(message: Outgoing) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(json_text(message))
    return value


def stream(n: int) -> Outgoing:
    return Outgoing.of_dict(
        {"header": {"msg_type": "stream"}, "metadata": {}, "content": {"text": f"{n}\n"}}
    )


def texts(messages: list[Outgoing]) -> list[str]:
    return [decoded(m)["content"]["text"] for m in messages]


def test_messages_are_numbered_and_replayed_after_a_sequence() -> None:
    """Each recorded message gets the next number; since(N) gives exactly those after N, in order."""
    journal = IopubJournal(Clock(), max_bytes=10_000, max_age=60)
    sent = [journal.record(stream(n), 10, "stream") for n in range(5)]
    assert [decoded(m)["metadata"]["relay_seq"] for m in sent] == [1, 2, 3, 4, 5]
    replay = journal.since(2)
    assert replay.gap is None
    assert texts(replay.messages) == ["2\n", "3\n", "4\n"]
    assert journal.since(5).messages == [] and journal.since(5).gap is None


def test_the_byte_bound_drops_the_oldest_and_reports_the_gap() -> None:
    """Past max_bytes the oldest messages go; a client behind them is told which range is missing."""
    journal = IopubJournal(Clock(), max_bytes=3 * (10 + ENTRY_OVERHEAD), max_age=60)
    for n in range(6):
        journal.record(stream(n), 10, "stream")
    assert journal.first_seq == 4
    replay = journal.since(1)
    assert replay.gap is not None
    assert replay.gap == ReplayExpired(2, 3)
    assert texts(replay.messages) == ["3\n", "4\n", "5\n"]


def test_the_age_bound_expires_old_messages() -> None:
    """Messages older than max_age are gone even when bytes allow them."""
    clock = Clock()
    journal = IopubJournal(clock, max_bytes=10_000, max_age=5)
    journal.record(stream(0), 10, "stream")
    clock.advance(3)
    journal.record(stream(1), 10, "stream")
    clock.advance(3)
    assert len(journal) == 1
    assert texts(journal.since(0).messages) == ["1\n"]
    assert journal.since(0).gap == ReplayExpired(1, 1)


def test_a_sequence_ahead_of_the_relay_is_explained() -> None:
    """A client resuming with a number this relay never sent (a relay restart) gets a reason, no messages."""
    journal = IopubJournal(Clock(), max_bytes=10_000, max_age=60)
    journal.record(stream(0), 10, "stream")
    replay = journal.since(40)
    assert replay.messages == []
    assert replay.gap == ReplayAhead(40, 1)


def test_current_execution_starts_at_the_last_execute_input() -> None:
    """The running cell's output so far: from the most recent execute_input on."""
    journal = IopubJournal(Clock(), max_bytes=10_000, max_age=60)
    journal.record(stream(0), 10, "stream")
    journal.record(Outgoing.of_dict({"content": {"code": "a"}}), 10, "execute_input")
    journal.record(stream(1), 10, "stream")
    journal.record(Outgoing.of_dict({"content": {"code": "b"}}), 10, "execute_input")
    journal.record(stream(2), 10, "stream")
    current = journal.current_execution()
    assert [decoded(m)["metadata"]["relay_seq"] for m in current] == [4, 5]
    assert IopubJournal(Clock(), max_bytes=1, max_age=1).current_execution() == []


metadata_values = st.dictionaries(
    st.text(max_size=6),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=8),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
        max_leaves=6,
    ),
    max_size=4,
)


@given(metadata_values, st.integers(1, 10**12), st.sampled_from(["", " ", "\n"]))
def test_splice_equals_parse_and_update(metadata: dict[str, Any], seq: int, pad: str) -> None:
    """Splicing relay_seq into raw metadata JSON (text or bytes) gives the object parsing and updating it gives."""
    for text in (json.dumps(metadata), json.dumps(metadata, separators=(",", ":"))):
        for raw in (pad + text + pad, (pad + text + pad).encode()):
            assert json.loads(splice_seq(raw, seq)) == {**metadata, "relay_seq": seq}


def test_with_seq_splices_the_metadata_and_never_touches_the_content() -> None:
    """A kernel's message keeps its content bytes (the same object); a relay-made dict gets the key too."""
    message = kernel_message("stream", "iopub", content={"text": "x"})
    numbered = Outgoing.of_kernel(message).with_seq(7)
    assert numbered.parts[3] is message.raw_parts[3]
    assert json.loads(numbered.parts[2]) == {**message.metadata, "relay_seq": 7}
    made = Outgoing.of_dict({"metadata": {"b": 2}, "content": {"c": 3}}).with_seq(8)
    assert decoded(made)["metadata"] == {"b": 2, "relay_seq": 8}
    assert decoded(made)["content"] == {"c": 3}
