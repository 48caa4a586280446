"""Every command and option of `mfcolab` is exercised by a test that checks its effect.

`COVERAGE` maps each (command, option) to the tests that check what the option does (not only
its exit code). `test_every_option_has_a_listed_test` walks the command tree Typer builds (the
same tree `mfcolab <command> --help` prints) and fails on an option missing from the list, with
the line to add; a listed test that does not exist fails too. Options of hidden commands (the
relay `connect --watch` starts) are covered through the command that starts them.

The tests below the list cover options no other module checks; the ones that need a stack share
one (`up --host 127.0.0.2 --keep 2`), or run `serve` in the foreground once.
"""

from __future__ import annotations

import ast
import json
import os
import select
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import typer.main
from helpers import free_port, wait_until
from stack_helpers import Stack, mfcolab
from typer.testing import CliRunner

from mfcolab.cli import app

TESTS = Path(__file__).resolve().parent
HERE = "tests/test_cli_options.py"

UP_SHARED = "tests/test_lifecycle.py::test_lifecycle_up_twice_status_and_down_leaves_nothing"
OFFICIAL = "tests/test_official_stack.py::test_official_stack_up_status_logs_down_and_up_again"
SERVE = f"{HERE}::test_serve_runs_the_supervisor_in_the_foreground_with_its_options"
SERVE_SAME = f"{HERE}::test_serve_takes_the_stack_options_of_up"
RELAY_E2E = "tests/test_tunnel_e2e.py::test_a_flow_rides_over_a_killed_tunnel"
UI_DOWNLOAD = "tests/test_ui_stack.py::test_up_downloads_the_ui_once_and_the_next_machine_reuses_it"
CONNECT_WATCH = "tests/test_relay.py::test_connect_watch_starts_a_relay_reuses_it_and_stops_it"

# (command, option) -> tests that check the option's effect. The app's own options are under "mfcolab".
COVERAGE: dict[tuple[str, str], tuple[str, ...]] = {
    ("mfcolab", "--verbose"): (SERVE,),
    ("up", "--root"): (UP_SHARED, "tests/test_lifecycle.py::test_lifecycle_missing_root_is_one_clear_line"),
    ("up", "--local"): (UP_SHARED, "tests/test_crash_restore.py::test_crash_restore_down_wipe_up_loses_nothing_and_status_shows_the_snapshot"),
    ("up", "--port"): (UP_SHARED, "tests/test_lifecycle.py::test_lifecycle_busy_port_is_one_clear_line"),
    ("up", "--host"): (f"{HERE}::test_up_host_binds_the_front_door_to_that_address",),
    ("up", "--pg-port"): (f"{HERE}::test_up_pg_port_is_where_postgres_listens",),
    ("up", "--no-tunnel"): (UP_SHARED,),
    ("up", "--cloudflared"): (RELAY_E2E, "tests/test_tunnel_e2e.py::test_rate_limited_tunnel_shows_in_status_and_the_stack_stays_usable"),
    ("up", "--engine"): (OFFICIAL, "tests/test_official_stack.py::test_official_ui_with_the_native_engine"),
    ("up", "--ui"): (  # native (the default), official, none
        UI_DOWNLOAD, "tests/ui/test_browser.py::test_the_home_page_lists_every_run_with_its_status_and_user",
        "tests/test_official_stack.py::test_official_ui_with_the_native_engine",
        "tests/test_ui_stack.py::test_ui_none_serves_no_ui_and_no_api"),
    ("up", "--ui-bundle"): (UI_DOWNLOAD, "tests/test_ui_stack.py::test_up_without_a_bundle_says_what_to_do_and_keeps_the_api",
                            "tests/test_uibundle.py::test_ui_bundle_takes_a_folder_a_zip_or_a_url"),
    ("up", "--image"): (OFFICIAL, "tests/test_official_stack.py::test_missing_image_is_one_clear_line"),
    ("up", "--registry"): (OFFICIAL, "tests/test_official_stack.py::test_unreachable_registry_is_one_clear_line"),
    ("up", "--proot"): (OFFICIAL, "tests/test_official_stack.py::test_missing_proot_is_one_clear_line"),
    ("up", "--service-port"): (OFFICIAL, "tests/test_official_stack.py::test_taken_container_port_is_one_clear_line"),
    ("up", "--ui-port"): (OFFICIAL, "tests/test_official_stack.py::test_taken_container_port_is_one_clear_line"),
    ("up", "--snapshot-interval"): ("tests/test_crash_restore.py::test_crash_restore_down_before_any_mirror_cycle_still_leaves_a_restorable_state",),
    ("up", "--keep"): (f"{HERE}::test_snapshot_ships_a_new_generation_and_keep_prunes_the_oldest",),
    ("up", "--no-auth"): (f"{HERE}::test_up_no_auth_is_refused_off_loopback", SERVE),
    ("down", "--root"): (UP_SHARED,),
    ("down", "--local"): (UP_SHARED,),
    ("status", "--root"): (UP_SHARED,),
    ("status", "--local"): (UP_SHARED,),
    ("status", "--json"): (UP_SHARED,),
    ("logs", "COMPONENT"): (OFFICIAL, f"{HERE}::test_logs_prints_the_last_lines_and_follows"),
    ("logs", "--root"): (f"{HERE}::test_logs_prints_the_last_lines_and_follows",),
    ("logs", "--local"): (f"{HERE}::test_logs_prints_the_last_lines_and_follows",),
    ("logs", "--follow"): (f"{HERE}::test_logs_prints_the_last_lines_and_follows",),
    ("logs", "--lines"): (f"{HERE}::test_logs_prints_the_last_lines_and_follows",),
    ("snapshot", "--root"): (f"{HERE}::test_snapshot_ships_a_new_generation_and_keep_prunes_the_oldest",),
    ("snapshot", "--local"): (f"{HERE}::test_snapshot_ships_a_new_generation_and_keep_prunes_the_oldest",),
    ("restore", "--root"): ("tests/test_restore_flows.py::test_restore_until_a_noted_time_then_the_generation_that_held_the_later_run",),
    ("restore", "--local"): ("tests/test_restore_flows.py::test_restore_until_a_noted_time_then_the_generation_that_held_the_later_run",),
    ("restore", "--generation"): ("tests/test_restore_flows.py::test_restore_until_a_noted_time_then_the_generation_that_held_the_later_run",),
    ("restore", "--until"): ("tests/test_restore_flows.py::test_restore_until_a_noted_time_then_the_generation_that_held_the_later_run",
                             "tests/test_restore.py::test_restore_until_stops_at_the_time_in_every_form_and_refuses_a_time_before_every_base"),
    ("restore", "--move-aside"): ("tests/test_crash_restore.py::test_crash_restore_restore_move_aside_keeps_the_current_database",),
    ("restore", "--list"): ("tests/test_restore.py::test_restore_list_shows_each_generations_window",
                            "tests/test_restore_flows.py::test_restore_until_a_noted_time_then_the_generation_that_held_the_later_run"),
    ("serve", "--root"): (SERVE,),
    ("serve", "--local"): (SERVE,),
    ("serve", "--port"): (SERVE,),
    ("serve", "--host"): (SERVE,),
    ("serve", "--pg-port"): (SERVE,),
    ("serve", "--no-tunnel"): (SERVE,),
    ("serve", "--engine"): (SERVE,),
    ("serve", "--ui"): (SERVE,),
    ("serve", "--no-auth"): (SERVE,),
    ("serve", "--snapshot-interval"): (SERVE,),
    ("serve", "--keep"): (SERVE,),
    # The same option declarations as `up` (checked by SERVE_SAME), whose tests show their effect.
    ("serve", "--cloudflared"): (SERVE_SAME, RELAY_E2E),
    ("serve", "--registry"): (SERVE_SAME, "tests/test_official_stack.py::test_unreachable_registry_is_one_clear_line"),
    ("serve", "--proot"): (SERVE_SAME, "tests/test_official_stack.py::test_missing_proot_is_one_clear_line"),
    ("serve", "--image"): (SERVE_SAME, "tests/test_official_stack.py::test_missing_image_is_one_clear_line"),
    ("serve", "--service-port"): (SERVE_SAME, OFFICIAL),
    ("serve", "--ui-port"): (SERVE_SAME, OFFICIAL),
    ("serve", "--ui-bundle"): (SERVE_SAME, UI_DOWNLOAD),
    ("connect", "URL"): ("tests/test_tunnel_e2e.py::test_rate_limited_tunnel_shows_in_status_and_the_stack_stays_usable",),
    ("connect", "--key"): ("tests/test_tunnel_e2e.py::test_rate_limited_tunnel_shows_in_status_and_the_stack_stays_usable",),
    ("connect", "--root"): (RELAY_E2E, f"{HERE}::test_connect_profile_writes_that_profile"),
    ("connect", "--profile"): (f"{HERE}::test_connect_profile_writes_that_profile",),
    ("connect", "--watch"): (CONNECT_WATCH, RELAY_E2E),
    ("connect", "--relay-port"): (CONNECT_WATCH, "tests/test_relay.py::test_connect_watch_with_a_busy_relay_port_is_one_clear_line"),
    ("connect", "--stop-relay"): (CONNECT_WATCH,),
    ("connect", "--local"): (CONNECT_WATCH,),
    ("connect", "--key-file"): ("tests/test_keys.py::test_connect_takes_the_key_from_a_file_or_stdin",),
    ("connect", "--user"): ("tests/test_fresh_machine.py::test_connect_user_option_is_written_and_a_found_name_is_left_alone",),
    ("key", "--root"): ("tests/test_keys.py::test_key_prints_the_key_and_the_summary_only_masks_it",
                        "tests/test_keys.py::test_key_without_a_key_is_one_line"),
    ("key", "--local"): ("tests/test_keys.py::test_key_prints_the_key_and_the_summary_only_masks_it",),
    ("rotate-key", "--root"): ("tests/test_keys.py::test_rotate_key_replaces_key_sessions_and_connection",
                               "tests/test_keys.py::test_a_running_door_refuses_the_old_key_and_sessions_after_rotate_key"),
    ("rotate-key", "--local"): ("tests/test_keys.py::test_rotate_key_replaces_key_sessions_and_connection",),
}


def _option_name(param: Any) -> str:
    """An option's long name (`--lines`, not `-n`); an argument's name as help shows it (`COMPONENT`)."""
    if param.param_type_name == "argument":
        return str(param.name).upper()
    return str(max(param.opts, key=len))


def _cli_options() -> dict[tuple[str, str], Any]:
    """(command, option) for every visible command of the Click tree, plus the app's own options.
    (Attributes only: recent Typer releases carry their own copy of Click.)"""
    group: Any = typer.main.get_command(app)
    found = {("mfcolab", _option_name(p)): p for p in group.params if p.name != "help"}
    for name, command in group.commands.items():
        if command.hidden:
            continue
        found.update({(name, _option_name(p)): p for p in command.params if p.name != "help"})
    return found


def _defined_tests(file: Path) -> set[str]:
    tree = ast.parse(file.read_text())
    return {node.name for node in tree.body if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")}


def test_every_option_has_a_listed_test() -> None:
    missing = sorted(set(_cli_options()) - set(COVERAGE))
    assert not missing, (
        "options without a test that checks their effect; write one and add to COVERAGE in tests/test_cli_options.py:\n"
        + "\n".join(f'    ("{command}", "{option}"): ("tests/test_<module>.py::test_<name>",),' for command, option in missing))
    stale = sorted(set(COVERAGE) - set(_cli_options()))
    assert not stale, "COVERAGE in tests/test_cli_options.py lists options mfcolab no longer has; remove:\n" + "\n".join(
        f'    ("{command}", "{option}")' for command, option in stale)


def test_every_listed_test_exists() -> None:
    unknown = []
    for key, tests in COVERAGE.items():
        assert tests, f"{key} lists no test"
        for test in tests:
            path, _, name = test.partition("::")
            file = TESTS.parent / path
            if not file.is_file() or name not in _defined_tests(file):
                unknown.append(f"{key}: {test}")
    assert not unknown, "COVERAGE in tests/test_cli_options.py names tests that do not exist:\n" + "\n".join(unknown)


def test_help_shows_every_option() -> None:
    """What the list is checked against is what `mfcolab <command> --help` prints."""
    runner = CliRunner()
    for command, option in _cli_options():
        args = ["--help"] if command == "mfcolab" else [command, "--help"]
        shown = runner.invoke(app, args).output
        assert option in shown, f"mfcolab {' '.join(args)} does not show {option}"


def test_serve_takes_the_stack_options_of_up() -> None:
    """`serve` is what `up` starts: the same options, declared once, with the same meaning."""
    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]

    def described(name: str) -> list[tuple[str, list[str], str | None, Any, bool]]:
        return [(p.name, p.opts, p.help, p.default, p.is_flag) for p in commands[name].params]

    assert described("serve") == described("up")


# --- the options no other module checks ------------------------------------------------------

ALIAS = "127.0.0.2"  # a loopback address other than 127.0.0.1 (Linux routes all of 127/8 to lo)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One stack for the cheap checks: its front door on ALIAS, two generations kept, no loop."""
    running = Stack(tmp_path_factory.mktemp("options"), free_port(), free_port(),
                    ["--host", ALIAS, "--keep", "2", "--snapshot-interval", "0"])
    running.up()
    try:
        yield running
    finally:
        running.down(check=False)


def _reachable(url: str) -> bool:
    try:
        return requests.get(url, timeout=5).status_code == 200
    except requests.ConnectionError:
        return False


@pytest.mark.slow
def test_up_host_binds_the_front_door_to_that_address(stack: Stack) -> None:
    assert _reachable(f"http://{ALIAS}:{stack.port}/healthz")
    assert not _reachable(f"http://127.0.0.1:{stack.port}/healthz")
    assert json.loads((stack.root / "connection.json").read_text())["url"] == f"http://{ALIAS}:{stack.port}"


@pytest.mark.slow
def test_up_pg_port_is_where_postgres_listens(stack: Stack) -> None:
    postgres = next(c for c in stack.status()["components"] if c["name"] == "postgres")
    assert postgres["port"] == stack.pg_port
    with socket.create_connection(("127.0.0.1", stack.pg_port), timeout=5):
        pass


@pytest.mark.slow
def test_snapshot_ships_a_new_generation_and_keep_prunes_the_oldest(stack: Stack) -> None:
    shipped = [json.loads(mfcolab("snapshot", *stack.folder_args()).stdout)["generation"] for _ in range(3)]
    assert len(set(shipped)) == 3
    listed = [line.split()[0] for line in mfcolab("restore", *stack.folder_args(), "--list").stdout.splitlines()[1:]]
    assert listed == shipped[1:]  # --keep 2


@pytest.mark.slow
def test_logs_prints_the_last_lines_and_follows(stack: Stack) -> None:
    log = stack.local / "logs" / "postgres.log"
    tail = mfcolab("logs", "postgres", *stack.folder_args(), "--lines", "3").stdout.splitlines()
    assert tail == log.read_text().splitlines()[-3:]
    assert mfcolab("logs", "postgres", *stack.folder_args(), "-n", "1").stdout.splitlines() == log.read_text().splitlines()[-1:]
    every = mfcolab("logs", *stack.folder_args()).stdout
    assert f"==> postgres ({log})" in every and f"==> supervisor ({stack.local / 'logs' / 'supervisor.log'})" in every
    unknown = mfcolab("logs", "nothing", *stack.folder_args(), check=False)
    assert unknown.returncode == 1 and "no log for 'nothing'" in unknown.stderr

    assert mfcolab("logs", "postgres", *stack.folder_args(), "-n", "0").stdout == ""

    supervisor_log = stack.local / "logs" / "supervisor.log"
    follower = subprocess.Popen([sys.executable, "-m", "mfcolab", "logs", "supervisor", *stack.folder_args(), "--follow", "-n", "1"],
                                stdout=subprocess.PIPE, start_new_session=True)
    try:
        assert follower.stdout is not None
        printed = _Lines(follower.stdout.fileno())
        wait_until(lambda: printed.read() >= 1, timeout=60, what="the last line of the supervisor log")
        assert printed.lines[0] == supervisor_log.read_text().splitlines()[-1]
        # a snapshot writes supervisor log lines; the follower prints them as they come
        wait_until(lambda: mfcolab("snapshot", *stack.folder_args()) and printed.read() >= 2, timeout=300, interval=0,
                   what="a new supervisor log line to be followed")
        assert all(line in supervisor_log.read_text().splitlines() for line in printed.lines[1:])
    finally:
        os.killpg(follower.pid, signal.SIGKILL)
        follower.wait(10)


class _Lines:
    """Complete lines read so far from a pipe, without blocking."""

    def __init__(self, fd: int) -> None:
        self.fd, self.buffer, self.lines = fd, b"", []
        os.set_blocking(fd, False)

    def read(self) -> int:
        while select.select([self.fd], [], [], 0.2)[0]:
            chunk = os.read(self.fd, 65536)
            if not chunk:
                break
            self.buffer += chunk
        *complete, self.buffer = self.buffer.split(b"\n")
        self.lines += [line.decode() for line in complete]
        return len(self.lines)


@pytest.mark.slow
def test_connect_profile_writes_that_profile(stack: Stack, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("METAFLOW_", "MFCOLAB_"))}
    env["METAFLOW_HOME"] = str(tmp_path / "home")
    result = mfcolab("connect", "--root", str(stack.root), "--profile", "second", env=env)
    assert result.stdout.strip() == "export METAFLOW_PROFILE=second"
    profile = json.loads((tmp_path / "home" / "config_second.json").read_text())
    assert profile["METAFLOW_SERVICE_URL"] == f"http://{ALIAS}:{stack.port}/metadata"
    assert profile["METAFLOW_SERVICE_AUTH_KEY"] == stack.key
    assert not (tmp_path / "home" / "config_mfcolab.json").exists()


def test_up_no_auth_is_refused_off_loopback(tmp_path: Path) -> None:
    result = mfcolab("up", "--root", str(tmp_path / "root"), "--local", str(tmp_path / "local"), "--no-tunnel",
                     "--no-auth", "--host", ALIAS, "--port", str(free_port()), check=False)
    assert result.returncode == 1 and "--no-auth" in result.stderr
    assert not (tmp_path / "local" / "run" / "supervisor.pid").exists()


@pytest.mark.slow
def test_serve_runs_the_supervisor_in_the_foreground_with_its_options(tmp_path: Path) -> None:
    root, local, port, pg_port = tmp_path / "root", tmp_path / "local", free_port(), free_port()
    root.mkdir()
    folders = ["--root", str(root), "--local", str(local)]
    server = subprocess.Popen([sys.executable, "-m", "mfcolab", "serve", *folders, "--port", str(port), "--host", "127.0.0.1",
                               "--pg-port", str(pg_port), "--no-tunnel", "--engine", "native", "--ui", "none", "--no-auth",
                               "--snapshot-interval", "0", "--keep", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_until(lambda: _reachable(f"http://127.0.0.1:{port}/healthz"), timeout=180, interval=0.5, what="serve to be healthy")
        assert requests.get(f"http://127.0.0.1:{port}/metadata/ping", timeout=10).status_code == 200  # --no-auth
        status = json.loads(mfcolab("status", *folders, "--json").stdout)
        assert status["supervisor_pid"] == server.pid
        assert {c["name"]: c.get("port") for c in status["components"]} == {"postgres": pg_port, "web": port}
        assert not (root / "snapshots" / "manifest.json").exists()  # --snapshot-interval 0: no cycle of its own
        mfcolab("snapshot", *folders)
        newest = json.loads(mfcolab("snapshot", *folders).stdout)["generation"]
        os.kill(server.pid, signal.SIGTERM)
        assert server.wait(120) == 0
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(10)
    listed = [line.split()[0] for line in mfcolab("restore", *folders, "--list").stdout.splitlines()[1:]]
    assert listed == [newest]  # --keep 1

    # the app's --verbose, on the stopped stack's folders
    quiet = mfcolab("restore", *folders, "--move-aside")
    assert "INFO" not in quiet.stderr
    loud = mfcolab("--verbose", "restore", *folders, "--move-aside")
    assert f"INFO mfcolab.replica.restore: recovery of generation {newest}" in loud.stderr

