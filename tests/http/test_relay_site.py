"""The relay's HTTP site: what it changes on each connection, and that it leaves no cycle behind."""

from __future__ import annotations

import gc
import types

from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web.resource import Resource

from kernel_relay.http.site import SEND_LIMIT, RelaySite


class TunableTransport(StringTransport):
    """A StringTransport with the SEND_LIMIT attribute of Twisted's TCP connections."""

    SEND_LIMIT = 128 * 1024


def test_the_connection_wrapper_leaves_no_reference_cycle(no_cyclic_gc: None) -> None:
    """
    The site raises each TCP connection's send limit as it is made, through a wrapper of the
    protocol's makeConnection; the wrapper is dropped once called, so it is in no reference cycle
    that would keep a closed connection in memory until a cyclic collection.
    """
    site = RelaySite(Resource())
    protocol = site.buildProtocol(None)
    assert protocol is not None
    transport = TunableTransport()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        protocol.makeConnection(transport)
        assert transport.SEND_LIMIT == SEND_LIMIT
        protocol.connectionLost(Failure(ConnectionError("closed")))
        del protocol, transport
        gc.collect()
        # Only the site's own functions: threads that earlier tests started may end meanwhile, and a
        # finished thread leaves cycles of its own (threading's excepthook closure) in the garbage.
        functions = [
            o.__qualname__
            for o in gc.garbage
            if isinstance(o, types.FunctionType) and o.__module__ == RelaySite.__module__
        ]
        assert functions == []
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


def test_the_access_log_shows_no_token() -> None:
    """A request's ``token`` parameters, in its URI and its Referer, are written as ``***``."""
    from twisted.web.http import Request
    from twisted.web.test.requesthelper import DummyChannel

    from kernel_relay.http.site import access_log_line, redact_tokens

    assert redact_tokens(b"/a?x=1&token=s3cret&%74oken=s3cret&tokens=2") == (
        b"/a?x=1&token=***&%74oken=***&tokens=2"
    )
    assert redact_tokens(b"/api/kernels") == b"/api/kernels"
    request = Request(DummyChannel())
    request.method, request.uri, request.clientproto = (
        b"GET",
        b"/api/kernels?token=s3cret",
        b"HTTP/1.1",
    )
    request.requestHeaders.setRawHeaders(b"referer", [b"http://x/?token=s3cret"])
    line = access_log_line("[t]", request)
    assert "s3cret" not in line and "/api/kernels?token=***" in line and "?token=***" in line


class Health(Resource):
    isLeaf = True

    def render_GET(self, request: object) -> bytes:
        return b"x" * 1000


class FillingTransport(TunableTransport):
    """A StringTransport that, like Twisted's TCP connection, pauses its producer past 64 KiB held."""

    def __init__(self) -> None:
        super().__init__()
        self.pending = 0

    def write(self, data: bytes) -> None:
        super().write(data)
        self.pending += len(data)
        if self.producer is not None and self.pending > 65536:
            self.producer.pauseProducing()

    def drain(self) -> None:
        self.pending = 0
        if self.producer is not None:
            self.producer.resumeProducing()


def test_pipelined_requests_wait_while_their_responses_are_not_read() -> None:
    """
    1,000 pipelined requests read at once: the channel answers until 64 KiB of responses wait, then stops
    reading and parsing; each drain of the transport lets it answer the next ones, until all are answered.
    """
    site = RelaySite(Health())
    protocol = site.buildProtocol(None)
    assert protocol is not None
    transport = FillingTransport()
    protocol.makeConnection(transport)
    protocol.dataReceived(b"GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n" * 1000)
    answered = transport.value().count(b"HTTP/1.1 200")
    assert transport.producerState == "paused"
    assert 50 < answered < 80, answered
    drains = 0
    while transport.value().count(b"HTTP/1.1 200") < 1000:
        transport.drain()
        drains += 1
        assert drains < 100, "the channel stopped answering"
    assert transport.producerState == "producing"
    protocol.connectionLost(Failure(ConnectionError("closed")))
