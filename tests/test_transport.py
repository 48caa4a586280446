"""The rsync transport: one real rsync per cycle from a local outbox into the root folder."""

from __future__ import annotations

import logging
import os
import shutil
import threading
from pathlib import Path

import pytest

from helpers import make_settings, wait_until
from mfcolab.errors import MissingBinaryError, SnapshotError
from mfcolab.files import temp_name
from mfcolab.replica import layout
from mfcolab.replica.mirror import Mirror
from mfcolab.replica.transport import Outbox, Rsync, Transport
from mfcolab.supervisor.process import descendants
from mirror_helpers import killed_rsync_leftover, links_in, temp_files_in

REAL_RSYNC = shutil.which("rsync")
pytestmark = pytest.mark.skipif(REAL_RSYNC is None, reason="rsync is not installed (scripts/setup installs it)")


def _outbox(tmp_path: Path) -> Outbox:
    outbox = Outbox(tmp_path / "outbox", tmp_path / "root" / "snapshots")
    outbox.clear()
    return outbox


def _fill(outbox: Outbox, tmp_path: Path) -> dict[str, bytes]:
    """A WAL piece (gzipped here), a base file (moved in) and a record, like one cycle's."""
    segment = tmp_path / "000000010000000000000005"
    segment.write_bytes(os.urandom(200_000) + bytes(800_000))
    outbox.add_gzip(segment.read_bytes(), outbox.dest / "wal" / "42" / "000000010000000000000005.gz")
    base = tmp_path / "base.tar.gz"
    base.write_bytes(os.urandom(300_000))
    outbox.add_moved(base, outbox.dest / "base" / "G1" / "base.tar.gz")
    outbox.add_bytes(b'{"id": "G1"}', outbox.dest / "base" / "G1" / "generation.json")
    return {str(rel): (outbox.folder / rel).read_bytes() for rel in outbox.files()}


def _fake_rsync(folder: Path, body: str) -> Path:
    """An rsync on PATH that changes how the real one is called (an older version, a slow one)."""
    folder.mkdir()
    script = folder / "rsync"
    script.write_text(f"#!/bin/sh\nREAL={REAL_RSYNC}\n{body}\n")
    script.chmod(0o755)
    return folder


def test_transport_ships_the_outbox_with_one_rsync_and_reports_its_bytes(tmp_path: Path) -> None:
    outbox = _outbox(tmp_path)
    contents = _fill(outbox, tmp_path)
    shipped = Transport().ship(outbox)
    assert shipped.files == 3
    assert shipped.bytes == sum(len(data) for data in contents.values())
    for rel, data in contents.items():
        assert (outbox.dest / rel).read_bytes() == data
    assert temp_files_in(outbox.dest) == [] and links_in(outbox.dest) == []
    assert Transport().ship(_outbox(tmp_path)).files == 0  # an empty outbox runs nothing


def test_transport_refuses_a_link_in_the_outbox(tmp_path: Path) -> None:
    outbox = _outbox(tmp_path)
    _fill(outbox, tmp_path)
    (outbox.folder / "wal" / "42" / "000000010000000000000006.gz").symlink_to(tmp_path / "base.tar.gz")
    with pytest.raises(SnapshotError, match="not a regular file"):
        Transport().ship(outbox)
    assert not outbox.dest.exists()


def test_transport_without_rsync_the_mirror_does_not_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(MissingBinaryError) as raised:
        Mirror(make_settings(tmp_path, snapshot_interval=0), "postgresql://unused@127.0.0.1:1/none")
    assert raised.value.hint == "apt-get install rsync"


def test_transport_rsync_without_fsync_ships_and_syncs_the_files_itself(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    # rsync before 3.2.4: no --fsync in its help, and the option refused
    body = ('if [ "$1" = "--help" ]; then "$REAL" --help | grep -v -- --fsync; exit 0; fi\n'
            'for arg in "$@"; do [ "$arg" = "--fsync" ] && { echo "unknown option --fsync" >&2; exit 1; }; done\n'
            'exec "$REAL" "$@"')
    monkeypatch.setenv("PATH", f"{_fake_rsync(tmp_path / 'old', body)}:{os.environ['PATH']}")
    caplog.set_level(logging.WARNING, logger="mfcolab.replica.transport")
    rsync = Rsync.find()
    assert not rsync.has_fsync
    assert any("--fsync" in r.getMessage() for r in caplog.records)
    outbox = _outbox(tmp_path)
    contents = _fill(outbox, tmp_path)
    assert Transport(rsync).ship(outbox).files == len(contents)
    assert all((outbox.dest / rel).read_bytes() == data for rel, data in contents.items())


def test_transport_abort_kills_rsync_and_its_leftover_is_a_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    slow = _fake_rsync(tmp_path / "slow", 'exec "$REAL" --bwlimit=100 "$@"')
    monkeypatch.setenv("PATH", f"{slow}:{os.environ['PATH']}")
    outbox = _outbox(tmp_path)
    big = tmp_path / "000000010000000000000007"
    big.write_bytes(os.urandom(3_000_000))
    outbox.add_moved(big, outbox.dest / "wal" / "42" / "000000010000000000000007.gz")
    sender = Transport()
    failure: list[BaseException] = []

    def ship() -> None:
        try:
            sender.ship(outbox)
        except SnapshotError as exc:
            failure.append(exc)

    thread = threading.Thread(target=ship)
    thread.start()
    folder = outbox.dest / "wal" / "42"
    wait_until(lambda: folder.is_dir() and any(n.startswith(".") for n in os.listdir(folder)), 60, what="rsync to start the file")
    assert sender._process is not None
    pids = [sender._process.pid, *descendants([sender._process.pid])]
    assert len(pids) >= 2  # rsync forks its receiver
    sender.abort()
    thread.join(60)
    assert failure and "rsync" in str(failure[0])
    wait_until(lambda: not any(_alive(pid) for pid in pids), 30, what="every rsync process to be gone")
    left = os.listdir(folder)
    assert len(left) == 1 and layout.is_temp(left[0])  # never the final name
    assert layout.remove_stale_temps(outbox.dest) == 1 and os.listdir(folder) == []


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def test_snapshots_is_temp_knows_rsync_and_mirror_temporaries_but_no_piece(tmp_path: Path) -> None:
    leftover = killed_rsync_leftover(tmp_path, tmp_path / "dest", "000000010000000000000009.gz")
    assert layout.is_temp(leftover.name)
    assert layout.is_temp(temp_name(tmp_path / layout.MANIFEST).name)
    assert layout.is_temp(".00000002.history.gz.Ab3xYz") and layout.is_temp(".base.tar.gz.000000")
    pieces = ["000000010000000000000009.gz", "000000010000000000000009.partial.gz", "00000002.history.gz",
              "base.tar.gz", "pg_wal.tar.gz", "backup_manifest", "generation.json", "manifest.json", "20261123T105910770Z-28c1"]
    assert [name for name in pieces if layout.is_temp(name)] == []
