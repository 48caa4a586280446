"""Against another local user: the Postgres server user is kept apart from root (its own group,
no supplementary groups), and no secret file is ever readable by others, not even for a moment."""

from __future__ import annotations

import grp
import os
import pwd
import re
import secrets
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import make_settings, start_postgres
from mfcolab import postgres
from mfcolab.containers.container_user import ensure_container_user
from mfcolab.errors import ConfigError
from mfcolab.postgres import Postgres

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="the server user exists only when mfcolab runs as root")


def _ids(pid: int) -> dict[str, list[int]]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    fields = dict(line.split(":", 1) for line in lines)
    return {name: [int(value) for value in fields[name].split()] for name in ("Uid", "Gid", "Groups")}


@as_root
def test_postgres_runs_with_the_server_users_own_group_and_no_other(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    pg = start_postgres(settings)
    try:
        assert pg.pid is not None
        entry = pwd.getpwnam(settings.pg_user)
        assert grp.getgrgid(entry.pw_gid).gr_name == settings.pg_user
        ids = _ids(pg.pid)
        assert ids == {"Uid": [entry.pw_uid] * 4, "Gid": [entry.pw_gid] * 4, "Groups": []}
        # initdb ran the same way: what it created belongs to the server user's group, not root's.
        assert (pg.pgdata / "PG_VERSION").stat().st_gid == entry.pw_gid
    finally:
        pg.stop(10)


@pytest.fixture()
def throwaway_user() -> Iterator[str]:
    """A user name to create in the test (not a system user: its id never competes with the
    shared server user's); removed afterwards, with its group."""
    name = f"mfct-{secrets.token_hex(4)}"
    yield name
    subprocess.run(["userdel", name], capture_output=True, check=False)
    subprocess.run(["groupdel", name], capture_output=True, check=False)


@as_root
@pytest.mark.parametrize("old_group", ["root", "nogroup"])
def test_an_older_server_user_on_a_shared_group_gets_its_own(tmp_path: Path, throwaway_user: str, old_group: str) -> None:
    settings = make_settings(tmp_path, pg_user=throwaway_user)
    subprocess.run(["useradd", "--no-create-home", "--no-user-group", "-g", old_group,
                    "--shell", "/usr/sbin/nologin", throwaway_user], check=True, capture_output=True)
    assert grp.getgrgid(pwd.getpwnam(throwaway_user).pw_gid).gr_name == old_group
    postgres.give_own_group(settings)
    gid = pwd.getpwnam(throwaway_user).pw_gid
    assert grp.getgrgid(gid).gr_name == throwaway_user and gid != 0
    assert grp.getgrgid(gid).gr_mem == []
    postgres.give_own_group(settings)  # already its own: nothing to do
    assert pwd.getpwnam(throwaway_user).pw_gid == gid


@as_root
def test_the_server_user_is_created_with_a_group_of_its_name_left_behind(tmp_path: Path, throwaway_user: str) -> None:
    """A group that outlived its user (userdel keeps a group that is another user's) becomes the
    new user's own group; `useradd --user-group` alone refuses to create the user."""
    subprocess.run(["groupadd", throwaway_user], check=True, capture_output=True)
    postgres.ensure_server_user(make_settings(tmp_path, pg_user=throwaway_user))
    assert pwd.getpwnam(throwaway_user).pw_gid == grp.getgrnam(throwaway_user).gr_gid


@as_root
def test_the_containers_user_is_created_with_a_group_of_its_name_left_behind(throwaway_user: str) -> None:
    subprocess.run(["groupadd", throwaway_user], check=True, capture_output=True)
    entry = ensure_container_user(throwaway_user)
    assert entry.pw_gid == grp.getgrnam(throwaway_user).gr_gid


INITIALIZE = """
import sys
from mfcolab.postgres import Postgres
from mfcolab.settings import Settings
Postgres(Settings.resolve(root=sys.argv[1], local=sys.argv[2], pg_port=int(sys.argv[3]), tunnel=False), "pw").initialize()
"""
_CREATE = re.compile(r'open(?:at)?\((?:AT_FDCWD, )?"([^"]*initdb-password[^"]*)", ([A-Z_|]+), (0[0-7]+)\)')


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is installed by scripts/setup --test")
def test_the_initdb_password_file_is_private_from_its_first_moment(tmp_path: Path) -> None:
    """Every file the password is written to is created 0600 (a chmod afterwards leaves a window
    in which a local user polling the folder reads it). Observed in the real system calls."""
    settings = make_settings(tmp_path)
    trace = tmp_path / "trace"
    result = subprocess.run(["strace", "-f", "-e", "trace=open,openat", "-o", str(trace), sys.executable, "-c", INITIALIZE,
                             str(settings.root), str(settings.local), str(settings.pg_port)],
                            check=False, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    umask = os.umask(0o022)
    os.umask(umask)
    created = {match.group(1): int(match.group(3), 8) & ~umask for match in map(_CREATE.search, trace.read_text().splitlines())
               if match is not None and "O_CREAT" in match.group(2)}
    assert created, "the password file was never created"
    assert {path: oct(mode) for path, mode in created.items() if mode & 0o077} == {}
    assert (settings.pgdata / "PG_VERSION").exists() and not (settings.run_dir / "initdb-password").exists()


@pytest.fixture()
def private_home(tmp_path: Path, throwaway_user: str) -> Path:
    """A home folder (mode 0700) of a real user in the password database."""
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    home.chmod(0o700)
    subprocess.run(["useradd", "--no-create-home", "-d", str(home), "--shell", "/usr/sbin/nologin", throwaway_user],
                   check=True, capture_output=True)
    return home


@as_root
def test_a_database_inside_a_home_folder_is_refused_and_the_home_stays_closed(private_home: Path, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, local=private_home / "local")
    with pytest.raises(ConfigError, match=f"inside the home folder {private_home}") as refused:
        Postgres(settings, "pw").initialize()
    assert "--local" in refused.value.hint
    assert stat.S_IMODE(private_home.stat().st_mode) == 0o700


@as_root
def test_the_server_user_runs_a_copy_of_the_binaries_outside_every_home_folder(tmp_path: Path) -> None:
    binaries = postgres.bin_dir()
    assert binaries != postgres.wheel_bin_dir()
    assert postgres.SERVER_BINARIES in binaries.parents
    homes = {Path(entry.pw_dir) for entry in pwd.getpwall()}
    assert not homes & {binaries, *binaries.parents} - {Path("/")}
    assert "PostgreSQL" in postgres.run_pg_tool(make_settings(tmp_path), "postgres", ["--version"])  # as the server user


@as_root
def test_a_home_folder_opened_by_an_older_version_is_closed_again(private_home: Path) -> None:
    install = private_home / "venv" / "pginstall"
    install.mkdir(parents=True)
    (install / ".mfcolab-permissions").touch()
    private_home.chmod(0o711)
    postgres.close_home_folders_opened_before(install)
    assert stat.S_IMODE(private_home.stat().st_mode) == 0o700
    assert not (install / ".mfcolab-permissions").exists()
    private_home.chmod(0o711)  # the owner's own choice later on is left alone
    postgres.close_home_folders_opened_before(install)
    assert stat.S_IMODE(private_home.stat().st_mode) == 0o711
