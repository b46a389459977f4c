"""
The socket.io front's forms: a message as the ``"msg"`` event's argument, and what a resuming iopub client
asked for in its CONNECT.

- :func:`client_payload` joins a message's parts into one :class:`~kernel_relay.jsontext.RawJSON` text (a
  message without buffers, with a content within :data:`JOIN_LIMIT`), or leaves a dict of ``RawJSON`` parts
  (buffers must travel as binary attachments, and joining a large content into one more text would cost a
  copy of it). Neither re-encodes the kernel's JSON.
- :func:`requested_resume` reads ``{"since": N}`` and ``{"replay": "execution"}`` from the CONNECT auth
  payload (socket.io 1.x/2.x: the namespace query).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, Final

from ..jsontext import RawJSON
from ..kernels import CHANNELS
from ..relay.journal import Resume
from ..relay.payload import Outgoing

#: A content longer than this is not joined into the message's text (that would copy it once more).
JOIN_LIMIT: Final = 64 * 1024

Payload = RawJSON | dict[str, Any]
"""What a socket.io ``"msg"`` event carries: a message's whole JSON text, or a dict (see the module doc)."""

_encode_json: Final = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_CHANNEL_JSON: Final = {channel: _encode_json(channel) for channel in (*CHANNELS, "")}


def message_json(
    texts: tuple[str, str, str, str], channel: str, before: str = "", after: str = ""
) -> str:
    """
    A message without buffers as clients see it, joined from the JSON text of its four parts (header,
    parent_header, metadata, content), nothing parsed or encoded again; between ``before`` and ``after``
    (a packet's text around it), in the same join.
    """
    header, parent, metadata, content = texts
    channel_json = _CHANNEL_JSON.get(channel)
    return "".join(
        (
            before,
            '{"header":',
            header,
            ',"parent_header":',
            parent,
            ',"metadata":',
            metadata,
            ',"content":',
            content,
            ',"channel":',
            channel_json if channel_json is not None else _encode_json(channel),
            "}",
            after,
        )
    )


def is_one_text(message: Outgoing) -> bool:
    """Whether :func:`client_payload` makes ``message`` one text: no buffers, a content within the limit."""
    return not message.buffers and len(message.parts[3]) <= JOIN_LIMIT


def json_text(message: Outgoing, before: str = "", after: str = "") -> str:
    """
    The message without its buffers as one JSON object text, ``channel`` included, joined from its parts
    (between ``before`` and ``after``).
    """
    return message_json(message.texts(), message.channel, before, after)


def client_payload(message: Outgoing) -> Payload:
    """``message`` as a socket.io ``"msg"`` argument (see the module doc)."""
    if is_one_text(message):
        return RawJSON(json_text(message))
    header, parent, metadata, content = (RawJSON(text) for text in message.texts())
    payload: dict[str, Any] = {
        "header": header,
        "parent_header": parent,
        "metadata": metadata,
        "content": content,
    }
    if message.buffers:
        payload["buffers"] = list(message.buffers)
    payload["channel"] = message.channel
    return payload


def _shown(value: Any) -> str:
    text = json.dumps(value, default=repr)
    return text if len(text) <= 40 else f"{text[:37]}..."


def requested_resume(auth: Any, query: Iterable[tuple[str, str]] = ()) -> Resume:
    """
    What a client asked for: ``{"since": N}`` and/or ``{"replay": "execution"}`` in its CONNECT auth payload
    (socket.io 1.x/2.x: the namespace query, ``?since=N&replay=execution``). An unusable value is left out,
    and ``ignored`` says why, for the client to be told.
    """
    fields: dict[str, Any] = dict(query)
    if isinstance(auth, dict):
        fields.update(auth)
    ignored: list[str] = []
    since = fields.get("since")
    if isinstance(since, str) and since.strip().isdigit():
        since = int(since)
    if since is not None and (isinstance(since, bool) or not isinstance(since, int) or since < 0):
        ignored.append(
            f'"since" was ignored: it must be a relay_seq (a whole number from 0), not {_shown(since)}'
        )
        since = None
    replay = fields.get("replay")
    if replay is not None and replay != "execution":
        ignored.append(
            f'"replay" was ignored: the only replay is "execution", not {_shown(replay)}'
        )
    return Resume(since, replay == "execution", tuple(ignored))
