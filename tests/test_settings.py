"""Settings: what the checks in Settings.validate refuse, through the CLI and the environment."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from mfcolab.cli import app
from mfcolab.errors import ConfigError
from mfcolab.settings import Settings


def test_no_auth_is_refused_while_the_tunnel_is_on(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="tunnel"):
        Settings.resolve(root=tmp_path / "root", local=tmp_path / "local", no_auth=True)
    quiet = Settings.resolve(root=tmp_path / "root", local=tmp_path / "local", no_auth=True, tunnel=False)
    assert quiet.no_auth and not quiet.tunnel


def test_no_auth_from_the_environment_is_refused_with_the_tunnel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MFCOLAB_NO_AUTH", "1")
    monkeypatch.delenv("MFCOLAB_TUNNEL", raising=False)
    answer = CliRunner().invoke(app, ["up", "--root", str(tmp_path / "root"), "--local", str(tmp_path / "local")])
    assert answer.exit_code == 1
    assert "--no-auth" in answer.output and "tunnel" in answer.output
    assert not (tmp_path / "local").exists()  # refused before anything started
