"""Point-in-time recovery as a user runs it: real flows on a real stack, `mfcolab restore`, `up`."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from helpers import free_port, wait_until
from stack_helpers import Stack, mfcolab, run_id_from

pytestmark = pytest.mark.slow


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat()


def _runs(stack: Stack) -> set[str]:
    return set(stack.client('result = [run.id for run in Flow("LinearFlow")]'))


def _run(stack: Stack, label: str) -> str:
    out = stack.run_flow("linear_flow.py", "run", "--label", label)
    return run_id_from(out.stderr + out.stdout)


def _windows(stack: Stack) -> list[list[str]]:
    """`restore --list` rows (generation, timeline, from, to, size, ...), oldest first."""
    return [line.split() for line in mfcolab("restore", *stack.folder_args(), "--list").stdout.splitlines()[1:]]


def _aside(stack: Stack) -> list[str]:
    return sorted(p.name for p in stack.local.iterdir() if p.name.startswith("pgdata.before-restore-"))


def test_restore_until_a_noted_time_then_the_generation_that_held_the_later_run(tmp_path: Path) -> None:
    stack = Stack(tmp_path, free_port(), free_port())
    before_any_base = time.time()
    stack.up()
    try:
        a = _run(stack, "A")
        noted = time.time()
        wait_until(lambda: time.time() > noted + 1, timeout=5, what="a second to pass the noted time")
        b = _run(stack, "B")
        stack.down()
        held_b = _windows(stack)[-1][0]

        restored = mfcolab("restore", *stack.folder_args(), "--until", _iso(noted), "--move-aside")
        assert "restored generation" in restored.stdout and "up to" in restored.stdout
        stack.up()
        assert _runs(stack) == {a}
        stack.down()

        rows = _windows(stack)
        assert rows[-1][0] != held_b and int(rows[-1][1]) > int(next(r for r in rows if r[0] == held_b)[1])  # a new timeline
        mfcolab("restore", *stack.folder_args(), "--generation", held_b, "--move-aside")
        stack.up()
        assert _runs(stack) == {a, b}
        assert stack.client(f'result = Run("LinearFlow/{b}").data.message') == "B:3"
        stack.down()

        aside = _aside(stack)
        refused = mfcolab("restore", *stack.folder_args(), "--until", _iso(before_any_base), "--move-aside", check=False)
        assert refused.returncode == 1
        errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "before the oldest restorable time" in errors[0], refused.stderr
        assert len(refused.stderr.strip().splitlines()) <= 2 and refused.stdout == ""
        assert _aside(stack) == aside
        stack.up()
        assert _runs(stack) == {a, b}
    finally:
        stack.down(check=False)
