"""The origin policy's verdicts and CORS headers, as pure functions."""

from __future__ import annotations

import pytest

from kernel_relay.http.origins import OriginPolicy

HOST = "127.0.0.1:3000"


def test_requests_without_origin_and_same_origin_are_allowed_by_default() -> None:
    """With no --allow-origin, non-browser and same-origin requests pass and other origins do not."""
    policy = OriginPolicy()
    assert policy.is_allowed(None, HOST)
    assert policy.is_allowed("http://127.0.0.1:3000", HOST)
    assert not policy.is_allowed("https://127.0.0.1:3000", HOST)
    assert not policy.is_allowed("http://evil.example", HOST)


@pytest.mark.parametrize("echo_any", [False, True])
def test_an_exact_origin_is_echoed_with_credentials(echo_any: bool) -> None:
    """An explicitly allowed origin is echoed with credentials and Vary: Origin."""
    policy = OriginPolicy.from_options(["https://app.example/"])
    assert policy.cors_headers("https://app.example", HOST, echo_any=echo_any) == {
        "Access-Control-Allow-Origin": "https://app.example",
        "Access-Control-Allow-Credentials": "true",
        "Vary": "Origin",
    }


def test_any_origin_never_pairs_star_with_credentials() -> None:
    """Under '*' the REST answer is '*' without credentials; Engine.IO's echoes the origin instead."""
    policy = OriginPolicy.from_options(["*"])
    assert policy.cors_headers("https://x.example", HOST) == {"Access-Control-Allow-Origin": "*"}
    echoed = policy.cors_headers("https://x.example", HOST, echo_any=True)
    assert echoed["Access-Control-Allow-Origin"] == "https://x.example"
    assert echoed["Access-Control-Allow-Credentials"] == "true"
    assert echoed["Vary"] == "Origin"


def test_same_origin_and_refused_origins_get_no_cors_headers() -> None:
    """Same-origin requests need no CORS headers, and refused origins must not get any."""
    policy = OriginPolicy.from_options(["https://*.example.com"])
    assert policy.cors_headers("http://127.0.0.1:3000", HOST) == {}
    assert policy.cors_headers("https://evil.example", HOST, echo_any=True) == {}
    assert policy.cors_headers("https://a.example.com", HOST)["Access-Control-Allow-Origin"] == (
        "https://a.example.com"
    )
