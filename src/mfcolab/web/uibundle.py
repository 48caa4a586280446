"""The Metaflow UI bundle (the official metaflow-ui release) that the front door serves at `/`.

    release zip  the pinned GitHub release, downloaded once into <root>/ui/ (so the next machine
                 finds it on Drive); its SHA-256 is recorded beside it on that first download
                 and checked on every later `up`
    --ui-bundle  another copy instead: a folder, a zip, or an http(s) URL of a zip
    ui-static    <local>/ui-static, the unpacked bundle the web process serves (the folder the
                 official UI path fills from its image, see official.ui_static_dir)

The zip comes from a folder every notebook that mounts it may write to, so it is unpacked as
hostile input: regular files only (no links, no device files), no name that leaves the folder,
limits on the archive's size, its members and what they unpack to. A bundle is only installed
after `index.html` and `static/js/main.*.js` were found in it.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..download import download_file, file_sha256
from ..errors import TunnelError, UiBundleError
from ..files import write_atomic
from ..settings import Settings
from ..sharedfile import read_regular

log = logging.getLogger(__name__)

MAX_ARCHIVE_BYTES = 100 * 1024**2  # the v1.3.14 release with its source maps is a few MB
MAX_UNPACKED_BYTES = 300 * 1024**2
MAX_MEMBERS = 5000
_CHUNK = 256 * 1024
_RETRY_HINT = "mfcolab up again when the network is back, or pass --ui-bundle PATH|URL (a metaflow-ui release zip or folder)"


@dataclass(frozen=True)
class UiRelease:
    tag: str
    base_url: str = "https://github.com/Netflix/metaflow-ui/releases/download"

    @property
    def filename(self) -> str:
        return f"metaflow-ui-{self.tag}.zip"

    @property
    def url(self) -> str:
        return f"{self.base_url}/{self.tag}/{self.filename}"


# The one place the pinned release lives.
PINNED_RELEASE = UiRelease("v1.3.14")


def bundle_dir(settings: Settings) -> Path:
    """Where downloaded release zips are kept, in the root folder (it outlives the machine)."""
    return settings.root / "ui"


def static_dir(settings: Settings) -> Path:
    """The unpacked bundle the front door serves (shared with the official UI path)."""
    from ..containers.official import ui_static_dir  # here, not at the top: official imports this module

    return ui_static_dir(settings)


def digest_file(archive: Path) -> Path:
    return archive.with_name(archive.name + ".sha256")


def ensure_bundle(settings: Settings, *, release: UiRelease = PINNED_RELEASE, progress: bool = True) -> Path:
    """Make <local>/ui-static hold a checked bundle and return it; download the zip first if needed.

    Raises UiBundleError with a hint when no usable bundle can be had."""
    given = settings.ui_bundle
    if given and not given.startswith(("http://", "https://")):
        source = Path(given).expanduser()
        if source.is_dir():
            return install_folder(source, static_dir(settings))
        if source.is_file():
            return install_zip(source, static_dir(settings))
        raise UiBundleError(f"the UI bundle {source} does not exist",
                            "pass --ui-bundle with a metaflow-ui release zip or unpacked folder")
    url, name = (given, _name_in_url(given)) if given else (release.url, release.filename)
    archive = fetch_release(url, bundle_dir(settings) / name, progress=progress)
    return install_zip(archive, static_dir(settings), digest=file_sha256(archive))


def fetch_release(url: str, archive: Path, *, progress: bool = True) -> Path:
    """The release zip at `archive`: the copy already there if its digest is the one recorded on
    its first download, else downloaded now (and its digest recorded once it proved a valid bundle)."""
    recorded = _read_digest(digest_file(archive))
    if archive.is_file():
        if recorded is None:
            raise UiBundleError(f"the UI bundle {archive} has no recorded digest ({digest_file(archive).name})",
                                f"delete {archive} so that mfcolab up downloads it again, or pass --ui-bundle")
        actual = file_sha256(archive)
        if actual != recorded:
            raise UiBundleError(f"the UI bundle {archive} changed since it was downloaded "
                                f"(SHA-256 {actual}, recorded {recorded})",
                                f"delete {archive} and {digest_file(archive).name} to download it again")
        return archive
    log.info("downloading the Metaflow UI from %s", url)
    try:
        # One attempt: without the UI the stack still starts, and the error says what to do.
        download_file(url, archive, recorded, progress=progress, mode=0o644, attempts=1, max_bytes=MAX_ARCHIVE_BYTES)
    except TunnelError as exc:
        raise UiBundleError(f"the Metaflow UI could not be downloaded: {exc.message}", _RETRY_HINT) from exc
    try:
        check_zip(archive)
    except UiBundleError:
        archive.unlink(missing_ok=True)
        raise
    if recorded is None:
        write_atomic(digest_file(archive), [f"{file_sha256(archive)}\n".encode()])
    return archive


def check_zip(archive: Path) -> list[zipfile.ZipInfo]:
    """The members to unpack from `archive`, after checking it is a bundle that is safe to unpack."""
    size = archive.stat().st_size
    if size > MAX_ARCHIVE_BYTES:
        raise UiBundleError(f"the UI bundle {archive} is {size // 1024**2} MB, more than a UI release can be",
                            "pass --ui-bundle with a metaflow-ui release zip")
    try:
        with zipfile.ZipFile(archive) as bundle:
            members = bundle.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError) as exc:
        raise UiBundleError(f"the UI bundle {archive} is not a valid zip ({exc})",
                            f"delete {archive} and run mfcolab up again, or pass --ui-bundle") from exc
    if len(members) > MAX_MEMBERS:
        raise UiBundleError(f"the UI bundle {archive} has {len(members)} entries, more than a UI release can have",
                            "pass --ui-bundle with a metaflow-ui release zip")
    names: set[str] = set()
    files = []
    for member in members:
        problem = _member_problem(member, names)
        if problem:
            raise UiBundleError(f"the UI bundle {archive} is unsafe to unpack: {member.filename!r} {problem}",
                                f"delete {archive} and run mfcolab up again, or pass --ui-bundle")
        names.add(member.filename.rstrip("/"))
        if not member.is_dir():
            files.append(member)
    if sum(m.file_size for m in files) > MAX_UNPACKED_BYTES:
        raise UiBundleError(f"the UI bundle {archive} unpacks to more than {MAX_UNPACKED_BYTES // 1024**2} MB",
                            "pass --ui-bundle with a metaflow-ui release zip")
    require_ui_files({m.filename for m in files}, str(archive))
    return files


def _member_problem(member: zipfile.ZipInfo, seen: set[str]) -> str:
    """Why `member` must not be unpacked, or ""."""
    name = member.filename
    if not name or "\x00" in name or "\\" in name:
        return "has a malformed name"
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]):
        return "points outside the bundle"
    kind = stat.S_IFMT(member.external_attr >> 16)  # 0 when the zip records no Unix file type
    if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
        return "is not a regular file (a link or a device)"
    if name.rstrip("/") in seen:
        return "appears twice"
    return ""


def require_ui_files(names: set[str], where: str) -> None:
    """`names` (paths relative to the bundle's top) must hold the UI's entry page and script."""
    if "index.html" not in names:
        raise UiBundleError(f"{where} has no index.html at its top", "pass --ui-bundle with a metaflow-ui release")
    if not any(_is_main_script(n) for n in names):
        raise UiBundleError(f"{where} has no static/js/main.*.js", "pass --ui-bundle with a metaflow-ui release")


def _is_main_script(name: str) -> bool:
    path = PurePosixPath(name)
    return path.parent == PurePosixPath("static/js") and path.name.startswith("main.") and path.suffix == ".js"


def install_zip(archive: Path, target: Path, *, digest: str | None = None) -> Path:
    """Unpack a checked `archive` into `target` (replaced whole); skipped when `target` already
    came from a zip with the same digest."""
    digest = digest or file_sha256(archive)
    marker = f"zip sha256:{digest}"
    if (target / "index.html").is_file() and _read(source_marker(target)) == marker:
        return target
    members = check_zip(archive)

    def fill(staging: Path) -> None:
        with zipfile.ZipFile(archive) as bundle:
            for member in members:
                _unpack_member(bundle, member, staging)

    return _replace_folder(target, fill, marker)


def _unpack_member(bundle: zipfile.ZipFile, member: zipfile.ZipInfo, staging: Path) -> None:
    """Copy one member out, never more bytes than it declares (zipfile checks the CRC at the end)."""
    dest = staging.joinpath(*PurePosixPath(member.filename).parts)
    dest.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    try:
        with bundle.open(member) as source, open(dest, "xb") as out:
            while chunk := source.read(_CHUNK):
                written += len(chunk)
                if written > member.file_size:
                    raise UiBundleError(f"{member.filename!r} in the UI bundle unpacks to more than it declares",
                                        "delete the bundle zip and run mfcolab up again")
                out.write(chunk)
    except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError) as exc:
        raise UiBundleError(f"{member.filename!r} in the UI bundle cannot be unpacked ({exc})",
                            "delete the bundle zip and run mfcolab up again, or pass --ui-bundle") from exc
    os.chmod(dest, 0o644)


def install_folder(source: Path, target: Path) -> Path:
    """Copy an unpacked bundle's regular files into `target` (replaced whole); links are skipped."""
    source = source.resolve()
    files = _regular_files(source)
    require_ui_files({p.relative_to(source).as_posix() for p in files}, str(source))
    if sum(p.stat().st_size for p in files) > MAX_UNPACKED_BYTES:
        raise UiBundleError(f"the UI bundle {source} holds more than {MAX_UNPACKED_BYTES // 1024**2} MB",
                            "pass --ui-bundle with a metaflow-ui release folder")

    def fill(staging: Path) -> None:
        for path in files:
            dest = staging / path.relative_to(source)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dest, follow_symlinks=False)
            os.chmod(dest, 0o644)

    return _replace_folder(target, fill, f"folder {source}")


def _regular_files(top: Path) -> list[Path]:
    found = []
    for folder, dirs, names in os.walk(top, followlinks=False):
        dirs[:] = [d for d in dirs if not (Path(folder) / d).is_symlink()]
        for name in names:
            path = Path(folder) / name
            if stat.S_ISREG(path.lstat().st_mode):
                found.append(path)
    return found


def source_marker(target: Path) -> Path:
    """The file beside `target` that says where its contents came from."""
    return target.with_name(target.name + ".source")


def replace_folder(target: Path, fill: Callable[[Path], object]) -> Path:
    """Fill a fresh staging folder with `fill`, then swap it in for `target` (so `target` is
    never half-written)."""
    staging = target.with_name(target.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        fill(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    old = target.with_name(target.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    staging.rename(target)
    shutil.rmtree(old, ignore_errors=True)
    return target


def _replace_folder(target: Path, fill: Callable[[Path], None], marker: str) -> Path:
    source_marker(target).unlink(missing_ok=True)
    replace_folder(target, fill)
    source_marker(target).write_text(marker)
    return target


def _name_in_url(url: str) -> str:
    """A safe file name for the zip a URL points to."""
    last = url.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    cleaned = "".join(c for c in last if c.isalnum() or c in "-_.")
    return cleaned if cleaned.endswith(".zip") and not cleaned.startswith(".") else "metaflow-ui-custom.zip"


def _read_digest(path: Path) -> str | None:
    text = _read(path).strip().lower()
    return text if len(text) == 64 and all(c in "0123456789abcdef" for c in text) else None


def _read(path: Path) -> str:
    """A small text file (a digest, a marker), or "" for a missing, unreadable or unexpected one."""
    try:
        return read_regular(path, 4096).decode()
    except (OSError, UnicodeDecodeError):
        return ""

