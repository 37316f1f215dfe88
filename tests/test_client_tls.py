"""https and wss against a sim with a certificate the test makes: verify_tls and token as set."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator

import certifi
import pytest

from comfy_cluster.core.client import ComfyClient, Timeouts
from comfy_cluster.core.errors import AuthenticationFailed, TransientError
from comfy_cluster.core.protocol import Connected, StatusEvent
from comfy_cluster.core.server import ServerConfig
from comfy_cluster.sim.harness import SimOptions, SimServer

trustme = pytest.importorskip("trustme")

TIMEOUTS = Timeouts(connect=2.0, read=5.0)


@pytest.fixture
def tls_sim() -> Iterator[SimServer]:
    """A sim serving https with a certificate from a throw-away CA nobody trusts."""
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    with SimServer(SimOptions(name="tls", token="s3cret"), ssl_context=context) as sim:
        yield sim


def _config(sim: SimServer, **fields: object) -> ServerConfig:
    return ServerConfig(name="tls", host=sim.host, port=sim.port, scheme="https", **fields)


def test_unverified_tls_with_token_works_over_https_and_wss(
    tls_sim: SimServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Studios often set REQUESTS_CA_BUNDLE; requests lets it override a session's verify=False.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", certifi.where())
    assert tls_sim.url.startswith("https://")
    config = _config(tls_sim, verify_tls=False, token="s3cret")
    events: list[object] = []
    got_status = threading.Event()

    def on_event(event: object) -> None:
        events.append(event)
        if isinstance(event, StatusEvent):
            got_status.set()

    with ComfyClient(config, timeouts=TIMEOUTS) as client:
        assert client.queue_remaining() == 0
        listener = client.listen(on_event)
        try:
            assert got_status.wait(5.0), events
        finally:
            listener.close()
    assert any(isinstance(e, Connected) for e in events)


def test_verified_tls_refuses_an_untrusted_certificate_naming_the_server(
    tls_sim: SimServer,
) -> None:
    config = _config(tls_sim, verify_tls=True, token="s3cret")
    with ComfyClient(config, timeouts=TIMEOUTS) as client, pytest.raises(TransientError) as info:
        client.queue_remaining()
    message = str(info.value)
    assert message.startswith("tls")
    assert "certificate" in message.lower()
    assert "s3cret" not in message


def test_token_is_required_over_tls_too(tls_sim: SimServer) -> None:
    config = _config(tls_sim, verify_tls=False)
    with ComfyClient(config, timeouts=TIMEOUTS) as client, pytest.raises(AuthenticationFailed):
        client.queue_remaining()
