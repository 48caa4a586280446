"""The UI's files at / (mfcolab.web.static): index.html with the service URL for every client-side
route, bundle files as they are, nothing outside the bundle."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from frontdoor_helpers import (
    KEY,
    Stack,
    raw_exchange,
    status_of,
    with_key,
)
from mfcolab.errors import ConfigError
from mfcolab.web.frontdoor import create_app
from mfcolab.web.static import LOG_POLL_SCRIPT, StaticUI, inject_service_url


def test_index_gets_the_relative_service_url(stack: Stack, http: requests.Session) -> None:
    for path in ["/", "/index.html", "/flows/HelloFlow/runs/3", "/runs?status=running", "/a/b/c.d"]:
        answer = http.get(stack.door + path, headers=with_key())
        assert answer.status_code == 200, path
        assert answer.headers["Content-Type"].startswith("text/html")
        assert '<script>window.METAFLOW_SERVICE="/api";</script></head>' in answer.text
        assert answer.text.count("METAFLOW_SERVICE") == 1


def test_bundle_files_are_served_as_they_are(stack: Stack, http: requests.Session) -> None:
    script = http.get(f"{stack.door}/static/js/main.js", headers=with_key())
    assert script.status_code == 200 and script.text == "console.log('ui');"
    assert http.get(f"{stack.door}/favicon.ico", headers=with_key()).content == b"\x00\x01icon"
    assert http.head(f"{stack.door}/static/js/main.js", headers=with_key()).status_code == 200
    missing = http.get(f"{stack.door}/static/js/nope.js", headers=with_key())
    assert missing.status_code == 404 and missing.json()["message"]


def test_paths_outside_the_bundle_are_not_served(stack: Stack) -> None:
    for path in ["/../secret.txt", "/%2e%2e/secret.txt", "/static/..%2f..%2fsecret.txt", "//etc/passwd"]:
        answer = raw_exchange(stack.door, f"GET {path} HTTP/1.1\r\nHost: x\r\nx-api-key: {KEY}\r\n\r\n".encode())
        assert status_of(answer) in (200, 400, 404), path
        assert b"outside the bundle" not in answer and b"root:" not in answer, path


def test_inject_service_url_places_the_script_before_head() -> None:
    assert inject_service_url("<HTML><HEAD></HEAD></HTML>", "/api") == (
        '<HTML><HEAD><script>window.METAFLOW_SERVICE="/api";</script></HEAD></HTML>'
    )
    assert inject_service_url("<p>no head</p>", "/api").startswith("<script>window.METAFLOW_SERVICE=")


def test_the_native_uis_index_asks_for_a_running_tasks_log_every_two_seconds(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("<html><head><title>UI</title></head><body></body></html>")
    index = StaticUI(tmp_path, live_logs=True).index.decode()
    assert index.index('window.METAFLOW_SERVICE="/api"') < index.index(LOG_POLL_SCRIPT) < index.index("</head>")
    assert LOG_POLL_SCRIPT not in StaticUI(tmp_path).index.decode()  # the official UI backend's page
    assert "args[1]===20000){args[1]=2000;}" in LOG_POLL_SCRIPT


def test_a_bundle_without_index_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        create_app(KEY, None, static_dir=tmp_path)
