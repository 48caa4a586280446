"""The Metaflow UI release as tests get it: the upstream build in /work/shared (zipped here, the way
GitHub publishes a release), and a stand-in of GitHub's release download on 127.0.0.1."""

from __future__ import annotations

import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

UPSTREAM_UI = Path("/work/shared/upstream/metaflow-ui")
TAG = "v1.3.14"
RELEASE_PATH = f"/Netflix/metaflow-ui/releases/download/{TAG}/metaflow-ui-{TAG}.zip"


def zip_folder(folder: Path, dest: Path) -> Path:
    """`folder`'s files at the zip's top, as in a metaflow-ui release."""
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as bundle:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                bundle.write(path, path.relative_to(folder).as_posix())
    return dest


class ReleaseServer:
    """Serves files by path (`files`, path -> bytes) like a release download; other paths 404.
    Records every path asked for in `requests`."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append(self.path)
                body = server.files.get(self.path)
                self.send_response(200 if body is not None else 404)
                body = body if body is not None else b"Not Found"
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Content-Type", "application/zip")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.http.daemon_threads = True
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)
        self.thread.start()
        self.base = f"http://127.0.0.1:{self.http.server_address[1]}"

    @property
    def release_base(self) -> str:
        """What stands in for https://github.com/Netflix/metaflow-ui/releases/download."""
        return f"{self.base}/Netflix/metaflow-ui/releases/download"

    @property
    def release_url(self) -> str:
        return self.base + RELEASE_PATH

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()
        self.thread.join(5)


@pytest.fixture(scope="session")
def upstream_ui_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (UPSTREAM_UI / "index.html").is_file():
        pytest.skip(f"the upstream UI build is not at {UPSTREAM_UI}")
    return zip_folder(UPSTREAM_UI, tmp_path_factory.mktemp("ui-release") / f"metaflow-ui-{TAG}.zip")


@pytest.fixture
def release(upstream_ui_zip: Path) -> Iterator[ReleaseServer]:
    server = ReleaseServer()
    server.files[RELEASE_PATH] = upstream_ui_zip.read_bytes()
    yield server
    server.close()
