"""The test image that runs upstream's real code, built here and cached between test runs.

Upstream's service (metaflow-service v2.5.1) and UI bundle come from the read-only fixture folder
(`MFCOLAB_UPSTREAM`, default /work/shared/upstream). The image has the layout and commands of
`netflixoss/metaflow_metadata_service`, in three layers, each cached under
`MFCOLAB_TEST_CACHE` (default ~/.cache/mfcolab-tests)/upstream-image/<layer>-<hash of its inputs>/:

    debian    a Debian bookworm rootfs from debootstrap: python3.11 and what psycopg2 builds with
    venv      /opt/latest: a virtualenv with upstream's requirements.txt from PyPI, then upstream's
              own package (`pip install .`, as the official Dockerfile does)
    services  /root/services (the source) and /root/services/ui_backend_service/ui (the UI bundle)

A change of the source or the requirements rebuilds the venv and the services layers; only a
change of Debian's package list reruns debootstrap. The venv is
installed inside the rootfs under proot (no privileges needed, so CI can build it as any user).
Concurrent sessions wait on a lock per layer instead of building it twice.
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .images import CONFIG_V1, LAYER_GZIP, MANIFEST_V2, Image, sha256

UPSTREAM = Path(os.environ.get("MFCOLAB_UPSTREAM", "/work/shared/upstream"))
CACHE = Path(os.environ.get("MFCOLAB_TEST_CACHE", Path.home() / ".cache" / "mfcolab-tests")) / "upstream-image"
REPO, TAG = "netflixoss/metaflow_metadata_service", "v2.5.1"  # served under the official name

SUITE = "bookworm"
DEBIAN_MIRROR = os.environ.get("MFCOLAB_DEBIAN_MIRROR", "http://deb.debian.org/debian")
# python3-distutils provides python3.11-distutils, which debootstrap does not resolve by itself.
DEBIAN_PACKAGES = ("python3.11", "python3.11-venv", "python3-distutils", "python3-lib2to3", "python3.11-dev", "gcc",
                   "libpq-dev", "ca-certificates")
REQUIREMENTS = ("requirements.txt", "services/metadata_service/requirements.txt",
                "services/migration_service/requirements.txt", "services/ui_backend_service/requirements.txt")
SOURCE_PARTS = ("services/__init__.py", "services/data", "services/utils", "services/metadata_service",
                "services/ui_backend_service", "setup.py", "setup.cfg")
UI_BUNDLE = "root/services/ui_backend_service/ui"
# The stored source lacks services/ui_backend_service/api/config.py (the /config route, GA_TRACKING_ID
# for the UI), which api/__init__.py imports. A class of that name that adds no route stands in.
CONFIG_MODULE = "root/services/ui_backend_service/api/config.py"
CONFIG_STANDIN = "class ConfigApi:\n    def __init__(self, app):\n        pass\n"
SKIPPED_IN_LAYERS = ("dev/", "proc/", "sys/", "run/", "tmp/", "var/cache/apt/", "var/lib/apt/lists/", "var/log/")
# The official image's runtime config (Dockerfile, Dockerfile.ui_service).
IMAGE_ENV = {
    "PATH": "/opt/latest/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "UI_ENABLED": "1",
    "UI_VERSION": "v1.3.14",
    "FEATURE_RUN_GROUPS": "0",
    "FEATURE_DEBUG_VIEW": "1",
}
BUILDER_VERSION = "1"  # bump when this file changes what a layer holds

Log = Callable[[str], None]


def _say(message: str) -> None:
    print(f"[upstream image] {message}", file=sys.stderr, flush=True)


# -- cache keys -----------------------------------------------------------------------------------


def _hash_tree(digest: hashlib._Hash, root: Path, parts: tuple[str, ...]) -> None:
    for part in parts:
        path = root / part
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
        for file in files:
            digest.update(str(file.relative_to(root)).encode() + b"\0" + file.read_bytes() + b"\0")


def layer_keys(upstream: Path = UPSTREAM) -> dict[str, str]:
    """debian, venv, services -> a hash of everything that layer is built from."""
    service, ui = upstream / "metaflow-service", upstream / "metaflow-ui"
    debian = hashlib.sha256(f"{BUILDER_VERSION}|{SUITE}|{DEBIAN_MIRROR}|{','.join(DEBIAN_PACKAGES)}".encode())
    venv = hashlib.sha256(debian.hexdigest().encode())
    _hash_tree(venv, service, (*REQUIREMENTS, *SOURCE_PARTS))
    services = hashlib.sha256(f"{BUILDER_VERSION}|0755/0644|{CONFIG_STANDIN}".encode())
    _hash_tree(services, service, SOURCE_PARTS)
    _hash_tree(services, ui, ("index.html", "static"))
    return {"debian": debian.hexdigest()[:16], "venv": venv.hexdigest()[:16], "services": services.hexdigest()[:16]}


# -- one cached layer -----------------------------------------------------------------------------


class CachedLayer:
    """<cache>/<name>-<key>/: layer.tar.gz and diff_id (the digest of the uncompressed tar)."""

    def __init__(self, cache: Path, name: str, key: str) -> None:
        self.folder = cache / f"{name}-{key}"
        self.name = name

    @property
    def blob_path(self) -> Path:
        return self.folder / "layer.tar.gz"

    @property
    def ready(self) -> bool:
        return (self.folder / "diff_id").is_file() and self.blob_path.is_file()

    def store(self, root: Path, only: str = "") -> None:
        """Write the layer of `root` (everything, or only the subtree `only`), atomically."""
        self.folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{self.folder.name}-", dir=self.folder.parent))
        diff = hashlib.sha256()
        with open(staging / "layer.tar.gz", "wb") as raw:
            gz = gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1, mtime=0)
            hashing = _HashingWriter(gz, diff)
            with tarfile.open(fileobj=hashing, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
                for path in _layer_members(root, only):
                    _add(tar, root, path)
            gz.close()
        (staging / "diff_id").write_text("sha256:" + diff.hexdigest())
        shutil.rmtree(self.folder, ignore_errors=True)
        staging.rename(self.folder)

    def blob(self) -> tuple[bytes, str]:
        return self.blob_path.read_bytes(), (self.folder / "diff_id").read_text().strip()

    def extract_to(self, root: Path) -> None:
        with tarfile.open(self.blob_path, "r:gz") as tar:
            tar.extractall(root, filter="tar")


class _HashingWriter:
    def __init__(self, target: gzip.GzipFile, digest: hashlib._Hash) -> None:
        self.target, self.digest = target, digest

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        return self.target.write(data)


def _layer_members(root: Path, only: str) -> Iterator[Path]:
    start = root / only if only else root
    for parent in reversed(start.relative_to(root).parents[:-1] if only else []):
        yield root / parent  # the folders above the subtree, so the tar is complete
    if only:
        yield start
    for folder, dirs, files in os.walk(start):
        dirs.sort()
        relative = os.path.relpath(folder, root)
        kept = []
        for name in dirs:
            path = Path(folder, name)
            inside = f"{os.path.relpath(path, root)}/"
            if any(inside.startswith(skip) and inside != skip for skip in SKIPPED_IN_LAYERS):
                continue
            yield path
            if not path.is_symlink():
                kept.append(name)
        dirs[:] = kept
        for name in sorted(files):
            if any(f"{relative}/".startswith(skip) for skip in SKIPPED_IN_LAYERS):
                continue
            if name.endswith((".pyc",)) or "__pycache__" in folder:
                continue
            yield Path(folder, name)


def _add(tar: tarfile.TarFile, root: Path, path: Path) -> None:
    info = tar.gettarinfo(str(path), arcname=str(path.relative_to(root)))
    if not (info.isfile() or info.isdir() or info.issym() or info.islnk()):
        return  # device nodes and fifos: the runtime provides /dev
    info.mtime = 0
    if info.isfile():
        with open(path, "rb") as handle:
            tar.addfile(info, handle)
    else:
        tar.addfile(info)


@contextmanager
def _locked(cache: Path, name: str) -> Iterator[None]:
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


# -- building the layers --------------------------------------------------------------------------


def debootstrap(root: Path) -> None:
    if shutil.which("debootstrap") is None:
        raise RuntimeError("debootstrap is missing: run scripts/setup --test")
    command = ["debootstrap", "--variant=minbase", f"--include={','.join(DEBIAN_PACKAGES)}", SUITE, str(root),
               DEBIAN_MIRROR]
    result = subprocess.run(command, check=False, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"debootstrap failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for path in (root / leftover).glob("*"):
            if path.is_file():
                path.unlink()


def install_venv(root: Path, service: Path) -> None:
    """/opt/latest with upstream's requirements, installed by the rootfs' own Python under proot."""
    requirements = root / "tmp/requirements"
    for name in (*REQUIREMENTS, *SOURCE_PARTS):
        source, target = service / name, requirements / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"), dirs_exist_ok=True)
        else:
            shutil.copy2(source, target)
    for folder, _dirs, _files in os.walk(requirements):  # the fixture is read-only; pip builds in it
        os.chmod(folder, 0o755)
    shutil.copy2("/etc/resolv.conf", root / "etc/resolv.conf")
    # This machine's CA bundle (a proxy may sign PyPI's certificate), for the build only.
    shutil.copy2(host_ca_bundle(), requirements / "ca.crt")
    script = ("set -e; python3.11 -m venv /opt/latest; /opt/latest/bin/pip install -q --no-cache-dir --upgrade pip; "
              "cd /tmp/requirements && /opt/latest/bin/pip install -q --no-cache-dir -r requirements.txt && "
              # as the official Dockerfile does: the services package and its distribution metadata
              "/opt/latest/bin/pip install -q --no-cache-dir --no-deps .")
    proot = shutil.which("proot")
    if proot is None:
        raise RuntimeError("proot is missing: run scripts/setup --test")
    pip_env = [f"{name}={os.environ[name]}" for name in ("PIP_INDEX_URL", "PIP_DEFAULT_TIMEOUT") if name in os.environ]
    result = subprocess.run([proot, "-0", "-r", str(root), "-b", "/dev", "-b", "/proc", "-b", "/sys", "-w", "/",
                             "/usr/bin/env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "LANG=C.UTF-8",
                             "PIP_CERT=/tmp/requirements/ca.crt", *pip_env, "/bin/sh", "-c", script],
                            check=False, capture_output=True, text=True)
    shutil.rmtree(requirements)
    if result.returncode != 0:
        raise RuntimeError(f"installing upstream's requirements failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")


def host_ca_bundle() -> Path:
    for candidate in (os.environ.get("PIP_CERT"), os.environ.get("SSL_CERT_FILE"), "/etc/ssl/certs/ca-certificates.crt"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise RuntimeError("no CA bundle found for pip: apt-get install ca-certificates")


def services_tree(root: Path, upstream: Path) -> None:
    service = upstream / "metaflow-service"
    for part in SOURCE_PARTS:
        source, target = service / part, root / "root" / part
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(source, target)
    shutil.copytree(upstream / "metaflow-ui", root / UI_BUNDLE, dirs_exist_ok=True)  # the source has an empty ui/
    if not (root / CONFIG_MODULE).exists():
        (root / CONFIG_MODULE).write_text(CONFIG_STANDIN)
    for folder, _dirs, files in os.walk(root):  # the fixture is read-only; an image's files are not
        os.chmod(folder, 0o755)
        for name in files:
            os.chmod(os.path.join(folder, name), 0o644)


def build_layers(cache: Path = CACHE, upstream: Path = UPSTREAM, say: Log = _say) -> list[CachedLayer]:
    """The three layers, from the cache or built (and then cached)."""
    keys = layer_keys(upstream)
    debian, venv, services = (CachedLayer(cache, name, keys[name]) for name in ("debian", "venv", "services"))
    with _locked(cache, "build"):
        if not (debian.ready and venv.ready):
            with tempfile.TemporaryDirectory(prefix="rootfs-", dir=cache) as scratch:
                root = Path(scratch) / "rootfs"
                started = time.monotonic()
                if debian.ready:
                    say(f"unpacking the cached Debian layer {debian.folder.name}")
                    root.mkdir()
                    debian.extract_to(root)
                else:
                    say(f"debootstrap {SUITE} with {', '.join(DEBIAN_PACKAGES)} (once per change of that list)")
                    debootstrap(root)
                    debian.store(root)
                    say(f"Debian layer built in {time.monotonic() - started:.0f} s")
                started = time.monotonic()
                say("installing upstream's requirements.txt from PyPI into /opt/latest")
                install_venv(root, upstream / "metaflow-service")
                venv.store(root, only="opt/latest")
                say(f"venv layer built in {time.monotonic() - started:.0f} s")
        if not services.ready:
            with tempfile.TemporaryDirectory(prefix="services-", dir=cache) as scratch:
                services_tree(Path(scratch), upstream)
                services.store(Path(scratch), only="root")
    return [debian, venv, services]


def assemble(layers: list[CachedLayer]) -> Image:
    blobs: dict[str, bytes] = {}
    entries, diff_ids = [], []
    for layer in layers:
        data, diff_id = layer.blob()
        blobs[sha256(data)] = data
        entries.append({"mediaType": LAYER_GZIP, "size": len(data), "digest": sha256(data)})
        diff_ids.append(diff_id)
    config = json.dumps({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": [f"{key}={value}" for key, value in IMAGE_ENV.items()], "WorkingDir": "/root",
                   "Cmd": ["/opt/latest/bin/python3", "-m", "services.metadata_service.server"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }, sort_keys=True).encode()
    blobs[sha256(config)] = config
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": MANIFEST_V2,
        "config": {"mediaType": CONFIG_V1, "size": len(config), "digest": sha256(config)},
        "layers": entries,
    }, indent=2).encode()
    return Image(manifest, blobs)


def upstream_image(cache: Path = CACHE, upstream: Path = UPSTREAM) -> Image:
    if not (upstream / "metaflow-service" / "services").is_dir():
        raise RuntimeError(f"upstream's source is not at {upstream} (set MFCOLAB_UPSTREAM)")
    return assemble(build_layers(cache, upstream))


if __name__ == "__main__":  # build (or check) the cached layers: python -m registry.upstream_image
    started = time.monotonic()
    image = upstream_image()
    print(f"{len(image.blobs) - 1} layers, {image.layer_bytes / 1e6:.0f} MB, {time.monotonic() - started:.1f} s")
