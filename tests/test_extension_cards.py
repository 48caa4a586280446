"""Cards with the mfcolab profile: written by a flow in one working folder (the GPU side), found by
`get_cards` from another folder with the same profile (the CPU side), in the shared datastore."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from extension_helpers import check_card_round_trip
from helpers import free_port
from stack_helpers import Stack

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = Stack(tmp_path_factory.mktemp("cards"), free_port(), free_port())
    stack.up()
    yield stack
    stack.down()


def test_cards_written_in_one_folder_are_read_from_another(stack: Stack, tmp_path: Path) -> None:
    check_card_round_trip(stack, tmp_path)
