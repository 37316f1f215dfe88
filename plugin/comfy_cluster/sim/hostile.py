"""What a hostile or broken server sends, so the client's defences meet a real socket.

The faults (``SimOptions`` fields, see docs/simulator.md): ``redirect_to`` and ``error_text`` (every
ComfyUI route), ``endless_route`` (one GET route's JSON never ends), ``view_fault`` (``/view``
answers something that is not the file), ``ws_message_bytes`` (a giant first websocket message)
and ``echo_401`` (a refusal that repeats the request's headers, token included).
Everything here runs on the server's event loop thread.
"""

from __future__ import annotations

import io
import struct
from typing import Any, Callable

from aiohttp import web

from .options import SimOptions

__all__ = ["ECHO_401", "HTML_PAGE", "bad_view", "middleware", "refusal", "send_giant_message"]

#: ``/view``'s answer for ``view_fault="html"``: what a proxy in front of a dead server sends.
HTML_PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>\n"
    b"<body><h1>502 Bad Gateway</h1><p>nginx</p></body></html>\n"
)
#: The start of a refusal that echoes the request (``echo_401``).
ECHO_401 = "401 Unauthorized. Your request was:\n"
_FILLER = b"a" * (64 * 1024)
#: The most of a giant websocket message actually sent.
_GIANT_SENT = 1 << 20


def middleware(options: Callable[[], SimOptions]) -> Any:
    """The aiohttp middleware for the faults that replace a whole ComfyUI answer."""

    @web.middleware
    async def hostile(request: web.Request, handler: Callable) -> web.StreamResponse:
        current = options()
        if request.path.startswith("/sim/"):
            return await handler(request)
        if current.redirect_to:
            target = current.redirect_to.rstrip("/") + str(request.rel_url)
            return web.Response(status=302, headers={"Location": target})
        if current.error_text is not None:
            return web.Response(status=500, text=current.error_text)
        route = current.endless_route
        if route and request.method == "GET" and request.path in (route, "/api" + route):
            return await _endless(request, b'{"system": {"pad": "')
        return await handler(request)

    return hostile


def refusal(request: web.Request, options: SimOptions) -> web.Response:
    """The 401 for a request without the right token: bare, or echoing it (``echo_401``)."""
    if not options.echo_401:
        return web.Response(status=401)
    lines = [f"{request.method} {request.rel_url} HTTP/1.1"]
    lines += [f"{key}: {value}" for key, value in request.headers.items()]
    return web.Response(status=401, text=ECHO_401 + "\n".join(lines))


async def _endless(request: web.Request, start: bytes) -> web.StreamResponse:
    """A 200 whose body starts with ``start`` and never ends (until the client hangs up)."""
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    await response.prepare(request)
    try:
        await response.write(start)
        while True:
            await response.write(_FILLER)  # waits while the client does not read (backpressure)
    except (ConnectionError, RuntimeError):
        pass  # the client hung up, as it should
    return response


async def bad_view(request: web.Request, fault: str, body: bytes) -> web.StreamResponse:
    """``/view``'s answer for ``view_fault`` instead of the file whose bytes are ``body``."""
    if fault == "endless":
        return await _endless(request, body[:64])
    answers = {
        "html": (HTML_PAGE, "text/html"),
        "empty": (b"", "image/png"),
        "truncated": (body[: len(body) // 2], "image/png"),
        "jpeg": (_jpeg(), "image/jpeg"),
    }
    data, content_type = answers[fault]
    return web.Response(body=data, headers={"Content-Type": content_type})


def _jpeg() -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (4, 4), (10, 20, 30)).save(out, "JPEG")
    return out.getvalue()


def send_giant_message(request: web.Request, size: int) -> None:
    """Write a text frame announced as ``size`` bytes straight to the socket (one write, so no
    other message can interleave), with at most 1 MiB of its payload."""
    if size <= _GIANT_SENT:
        payload = _padding_message(size)
        size = len(payload)
    else:
        payload = b"a" * _GIANT_SENT
    transport = request.transport
    if transport is not None:
        transport.write(_frame_header(size) + payload)


def _padding_message(size: int) -> bytes:
    """A valid ComfyUI-shaped JSON message of exactly ``size`` bytes (or the shortest one)."""
    start, end = b'{"type": "sim_padding", "data": {"pad": "', b'"}}'
    return start + b"a" * max(0, size - len(start) - len(end)) + end


def _frame_header(size: int) -> bytes:
    """An unmasked, final text frame's header announcing ``size`` payload bytes."""
    if size < 126:
        return struct.pack("!BB", 0x81, size)
    if size < 1 << 16:
        return struct.pack("!BBH", 0x81, 126, size)
    return struct.pack("!BBQ", 0x81, 127, size)
