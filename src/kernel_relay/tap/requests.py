# -*- test-case-name: tests.test_tap_requests -*-
"""
The options of execution requests (the execute API, and every cell read back by its ``msg_id``): how many
requests, how many bytes of their outputs and for how long the core's ledger keeps them, and how many requests
sent over REST may wait or run on one kernel at once. :mod:`.table` composes them into the relay's options;
:func:`ledger_options` reads them into the core's bounds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from ..relay.ledger import LedgerOptions
from .values import non_negative_int, positive

_DEFAULTS: Final = LedgerOptions()

#: The default of ``--max-rest-requests-per-kernel``.
MAX_REST_REQUESTS_PER_KERNEL: Final = 100

TOPIC: tuple[str, tuple[str, ...]] = (
    "Execution requests (the execute API)",
    ("requests-kept", "requests-outputs-bytes", "requests-age", "max-rest-requests-per-kernel"),
)

SIZES: Final = frozenset({"requests-outputs-bytes"})
PLACEHOLDERS: Final = {"requests-kept": "N"}
DURATIONS: Final = frozenset({"requests-age"})

PARAMETERS: Sequence[Sequence[Any]] = [
    [
        "requests-kept",
        None,
        _DEFAULTS.max_requests,
        "Most execution requests kept to be read back by their msg_id (GET "
        "/api/kernels/<id>/requests/<msg_id>), over every kernel and whichever front sent them; "
        "over it, the oldest finished one is forgotten. A live one never is: when every kept request is "
        "live, one more sent over REST is refused (503), and one sent over a WebSocket is kept past the "
        "bound until some end.",
        positive(int),
    ],
    [
        "requests-outputs-bytes",
        None,
        _DEFAULTS.max_bytes,
        "Most bytes of outputs kept with those requests, over every kernel (a second copy of what "
        "--iopub-replay-bytes keeps: it costs memory twice). Over it, the oldest requests lose their "
        "outputs first, and each says how many it lost (outputs_dropped); 0 keeps none.",
        non_negative_int,
    ],
    [
        "requests-age",
        None,
        _DEFAULTS.max_age,
        "Seconds a finished request is kept to be read back.",
        positive(float),
    ],
    [
        "max-rest-requests-per-kernel",
        None,
        MAX_REST_REQUESTS_PER_KERNEL,
        "Most requests sent over REST (POST /api/kernels/<id>/execute) waiting or running on one kernel "
        "at once; one more is refused (429) until one ends. They are no client connections: they count "
        "neither in --max-clients-per-kernel nor in a kernel's connections.",
        positive(int),
    ],
]


def ledger_options(options: Mapping[str, Any]) -> LedgerOptions:
    """The core's ledger bounds of ``--requests-kept``, ``--requests-outputs-bytes`` and ``--requests-age``."""
    return LedgerOptions(
        max_requests=options["requests-kept"],
        max_bytes=options["requests-outputs-bytes"],
        max_age=options["requests-age"],
    )
