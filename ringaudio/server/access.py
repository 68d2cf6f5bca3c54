"""The HTTP edge, sans I/O: which requests the server answers, and whether a handshake carries the token.

Pure functions of what websockets parsed (``Request``, ``Headers``, the request target); nothing here
reads a socket, and nothing raises on hostile input.

Why a method check of our own: websockets parses any ASCII method (``DELETE``, ``get``, even
``G\\x00T``) into ``Request.method`` and refuses non-``GET`` only in ``ServerProtocol.accept()``, that
is only for requests our ``process_request`` hook lets through to the WebSocket handshake. Whatever
the hook answers itself (``/healthz``, ``/metrics``, 404, 401) it answers to any method, so the hook
must check first: ``if not allowed_method(request): return method_not_allowed()``.
"""

from __future__ import annotations

import hmac
import json
from http import HTTPStatus
from typing import Final, Literal, TypeAlias
from urllib.parse import parse_qs, urlsplit

from websockets.datastructures import Headers
from websockets.http11 import Request, Response

ALLOWED_METHODS: Final = ("GET",)
CHALLENGE: Final = 'Bearer realm="ringaudio"'  # WWW-Authenticate of a 401 (RFC 6750 §3)

Token: TypeAlias = str | Literal[False] | None
"""A credential as found in a request: the token (``str``), ``None`` when the request carries none
that way, ``False`` when it carries one that is malformed (never a valid credential)."""


def _visible_ascii(value: str) -> bool:
    """Only the characters of an HTTP token68 or scheme can hold: ``!`` to ``~``, no space, no control."""
    return value != "" and all("!" <= c <= "~" for c in value)


def bearer_token(headers: Headers) -> Token:
    """The token of the ``Authorization: Bearer <token>`` header (RFC 6750 §2.1).

    ``None``: no ``Authorization`` header. ``False``: more than one, or one that is not exactly the
    scheme ``Bearer`` (any case), one or more spaces and a token of visible ASCII characters: another
    scheme (``Basic …``), a bare token with no scheme, an empty token, two tokens, a tab, non-ASCII.
    Never raises.
    """
    values = headers.get_all("Authorization")
    if not values:
        return None
    if len(values) > 1:
        return False
    scheme, space, token = values[0].strip(" \t").partition(" ")
    token = token.lstrip(" ")
    if not space or not _visible_ascii(scheme) or scheme.lower() != "bearer" or not _visible_ascii(token):
        return False
    return token


def listen_target(target: str) -> str | None:
    """A ``listen`` command (JSON, for the parser to check) from ``/?listen=<session_id>&key=<key>``,
    the form a load balancer can route on; None when the target asks for none."""
    _, query = split_target(target)
    if "listen=" not in query:
        return None
    try:
        args = parse_qs(query, max_num_fields=8)
    except ValueError:  # too many fields: the parser says what is missing
        args = {}
    return json.dumps({"type": "listen", "session_id": args.get("listen", [""])[0], "key": args.get("key", [""])[0]})


def split_target(target: str) -> tuple[str, str]:
    """The path and the query of a request target (``Request.path``, e.g. ``/ws?token=x``).

    ``urllib.parse.urlsplit`` raises ValueError on some targets a client can send (``//[``: "Invalid
    IPv6 URL"); those come back as ``("", "")``, a path no route has. Never raises.
    """
    try:
        parts = urlsplit(target)
    except ValueError:
        return "", ""
    return parts.path, parts.query


def query_token(target: str) -> Token:
    """The ``token`` query parameter of a request target (``Request.path``), percent-decoded as UTF-8.

    ``None``: no ``token`` parameter. ``False``: more than one (even if equal), or an empty one.
    A ``+`` decodes to a space, as in any query: a token holding ``+`` must be sent as ``%2B``.
    Never raises.
    """
    values = parse_qs(split_target(target)[1], keep_blank_values=True).get("token")
    if not values:
        return None
    if len(values) > 1 or values[0] == "":
        return False
    return values[0]


def _same(given: Token, expected: bytes) -> bool:
    # surrogatepass: never raises (a token from the environment may hold surrogate escapes) and
    # stays one-to-one, so equal bytes still means equal strings
    return isinstance(given, str) and hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected)


def token_ok(expected: str, headers: Headers, path_query: str) -> bool:
    """Whether a handshake carries the shared token ``expected``.

    It does if its ``Authorization: Bearer`` header (see bearer_token) or its ``?token=`` query
    parameter (see query_token; ``path_query`` is ``Request.path``) equals it; either one is enough,
    and a malformed one does not veto the other. Compared in constant time on UTF-8 bytes, so any
    token, ASCII or not, is compared and none raises. An empty ``expected`` matches nothing.
    """
    want = expected.encode("utf-8", "surrogatepass")
    if want == b"":
        return False
    header_ok = _same(bearer_token(headers), want)
    query_ok = _same(query_token(path_query), want)  # both compared: the time does not tell which one
    return header_ok or query_ok


def allowed_method(request: Request) -> bool:
    """Only ``GET`` (methods are case-sensitive, RFC 9110 §9.1): everything the server serves is a GET."""
    return request.method in ALLOWED_METHODS


def method_not_allowed() -> Response:
    """The 405 for a request allowed_method refuses, with ``Allow: GET`` (RFC 9110 §15.5.6), a JSON
    body like the server's other refusals, and ``Connection: close`` (websockets closes after it)."""
    status = HTTPStatus.METHOD_NOT_ALLOWED
    body = json.dumps({"error": "method_not_allowed", "message": "only GET is served"}).encode()
    headers = Headers(
        [
            ("Allow", ", ".join(ALLOWED_METHODS)),
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            ("Connection", "close"),
        ]
    )
    return Response(status.value, status.phrase, headers, body)
