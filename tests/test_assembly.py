"""The components a stack is made of, and `up`'s foreground checks through them."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from helpers import free_port, make_settings
from mfcolab.supervisor import stack
from mfcolab.supervisor.assembly import build_components, postgres_of
from mfcolab.errors import PortBusyError
from mfcolab.postgres import Postgres


def test_build_components_native_stack_in_start_order(tmp_path: Path) -> None:
    components = build_components(make_settings(tmp_path))
    assert [c.name for c in components] == ["postgres", "web"]
    assert isinstance(postgres_of(components), Postgres)


def test_build_components_official_stack_with_tunnel_in_start_order(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, engine="official", ui="official", tunnel=True,
                             service_port=free_port(), ui_port=free_port())
    names = [c.name for c in build_components(settings)]
    assert names[0] == "postgres" and names[-2:] == ["web", "tunnel"] and len(names) == 5


@pytest.mark.parametrize("port_setting, flag", [("port", "--port"), ("pg_port", "--pg-port"), ("service_port", "--service-port")])
def test_stack_preflight_busy_port_of_any_component_is_refused_before_anything_starts(
        tmp_path: Path, port_setting: str, flag: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ports = {"service_port": free_port(), port_setting: port}
        settings = make_settings(tmp_path, engine="official", **ports)
        with pytest.raises(PortBusyError) as caught:
            stack.preflight(settings, root_given=False)
    assert str(port) in caught.value.message and flag in caught.value.hint
    assert not settings.pgdata.exists(), "a check only: no initdb"
    assert not settings.supervisor_pid_file.exists()
