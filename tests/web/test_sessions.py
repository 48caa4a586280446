"""Browser sessions (mfcolab.web.sessions) at a real front door: random per login, ended by
/logout and by a new key, kept across restarts of the web process, safe against a hostile file."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from frontdoor_helpers import (
    KEY,
    Stack,
    metadata_subapp,
)
from helpers import wait_until
from mfcolab.web.auth import COOKIE
from mfcolab.web.frontdoor import create_app


def door_with_files(stack: Stack, folder: Path, key: str = KEY) -> tuple[str, Path, Path]:
    """A door whose key lives in a file and whose sessions are kept in a file, as `web.py` builds it."""
    key_file, sessions_file = folder / "access_key", folder / "sessions.json"
    if not key_file.exists():
        key_file.write_text(key + "\n")
    door = stack.servers.serve(
        create_app(key_file.read_text().strip(), metadata_subapp(), key_file=key_file, sessions_file=sessions_file)
    )
    return door, key_file, sessions_file


def cookie_after_login(base: str, key: str = KEY) -> str:
    answer = requests.post(f"{base}/login", data={"key": key}, allow_redirects=False)
    assert answer.status_code == 303
    return answer.cookies[COOKIE]


def opens(base: str, cookie: str) -> bool:
    return requests.get(f"{base}/metadata/ping", cookies={COOKIE: cookie}).status_code == 200


def test_each_login_gets_its_own_random_session_and_logout_ends_it(stack: Stack, tmp_path: Path) -> None:
    door, _, sessions_file = door_with_files(stack, tmp_path)
    first, second = cookie_after_login(door), cookie_after_login(door)
    assert first != second and KEY not in first
    assert opens(door, first) and opens(door, second)
    out = requests.get(f"{door}/logout", cookies={COOKIE: first}, allow_redirects=False)
    assert out.status_code == 303
    assert not opens(door, first), "a cookie kept after /logout must not open the door"
    assert opens(door, second)
    stored = sessions_file.read_text()
    assert first not in stored and second not in stored
    assert sessions_file.stat().st_mode & 0o777 == 0o600


def test_sessions_outlive_the_web_process_and_a_new_key_ends_them(stack: Stack, tmp_path: Path) -> None:
    door, key_file, _ = door_with_files(stack, tmp_path)
    cookie = cookie_after_login(door)
    restarted, _, _ = door_with_files(stack, tmp_path)
    assert opens(restarted, cookie)
    key_file.write_text("a-brand-new-key-0123456789\n")
    wait_until(lambda: not opens(restarted, cookie), what="the running door to drop sessions of the old key")
    assert requests.get(f"{restarted}/metadata/ping", headers={"x-api-key": KEY}).status_code == 401
    assert requests.get(f"{restarted}/metadata/ping", headers={"x-api-key": "a-brand-new-key-0123456789"}).ok
    assert opens(restarted, cookie_after_login(restarted, "a-brand-new-key-0123456789"))


@pytest.mark.parametrize("content", [b"{not json", b'{"format": 1, "sessions": [1]}', b"\xff" * 10,
                                     b'{"format": 1, "sessions": {"zz": [1, 2], "' + b"a" * 64 + b'": ["x", 1]}}'])
def test_a_hostile_sessions_file_opens_nothing_and_breaks_nothing(stack: Stack, tmp_path: Path, content: bytes) -> None:
    door, _, sessions_file = door_with_files(stack, tmp_path)
    sessions_file.write_bytes(content)
    assert not opens(door, "a" * 43)
    assert opens(door, cookie_after_login(door))


def test_sessions_expire_when_idle_and_in_all(tmp_path: Path) -> None:
    from mfcolab.web import sessions

    now = [1_000_000.0]
    store = sessions.SessionStore(tmp_path / "sessions.json", clock=lambda: now[0])
    idle, busy = store.open(KEY), store.open(KEY)
    for _ in range(5):
        now[0] += sessions.IDLE / 2
        assert store.valid(KEY, busy)
    assert not store.valid(KEY, idle)
    now[0] += sessions.TOTAL
    assert not store.valid(KEY, busy)
    assert not sessions.SessionStore(tmp_path / "sessions.json", clock=lambda: now[0]).valid(KEY, busy)
