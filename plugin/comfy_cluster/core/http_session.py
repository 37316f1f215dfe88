"""One server's HTTP session: URL, timeouts, TLS and headers on every call, failures translated.

The client's request plumbing, kept apart from what the requests mean (``client.py``): every call
goes through :meth:`HttpSession.send`, inside :func:`~comfy_cluster.core.wire_errors.map_errors`,
so no ``requests`` exception escapes. One thread at a time (requests does not promise a
thread-safe Session); ``close()`` from any thread.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Optional, Union

import requests

from comfy_cluster.core.connection_settings import (
    Timeouts,
    check_ca_bundle,
    check_headers,
    tls_verify,
)
from comfy_cluster.core.errors import ProtocolError
from comfy_cluster.core.server import ServerConfig
from comfy_cluster.core.wire_errors import map_errors, raise_for_status

__all__ = ["HttpSession"]


class HttpSession:
    """A ``requests.Session`` bound to one server, checked open before each call.

    ``check_open`` raises ClosedError once the owner is closed; it runs before any request, so a
    closed client never touches the network.
    """

    def __init__(
        self, server: ServerConfig, timeouts: Timeouts, check_open: Callable[[], None]
    ) -> None:
        self.server = server
        self.timeouts = timeouts
        self._check_open = check_open
        session = requests.Session()
        session.headers.update(server.request_headers())
        # Passed again on every call: a session-level False (or CA path) loses to
        # REQUESTS_CA_BUNDLE, which many studios set (requests merges the environment over the
        # session's own setting).
        session.verify = tls_verify(server)
        #: The underlying session (tests mount stub transport adapters on it).
        self.session = session

    def close(self) -> None:
        self.session.close()

    def _verify(self) -> Union[bool, str]:
        """requests' ``verify=`` for this server, after the local checks of its configuration.

        ConfigError if its ``ca_bundle`` has gone or a header (or the token) cannot be sent.
        """
        check_headers(self.server)
        check_ca_bundle(self.server)
        return self.session.verify

    def send(
        self,
        method: str,
        path: str,
        *,
        what: str,
        timeouts: Optional[Timeouts] = None,
        **kwargs: Any,
    ) -> requests.Response:
        """The response whatever its status (failures to get one are translated)."""
        self._check_open()
        t = timeouts or self.timeouts
        with map_errors(self.server.name, what):
            return self.session.request(
                method,
                self.server.url + path,
                timeout=t.as_requests(),
                verify=self._verify(),
                **kwargs,
            )

    def request(
        self,
        method: str,
        path: str,
        *,
        what: Optional[str] = None,
        timeouts: Optional[Timeouts] = None,
        **kwargs: Any,
    ) -> requests.Response:
        """A 2xx response; any other status raises (see ``raise_for_status``)."""
        what = what or f"{method} {path.split('?')[0]}"
        response = self.send(method, path, what=what, timeouts=timeouts, **kwargs)
        raise_for_status(response, what, self.server.name)
        return response

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        """The decoded JSON body of a 2xx response; ProtocolError if it is not JSON."""
        what = kwargs.pop("what", None) or f"{method} {path.split('?')[0]}"
        response = self.request(method, path, what=what, **kwargs)
        with map_errors(self.server.name, what):
            text = response.text
        try:
            return json.loads(text)
        except ValueError as exc:
            raise ProtocolError(
                f"{what}: answer is not JSON: {text[:80]!r}", server=self.server.name
            ) from exc
