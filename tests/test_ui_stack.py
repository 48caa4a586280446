"""`mfcolab up` with the built-in UI (`--ui native`, the default), as a user runs it: the release
downloaded from a stand-in of GitHub's release URL, reused from the root folder by the next
machine, and a stack that keeps its API when no bundle can be had."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
import requests

from helpers import free_port
from mfcolab.web.static import LOG_POLL_SCRIPT
from stack_helpers import Stack
from ui_release import TAG, ReleaseServer

pytestmark = pytest.mark.slow


def get(stack: Stack, path: str, **headers: str) -> requests.Response:
    return requests.get(stack.url + path, headers={"x-api-key": stack.key, **headers}, timeout=30)


def test_up_downloads_the_ui_once_and_the_next_machine_reuses_it(tmp_path: Path, release: ReleaseServer) -> None:
    stack = Stack(tmp_path / "first", free_port(), free_port())
    stack.tmp.mkdir()
    try:
        started = stack.up("--ui-bundle", release.release_url)
        assert f"Metaflow UI:      {stack.url}/  (sign in at {stack.url}/login with the access key)" in started.stdout
        assert "the Metaflow UI is off" not in started.stderr
        index = get(stack, "/HelloFlow/12/start/3")  # a deep link gets the app
        assert index.status_code == 200 and '<script>window.METAFLOW_SERVICE="/api";</script>' + LOG_POLL_SCRIPT + "</head>" in index.text
        assert get(stack, "/api/features").status_code == 200
        assert get(stack, "/api/nowhere").status_code == 404
        keyless = requests.get(stack.url + "/", headers={"Accept": "text/html"}, timeout=30, allow_redirects=False)
        assert keyless.status_code in (302, 303, 401) and "METAFLOW_SERVICE" not in keyless.text
    finally:
        stack.down()
    archive = stack.root / "ui" / f"metaflow-ui-{TAG}.zip"
    assert archive.is_file() and (stack.root / "ui" / f"metaflow-ui-{TAG}.zip.sha256").is_file()
    assert len(release.requests) == 1

    # A new machine: same root folder, fresh local disk, and the release URL no longer answers.
    release.close()
    again = Stack(tmp_path / "second", free_port(), free_port(), shared_root=stack.root)
    again.tmp.mkdir()
    try:
        started = again.up("--ui-bundle", release.release_url)
        assert "the Metaflow UI is off" not in started.stderr
        assert 'window.METAFLOW_SERVICE="/api"' in get(again, "/").text
    finally:
        again.down()
    assert len(release.requests) == 1

    # The zip changed in the shared folder: refused, and the copy unpacked before stays in use.
    with zipfile.ZipFile(archive, "a") as bundle:
        bundle.writestr("static/js/extra.js", "alert('changed')")
    try:
        started = again.up("--ui-bundle", release.release_url)
        said = [line for line in started.stderr.splitlines() if "Metaflow UI" in line]
        assert len(said) == 1 and said[0].startswith("the Metaflow UI stays as unpacked before: ")
        assert "changed since it was downloaded" in said[0]
        assert get(again, "/static/js/extra.js").status_code == 404
        assert 'window.METAFLOW_SERVICE="/api"' in get(again, "/").text
    finally:
        again.down()


def test_up_without_a_bundle_says_what_to_do_and_keeps_the_api(tmp_path: Path) -> None:
    nowhere = ReleaseServer()
    nowhere.close()
    stack = Stack(tmp_path, free_port(), free_port())
    try:
        started = stack.up("--ui-bundle", nowhere.release_url)
        off = [line for line in started.stderr.splitlines() if "Metaflow UI" in line]
        assert len(off) == 1, started.stderr
        assert off[0].startswith("the Metaflow UI is off: the Metaflow UI could not be downloaded")
        assert "--ui-bundle" in off[0]
        assert "Metaflow UI:      off (no UI bundle: see above)" in started.stdout
        assert stack.status()["ready"]
        assert get(stack, "/metadata/ping").status_code == 200
        assert get(stack, "/api/features").status_code == 200
        landing = get(stack, "/")
        assert landing.status_code == 200 and landing.json()["ui"] is None
    finally:
        stack.down()


def test_ui_none_serves_no_ui_and_no_api(tmp_path: Path) -> None:
    stack = Stack(tmp_path, free_port(), free_port())
    try:
        started = stack.up("--ui", "none")
        assert "Metaflow UI:      off (--ui none)" in started.stdout
        assert "the Metaflow UI is off" not in started.stderr
        assert not (stack.root / "ui").exists()
        assert json.loads(get(stack, "/").text)["ui"] is None
        assert get(stack, "/api/features").status_code == 404
    finally:
        stack.down()
