"""The udocker layer against real udocker, Debian's proot and a Registry v2 stand-in on 127.0.0.1.

Images are built here (tests/registry): a static busybox one and a Python + aiohttp one.
Needs `apt-get install -y proot busybox-static` (and the host's python3.11 for the Python image).
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import aiohttp
import pytest
import requests

from helpers import free_port, wait_until
from mfcolab.containers.component import ContainerComponent
from mfcolab.containers.images import ImageRef, resolve_image
from mfcolab.containers.pulls import PullProgress, print_progress
from mfcolab.containers.udocker_client import ContainerSpec, Udocker, container_processes
from mfcolab.errors import ContainerError, MissingBinaryError, PortBusyError
from mfcolab.supervisor.component import port_is_free
from mfcolab.supervisor.process import pid_alive
from registry.fixtures import (
    BUSYBOX,
    PYWEB,
    BuiltImages,
    service_pids,
    start_healthy,
)
from registry.server import Registry


def pyweb_spec(port: int, *, name: str = "pyweb", volume: Path | None = None, **env: str) -> ContainerSpec:
    return ContainerSpec(
        name=name, image=":".join(PYWEB), command=("python3", "/app/server.py"), port=port,
        env={"PORT": str(port), "PATH_PREFIX": "/api", **env}, secret_env={"TOKEN": "tok-3141"},
        volumes=(volume,) if volume else (),
        workdir="/app", health_path="/api/ping", port_flag="--ui-port",
    )


def component(spec: ContainerSpec, udocker: Udocker, registry: Registry, tmp_path: Path) -> ContainerComponent:
    return ContainerComponent(spec, udocker, tmp_path / "logs", registry=registry.url)


# -- image names -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("image", "registry", "expected"), [
    ("netflixoss/metaflow_metadata_service:v2.5.1", "",
     ImageRef("netflixoss/metaflow_metadata_service", "v2.5.1", None)),
    ("netflixoss/metaflow_metadata_service:v2.5.1", "public.ecr.aws/outerbounds",
     ImageRef("outerbounds/metaflow_metadata_service", "v2.5.1", "https://public.ecr.aws")),
    ("netflixoss/metaflow_metadata_service:v2.5.1", "http://127.0.0.1:5000",
     ImageRef("netflixoss/metaflow_metadata_service", "v2.5.1", "http://127.0.0.1:5000")),
    ("netflixoss/metaflow_metadata_service:v2.5.1", "http://127.0.0.1:5000/mirror/",
     ImageRef("mirror/metaflow_metadata_service", "v2.5.1", "http://127.0.0.1:5000")),
    ("public.ecr.aws/outerbounds/metaflow_ui:v1.3.13", "",
     ImageRef("outerbounds/metaflow_ui", "v1.3.13", "https://public.ecr.aws")),
    ("localhost:5000/team/app", "", ImageRef("team/app", "latest", "https://localhost:5000")),
    ("busybox", "", ImageRef("busybox", "latest", None)),
])
def test_resolve_image(image: str, registry: str, expected: ImageRef) -> None:
    assert resolve_image(image, registry) == expected


def test_docker_hub_single_names_live_under_library() -> None:
    assert resolve_image("busybox:1").remote_repo == "library/busybox"
    assert resolve_image("busybox:1", "http://127.0.0.1:1").remote_repo == "busybox"


@pytest.mark.parametrize("registry", ["ftp://example.org", "https://", "http:///path"])
def test_a_bad_registry_is_a_clear_error(registry: str) -> None:
    with pytest.raises(ContainerError):
        resolve_image("a/b:1", registry)


@pytest.mark.parametrize("image", [":tag", "a/b:", "Upper/case:1", "a//b:1", "a/b:bad tag"])
def test_a_bad_image_name_is_a_clear_error(image: str) -> None:
    with pytest.raises(ContainerError, match="is not an image name"):
        resolve_image(image)


# -- tools -----------------------------------------------------------------------------------------


def test_missing_proot_names_the_package(tmp_path: Path) -> None:
    udocker = Udocker(tmp_path / "u", proot=str(tmp_path / "no" / "proot"))
    with pytest.raises(MissingBinaryError) as caught:
        udocker.ensure_tools()
    assert "proot not found" in caught.value.message
    assert "apt-get install proot" in caught.value.hint


def test_proot_wrapper_drops_only_the_kernel_emulation(tmp_path: Path) -> None:
    # /bin/echo stands in for proot so the wrapper's argument list can be read back.
    udocker = Udocker(tmp_path / "u", proot="/bin/echo")
    udocker.ensure_tools()
    out = subprocess.run([str(udocker.wrapper_path), "-0", "-k", "6.1.0", "-r", "/x y", "-b", "/a:/a", "cmd", "-k"],
                         capture_output=True, text=True, check=True).stdout
    assert out.split() == ["-0", "-r", "/x", "y", "-b", "/a:/a", "cmd"]


def test_a_failed_tools_download_points_at_the_system_proot(tmp_path: Path) -> None:
    home = tmp_path / "u"
    home.mkdir()
    # udocker reads its tools' location from this file too: a missing one fails the same way a
    # download does on a machine without internet, with or without a network here.
    (home / "udocker.conf").write_text(f"[DEFAULT]\ntarball = {tmp_path / 'missing.tar.gz'}\n")
    with pytest.raises(MissingBinaryError) as caught:
        Udocker(home).ensure_tools()
    assert "installation of udockertools failed" in caught.value.message
    assert "--proot /usr/bin/proot" in caught.value.hint


def test_install_with_system_proot_downloads_nothing(udocker: Udocker) -> None:
    udocker.ensure_tools()
    assert (udocker.home / "repos").is_dir() and (udocker.home / "containers").is_dir()
    assert not list((udocker.home / "bin").glob("proot*"))  # nothing from udocker's tarball
    assert os.access(udocker.wrapper_path, os.X_OK)


# -- pulls -----------------------------------------------------------------------------------------


def test_pull_shows_progress_and_a_second_pull_downloads_nothing(
        udocker: Udocker, registry: Registry, built_images: BuiltImages) -> None:
    registry.slow_blobs = 0.002
    seen: list[PullProgress] = []
    image = resolve_image(":".join(PYWEB), registry.url)
    udocker.pull(image, progress=seen.append)

    total = built_images.pyweb.layer_bytes
    final = seen[-1]
    assert final.finished and final.done == final.total == total
    assert (final.layers_done, final.layers_total) == (2, 2)
    assert any(0 < p.done < total for p in seen), "no progress between start and end was reported"
    assert [p.done for p in seen] == sorted(p.done for p in seen)
    assert udocker.has_image(image)
    assert registry.hits["manifest pulls"] == 1

    udocker.pull(image, progress=seen.append)
    assert registry.hits["manifest pulls"] == 1 and registry.hits["blob"] == 2


def test_the_plain_progress_display() -> None:
    out = io.StringIO()
    show = print_progress(out)
    show(PullProgress("a/b:1", 0, 0, 0, 0))  # no manifest yet: nothing to say
    for done in (0, 10, 20, 150, 1000):
        show(PullProgress("a/b:1", done * 1000, 1_000_000, 0 if done < 1000 else 2, 2))
    show(PullProgress("a/b:1", 1_000_000, 1_000_000, 2, 2, finished=True))
    assert out.getvalue().splitlines() == [
        "pulling a/b:1: 0.0 of 1.0 MB, layer 0 of 2",
        "pulling a/b:1: 0.1 of 1.0 MB, layer 0 of 2",
        "pulling a/b:1: 1.0 of 1.0 MB, layer 2 of 2",
        "pulling a/b:1: 1.0 of 1.0 MB, layer 2 of 2 done",
    ]


def test_pull_through_an_image_index(udocker: Udocker, registry: Registry) -> None:
    registry.index_tags = True  # what a multi-platform tag answers with
    image = resolve_image(":".join(BUSYBOX), registry.url)
    udocker.pull(image)
    assert udocker.has_image(image)


def test_missing_image_is_reported_without_retrying(udocker: Udocker, registry: Registry) -> None:
    with pytest.raises(ContainerError) as caught:
        udocker.pull(resolve_image("test/nothere:1", registry.url), retry_delays=(30.0,))
    assert "does not exist" in caught.value.message and "test/nothere:1" in caught.value.message
    assert registry.hits["manifest HEAD"] == 1  # diagnosed once, not retried (the delay would show)


def test_rate_limit_says_what_to_do(udocker: Udocker, registry: Registry) -> None:
    registry.rate_limited = True
    with pytest.raises(ContainerError) as caught:
        udocker.pull(resolve_image(":".join(BUSYBOX), registry.url), retry_delays=(30.0,))
    error = caught.value
    assert "rate limit" in error.message and "10 per hour" in error.message
    assert "public.ecr.aws/outerbounds" in error.hint
    assert "MFCOLAB_REGISTRY_USER" in error.hint and "MFCOLAB_REGISTRY_PASSWORD" in error.hint
    assert registry.hits["manifest HEAD"] == 1  # no retry: each one would spend the quota again


def test_unreachable_registry_is_retried_then_reported(udocker: Udocker) -> None:
    nobody = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ContainerError) as caught:
        udocker.pull(resolve_image("test/busybox:1", nobody), retry_delays=(0.1,))
    assert caught.value.message.startswith(f"cannot reach the registry {nobody}")
    assert "http://" in caught.value.hint
    assert (udocker.log_path.read_text()).count("udocker pull") == 2


def test_login_from_the_environment(udocker: Udocker, registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    registry.require_login = ("alice", "s3cret")
    image = resolve_image(":".join(BUSYBOX), registry.url)
    with pytest.raises(ContainerError) as caught:
        udocker.pull(image, retry_delays=())
    assert "requires a login" in caught.value.message

    monkeypatch.setenv("MFCOLAB_REGISTRY_USER", "alice")
    monkeypatch.setenv("MFCOLAB_REGISTRY_PASSWORD", "wrong")
    with pytest.raises(ContainerError) as caught:
        udocker.pull(image, retry_delays=())
    assert "refused the login of 'alice'" in caught.value.message

    monkeypatch.setenv("MFCOLAB_REGISTRY_PASSWORD", "s3cret")
    udocker.pull(image)
    assert udocker.has_image(image)
    assert "s3cret" not in udocker.log_path.read_text()


# -- containers ------------------------------------------------------------------------------------


def test_create_reuses_an_existing_container(udocker: Udocker, registry: Registry) -> None:
    image = resolve_image(":".join(BUSYBOX), registry.url)
    udocker.pull(image)
    first = udocker.create("mfcolab-box", image)
    (first / "ROOT" / "marker").write_text("kept")
    assert udocker.create("mfcolab-box", image) == first
    assert (first / "ROOT" / "marker").read_text() == "kept"


def test_a_dangling_container_name_is_recreated(udocker: Udocker, registry: Registry) -> None:
    image = resolve_image(":".join(BUSYBOX), registry.url)
    udocker.pull(image)
    first = udocker.create("mfcolab-box", image)
    shutil.rmtree(first)
    second = udocker.create("mfcolab-box", image)
    assert second != first and (second / "ROOT" / "bin" / "busybox").exists()


def test_service_lifecycle_env_volume_websocket_restart_and_second_up(
        udocker: Udocker, registry: Registry, tmp_path: Path) -> None:
    shared = tmp_path / "shared" / "datastore"
    shared.mkdir(parents=True)
    (shared / "from-host.txt").write_text("written by the host")
    port = free_port()
    comp = component(pyweb_spec(port, volume=shared, MESSAGE="hello container"), udocker, registry, tmp_path)

    lines: list[PullProgress] = []
    comp.prepare(progress=lines.append)
    assert lines and lines[-1].finished
    start_healthy(comp)
    base = f"http://127.0.0.1:{port}/api"
    try:
        answer = requests.get(f"{base}/env", timeout=10).json()
        names = ("MESSAGE", "PORT", "IMAGE_ONLY", "TOKEN", "container_names")
        assert {name: answer["env"].get(name) for name in names} == {
            "MESSAGE": "hello container", "PORT": str(port), "IMAGE_ONLY": "from-image", "TOKEN": "tok-3141",
            "container_names": comp.container}
        # The secret went through a private file, not the command line or the log.
        assert b"tok-3141" not in Path(f"/proc/{comp.pid}/cmdline").read_bytes()
        assert "tok-3141" not in comp.log_path.read_text()
        assert udocker.env_file(comp.container).stat().st_mode & 0o777 == 0o600
        assert answer["cwd"] == "/app" and answer["uid"] == 0
        # The volume is at the same absolute path inside, both ways.
        assert requests.get(f"{base}/read", params={"path": str(shared / "from-host.txt")}, timeout=10).text == \
            "written by the host"
        requests.post(f"{base}/write", params={"path": str(shared / "from-container.txt")}, data="hi", timeout=10)
        assert (shared / "from-container.txt").read_text() == "hi"
        assert asyncio.run(websocket_echo(f"{base}/ws")) == ["HELLO", "echo:ping"]
        assert f"test service listening on 127.0.0.1:{port}/api" in comp.process.tail(50)  # type: ignore[union-attr]

        # A real crash of the service: the component notices, and start() again brings it back.
        for pid in service_pids(comp):
            os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not comp.alive(), timeout=30, what="the dead service to be noticed")
        assert not comp.healthy()
        start_healthy(comp)
        assert requests.get(f"{base}/ping", timeout=10).text == "pong"
    finally:
        comp.stop(comp.stop_timeout)
    assert not container_processes(comp.container_dir)  # type: ignore[arg-type]
    assert port_is_free(port)

    # A second `up`: new objects, same folder. Nothing is pulled or created again.
    container_dir = comp.container_dir
    hits = dict(registry.hits)
    again = component(pyweb_spec(port, volume=shared, MESSAGE="second"), Udocker(udocker.home, proot=udocker.proot),
                      registry, tmp_path)
    start_healthy(again)
    try:
        assert again.container_dir == container_dir
        assert dict(registry.hits) == hits
        answer = requests.get(f"{base}/env", timeout=10).json()
        assert answer["env"]["MESSAGE"] == "second"
    finally:
        again.stop(again.stop_timeout)
    assert not container_processes(container_dir)  # type: ignore[arg-type]


async def websocket_echo(url: str) -> list[str]:
    async with aiohttp.ClientSession() as session, session.ws_connect(url, timeout=aiohttp.ClientWSTimeout(ws_close=10)) as ws:
        hello = await ws.receive_json(timeout=10)
        await ws.send_str("ping")
        echo = await ws.receive_str(timeout=10)
        return [hello["type"], echo]


def test_killing_only_udocker_orphans_the_service_and_the_next_start_cleans_up(
        udocker: Udocker, registry: Registry, tmp_path: Path) -> None:
    port = free_port()
    comp = component(pyweb_spec(port), udocker, registry, tmp_path)
    start_healthy(comp)
    try:
        orphans = service_pids(comp)
        os.kill(comp.pid, signal.SIGKILL)  # type: ignore[arg-type]
        wait_until(lambda: not comp.alive(), timeout=30, what="udocker to exit")
        assert orphans and all(pid_alive(pid) for pid in orphans)
        assert requests.get(f"http://127.0.0.1:{port}/api/ping", timeout=10).text == "pong"  # still serving

        start_healthy(comp)  # sweeps what the killed run left, then starts afresh
        assert not any(pid_alive(pid) for pid in orphans)
    finally:
        comp.stop(comp.stop_timeout)
    assert not container_processes(comp.container_dir)  # type: ignore[arg-type]
    assert port_is_free(port)


def test_two_containers_from_one_image_each_on_its_own_port(
        udocker: Udocker, registry: Registry, tmp_path: Path) -> None:
    ports = [free_port(), free_port()]
    comps = []
    for index, port in enumerate(ports):
        spec = ContainerSpec(
            name=f"web{index}", image=":".join(BUSYBOX), port=port, env={"PORT": str(port)},
            command=("/bin/sh", "-c", "echo serving $PORT; exec httpd -f -p 127.0.0.1:$PORT -h /www"),
        )
        comps.append(component(spec, udocker, registry, tmp_path))
    try:
        for comp in comps:
            start_healthy(comp)
        for port in ports:
            assert requests.get(f"http://127.0.0.1:{port}/", timeout=10).text == "hello from a busybox container\n"
        assert comps[0].container != comps[1].container
        assert registry.hits["manifest pulls"] == 1  # the second one reused the pulled image
        assert f"serving {ports[1]}" in comps[1].process.tail()  # type: ignore[union-attr]
    finally:
        for comp in comps:
            comp.stop(comp.stop_timeout)
    for comp in comps:
        assert not container_processes(comp.container_dir)  # type: ignore[arg-type]


def test_a_taken_port_is_refused_before_anything_runs(udocker: Udocker, registry: Registry, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        comp = component(pyweb_spec(port), udocker, registry, tmp_path)
        with pytest.raises(PortBusyError) as caught:
            comp.start()
    assert comp.process is None
    assert str(port) in caught.value.message and "--ui-port" in caught.value.hint


def test_status_info_names_image_and_container(udocker: Udocker, registry: Registry, tmp_path: Path) -> None:
    comp = component(pyweb_spec(free_port()), udocker, registry, tmp_path)
    info = comp.info()
    assert info["image"] == f"test/pyweb:1 from {registry.url}"
    assert info["container"].startswith("mfcolab-pyweb-")
    assert json.dumps(info)  # fits in status.json
