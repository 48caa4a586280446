"""An unexpected exception in any command is one line naming a log file, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from helpers import free_port
from stack_helpers import Stack, mfcolab


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


def test_cli_up_unexpected_failure_is_one_line_and_the_traceback_is_in_the_log(tmp_path: Path) -> None:
    stack = Stack(tmp_path, free_port(), free_port())
    (stack.local / "run" / "supervisor.pid").mkdir(parents=True)  # a folder where up reads a file
    result = stack.up(check=False)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = _error_lines(result.stderr)
    assert lines[0].startswith("error: mfcolab up failed unexpectedly: IsADirectoryError"), result.stderr
    log = stack.local / "logs" / "errors.log"
    assert len(lines) == 2 and lines[1].startswith("  try: ") and str(log) in lines[1]
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "IsADirectoryError" in text and "mfcolab up" in text
    assert log.stat().st_mode & 0o077 == 0, "the log may hold paths and messages: readable by root only"


def test_cli_down_unexpected_failure_logs_to_the_temporary_folder_when_local_cannot_hold_it(tmp_path: Path) -> None:
    local = tmp_path / "local"
    (local / "run" / "supervisor.pid").mkdir(parents=True)
    (local / "logs").write_text("a file where the logs folder should be")
    result = mfcolab("down", "--local", str(local), "--root", str(tmp_path / "root"), check=False)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = _error_lines(result.stderr)
    assert lines[0].startswith("error: mfcolab down failed unexpectedly: IsADirectoryError"), result.stderr
    assert "mfcolab-errors.log" in lines[1]


def test_cli_missing_package_is_one_line_naming_the_pip_install(tmp_path: Path) -> None:
    # psycopg2 absent from this interpreter, as in a venv where nobody installed it.
    program = "import sys\nsys.modules['psycopg2'] = None\nsys.argv[0] = 'mfcolab'\nfrom mfcolab.cli import main\nmain()"
    result = subprocess.run([sys.executable, "-c", program, "status", "--local", str(tmp_path / "local"),
                             "--root", str(tmp_path / "root")], check=False, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = _error_lines(result.stderr)
    assert lines[0] == "error: mfcolab status needs the Python package 'psycopg2', which is not installed", result.stderr
    assert lines[1].startswith("  try: pip install psycopg2-binary")
