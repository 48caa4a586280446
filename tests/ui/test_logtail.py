"""A growing log read by polls: the same lines as a whole read, from only the bytes added."""

from __future__ import annotations

import os
from pathlib import Path

from mfcolab.ui.datastore import DatastoreRoots
from mfcolab.ui.logs import LOG_MAX, parse_line
from mfcolab.ui.logtail import TAIL_CHECK, GrowingLogs


def stamped(second: int, text: str, source: str = "task") -> bytes:
    return f"[MFLOG|0|2026-11-29T18:{second // 60:02d}:{second % 60:02d}.000000Z|{source}|x]{text}\n".encode()


def whole(paths: list[Path], roots: DatastoreRoots) -> list[tuple[int, int, int, bytes]]:
    return GrowingLogs(parse_line, LOG_MAX).read(roots.open, paths)


def setup(tmp_path: Path) -> tuple[DatastoreRoots, list[Path]]:
    folder = tmp_path / "datastore"
    folder.mkdir()
    roots = DatastoreRoots(folder)
    return roots, [folder / "0.runtime_stdout.log", folder / "0.task_stdout.log"]


def test_a_poll_reads_only_the_added_bytes_and_merges_like_a_whole_read(tmp_path: Path) -> None:
    roots, (runtime, task) = setup(tmp_path)
    runtime.write_bytes(stamped(0, "runtime starts", "runtime"))
    task.write_bytes(b"".join(stamped(1, f"line {n}") for n in range(2000)))
    logs = GrowingLogs(parse_line, LOG_MAX)
    first = logs.read(roots.open, [runtime, task])
    assert len(first) == 2001
    read_once = logs.bytes_read

    added = b"".join(stamped(2, f"more {n}") for n in range(10)) + b"half a li"
    with task.open("ab") as handle:
        handle.write(added)
    with runtime.open("ab") as handle:
        handle.write(stamped(1, "runtime between", "runtime"))
    polled = logs.read(roots.open, [runtime, task])
    assert polled == whole([runtime, task], roots)
    assert polled[-1][3] == b"half a li" and len(polled) == 2001 + 11 + 1
    # Only the new bytes and the tail checks were read.
    grown = len(added) + len(stamped(1, "runtime between", "runtime"))
    assert logs.bytes_read - read_once <= grown + 2 * TAIL_CHECK
    assert logs.bytes_read - read_once < read_once / 10

    with task.open("ab") as handle:
        handle.write(b"ne\n")
    again = logs.read(roots.open, [runtime, task])
    assert again == whole([runtime, task], roots)
    assert again[-1][3] == b"half a line"


def test_a_rewritten_or_shrunk_log_is_read_again_whole(tmp_path: Path) -> None:
    roots, (runtime, task) = setup(tmp_path)
    task.write_bytes(b"".join(stamped(1, f"line {n}") for n in range(100)))
    logs = GrowingLogs(parse_line, LOG_MAX)
    logs.read(roots.open, [runtime, task])

    replaced = tmp_path / "new.log"  # the saver's whole-file replace, with different content
    replaced.write_bytes(b"".join(stamped(3, f"other {n}") for n in range(150)))
    os.replace(replaced, task)
    assert logs.read(roots.open, [runtime, task]) == whole([runtime, task], roots)

    task.write_bytes(stamped(4, "short"))
    assert logs.read(roots.open, [runtime, task]) == whole([runtime, task], roots)
    task.unlink()
    assert logs.read(roots.open, [runtime, task]) == []


def test_a_poll_of_an_unchanged_log_reads_only_the_tail_checks(tmp_path: Path) -> None:
    roots, (runtime, task) = setup(tmp_path)
    task.write_bytes(b"".join(stamped(1, f"line {n}") for n in range(5000)))
    logs = GrowingLogs(parse_line, LOG_MAX)
    first = logs.read(roots.open, [runtime, task])
    before = logs.bytes_read
    assert logs.read(roots.open, [runtime, task]) == first
    assert logs.bytes_read - before <= TAIL_CHECK
