"""Against another local user: the Postgres server user is kept apart from root (its own group,
no supplementary groups), and no secret file is ever readable by others, not even for a moment."""

from __future__ import annotations

import grp
import os
import pwd
import secrets
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import make_settings, start_postgres
from mfcolab import postgres
from mfcolab.postgres import Postgres

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="the server user exists only when mfcolab runs as root")


def _ids(pid: int) -> dict[str, list[int]]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    fields = dict(line.split(":", 1) for line in lines)
    return {name: [int(value) for value in fields[name].split()] for name in ("Uid", "Gid", "Groups")}


@as_root
def test_postgres_runs_with_the_server_users_own_group_and_no_other(tmp_path: Path) -> None:
    pg = start_postgres(make_settings(tmp_path))
    try:
        assert pg.pid is not None
        entry = pwd.getpwnam(postgres.SYSTEM_USER)
        assert grp.getgrgid(entry.pw_gid).gr_name == postgres.SYSTEM_USER
        ids = _ids(pg.pid)
        assert ids == {"Uid": [entry.pw_uid] * 4, "Gid": [entry.pw_gid] * 4, "Groups": []}
        # initdb ran the same way: what it created belongs to the server user's group, not root's.
        assert (pg.pgdata / "PG_VERSION").stat().st_gid == entry.pw_gid
    finally:
        pg.stop(10)


@pytest.fixture()
def throwaway_user() -> Iterator[str]:
    name = f"mfct-{secrets.token_hex(4)}"
    yield name
    subprocess.run(["userdel", name], capture_output=True, check=False)
    subprocess.run(["groupdel", name], capture_output=True, check=False)


@as_root
@pytest.mark.parametrize("old_group", ["root", "nogroup"])
def test_an_older_server_user_on_a_shared_group_gets_its_own(throwaway_user: str, old_group: str) -> None:
    subprocess.run(["useradd", "--system", "--no-create-home", "--no-user-group", "-g", old_group,
                    "--shell", "/usr/sbin/nologin", throwaway_user], check=True, capture_output=True)
    assert grp.getgrgid(pwd.getpwnam(throwaway_user).pw_gid).gr_name == old_group
    postgres.give_own_group(throwaway_user)
    gid = pwd.getpwnam(throwaway_user).pw_gid
    assert grp.getgrgid(gid).gr_name == throwaway_user and gid != 0
    assert grp.getgrgid(gid).gr_mem == []
    postgres.give_own_group(throwaway_user)  # already its own: nothing to do
    assert pwd.getpwnam(throwaway_user).pw_gid == gid


class _Watcher(threading.Thread):
    """A local user polling a folder: records the mode of every file seen there."""

    def __init__(self, folder: Path) -> None:
        super().__init__(daemon=True)
        self.folder = folder
        self.modes: dict[str, set[int]] = {}
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                names = os.listdir(self.folder)
            except OSError:
                continue
            for name in names:
                try:
                    self.modes.setdefault(name, set()).add(stat.S_IMODE(os.lstat(self.folder / name).st_mode))
                except OSError:
                    pass


def test_the_initdb_password_file_is_private_from_its_first_moment(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    settings.run_dir.mkdir(parents=True)
    watcher = _Watcher(settings.run_dir)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # let the watcher look as often as a separate process would
    watcher.start()
    try:
        Postgres(settings, "initdb-password-test").initialize()
    finally:
        watcher.stopping.set()
        watcher.join(10)
        sys.setswitchinterval(interval)
    seen = {name: modes for name, modes in watcher.modes.items() if "initdb-password" in name}
    assert seen, "the watcher never saw the password file"
    assert {name: sorted(oct(mode) for mode in modes if mode & 0o077) for name, modes in seen.items()} == {name: [] for name in seen}
    assert not (settings.run_dir / "initdb-password").exists()
