"""The HTTP edge, sans I/O: bearer and query tokens, the token check, the method check."""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Callable

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response
from websockets.server import ServerProtocol

from ringaudio.server import access as A


def parsed(raw: bytes) -> Request:
    """A request as websockets 17 parses it off the wire (the server's own parser, no socket)."""
    proto = ServerProtocol()
    proto.receive_data(raw)
    events = proto.events_received()
    assert proto.handshake_exc is None, proto.handshake_exc
    assert len(events) == 1 and isinstance(events[0], Request)
    return events[0]


def auth(*values: str) -> Headers:
    """Authorization headers with any value: unvalidated, as websockets' own parser stores them."""
    headers = Headers()
    for value in values:
        headers.set_insecure("Authorization", value)
    return headers


@pytest.mark.parametrize(
    ("value", "token"),
    [
        ("Bearer s3cret", "s3cret"),
        ("bearer s3cret", "s3cret"),  # the scheme is case-insensitive (RFC 9110 §11.1)
        ("BEARER s3cret", "s3cret"),
        ("Bearer   s3cret", "s3cret"),  # 1*SP
        ("  Bearer s3cret  ", "s3cret"),
        ("Bearer abc-._~+/==", "abc-._~+/=="),  # b64token
        ("Bearer a!b", "a!b"),  # any visible ASCII: a token the admin chose is not refused for its charset
    ],
)
def test_bearer_token_accepts(value: str, token: str) -> None:
    assert A.bearer_token(auth(value)) == token


@pytest.mark.parametrize(
    "value",
    [
        "s3cret",  # a bare token without a scheme: decided, not accepted (use ?token=)
        "Basic dXNlcjpwYXNz",
        "Bearers s3cret",
        "Bearer",
        "Bearer ",
        "Bearer a b",
        "Bearer\ts3cret",
        "Bearer s3cret\x00",
        "Bearer s3crét",  # non-ASCII (websockets decodes header bytes as ISO-8859-1)
        "Beârer s3cret",
        "Bearer \u2603",
        "Bearer \udcff",
        "",
    ],
)
def test_bearer_token_refuses_malformed(value: str) -> None:
    assert A.bearer_token(auth(value)) is False


def test_bearer_token_absent_and_repeated() -> None:
    assert A.bearer_token(Headers()) is None
    assert A.bearer_token(Headers([("Host", "x")])) is None
    assert A.bearer_token(auth("Bearer a", "Bearer a")) is False  # two headers: ambiguous even if equal
    assert A.bearer_token(Headers([("authorization", "Bearer a")])) == "a"  # header names: any case


def test_bearer_token_from_the_wire() -> None:
    """What websockets hands over for non-ASCII or repeated header bytes: refused, never an exception."""
    assert A.bearer_token(parsed(b"GET /ws HTTP/1.1\r\nAuthorization: Bearer s3cret\r\n\r\n").headers) == "s3cret"
    assert A.bearer_token(parsed(b"GET /ws HTTP/1.1\r\nAuthorization: Bearer s3cr\xc3\xa9t\r\n\r\n").headers) is False
    two = b"GET /ws HTTP/1.1\r\nAuthorization: Bearer a\r\nauthorization: Bearer b\r\n\r\n"
    assert A.bearer_token(parsed(two).headers) is False


@pytest.mark.parametrize(
    ("target", "token"),
    [
        ("/ws?token=s3cret", "s3cret"),
        ("/ws?x=1&token=s3cret", "s3cret"),
        ("/ws?token=s3cr%C3%A9t", "s3cr\u00e9t"),  # percent-encoded UTF-8
        ("/ws?token=%FF", "\ufffd"),  # not UTF-8: replaced, not an exception
        ("/ws?token=a+b", "a b"),
        ("/ws?token=a%2Bb", "a+b"),
        ("http://host/ws?token=s3cret", "s3cret"),  # absolute-form target
        ("/ws", None),
        ("/ws?", None),
        ("/ws?tokens=s3cret", None),
        ("//[?token=s3cret", None),  # urlsplit refuses it ("Invalid IPv6 URL"): no query at all
        ("/ws?token=", False),
        ("/ws?token=a&token=a", False),  # more than one value: refused even if equal
        ("/ws?token=&token=s3cret", False),
    ],
)
def test_query_token(target: str, token: A.Token) -> None:
    assert A.query_token(target) == token
    assert type(A.query_token(target)) is type(token)  # False is not None, and neither is ""


@pytest.mark.parametrize(
    ("target", "parts"),
    [
        ("/ws?token=a", ("/ws", "token=a")),
        ("/healthz", ("/healthz", "")),
        ("http://host/metrics?x", ("/metrics", "x")),
        ("//[", ("", "")),
        ("//]/ws", ("", "")),
    ],
)
def test_split_target_never_raises(target: str, parts: tuple[str, str]) -> None:
    assert A.split_target(target) == parts


@pytest.mark.parametrize(
    ("headers", "target", "ok"),
    [
        (Headers(), "/ws", False),
        (auth("Bearer s3cret"), "/ws", True),
        (auth("bearer s3cret"), "/ws", True),
        (auth("Bearer wrong"), "/ws", False),
        (auth("s3cret"), "/ws", False),  # bare token
        (auth("Bearer s3cret", "Bearer s3cret"), "/ws", False),
        (auth("Bearer s3cret", "Basic x"), "/ws", False),
        (Headers(), "/ws?token=s3cret", True),
        (Headers(), "/ws?token=wrong", False),
        (Headers(), "/ws?token=s3cret&token=s3cret", False),
        (Headers(), "/ws?token=s3cre", False),
        (Headers(), "/ws?token=s3crett", False),
        (auth("Basic dXNlcjpwYXNz"), "/ws?token=s3cret", True),  # a proxy's Basic does not veto the query
        (auth("Bearer wrong"), "/ws?token=s3cret", True),  # either one is enough
        (auth("Bearer s3cret"), "/ws?token=wrong", True),
        (auth("Bearer s3crét"), "/ws?token=%FF", False),  # non-ASCII anywhere: compared, never raised
    ],
)
def test_token_ok(headers: Headers, target: str, ok: bool) -> None:
    assert A.token_ok("s3cret", headers, target) is ok


def test_token_ok_never_raises_on_non_ascii() -> None:
    """hmac.compare_digest raises TypeError on non-ASCII str (the HTTP 500 of before); bytes never do."""
    with pytest.raises(TypeError):
        hmac.compare_digest("s3cr\u00e9t", "s3cret")
    assert A.token_ok("s3cr\u00e9t", Headers(), "/ws?token=s3cr%C3%A9t")  # a non-ASCII token works by query
    assert not A.token_ok("s3cr\u00e9t", auth("Bearer s3cr\u00e9t"), "/ws")  # ... not by header (ASCII only)
    assert A.token_ok("s3cret", auth("Bearer s3cret"), "/ws?token=\udcff")  # a str target may hold anything
    assert not A.token_ok("\udcff", Headers(), "/ws?token=%FF")  # a surrogate-escaped env token never raises
    assert not A.token_ok("", Headers(), "/ws?token=")  # an empty expected token matches nothing


@pytest.mark.parametrize(
    ("line", "allowed"),
    [
        (b"GET /healthz HTTP/1.1", True),
        (b"GET /ws?token=x HTTP/1.1", True),
        (b"GET /metrics HTTP/1.0", True),  # HTTP/1.0 is the library's business (505 on /ws), not the method's
        (b"DELETE /metrics HTTP/1.1", False),
        (b"G\x00T /healthz HTTP/1.1", False),
        (b"get /healthz HTTP/1.1", False),  # methods are case-sensitive
        (b"HEAD /healthz HTTP/1.1", False),
        (b"POST /ws HTTP/1.1", False),
        (b"OPTIONS * HTTP/1.1", False),
        (b" /healthz HTTP/1.1", False),  # an empty method
    ],
)
def test_allowed_method_on_what_websockets_parses(line: bytes, allowed: bool) -> None:
    """websockets 17 parses every one of these into a Request (none is refused at the parser)."""
    request = parsed(line + b"\r\nHost: x\r\n\r\n")
    assert A.allowed_method(request) is allowed


def test_method_not_allowed_response() -> None:
    response = A.method_not_allowed()
    assert (response.status_code, response.reason_phrase) == (405, "Method Not Allowed")
    assert response.headers["Allow"] == "GET"
    assert response.headers["Content-Type"] == "application/json"
    assert json.loads(response.body)["error"] == "method_not_allowed"
    assert int(response.headers["Content-Length"]) == len(response.body)
    assert response.serialize().startswith(b"HTTP/1.1 405 Method Not Allowed\r\n")


def test_the_hook_answers_405_where_websockets_alone_answers_200() -> None:
    """Over a real loopback socket: a process_request hook that answers /metrics itself answers any
    method, unless it checks first (what the server's hook must do)."""

    def hook(checked: bool) -> Callable[[ServerConnection, Request], Response | None]:
        def process_request(connection: ServerConnection, request: Request) -> Response | None:
            if checked and not A.allowed_method(request):
                return A.method_not_allowed()
            if A.split_target(request.path)[0] == "/metrics":
                return Response(200, "OK", Headers([("Content-Length", "0")]), b"")
            return None

        return process_request

    async def status_line(checked: bool, line: bytes) -> tuple[bytes, bytes | None]:
        async with serve(lambda ws: ws.close(), "127.0.0.1", 0, process_request=hook(checked)) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(line + b"\r\nHost: x\r\n\r\n")
            data = await asyncio.wait_for(reader.read(), 10)
            writer.close()
            head = data.split(b"\r\n\r\n")[0].split(b"\r\n")
            allow = next((h.split(b": ", 1)[1] for h in head if h.lower().startswith(b"allow:")), None)
            return head[0], allow

    async def main() -> None:
        for line in (b"DELETE /metrics HTTP/1.1", b"G\x00T /metrics HTTP/1.1"):
            assert await status_line(False, line) == (b"HTTP/1.1 200 OK", None)  # the issue
            assert await status_line(True, line) == (b"HTTP/1.1 405 Method Not Allowed", b"GET")
        assert await status_line(True, b"GET /metrics HTTP/1.1") == (b"HTTP/1.1 200 OK", None)
        # websockets itself refuses a non-GET handshake only when the hook lets it through
        assert await status_line(False, b"POST /ws HTTP/1.1") == (b"HTTP/1.1 405 Method Not Allowed", b"GET")

    asyncio.run(asyncio.wait_for(main(), 60))
