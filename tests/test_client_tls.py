"""https and wss against a sim with a certificate the test makes: verify_tls and token as set."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import certifi
import pytest

from comfy_cluster.core.client import ComfyClient
from comfy_cluster.core.connection_settings import Timeouts
from comfy_cluster.core.errors import AuthenticationFailed, ConfigError, TransientError
from comfy_cluster.core.protocol import Connected, StatusEvent
from comfy_cluster.core.server import ServerConfig
from comfy_cluster.sim.harness import SimOptions, SimServer

trustme = pytest.importorskip("trustme")

TIMEOUTS = Timeouts(connect=2.0, read=5.0)


@pytest.fixture
def ca() -> Any:
    """A throw-away CA nobody trusts (unless a test gives its PEM as ``ca_bundle``)."""
    return trustme.CA()


@pytest.fixture
def tls_sim(ca: Any) -> Iterator[SimServer]:
    """A sim serving https with a certificate from the throw-away CA."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    with SimServer(SimOptions(name="tls", token="s3cret"), ssl_context=context) as sim:
        yield sim


@pytest.fixture
def ca_pem(ca: Any, tmp_path: Path) -> Path:
    path = tmp_path / "studio-ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


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


def _listen_for_status(client: ComfyClient) -> list[object]:
    """Start a listener, wait for the status greeting, close it; returns the events seen."""
    events: list[object] = []
    got_status = threading.Event()

    def on_event(event: object) -> None:
        events.append(event)
        if isinstance(event, StatusEvent):
            got_status.set()

    listener = client.listen(on_event)
    try:
        assert got_status.wait(5.0), (events, listener.last_error)
    finally:
        listener.close()
    return events


def test_ca_bundle_verifies_an_internal_ca_over_https_and_wss(
    tls_sim: SimServer, ca_pem: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # REQUESTS_CA_BUNDLE (certifi here, which does not hold our CA) must not override ca_bundle.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", certifi.where())
    config = _config(tls_sim, verify_tls=True, ca_bundle=str(ca_pem), token="s3cret")
    with ComfyClient(config, timeouts=TIMEOUTS) as client:
        assert client.queue_remaining() == 0
        assert client.probe_websocket(timeout=5.0) >= 0
        events = _listen_for_status(client)
    assert any(isinstance(e, Connected) for e in events)


def test_ca_bundle_of_another_ca_is_refused_over_https_and_wss(
    tls_sim: SimServer, tmp_path: Path
) -> None:
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    config = _config(tls_sim, verify_tls=True, ca_bundle=str(other), token="s3cret")
    with ComfyClient(config, timeouts=TIMEOUTS) as client:
        with pytest.raises(TransientError, match=r"(?i)certificate"):
            client.queue_remaining()
        with pytest.raises(TransientError):
            client.probe_websocket(timeout=5.0)


def test_ca_bundle_is_ignored_when_verify_tls_is_false(tls_sim: SimServer, tmp_path: Path) -> None:
    config = _config(
        tls_sim, verify_tls=False, ca_bundle=str(tmp_path / "gone.pem"), token="s3cret"
    )
    with ComfyClient(config, timeouts=TIMEOUTS) as client:
        assert client.queue_remaining() == 0
        assert client.probe_websocket(timeout=5.0) >= 0


def test_a_ca_bundle_deleted_after_loading_is_a_config_error_not_a_retry(
    tls_sim: SimServer, ca_pem: Path
) -> None:
    config = _config(tls_sim, verify_tls=True, ca_bundle=str(ca_pem), token="s3cret")
    ca_pem.unlink()
    with ComfyClient(config, timeouts=TIMEOUTS) as client:
        for call in (client.queue_remaining, client.probe_websocket):
            with pytest.raises(ConfigError) as info:
                call()
            assert (info.value.field, info.value.server) == ("ca_bundle", "tls")
            assert str(ca_pem) in str(info.value)
