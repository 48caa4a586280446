"""The tests of the front door's modules share one stack of doors per test module (frontdoor_helpers)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from frontdoor_helpers import Stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    built = Stack(tmp_path_factory.mktemp("frontdoor"))
    yield built
    built.servers.close()


@pytest.fixture()
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session
