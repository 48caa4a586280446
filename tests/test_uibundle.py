"""The Metaflow UI bundle: downloaded once from a stand-in of the GitHub release (the real upstream
build, zipped here), its digest recorded and checked, another copy through --ui-bundle, and hostile
zips from the shared folder refused without writing anything."""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import stat
import threading
import zipfile
from pathlib import Path

import pytest

from helpers import make_settings
from mfcolab.errors import UiBundleError
from mfcolab.supervisor.stack import fetch_ui_bundle
from mfcolab.web import uibundle
from mfcolab.web.static import StaticUI
from mfcolab.web.uibundle import (
    UiRelease,
    digest_file,
    ensure_bundle,
    install_zip,
    static_dir,
)
from ui_release import RELEASE_PATH, TAG, UPSTREAM_UI, ReleaseServer


@pytest.fixture(autouse=True)
def _no_bundle_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests choose the bundle themselves (the pinned release from the stand-in, or --ui-bundle)."""
    monkeypatch.delenv("MFCOLAB_UI_BUNDLE")


def tree(folder: Path) -> dict[str, str]:
    """Every file under `folder` with its digest (what "nothing changed" means)."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_the_release_is_downloaded_once_and_served_from_the_root_folder(release: ReleaseServer, tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    pinned = UiRelease(TAG, base_url=release.release_base)

    served = ensure_bundle(settings, release=pinned, progress=False)

    archive = settings.root / "ui" / f"metaflow-ui-{TAG}.zip"
    assert release.requests == [RELEASE_PATH]
    assert archive.read_bytes() == release.files[RELEASE_PATH]
    assert digest_file(archive).read_text().strip() == hashlib.sha256(archive.read_bytes()).hexdigest()
    assert served == static_dir(settings) == settings.local / "ui-static"
    assert tree(served) == tree(UPSTREAM_UI)
    assert 'window.METAFLOW_SERVICE="/api"' in StaticUI(served).index.decode()

    # A new machine (fresh local folder), same root folder, no network: the zip on "Drive" is used.
    release.close()
    fresh = make_settings(tmp_path, local=tmp_path / "local2")
    assert tree(ensure_bundle(fresh, release=pinned, progress=False)) == tree(UPSTREAM_UI)
    assert release.requests == [RELEASE_PATH]


def test_a_zip_that_changed_after_its_first_download_is_refused(release: ReleaseServer, tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    pinned = UiRelease(TAG, base_url=release.release_base)
    ensure_bundle(settings, release=pinned, progress=False)
    served_before = tree(static_dir(settings))
    archive = settings.root / "ui" / f"metaflow-ui-{TAG}.zip"
    with zipfile.ZipFile(archive, "a") as bundle:
        bundle.writestr("static/js/extra.js", "alert('changed')")

    with pytest.raises(UiBundleError) as caught:
        ensure_bundle(settings, release=pinned, progress=False)
    assert "changed since it was downloaded" in caught.value.message and "delete" in caught.value.hint
    assert tree(static_dir(settings)) == served_before

    # The recorded digest also guards a fresh download when only the zip was removed.
    archive.unlink()
    release.files[RELEASE_PATH] = b"PK\x05\x06" + bytes(18)  # an empty zip: other bytes than recorded
    with pytest.raises(UiBundleError) as caught:
        ensure_bundle(settings, release=pinned, progress=False)
    assert "checksum mismatch" in caught.value.message
    assert not archive.exists()


def test_no_network_and_no_copy_is_one_error_with_the_fix(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    nowhere = ReleaseServer()
    nowhere.close()  # a closed port: nothing answers
    with pytest.raises(UiBundleError) as caught:
        ensure_bundle(settings, release=UiRelease(TAG, base_url=nowhere.release_base), progress=False)
    assert "could not be downloaded" in caught.value.message
    assert "--ui-bundle" in caught.value.hint
    assert not (settings.local / "ui-static").exists()
    assert [p.name for p in (settings.root / "ui").iterdir()] in ([], [f"metaflow-ui-{TAG}.zip.unchecked.part"])


def test_up_without_network_tries_the_ui_download_once_and_says_what_to_do_in_one_line(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A machine with no way out: every connection is dropped. `up`'s fetch step asks once, logs no
    warning of its own, and shows one line with the fix; the stack then starts without the UI."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    accepted: list[int] = []
    done = threading.Event()

    def drop_every_connection() -> None:
        while not done.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            accepted.append(1)
            connection.close()

    dropper = threading.Thread(target=drop_every_connection, daemon=True)
    dropper.start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/metaflow-ui-{TAG}.zip"
    lines: list[str] = []
    try:
        with caplog.at_level(logging.WARNING):
            fetch_ui_bundle(make_settings(tmp_path, ui_bundle=url), lines.append)
    finally:
        done.set()
        dropper.join(10)
        listener.close()
    assert len(accepted) == 1
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert len(lines) == 1 and lines[0].startswith("the Metaflow UI is off: the Metaflow UI could not be downloaded")
    assert "mfcolab up again when the network is back" in lines[0] and "--ui-bundle" in lines[0]


def test_a_missing_release_is_refused(release: ReleaseServer, tmp_path: Path) -> None:
    with pytest.raises(UiBundleError) as caught:
        ensure_bundle(make_settings(tmp_path), release=UiRelease("v0.0.0", base_url=release.release_base), progress=False)
    assert "HTTP 404" in caught.value.message


def test_ui_bundle_takes_a_folder_a_zip_or_a_url(release: ReleaseServer, upstream_ui_zip: Path, tmp_path: Path) -> None:
    folder = make_settings(tmp_path / "a", ui_bundle=str(UPSTREAM_UI))
    assert tree(ensure_bundle(folder, progress=False)) == tree(UPSTREAM_UI)

    local_zip = make_settings(tmp_path / "b", ui_bundle=str(upstream_ui_zip))
    assert tree(ensure_bundle(local_zip, progress=False)) == tree(UPSTREAM_UI)
    assert not (local_zip.root / "ui").exists()  # a user's own zip is used where it is

    url = make_settings(tmp_path / "c", ui_bundle=release.release_url)
    assert tree(ensure_bundle(url, progress=False)) == tree(UPSTREAM_UI)
    assert (url.root / "ui" / f"metaflow-ui-{TAG}.zip.sha256").is_file()

    with pytest.raises(UiBundleError, match="does not exist"):
        ensure_bundle(make_settings(tmp_path / "d", ui_bundle=str(tmp_path / "nothing")), progress=False)


def test_a_folder_bundle_skips_links(tmp_path: Path) -> None:
    source = tmp_path / "bundle"
    (source / "static" / "js").mkdir(parents=True)
    (source / "index.html").write_text("<html><head></head></html>")
    (source / "static" / "js" / "main.1.js").write_text("1")
    secret = tmp_path / "access_key"
    secret.write_text("the key")
    (source / "static" / "key.txt").symlink_to(secret)
    (source / "linked").symlink_to(tmp_path)
    settings = make_settings(tmp_path / "s", ui_bundle=str(source))
    assert set(tree(ensure_bundle(settings, progress=False))) == {"index.html", "static/js/main.1.js"}


# ---------------------------------------------------------------- hostile zips


def hostile_zip(path: Path, extra: list[tuple[zipfile.ZipInfo | str, bytes]], *, base: bool = True) -> Path:
    with zipfile.ZipFile(path, "w") as bundle:
        if base:
            bundle.writestr("index.html", "<html><head></head></html>")
            bundle.writestr("static/js/main.abc.js", "console.log(1)")
        for info, data in extra:
            bundle.writestr(info, data)
    return path


def symlink_member(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    info.create_system = 3
    return info


def fifo_member(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFIFO | 0o644) << 16
    return info


HOSTILE = {
    "zip-slip": ([("../escaped.txt", b"x")], "points outside"),
    "deep zip-slip": ([("static/../../escaped.txt", b"x")], "points outside"),
    "absolute": ([("/tmp/escaped.txt", b"x")], "points outside"),
    "backslash": ([("..\\escaped.txt", b"x")], "malformed name"),
    "symlink": ([(symlink_member("static/js/key"), b"../../../root/access_key")],
                "not a regular file"),
    "fifo": ([(fifo_member("static/pipe"), b"")], "not a regular file"),
    "duplicate": ([("index.html", b"<html>again</html>")], "appears twice"),
}


@pytest.mark.filterwarnings("ignore:Duplicate name")
@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_zip_is_refused_and_nothing_is_written(tmp_path: Path, case: str) -> None:
    extra, problem = HOSTILE[case]
    archive = hostile_zip(tmp_path / "bundle.zip", extra)
    work = tmp_path / "work"
    target = work / "local" / "ui-static"
    before = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))
    with pytest.raises(UiBundleError) as caught:
        install_zip(archive, target)
    assert problem in caught.value.message
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == before
    assert not Path("/tmp/escaped.txt").exists()


@pytest.mark.parametrize(("members", "problem"), [
    ([("static/js/main.abc.js", b"1")], "no index.html"),
    ([("index.html", b"<html></html>"), ("static/js/other.js", b"1")], "no static/js/main.*.js"),
    ([("sub/index.html", b"<html></html>"), ("sub/static/js/main.1.js", b"1")], "no index.html"),
])
def test_a_zip_without_the_ui_is_refused(tmp_path: Path, members: list[tuple[str, bytes]], problem: str) -> None:
    archive = hostile_zip(tmp_path / "bundle.zip", members, base=False)  # type: ignore[arg-type]
    with pytest.raises(UiBundleError, match=problem.replace("*", r"\*").replace(".", r"\.")):
        install_zip(archive, tmp_path / "ui-static")
    assert not (tmp_path / "ui-static").exists()


def test_not_a_zip_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "bundle.zip"
    archive.write_bytes(os.urandom(4096))
    with pytest.raises(UiBundleError, match="not a valid zip"):
        install_zip(archive, tmp_path / "ui-static")


def test_size_limits_hold(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A small bomb: 3 MB of zeros compresses to a few KB. The limits are lowered to its scale.
    archive = hostile_zip(tmp_path / "bundle.zip", [], base=False)
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as bundle:
        bundle.writestr("index.html", "<html><head></head></html>")
        bundle.writestr("static/js/main.abc.js", b"\x00" * 3 * 1024**2)
    monkeypatch.setattr(uibundle, "MAX_UNPACKED_BYTES", 2 * 1024**2)
    with pytest.raises(UiBundleError, match="unpacks to more than 2 MB"):
        install_zip(archive, tmp_path / "ui-static")
    monkeypatch.setattr(uibundle, "MAX_MEMBERS", 1)
    with pytest.raises(UiBundleError, match="2 entries"):
        install_zip(archive, tmp_path / "ui-static")
    monkeypatch.setattr(uibundle, "MAX_ARCHIVE_BYTES", 1024)
    with pytest.raises(UiBundleError, match="more than a UI release can be"):
        install_zip(archive, tmp_path / "ui-static")
    assert not (tmp_path / "ui-static").exists()


def test_a_member_that_unpacks_to_more_than_it_declares_is_stopped(tmp_path: Path) -> None:
    archive = hostile_zip(tmp_path / "bundle.zip", [("static/big.bin", b"\x00" * 100_000)])
    data = bytearray(archive.read_bytes())
    # Lower the declared size in the member's central directory entry (where zipfile reads sizes).
    header = data.find(b"static/big.bin", data.find(b"PK\x01\x02")) - 46
    assert data[header:header + 4] == b"PK\x01\x02"
    data[header + 24:header + 28] = (10).to_bytes(4, "little")
    archive.write_bytes(bytes(data))
    with pytest.raises(UiBundleError, match="more than it declares|cannot be unpacked"):
        install_zip(archive, tmp_path / "ui-static")
    assert not (tmp_path / "ui-static").exists()


def test_a_download_larger_than_a_release_is_cut_off(release: ReleaseServer, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(uibundle, "MAX_ARCHIVE_BYTES", 100_000)  # the stand-in's zip is larger
    settings = make_settings(tmp_path)
    with pytest.raises(UiBundleError, match="larger than the 100,000 bytes allowed"):
        ensure_bundle(settings, release=UiRelease(TAG, base_url=release.release_base), progress=False)
    assert list((settings.root / "ui").iterdir()) == []
