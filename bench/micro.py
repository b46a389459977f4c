"""
``python -m bench.micro``: per-message cost of the relay's kernel→client hot path, in process.

No sockets and no kernel: a signed iopub ``stream`` message (and a 1 MB ``display_data``) goes through
``decode_frames`` (HMAC check and parse), the relay's packet building and the socket.io encoder, as
``Kernel._iopub_received`` and ``Namespace.emit`` run them. Prints microseconds per message (best of 5); the encoder from dicts, and with the payload the
relay sends (``fronts.socketio_forms.client_payload``: one text joined from the kernel's own JSON parts, for a message
without buffers and of moderate size).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

from jupyter_client.session import Session

from kernel_relay.kernels._messages import decode_frames
from kernel_relay.socketio.packet import Packet, PacketType, encode_packet


def frames_for(session: Session, msg_type: str, content: dict[str, object]) -> list[bytes]:
    message = session.msg(msg_type, content, parent=session.msg("execute_request", {"code": "x"}))
    parts = [
        session.pack(message[name]) for name in ("header", "parent_header", "metadata", "content")
    ]
    return [b"kernel.topic", b"<IDS|MSG>", session.sign(parts), *parts]


def best(function: Callable[[], object], count: int) -> float:
    times = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(count):
            function()
        times.append((time.perf_counter() - start) / count)
    return min(times) * 1e6


def main() -> None:
    session = Session(key=uuid.uuid4().hex.encode())
    sign = session.sign
    cases = {
        "stream": (frames_for(session, "stream", {"name": "stdout", "text": "12345\n"}), 20000),
        "display_data 1 MB": (
            frames_for(
                session, "display_data", {"data": {"text/plain": "x" * 1_000_000}, "metadata": {}}
            ),
            50,
        ),
    }
    try:
        from kernel_relay.fronts.socketio_forms import client_payload
        from kernel_relay.relay.payload import Outgoing
    except ImportError:  # an older tree
        try:
            from kernel_relay.relay.payload import Outgoing, client_payload  # type: ignore[attr-defined,no-redef]
        except ImportError:
            client_payload = None  # type: ignore[assignment]
    for name, (frames, count) in cases.items():
        decode = best(lambda frames=frames: decode_frames(frames, "iopub", sign), count)
        _, message = decode_frames(frames, "iopub", sign)

        def encode(message: object = message) -> object:
            event = message.to_dict()  # type: ignore[attr-defined]
            return encode_packet(Packet(PacketType.EVENT, "/iopub/k", ["msg", event]))

        as_dicts = best(encode, count)
        line = f"{name:>18}: decode {decode:9.1f} us   encode from dicts {as_dicts:9.1f} us"
        if client_payload is not None:

            def send_form(message: object = message) -> object:
                payload = client_payload(Outgoing.of_kernel(message))  # type: ignore[arg-type]
                return encode_packet(Packet(PacketType.EVENT, "/iopub/k", ["msg", payload]))

            line += f"   as the relay sends it {best(send_form, count):9.1f} us"
        print(line)


if __name__ == "__main__":
    main()
