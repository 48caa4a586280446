"""The UI API checks what it relies on with errors, not `assert`: `python -O` strips asserts, and a
failed one would be a 500 with a traceback rather than a message."""

from __future__ import annotations

import ast
from pathlib import Path

import mfcolab.ui


def test_the_ui_package_has_no_assert_statement() -> None:
    package = Path(mfcolab.ui.__file__).parent
    found = [f"{path.name}:{node.lineno}" for path in sorted(package.glob("*.py"))
             for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Assert)]
    assert found == []
