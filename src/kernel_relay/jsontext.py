"""
:class:`RawJSON`, JSON text that is already encoded: the one type the relay core, its fronts and the
socket.io codec share, so a kernel's JSON can be forwarded without a decode/encode round trip. A leaf: it
imports nothing of the relay.
"""

from __future__ import annotations


class RawJSON(str):
    """
    Already-encoded JSON text, spliced verbatim into an encoded packet wherever it appears in the
    payload (as an argument, a list item or a dict value).

    ``RawJSON('{"a":1}')`` is sent as ``{"a":1}``, not as the string ``"{\\"a\\":1}"``. The text
    must be a single valid JSON value; it is not checked, so a wrong one breaks the peer's decoder.
    """

    __slots__ = ()
