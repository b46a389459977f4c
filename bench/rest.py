"""
A bench client that runs cells over the relay's execute API (REST, the long-poll form): ``POST
/api/kernels/<id>/execute``, then one ``GET .../requests/<id>?wait=30``; the answer is handed back as the
request's ``execute_reply`` so the round-trip scenario measures it beside the WebSocket fronts
(``round_trip_execute_rest``; :func:`markdown_lines` is its part of the report).
"""

from __future__ import annotations

from typing import Any

import requests

from bench.clients import Msg
from bench.processes import HOST


class RestExecuteClient:
    """Sends ``execute_request``\\ s over REST; ``recv`` waits for the oldest one's result."""

    name = "relay_rest"

    def __init__(self, port: int, kernel_id: str, token: str | None = None) -> None:
        self.base = f"http://{HOST}:{port}"
        self.kernel_id = kernel_id
        self.http = requests.Session()
        if token:
            self.http.headers["Authorization"] = f"Bearer {token}"
        self.pending: list[str] = []

    def send(self, channel: str, msg_type: str, content: dict[str, Any]) -> str:
        if channel != "shell" or msg_type != "execute_request":
            raise ValueError("the REST bench client sends execute_request only")
        response = self.http.post(
            f"{self.base}/api/kernels/{self.kernel_id}/execute",
            json={"code": content.get("code", "")},
            timeout=30,
        )
        response.raise_for_status()
        self.pending.append(response.headers["Location"])
        return str(response.json()["request_id"])

    def recv(self, timeout: float) -> Msg | None:
        if not self.pending:
            return None
        wait = max(0.0, min(timeout, 30.0))
        response = self.http.get(f"{self.base}{self.pending[0]}?wait={wait}", timeout=wait + 10)
        if response.status_code == 202:
            return None
        self.pending.pop(0)
        body = response.json()
        return Msg(
            "shell",
            {"msg_type": "execute_reply"},
            {"msg_id": body["request_id"]},
            {"status": body.get("status"), "execution_count": body.get("execution_count")},
        )

    def close(self) -> None:
        self.http.close()


#: The targets of ``round_trip_execute_rest`` in the report's order, and what each is.
FRONTS = (
    ("relay_rest", "kernel-relay, REST (POST, then GET ?wait=30)"),
    ("relay", "kernel-relay, socket.io"),
    ("relay_jupyter", "kernel-relay, Jupyter v1"),
    ("direct", "direct ZMQ"),
    ("jupyter_server", "Jupyter Server"),
)


def markdown_lines(results: dict[str, Any]) -> list[str]:
    """The report's section on the execute round trip over REST, beside the WebSocket fronts of the same run."""
    data = results.get("round_trip_execute_rest") or {}
    rest = data.get("relay_rest")
    if not rest:
        return []
    lines = [
        "",
        '## Round trip execute "pass" over REST (the execute API) beside the WebSocket fronts',
        "",
        "| front | median | p99 | ÷ socket.io (median) |",
        "|---|---:|---:|---:|",
    ]
    socketio = (data.get("relay") or {}).get("median")
    for name, label in FRONTS:
        entry = data.get(name)
        if entry:
            ratio = f"{entry['median'] / socketio:.2f}" if socketio else "n/a"
            lines.append(
                f"| {label} | {entry['median'] * 1000:.2f} ms | {entry['p99'] * 1000:.2f} ms | {ratio} |"
            )
    return lines
