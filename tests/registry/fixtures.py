"""The test images, built once per session and cached under a session folder.

- BUSYBOX ("test/busybox:1"): static busybox with `httpd` and a page in /www.
- PYWEB ("test/pyweb:1"): Python 3.11 + aiohttp with /app/server.py (standin_service.py), an HTTP +
  WebSocket server configured like the upstream services (port and path prefix from its
  environment). It also has the official image's layout: /opt/latest/bin/python3, stand-ins for
  services.metadata_service.server and services.ui_backend_service.ui_server under /root, and a
  UI bundle at /root/services/ui_backend_service/ui.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import wait_until
from mfcolab.containers.component import ContainerComponent
from mfcolab.containers.udocker_client import Udocker, container_processes

from .images import Image, build_image, busybox_rootfs, python_rootfs, site_packages_of_this_python, write_file
from .server import Registry

BUSYBOX = ("test/busybox", "1")
PYWEB = ("test/pyweb", "1")
UI_BUNDLE = "/root/services/ui_backend_service/ui"
INDEX_HTML = "<!doctype html><html><head><title>Metaflow</title></head><body><div id=root></div></body></html>\n"
OFFICIAL_MODULES = [
    ("metadata_service", "server", "MF_METADATA_HOST", "MF_METADATA_PORT"),
    ("ui_backend_service", "ui_server", "MF_UI_METADATA_HOST", "MF_UI_METADATA_PORT"),
]
MAIN_JS = "console.log('metaflow ui test bundle');\n"

SERVER = (Path(__file__).parent / "standin_service.py").read_text()


@dataclass
class BuiltImages:
    busybox: Image
    pyweb: Image

    def by_name(self) -> dict[tuple[str, str], Image]:
        return {BUSYBOX: self.busybox, PYWEB: self.pyweb}


def build_test_images(folder: Path) -> BuiltImages:
    busybox = build_image(busybox_rootfs(folder / "busybox"), cmd=["/bin/sh"])
    root = python_rootfs(folder / "pyweb", site_packages_of_this_python())
    write_file(root, "/app/server.py", SERVER)
    # The official image's layout: /opt/latest's python, the services package under /root.
    (root / "opt/latest/bin").mkdir(parents=True)
    (root / "opt/latest/bin/python3").symlink_to("/usr/bin/python3.11")
    write_file(root, "/root/services/__init__.py", "")
    write_file(root, "/root/services/standin.py", SERVER)
    for package, module, host, port in OFFICIAL_MODULES:
        write_file(root, f"/root/services/{package}/__init__.py", "")
        write_file(root, f"/root/services/{package}/{module}.py",
                   f"from services.standin import serve\nserve({host!r}, {port!r})\n")
    write_file(root, f"{UI_BUNDLE}/index.html", INDEX_HTML)
    write_file(root, f"{UI_BUNDLE}/static/js/main.js", MAIN_JS)
    pyweb = build_image(root, cmd=["python3", "/app/server.py"], workdir="/app",
                        env={"UI_ENABLED": "1", "IMAGE_ONLY": "from-image"})
    return BuiltImages(busybox, pyweb)


# -- pytest fixtures and helpers shared by the container tests (import them by name) -----------------

_built: dict[str, BuiltImages] = {}


@pytest.fixture(scope="session")
def built_images(tmp_path_factory: pytest.TempPathFactory) -> BuiltImages:
    """Built once per session, whichever module asks first."""
    if "images" not in _built:
        _built["images"] = build_test_images(tmp_path_factory.mktemp("images"))
    return _built["images"]


@pytest.fixture(scope="session")
def registry_server(built_images: BuiltImages) -> Iterator[Registry]:
    server = Registry()
    for (repo, tag), image in built_images.by_name().items():
        server.add(repo, tag, image)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def registry(registry_server: Registry) -> Iterator[Registry]:
    """The session's registry with every switch off and fresh counters."""
    registry_server.hits.clear()
    yield registry_server
    registry_server.rate_limited = False
    registry_server.require_login = None
    registry_server.slow_blobs = 0.0
    registry_server.index_tags = False


def system_proot() -> str:
    found = shutil.which("proot")
    if found is None:
        pytest.fail("Debian's proot is needed for the container tests: apt-get install -y proot busybox-static")
    return found


@pytest.fixture
def udocker(tmp_path: Path) -> Udocker:
    return Udocker(tmp_path / "udocker", proot=system_proot(), log_path=tmp_path / "logs" / "udocker.log")


def start_healthy(comp: ContainerComponent, timeout: float = 120) -> None:
    comp.start()
    wait_until(lambda: comp.healthy() or not comp.alive(), timeout=timeout, what=f"{comp.name} to answer")
    assert comp.healthy(), comp.process.tail(30) if comp.process else "not started"


def service_pids(comp: ContainerComponent) -> list[int]:
    """The containerized processes (not proot, not udocker): they carry udocker's container_root."""
    assert comp.container_dir is not None
    return [pid for pid in container_processes(comp.container_dir)
            if b"container_root=" in Path(f"/proc/{pid}/environ").read_bytes()]


# -- the image with upstream's real code (upstream_image.py), in a registry of its own ---------------


@pytest.fixture(scope="session")
def upstream_registry() -> Iterator[Registry]:
    """Serves netflixoss/metaflow_metadata_service:v2.5.1 built from upstream's source (cached layers)."""
    from .upstream_image import REPO, TAG, upstream_image

    server = Registry()
    server.add(REPO, TAG, upstream_image())
    server.start()
    yield server
    server.stop()
