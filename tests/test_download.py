"""The checked download (download.py) against a local HTTP server: install only a file whose
SHA-256 matches, resume a cut transfer, start over when the server ignores Range, retry what may
heal and nothing else, and leave nothing half-checked behind."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from helpers import ServedInThread, free_port

from mfcolab.download import download_file, partial_path
from mfcolab.errors import TunnelError
from mfcolab.tunnel import machine_arch

PAYLOAD = os.urandom(700 * 1024)  # several chunks, so a cut lands mid-body
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()


class FileServer(ServedInThread):
    """Serves PAYLOAD: /ok (honours Range), /cut (first answer stops halfway), /cut-norange (and
    then ignores Range), /busy (first answer 503), anything else 404. Records (path, Range) per request."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                path = self.path.split("?")[0]
                asked = self.headers.get("Range")
                first = not any(p == path for p, _ in server.requests)
                server.requests.append((path, asked))
                name = path.rsplit("/", 1)[-1]
                if name not in ("ok", "cut", "cut-norange", "busy") and not path.endswith(f"cloudflared-linux-{machine_arch()}"):
                    return self.plain(404, b"Not Found")
                if name == "busy" and first:
                    return self.plain(503, b"try later")
                start = 0
                if asked and name != "cut-norange":
                    start = int(asked.removeprefix("bytes=").split("-")[0])
                body = PAYLOAD[start:]
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                if name.startswith("cut") and first:
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

            def plain(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.base = f"http://127.0.0.1:{self.serve(Handler)}"


@pytest.fixture
def files() -> Iterator[FileServer]:
    server = FileServer()
    yield server
    server.close()


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_download_installs_a_matching_file(files: FileServer, tmp_path: Path) -> None:
    dest = tmp_path / "bin" / "cloudflared"
    assert download_file(f"{files.base}/ok", dest, DIGEST, backoff=0) == dest
    assert dest.read_bytes() == PAYLOAD
    assert os.access(dest, os.X_OK)
    assert leftovers(dest.parent) == ["cloudflared"]


def test_download_refuses_a_checksum_mismatch(files: FileServer, tmp_path: Path) -> None:
    dest = tmp_path / "bin" / "cloudflared"
    wrong = hashlib.sha256(b"something else").hexdigest()
    with pytest.raises(TunnelError, match="checksum mismatch"):
        download_file(f"{files.base}/ok", dest, wrong, backoff=0, progress=False)
    assert leftovers(dest.parent) == []  # nothing installed, no partial left


def test_download_resumes_after_a_cut_connection(files: FileServer, tmp_path: Path) -> None:
    dest = tmp_path / "cloudflared"
    download_file(f"{files.base}/cut", dest, DIGEST, backoff=0, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert files.requests[0] == ("/cut", None)
    assert len(files.requests) == 2
    resumed_from = int(files.requests[1][1].removeprefix("bytes=").rstrip("-"))  # type: ignore[union-attr]
    assert 0 < resumed_from < len(PAYLOAD)


def test_download_starts_over_when_the_server_ignores_range(files: FileServer, tmp_path: Path) -> None:
    dest = tmp_path / "cloudflared"
    download_file(f"{files.base}/cut-norange", dest, DIGEST, backoff=0, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert len(files.requests) == 2 and files.requests[1][1] is not None
    assert leftovers(tmp_path) == ["cloudflared"]


def test_download_retries_a_busy_server(files: FileServer, tmp_path: Path) -> None:
    dest = tmp_path / "cloudflared"
    download_file(f"{files.base}/busy", dest, DIGEST, backoff=0, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert [path for path, _ in files.requests] == ["/busy", "/busy"]


def test_download_404_is_a_clear_error_without_retries(files: FileServer, tmp_path: Path) -> None:
    with pytest.raises(TunnelError, match=r"HTTP 404 Not Found") as caught:
        download_file(f"{files.base}/2026.9.1/nothing", tmp_path / "cloudflared", DIGEST, backoff=0, progress=False)
    assert "release tag" in caught.value.hint
    assert len(files.requests) == 1
    assert leftovers(tmp_path) == []


def test_download_unreachable_server_gives_up_after_its_attempts(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/cloudflared"
    with pytest.raises(TunnelError, match="after 2 attempts") as caught:
        download_file(url, tmp_path / "cloudflared", DIGEST, attempts=2, backoff=0, progress=False)
    assert "internet" in caught.value.hint


def test_bad_partial_from_an_earlier_run_is_replaced(files: FileServer, tmp_path: Path) -> None:
    dest = tmp_path / "cloudflared"
    partial_path(dest, DIGEST).write_bytes(b"\0" * 1000)  # a corrupt piece left behind
    download_file(f"{files.base}/ok", dest, DIGEST, backoff=0, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert files.requests == [("/ok", "bytes=1000-"), ("/ok", None)]
    assert leftovers(tmp_path) == ["cloudflared"]
