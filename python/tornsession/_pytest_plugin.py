"""The fixtures of tornsession.testing (the ``pytest11`` plugin); only imported with pytest."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import tornado.web

from tornsession import TornadoSessionManager
from tornsession.testing import SessionTestClient, make_manager, new_secret


@pytest.fixture
def tornsession_secret() -> str:
    """A random session secret, new for every test."""
    return new_secret()


@pytest.fixture
def tornsession_manager(tornsession_secret: str) -> TornadoSessionManager:
    """A ``TornadoSessionManager`` on a fresh ``MemoryStore``, keyed with ``tornsession_secret``."""
    return make_manager(tornsession_secret)


@pytest.fixture
def tornsession_serve() -> Iterator[Callable[..., SessionTestClient]]:
    """``tornsession_serve(app, **client_options)``: serves ``app`` on 127.0.0.1 for this test
    and returns a ``SessionTestClient`` for it; every server stops when the test ends."""
    clients: list[SessionTestClient] = []

    def serve(app: tornado.web.Application, **options: object) -> SessionTestClient:
        client = SessionTestClient(app, **options)  # type: ignore[arg-type]
        clients.append(client)
        return client

    yield serve
    for client in clients:
        client.close()


@pytest.fixture
def tornsession_client(
    app: tornado.web.Application,
    tornsession_serve: Callable[..., SessionTestClient],
) -> SessionTestClient:
    """A ``SessionTestClient`` serving the ``app`` fixture your test suite defines."""
    return tornsession_serve(app)
