"""Small container images for tests, built from files on this machine.

An image is a list of gzip'd tar layers plus a config blob, described by a Docker schema-2
manifest: exactly what a Registry v2 serves and udocker pulls. Two root filesystems:

- `busybox_rootfs`: the static busybox from Debian's busybox-static (sh, httpd, sleep, ...).
- `python_rootfs`: the host's /usr/bin/python3.11 with the shared libraries it and its
  extension modules need, a trimmed standard library and aiohttp (with its dependencies) from
  the test virtualenv. Glibc-linked, so running it under Debian's proot also proves the `-k`
  wrapper in mfcolab.containers.udocker_client.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_V1 = "application/vnd.docker.container.image.v1+json"
LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"

BUSYBOX = Path("/bin/busybox")
HOST_PYTHON = Path("/usr/bin/python3.11")
BUSYBOX_APPLETS = ("sh", "cat", "echo", "env", "httpd", "id", "ls", "pwd", "sleep", "test", "true", "wget", "mkdir", "kill")
STDLIB_SKIP = {"test", "idlelib", "tkinter", "turtledemo", "lib2to3", "ensurepip", "pydoc_data", "unittest", "distutils"}
AIOHTTP_PACKAGES = ("aiohttp", "aiosignal", "aiohappyeyeballs", "attr", "attrs", "frozenlist", "idna", "multidict",
                    "propcache", "yarl", "typing_extensions.py")


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Image:
    """The blobs of one image, by digest, and its manifest."""

    manifest: bytes
    blobs: dict[str, bytes] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        return sha256(self.manifest)

    @property
    def layer_bytes(self) -> int:
        """Bytes udocker downloads: every layer plus the config."""
        return sum(len(blob) for blob in self.blobs.values())


def tar_directory(root: Path) -> bytes:
    """A reproducible gzip'd tar of everything under `root` (owner root, mtime 0)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(root.rglob("*")):
            info = tar.gettarinfo(str(path), arcname=str(path.relative_to(root)))
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.mtime = 0
            if info.isfile():
                with open(path, "rb") as handle:
                    tar.addfile(info, handle)
            else:
                tar.addfile(info)
    return raw.getvalue()


def build_image(rootfs: Path, *, env: dict[str, str] | None = None, cmd: list[str] | None = None,
                workdir: str = "/", entrypoint: list[str] | None = None) -> Image:
    """One-layer image of `rootfs` with the given runtime config."""
    plain = tar_directory(rootfs)
    layer = gzip.compress(plain, compresslevel=1, mtime=0)
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", **(env or {})}
    config = json.dumps({
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Env": [f"{key}={value}" for key, value in env.items()],
            "Cmd": cmd,
            "Entrypoint": entrypoint,
            "WorkingDir": workdir,
        },
        "rootfs": {"type": "layers", "diff_ids": [sha256(plain)]},
    }, sort_keys=True).encode()
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": MANIFEST_V2,
        "config": {"mediaType": CONFIG_V1, "size": len(config), "digest": sha256(config)},
        "layers": [{"mediaType": LAYER_GZIP, "size": len(layer), "digest": sha256(layer)}],
    }, indent=2).encode()
    return Image(manifest, {sha256(config): config, sha256(layer): layer})


def oci_index_for(image: Image) -> bytes:
    """A one-platform image index pointing at `image` (what multi-arch tags answer with)."""
    return json.dumps({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{
            "mediaType": MANIFEST_V2, "size": len(image.manifest), "digest": image.digest,
            "platform": {"architecture": "amd64", "os": "linux"},
        }],
    }).encode()


# -- root filesystems ----------------------------------------------------------------------------


def _base_dirs(root: Path) -> None:
    for name in ("bin", "etc", "tmp", "root", "usr/bin", "proc", "dev", "sys"):
        (root / name).mkdir(parents=True, exist_ok=True)
    (root / "tmp").chmod(0o1777)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
    (root / "etc/group").write_text("root:x:0:\nnogroup:x:65534:\n")
    (root / "etc/hosts").write_text("127.0.0.1 localhost\n")


def _add_busybox(root: Path) -> None:
    if not BUSYBOX.exists():
        raise RuntimeError("the static busybox is missing: apt-get install busybox-static")
    shutil.copy2(BUSYBOX, root / "bin/busybox")
    for applet in BUSYBOX_APPLETS:
        (root / "bin" / applet).symlink_to("busybox")


def busybox_rootfs(root: Path) -> Path:
    _base_dirs(root)
    _add_busybox(root)
    (root / "www").mkdir()
    (root / "www/index.html").write_text("hello from a busybox container\n")
    return root


def _shared_libraries(binaries: list[Path]) -> set[Path]:
    """Every shared library (and the loader) the given ELF files load, by absolute path."""
    found: set[Path] = set()
    for binary in binaries:
        out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True).stdout
        for match in re.finditer(r"(/\S+) \(0x", out):
            found.add(Path(match.group(1)))
    return found


def _copy_keeping_path(path: Path, root: Path) -> None:
    """Copy a host file to the same path in `root`, with /lib and /lib64 folded into /usr (merged-usr)."""
    relative = str(path).lstrip("/")
    if relative.startswith(("lib/", "lib64/")):
        relative = "usr/" + relative
    target = root / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(path.resolve(), target)


def python_rootfs(root: Path, site_packages: Path) -> Path:
    """Busybox plus a Python 3.11 that can `import aiohttp`."""
    if not HOST_PYTHON.exists():
        raise RuntimeError("the host python3.11 is missing: apt-get install python3.11")
    _base_dirs(root)
    _add_busybox(root)
    stdlib = Path("/usr/lib/python3.11")
    shutil.copytree(stdlib, root / "usr/lib/python3.11", symlinks=False, ignore_dangling_symlinks=True,
                    ignore=lambda folder, names: [n for n in names if n in STDLIB_SKIP or n.startswith("config-")])
    target_site = root / "usr/lib/python3/dist-packages"
    target_site.mkdir(parents=True)
    for name in AIOHTTP_PACKAGES:
        source = site_packages / name
        if source.is_dir():
            shutil.copytree(source, target_site / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif source.exists():
            shutil.copy2(source, target_site / name)
    _copy_keeping_path(HOST_PYTHON, root)
    (root / "usr/bin/python3").symlink_to("python3.11")
    extensions = [HOST_PYTHON, *root.joinpath("usr/lib").rglob("*.so")]
    for library in _shared_libraries(extensions):
        _copy_keeping_path(library, root)
    for name in ("lib", "lib64"):
        (root / "usr" / name).mkdir(parents=True, exist_ok=True)
        (root / name).symlink_to(f"usr/{name}")
    return root


def site_packages_of_this_python() -> Path:
    import aiohttp

    return Path(aiohttp.__file__).resolve().parent.parent


def write_file(root: Path, path: str, text: str, mode: int = 0o644) -> None:
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    os.chmod(target, mode)
