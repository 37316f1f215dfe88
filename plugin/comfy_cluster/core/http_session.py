"""One server's HTTP session: URL, timeouts, TLS and headers on every call, failures translated.

The client's request plumbing, kept apart from what the requests mean (``client.py``): every call
goes through :meth:`HttpSession.send`, inside :func:`~comfy_cluster.core.wire_errors.map_errors`,
so no ``requests`` exception escapes. Every answer is streamed and read through :meth:`body`,
which stops at its cap (``core/limits.py``): nothing reads an unbounded body. Redirects are never
followed (they would carry the token and headers to another host). One thread at a time (requests
does not promise a thread-safe Session); ``close()`` from any thread.

The environment is read once, when the session is made (:func:`resolve_environment`): proxies
(``HTTP(S)_PROXY``/``ALL_PROXY``, honouring ``NO_PROXY``), the CA bundle (``REQUESTS_CA_BUNDLE``/
``CURL_CA_BUNDLE``) and ``.netrc`` credentials; then ``trust_env`` is off, so requests does not
re-read them on every call (about a third of a request's CPU).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

import requests
from requests.cookies import extract_cookies_to_jar

from comfy_cluster.core.connection_settings import (
    Timeouts,
    check_ca_bundle,
    check_headers,
    tls_verify,
)
from comfy_cluster.core.errors import ProtocolError
from comfy_cluster.core.limits import DEFAULT_LIMITS, Limits, too_large
from comfy_cluster.core.server import ServerConfig
from comfy_cluster.core.server_text import ServerText
from comfy_cluster.core.wire_errors import map_errors, raise_for_status

__all__ = ["BODY_CHUNK", "EnvironmentSettings", "HttpSession", "resolve_environment"]

#: Bytes asked of the socket per read: large, so reading in pieces costs no measurable CPU.
BODY_CHUNK = 1 << 20


@dataclass(frozen=True)
class EnvironmentSettings:
    """What requests would take from the environment for one server, resolved once."""

    #: scheme -> proxy URL (empty when the server's host is in ``NO_PROXY`` or none is set).
    proxies: dict[str, str]
    #: ``verify=`` for every call: the server's setting, or the environment's CA bundle when the
    #: server just says "verify" (what requests does with ``trust_env`` on).
    verify: Union[bool, str]


def resolve_environment(
    session: requests.Session, url: str, verify: Union[bool, str]
) -> EnvironmentSettings:
    """Resolve, now, the proxy and CA-bundle settings requests would read for ``url`` on every
    call, exactly as it would (``Session.merge_environment_settings``), plus ``.netrc``
    credentials; then turn ``session.trust_env`` off and set them on the session.

    Proxy variables changed later are not read again (docs/configuration.md).
    """
    merged = session.merge_environment_settings(url, {}, None, verify, None)
    proxies = {k: v for k, v in (merged.get("proxies") or {}).items() if v}
    if session.trust_env and session.auth is None:
        session.auth = requests.utils.get_netrc_auth(url)
    session.trust_env = False
    session.proxies = dict(proxies)
    return EnvironmentSettings(proxies=proxies, verify=merged.get("verify", verify))


class HttpSession:
    """A ``requests.Session`` bound to one server, checked open before each call.

    ``check_open`` raises ClosedError once the owner is closed; it runs before any request, so a
    closed client never touches the network. ``limits`` caps every answer; ``text`` cleans the
    server's text in our errors.
    """

    def __init__(
        self,
        server: ServerConfig,
        timeouts: Timeouts,
        check_open: Callable[[], None],
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        self.server = server
        self.timeouts = timeouts
        self.limits = limits
        self.text = ServerText.of(server, limits.text_chars)
        self._check_open = check_open
        self._headers_ok = False
        session = requests.Session()
        # Compressed answers could inflate past a cap inside urllib3 before we count them.
        session.headers["Accept-Encoding"] = "identity"
        session.headers.update(server.request_headers())
        # Passed again on every call: a session-level False (or CA path) loses to
        # REQUESTS_CA_BUNDLE, which many studios set (requests merges the environment over the
        # session's own setting).
        session.verify = tls_verify(server)
        #: Proxies and CA bundle as the environment had them when this session was made.
        self.environment = resolve_environment(session, server.url, session.verify)
        #: The underlying session (tests mount stub transport adapters on it).
        self.session = session

    def close(self) -> None:
        self.session.close()

    def errors(self, what: str) -> contextlib.AbstractContextManager[None]:
        """:func:`map_errors` for this server: library exceptions become our errors."""
        return map_errors(self.server.name, what, self.text)

    def _verify(self) -> Union[bool, str]:
        """requests' ``verify=`` for this server, after the local checks of its configuration.

        ConfigError if its ``ca_bundle`` has gone or a header (or the token) cannot be sent.
        """
        if not self._headers_ok:  # the headers cannot change: checked until they pass once
            check_headers(self.server)
            self._headers_ok = True
        check_ca_bundle(self.server)
        return self.environment.verify

    def send(
        self,
        method: str,
        path: str,
        *,
        what: str,
        timeouts: Optional[Timeouts] = None,
        **kwargs: Any,
    ) -> requests.Response:
        """The response whatever its status, body not read yet (the caller closes it)."""
        self._check_open()
        t = timeouts or self.timeouts
        with self.errors(what):
            verify = self._verify()
            prepared = self._prepare(method, path, **kwargs)
            adapter = self.session.get_adapter(prepared.url)
            response = adapter.send(
                prepared,
                stream=True,
                timeout=t.as_requests(),
                verify=verify,
                cert=None,
                proxies=self.environment.proxies,
            )
            extract_cookies_to_jar(self.session.cookies, prepared, response.raw)
        return response

    def _prepare(self, method: str, path: str, **kwargs: Any) -> requests.PreparedRequest:
        """The request ``Session.request`` would send, built without its per-call merges.

        Those merges (headers, params, hooks, proxies, stream, verify, cert) are a quarter of a
        request's CPU and change nothing here: the session's headers, auth, cookies and
        proxies are fixed at start, a call adds only ``json``/``params``/``files``/``data``,
        and redirects are never followed. Unknown keywords are a TypeError, as with requests.
        """
        prepared = requests.PreparedRequest()
        prepared.prepare(
            method=method,
            url=self.server.url + path,
            headers=self.session.headers,
            files=kwargs.pop("files", None),
            data=kwargs.pop("data", None),
            json=kwargs.pop("json", None),
            params=kwargs.pop("params", None),
            auth=self.session.auth,
            cookies=self.session.cookies,
        )
        if kwargs:
            raise TypeError(f"unexpected request argument(s): {', '.join(sorted(kwargs))}")
        return prepared

    def open(
        self,
        method: str,
        path: str,
        *,
        what: Optional[str] = None,
        timeouts: Optional[Timeouts] = None,
        **kwargs: Any,
    ) -> requests.Response:
        """A 2xx response, body not read yet (the caller closes it); any other status raises."""
        what = what or f"{method} {path.split('?')[0]}"
        response = self.send(method, path, what=what, timeouts=timeouts, **kwargs)
        self.check_status(response, what)
        return response

    def check_status(self, response: requests.Response, what: str) -> None:
        """Raise our error for a non-2xx ``response`` (see ``raise_for_status``)."""
        raise_for_status(response, what, self.server.name, self.text, self.limits.error_body_bytes)

    def request(self, method: str, path: str, **kwargs: Any) -> None:
        """A call whose answer only needs to be 2xx (its body is read up to a small cap and
        dropped, so the connection can be used again)."""
        what = kwargs.pop("what", None) or f"{method} {path.split('?')[0]}"
        response = self.open(method, path, what=what, **kwargs)
        with response, contextlib.suppress(ProtocolError):
            for _ in self.body(response, what, self.limits.error_body_bytes):
                pass

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        """The decoded JSON body of a 2xx response (``limit=`` bytes at most, default the JSON
        cap); ProtocolError if it is not JSON or is over the cap."""
        what = kwargs.pop("what", None) or f"{method} {path.split('?')[0]}"
        limit = kwargs.pop("limit", None)
        response = self.open(method, path, what=what, **kwargs)
        return self.read_json(response, what, limit)

    def read_json(self, response: requests.Response, what: str, limit: Optional[int] = None) -> Any:
        """Read, close and decode ``response``'s JSON body (at most ``limit`` bytes)."""
        with response:
            data = b"".join(self.body(response, what, limit or self.limits.json_bytes))
        try:
            return json.loads(data)
        except ValueError as exc:
            start = self.text.clean(data[:400].decode("utf-8", "replace"), 120)
            raise ProtocolError(
                f"{what}: answer is not JSON: {start!r}", server=self.server.name
            ) from exc

    def body(
        self, response: requests.Response, what: str, limit: int, chunk: int = BODY_CHUNK
    ) -> Iterator[bytes]:
        """``response``'s body in blocks, refused (``limits.too_large``) once it passes ``limit``.

        The announced ``Content-Length`` is checked first; then no more than ``limit + 1`` bytes
        are ever read, however much the server sends.
        """
        announced = _content_length(response)
        if announced is not None and announced > limit:
            raise too_large(what, limit, server=self.server.name, announced=announced)
        raw = response.raw
        total = 0
        while True:
            with self.errors(what):
                block = raw.read(min(chunk, limit + 1 - total), decode_content=True)
            if not block:
                return
            total += len(block)
            if total > limit:
                raise too_large(what, limit, server=self.server.name)
            yield block


def _content_length(response: requests.Response) -> Optional[int]:
    """The announced body size, or None when absent or not a number."""
    value = response.headers.get("Content-Length", "").strip()
    return int(value) if value.isascii() and value.isdigit() else None
