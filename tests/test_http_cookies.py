"""Cookies a server sets come back on the next request, as a browser session would send them:
a ComfyUI behind a login proxy keeps its session in a cookie. The client builds its requests
itself (no per-call merges), so this is pinned here."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from comfy_cluster.core.client import ComfyClient
from comfy_cluster.core.server import ServerConfig

QUEUE = json.dumps({"queue_running": [], "queue_pending": []}).encode()


class CookieServer(ThreadingHTTPServer):
    """Answers ``/queue``; sets a session cookie on the first answer; records Cookie headers."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), CookieHandler)
        self.cookies_seen: list[str] = []


class CookieHandler(BaseHTTPRequestHandler):
    server: CookieServer

    def do_GET(self) -> None:
        self.server.cookies_seen.append(self.headers.get("Cookie", ""))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(QUEUE)))
        if len(self.server.cookies_seen) == 1:
            self.send_header("Set-Cookie", "session=abc123; Path=/")
        self.end_headers()
        self.wfile.write(QUEUE)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def cookie_server() -> Iterator[CookieServer]:
    server = CookieServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_a_cookie_the_server_sets_is_sent_back_on_later_requests(
    cookie_server: CookieServer,
) -> None:
    config = ServerConfig(name="s", host="127.0.0.1", port=cookie_server.server_address[1])
    with ComfyClient(config) as client:
        client.queue()
        client.queue()
        client.queue()
    first, *later = cookie_server.cookies_seen
    assert first == ""
    assert later == ["session=abc123", "session=abc123"]
