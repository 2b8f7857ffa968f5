"""Fixtures shared by the suite: a real gunicorn per test that asks for one."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support import Server


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run each test in its own directory, so the default journal (./soapreceptor.db) never lands in the checkout."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Start real gunicorn receptors; every one started is stopped when the test ends."""
    started: list[Server] = []

    def start(env: dict[str, str] | None = None, workers: int = 2, name: str = "server") -> Server:
        server = Server(workdir=tmp_path / name, env=env or {}, workers=workers)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def server(server_factory: Callable[..., Server]) -> Server:
    """One receptor with 2 workers, the test-vector key, a 0 s tolerance and the recording hook."""
    return server_factory({"SOAPRECEPTOR_TIMESTAMP_TOLERANCE": "0"})
